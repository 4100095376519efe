-- Notifications, numbered per user (`seq`): the number is taken from the
-- user's row in notification_seqs inside the inserting transaction, whose
-- row lock orders one user's inserts, so a stream that has sent seq N has
-- seen every notification of that user numbered below N.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    is_read INTEGER NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    -- The domain event it came from, if any.
    event_id TEXT,
    UNIQUE (user_id, seq)
);

CREATE INDEX notifications_by_user ON notifications (user_id, seq);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE is_read = 0;

CREATE TABLE notification_seqs (
    user_id BIGINT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- Event ids already applied, recorded in the transaction that applied
-- them: a redelivered event changes nothing.
CREATE TABLE consumed_events (
    event_id TEXT PRIMARY KEY,
    consumed_at_ms BIGINT NOT NULL
);
