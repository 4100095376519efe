-- One outbox relay publishes at a time, whichever replica holds the lease:
-- events then leave in commit order, and replicas take over from a crashed
-- holder when its lease expires.
CREATE TABLE relay_lease (
    id              INTEGER PRIMARY KEY,
    holder          TEXT NOT NULL,
    expires_at_ms   BIGINT NOT NULL
);
INSERT INTO relay_lease (id, holder, expires_at_ms) VALUES (1, '', 0);
