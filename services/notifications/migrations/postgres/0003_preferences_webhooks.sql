-- What a notification is about, for preferences: welcome, comment,
-- mention, file, digest, system.
ALTER TABLE notifications ADD COLUMN topic TEXT NOT NULL DEFAULT 'system';

-- A user's choice per topic: 'muted' or 'digest' (no row: instant).
CREATE TABLE notification_preferences (
    user_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    mode TEXT NOT NULL,
    PRIMARY KEY (user_id, topic)
);

-- Notifications held for their user's next daily digest.
CREATE TABLE digest_items (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX digest_items_by_user ON digest_items (user_id, id);

-- A user's webhook endpoints. During a rotation the previous secret
-- still signs until previous_until_ms. failing_since_ms: the first of the
-- failures since the last success; a day of them disables the endpoint.
CREATE TABLE webhooks (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until_ms BIGINT,
    enabled INTEGER NOT NULL DEFAULT 1,
    failing_since_ms BIGINT,
    last_failure_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX webhooks_by_user ON webhooks (user_id);

-- One notification to one endpoint, written in the notification's
-- transaction (an outbox): queued = 0 until a job carries it, and
-- claimed_until_ms keeps two relays from enqueueing it at once. A re-send
-- bumps generation, so a job of an earlier one does nothing.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at_ms);
CREATE INDEX webhook_deliveries_by_user ON webhook_deliveries (user_id);
CREATE INDEX webhook_deliveries_unqueued ON webhook_deliveries (created_at_ms) WHERE queued = 0;

-- Every attempt of a delivery and what came of it.
CREATE TABLE webhook_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms BIGINT NOT NULL
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
