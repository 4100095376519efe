-- The first answer to a create sent with an `Idempotency-Key`, stored in
-- the same transaction as the create itself, so a retry after a lost answer
-- gets that answer instead of a second post. Kept 24 hours.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    method          TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    response        TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at_ms);
