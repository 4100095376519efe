#!/usr/bin/env bash
# Notifications over server-sent events against a minimal SSE broadcaster
# on Node's `http` module (bench/sse-node/server.js), in one run, on
# loopback. The service runs its release binary on its embedded SQLite
# store, fed through Kafka (librdkafka's mock cluster, the broker process
# the tests share); Node is fed by HTTP POSTs. Load generator:
# bench/src/bin/sse_fanout.rs.
#
#  1. Fan-out: STREAMS (10 000) streams over USERS (10) users; each round
#     is one notification to every user, so one to every stream; rounds
#     alternate service, Node. Deliveries per second, send-to-receive
#     latency.
#  2. Kafka to client: one stream per user of LAT_USERS (100), RATE
#     (1 000) events a second for SECONDS (10); send-to-receive p99.
#     Node the same, fed over HTTP.
#  3. Memory: fresh servers, STREAMS idle streams; RSS growth / stream.
#
#   bash bench/notifications-vs-sse.sh   # ROUNDS=3 STREAMS=10000 USERS=10 FANOUTS=20
#   PARTS=memory bash bench/notifications-vs-sse.sh   # some parts only
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-10000}
USERS=${USERS:-10}
FANOUTS=${FANOUTS:-20}
LAT_USERS=${LAT_USERS:-100}
RATE=${RATE:-1000}
SECONDS_=${SECONDS_:-10}
PARTS=${PARTS:-fanout latency memory}
KEY=bench-signing-key-0123456789abcdef0123

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((STREAMS + 1000)) ]; then
  echo "need $((STREAMS + 1000)) open files, have $(ulimit -n)" >&2
  exit 1
fi
command -v node >/dev/null || { echo "installing nodejs (Debian package)"; apt-get install -y -qq nodejs >/dev/null; }
cargo build --release -q -p notifications -p platform-bench
cargo build --release -q -p test-support --features kafka-broker --bin kafka-mock-cluster
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/kafka-mock-cluster" >"$work/kafka" &
pids+=("$!")
for _ in $(seq 100); do [ -s "$work/kafka" ] && break; sleep 0.1; done
brokers=$(head -1 "$work/kafka")

# One consumer group for every service started here: a restarted service
# goes on from the offsets the last one committed, not from the backlog.
group="bench-$RANDOM$RANDOM"
start_service() {
  rm -f "$work"/notifications.db*
  NOTIFICATIONS_JWT_SECRET=$KEY NOTIFICATIONS_HTTP_ADDR=127.0.0.1:18310 \
    NOTIFICATIONS_GRPC_ADDR=127.0.0.1:18311 NOTIFICATIONS_ADMIN_ADDR=127.0.0.1:18312 \
    NOTIFICATIONS_DATABASE_URL="sqlite://$work/notifications.db" \
    NOTIFICATIONS_CONSUMER_GROUP="$group" \
    PLATFORM_KAFKA_BROKERS=$brokers PLATFORM_KAFKA_FETCH_WAIT_MAX=${FETCH_WAIT:-500ms} \
    PLATFORM_LOG=warn "$bin/notifications" >/dev/null &
  service_pid=$!
  pids+=("$service_pid")
}
start_node() {
  node bench/sse-node/server.js 18300 >/dev/null &
  node_pid=$!
  pids+=("$node_pid")
}
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
service=http://127.0.0.1:18310
nodejs=http://127.0.0.1:18300

part() { [[ " $PARTS " == *" $1 "* ]]; }

if part fanout || part latency; then
start_service; start_node; wait_port 18310; wait_port 18300
# The consumer group's first assignment takes a moment: one event through
# first, so the runs measure the steady state.
"$bin/sse-fanout" latency "$service" 1 10 1 "$KEY" "$brokers" >/dev/null
if part fanout; then
echo "== fan-out: $STREAMS streams, $USERS users, $FANOUTS notifications to every stream"
for round in $(seq "$ROUNDS"); do
  printf 'service round %s: ' "$round"
  "$bin/sse-fanout" fanout "$service" "$STREAMS" "$USERS" "$FANOUTS" "$KEY" "$brokers"
  printf 'node    round %s: ' "$round"
  "$bin/sse-fanout" fanout "$nodejs" "$STREAMS" "$USERS" "$FANOUTS"
done
fi
if part latency; then
echo "== Kafka to client: $LAT_USERS streams, $RATE events/s for ${SECONDS_}s"
printf 'service, fetch wait 500ms (the default): '
"$bin/sse-fanout" latency "$service" "$LAT_USERS" "$RATE" "$SECONDS_" "$KEY" "$brokers"
printf 'node:    '; "$bin/sse-fanout" latency "$nodejs" "$LAT_USERS" "$RATE" "$SECONDS_"
fi
stop "$service_pid"; stop "$node_pid"
fi
if part latency; then
# The mock cluster answers a fetch that found no data only when its wait
# runs out (a real broker answers as data arrives): the same with 10 ms.
FETCH_WAIT=10ms start_service; wait_port 18310
"$bin/sse-fanout" latency "$service" 1 10 1 "$KEY" "$brokers" >/dev/null
printf 'service, fetch wait 10ms: '
"$bin/sse-fanout" latency "$service" "$LAT_USERS" "$RATE" "$SECONDS_" "$KEY" "$brokers"
stop "$service_pid"
fi

if part memory; then
echo "== memory: $STREAMS idle streams over $USERS users (fresh servers)"
start_service; wait_port 18310
printf 'service: '; "$bin/sse-fanout" idle "$service" "$STREAMS" "$USERS" "$service_pid" "$KEY" "$brokers"
stop "$service_pid"
start_node; wait_port 18300
printf 'node:    '; "$bin/sse-fanout" idle "$nodejs" "$STREAMS" "$USERS" "$node_pid"
stop "$node_pid"
fi
