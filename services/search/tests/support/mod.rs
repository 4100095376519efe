pub mod fake_opensearch;
