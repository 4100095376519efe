pub mod fake_consul;
