//! Migrations compiled into the binary, one set per backend.

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../../migrations/postgres/0001_event_store.sql"),
    ),
    (
        2,
        "relay lease",
        include_str!("../../migrations/postgres/0002_relay_lease.sql"),
    ),
    (
        3,
        "outbox parking",
        include_str!("../../migrations/postgres/0003_outbox_parking.sql"),
    ),
    (
        4,
        "idempotency keys",
        include_str!("../../migrations/postgres/0004_idempotency_keys.sql"),
    ),
];

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../../migrations/sqlite/0001_event_store.sql"),
    ),
    (
        2,
        "relay lease",
        include_str!("../../migrations/sqlite/0002_relay_lease.sql"),
    ),
    (
        3,
        "outbox parking",
        include_str!("../../migrations/sqlite/0003_outbox_parking.sql"),
    ),
    (
        4,
        "idempotency keys",
        include_str!("../../migrations/sqlite/0004_idempotency_keys.sql"),
    ),
];

pub(super) const ALL: common::db::Migrations = common::db::Migrations {
    postgres: POSTGRES,
    sqlite: SQLITE,
};
