#!/usr/bin/env bash
# Chat fan-out against a broadcast server on the npm `ws` package
# (bench/chat-ws/server.js), in one run, on loopback:
#
#  1. One room, SUBSCRIBERS (1 000) subscribers, one publisher sending
#     MESSAGES messages, at most WINDOW of them not yet delivered to every
#     subscriber (pipelined, like a busy room); rounds alternate chat, ws.
#     Then the same with WINDOW=1 (one message in flight: pure fan-out
#     latency). Load generator: bench/src/bin/chat_fanout.rs.
#  2. Memory per idle connection: fresh servers, CONNECTIONS (10 000)
#     authenticated connections, each joined to a room of MEMBERS_PER_ROOM;
#     RSS growth / connections.
#
# chat runs with its defaults except the per-connection message rate (the
# publisher sends far more than a person) and the per-user connection cap
# (the generator is one "user" per connection, but the cap is per user id).
#
#   bash bench/chat-vs-ws.sh    # ROUNDS=3 SUBSCRIBERS=1000 MESSAGES=2000 WINDOW=16
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
MESSAGES=${MESSAGES:-2000}
WINDOW=${WINDOW:-16}
CONNECTIONS=${CONNECTIONS:-10000}
export MEMBERS_PER_ROOM=${MEMBERS_PER_ROOM:-100}
KEY=bench-signing-key-0123456789abcdef0123

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((CONNECTIONS + 1000)) ]; then
  echo "need $((CONNECTIONS + 1000)) open files, have $(ulimit -n)" >&2
  exit 1
fi
command -v node >/dev/null || { echo "installing nodejs (Debian package)"; apt-get install -y -qq nodejs npm >/dev/null; }
(cd bench/chat-ws && npm ci --no-audit --no-fund --silent)
cargo build --release -q -p chat -p platform-bench
bin=${CARGO_TARGET_DIR:-target}/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

start_chat() {
  CHAT_JWT_SECRET=$KEY CHAT_HTTP_ADDR=127.0.0.1:18210 CHAT_GRPC_ADDR=127.0.0.1:18211 \
    CHAT_MESSAGES_PER_SECOND=1000000 CHAT_MESSAGE_BURST=1000000 \
    CHAT_MAX_CONNECTIONS_PER_USER=100000 PLATFORM_LOG=warn "$bin/chat" >/dev/null &
  chat_pid=$!
  pids+=("$chat_pid")
}
start_ws() {
  node bench/chat-ws/server.js 18200 >/dev/null &
  ws_pid=$!
  pids+=("$ws_pid")
}
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

start_chat; start_ws; wait_port 18210; wait_port 18200
echo "== fan-out: $SUBSCRIBERS subscribers, $MESSAGES messages, window $WINDOW"
for round in $(seq "$ROUNDS"); do
  printf 'chat round %s: ' "$round"
  "$bin/chat-fanout" fanout ws://127.0.0.1:18210/ws "$SUBSCRIBERS" "$MESSAGES" "$WINDOW" "$KEY"
  printf 'ws   round %s: ' "$round"
  "$bin/chat-fanout" fanout ws://127.0.0.1:18200/ "$SUBSCRIBERS" "$MESSAGES" "$WINDOW"
done
echo "== fan-out latency: one message in flight"
printf 'chat: '; "$bin/chat-fanout" fanout ws://127.0.0.1:18210/ws "$SUBSCRIBERS" 1000 1 "$KEY"
printf 'ws:   '; "$bin/chat-fanout" fanout ws://127.0.0.1:18200/ "$SUBSCRIBERS" 1000 1
stop "$chat_pid"; stop "$ws_pid"

echo "== memory: $CONNECTIONS idle connections, $MEMBERS_PER_ROOM per room (fresh servers)"
start_chat; wait_port 18210
printf 'chat: '; "$bin/chat-fanout" idle ws://127.0.0.1:18210/ws "$CONNECTIONS" "$chat_pid" "$KEY"
stop "$chat_pid"
start_ws; wait_port 18200
printf 'ws:   '; "$bin/chat-fanout" idle ws://127.0.0.1:18200/ "$CONNECTIONS" "$ws_pid"
stop "$ws_pid"
