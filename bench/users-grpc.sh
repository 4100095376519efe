#!/usr/bin/env bash
# The users service over gRPC on loopback, in one run:
#
#  1. GetUser by id with the cache warm, against a tonic service that
#     returns a constant User (bench/src/bin/const_users.rs): the cost of
#     the real service (host middleware, tracing, metrics, cache lookup).
#  2. CreateUser throughput on PostgreSQL: argon2id hash, event, read
#     model and outbox row in one transaction.
#  3. Outbox publish lag under that load, with the relay publishing to a
#     Kafka-protocol broker (librdkafka's mock cluster): the
#     `outbox_lag_seconds` gauge sampled every 100 ms.
#
# Needs the machine's PostgreSQL and Redis (make test starts them).
#   bash bench/users-grpc.sh          # ROUNDS=3 SECONDS_PER_RUN=10
#   USERS_LOG=warn bash bench/users-grpc.sh   # without per-request spans
set -euo pipefail
# Every process of the run signs and checks service tokens with it.
export PLATFORM_SERVICE_SECRET=${PLATFORM_SERVICE_SECRET:-bench-service-secret-of-at-least-32-bytes}
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONCURRENCY=${CONCURRENCY:-64}
PG=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}

cargo build --release -q -p users -p platform-bench -p test-support
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

psql "$PG/test" -qc "DROP DATABASE IF EXISTS users_bench" -c "CREATE DATABASE users_bench" >/dev/null
"$bin/kafka-mock-cluster" >"$work/kafka" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/kafka" ] && break; sleep 0.1; done
brokers=$(head -n1 "$work/kafka")

USERS_HTTP_ADDR=127.0.0.1:18091 USERS_ADMIN_ADDR=127.0.0.1:19091 USERS_GRPC_ADDR=127.0.0.1:15091 \
USERS_DATABASE_URL="$PG/users_bench" USERS_REDIS_URL="$REDIS" USERS_KAFKA_BROKERS="$brokers" \
USERS_CACHE_DIR="$work/cache" USERS_LOG="${USERS_LOG:-info}" "$bin/users" >/dev/null &
pids+=($!)
"$bin/const-users" 127.0.0.1:15092 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:18091/health/ready >/dev/null && break; sleep 0.1; done

"$bin/grpc-load" create http://127.0.0.1:15091 1 2 1 >/dev/null   # user 1 exists
"$bin/grpc-load" get http://127.0.0.1:15091 1 4 1 1 >/dev/null     # cache warm

echo "== GetUser, cache warm (concurrency $CONCURRENCY, 4 connections, ${SECONDS_PER_RUN}s per run)"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round users    $("$bin/grpc-load" get http://127.0.0.1:15091 "$SECONDS_PER_RUN" "$CONCURRENCY" 4 1)"
  echo "$round constant $("$bin/grpc-load" get http://127.0.0.1:15092 "$SECONDS_PER_RUN" "$CONCURRENCY" 4 1)"
done

echo "== CreateUser on PostgreSQL (concurrency 16, ${SECONDS_PER_RUN}s), outbox relaying to Kafka"
: >"$work/lag"
( while :; do
    curl -fs http://127.0.0.1:19091/metrics | awk '/^outbox_lag_seconds / {print $2}' >>"$work/lag"
    sleep 0.1
  done ) &
sampler=$!
echo "create $("$bin/grpc-load" create http://127.0.0.1:15091 "$SECONDS_PER_RUN" 16 4)"
kill $sampler
sort -g "$work/lag" | awk '{v[NR]=$1} END {
  p50=int(NR*0.5); if (p50<1) p50=1; p99=int(NR*0.99); if (p99<1) p99=1
  printf "outbox lag over %d samples: p50 %.3fs p99 %.3fs max %.3fs\n", NR, v[p50], v[p99], v[NR]}'
