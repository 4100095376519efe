-- The event store is the source of truth; everything else is derived from
-- it (read models) or feeds off it (outbox).

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    traceparent     TEXT,
    occurred_at     TEXT NOT NULL,
    -- Optimistic concurrency: two writers appending the same version of one
    -- aggregate collide here, and exactly one commits.
    CONSTRAINT events_aggregate_version UNIQUE (aggregate_type, aggregate_id, version)
);

-- Ids are handed out before the first event, outside the read models, so
-- rebuilding the read models never renumbers anything.
CREATE TABLE aggregate_ids (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type  TEXT NOT NULL
);

CREATE TABLE outbox (
    position        BIGINT PRIMARY KEY REFERENCES events (position),
    topic           TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    sent_at_ms      BIGINT
);
CREATE INDEX outbox_unsent ON outbox (position) WHERE sent_at_ms IS NULL;

-- Password hashes are not events (an event log is forever and is shared
-- with every consumer); they live beside the read models and survive
-- rebuilds.
CREATE TABLE credentials (
    user_id         BIGINT PRIMARY KEY,
    password_hash   TEXT NOT NULL
);

CREATE TABLE users (
    id              BIGINT PRIMARY KEY,
    username        TEXT NOT NULL,
    username_key    TEXT NOT NULL CONSTRAINT users_username_key UNIQUE,
    email           TEXT NOT NULL,
    email_key       TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    version         BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE posts (
    id              BIGINT PRIMARY KEY,
    title           TEXT NOT NULL,
    content         TEXT NOT NULL,
    author_id       BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX posts_by_author ON posts (author_id, id);

CREATE TABLE comments (
    id              BIGINT PRIMARY KEY,
    content         TEXT NOT NULL,
    author_id       BIGINT NOT NULL,
    post_id         BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX comments_by_post ON comments (post_id, id);
CREATE INDEX comments_by_author ON comments (author_id, id);
