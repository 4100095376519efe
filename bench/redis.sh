#!/usr/bin/env bash
# The Redis issue's figures, in one run: lock acquire + release per second
# (Locks over RedisLocks) against the floor (SET NX PX + DEL through fred,
# nothing else), and cache L2 reads per second, each on the machine's
# single Redis and on the six-node cluster (scripts/redis-cluster.sh).
# Goal: locks >= 0.8x the floor; the cluster's L2 reads >= 1.0x the single
# Redis's.
#
#   bash bench/redis.sh        # ROUNDS=3 OPS=40000 WORKERS=32
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
OPS=${OPS:-40000}
WORKERS=${WORKERS:-32}
SINGLE=${SINGLE:-redis://127.0.0.1:6379}
CLUSTER=${CLUSTER:-redis-cluster://127.0.0.1:7101?node=127.0.0.1:7102&node=127.0.0.1:7103}
bash scripts/redis-cluster.sh start
cargo build --release -q -p platform-bench --bin redis-locks
bin=${CARGO_TARGET_DIR:-target}/release/redis-locks
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round"
  for target in "$SINGLE" "$CLUSTER"; do
    echo "# $target"
    for mode in floor locks l2; do
      "$bin" "$mode" "$target" "$OPS" "$WORKERS"
    done
  done
done
