-- An event that keeps failing to publish is parked after a number of
-- attempts, with its last error, so the events behind it keep flowing; an
-- operator retries parked events through the admin RPC.
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN parked_at_ms BIGINT;
