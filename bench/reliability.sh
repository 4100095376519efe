#!/usr/bin/env bash
# The reliability issue's figures, in one run:
#
#  1. GET /api/v1/users/1 through the gateway (Redis rate limiter, users
#     with its Redis cache level), with a private redis-server up, then
#     killed: throughput and p99 of each phase. Goal: down >= 0.9x up, and
#     p99 down <= 2x p99 up.
#     The same at an equal offered load (bench/src/bin/http_rate.rs, open
#     loop, latency from each request's slot): wrk is closed-loop, so the
#     faster phase is also the busier one.
#  2. 100 concurrent sign-ins (wrong passwords) straight at the gateway:
#     the users process's peak resident memory (VmHWM). Goal < 200 MiB.
#
#   bash bench/reliability.sh        # ROUNDS=3 DURATION=10s CONNECTIONS=32 RATE=9000
set -euo pipefail
export PLATFORM_SERVICE_SECRET=${PLATFORM_SERVICE_SECRET:-bench-service-secret-of-at-least-32-bytes}
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REDIS_PORT=${REDIS_PORT:-16391}
RATE=${RATE:-9000}
for tool in wrk redis-server; do
  command -v "$tool" >/dev/null || { echo "installing $tool (Debian package)"; apt-get install -y -qq "$tool" >/dev/null; }
done

cargo build --release -q -p gateway -p users -p platform-bench
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
redis_pid=
cleanup() {
  kill "${pids[@]}" $redis_pid 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
start_redis
redis_url=redis://127.0.0.1:$REDIS_PORT

USERS_HTTP_ADDR=127.0.0.1:18091 USERS_ADMIN_ADDR=127.0.0.1:19091 USERS_GRPC_ADDR=127.0.0.1:15091 \
USERS_HTTP_WORKERS=1 USERS_DATABASE_URL="sqlite://$work/users.db" USERS_CACHE_DIR="$work/cache" \
USERS_REDIS_URL="$redis_url" USERS_LOG=warn "$bin/users" >/dev/null &
users_pid=$!
pids+=($users_pid)
GATEWAY_HTTP_ADDR=127.0.0.1:18080 GATEWAY_ADMIN_ADDR=127.0.0.1:19080 GATEWAY_HTTP_WORKERS=1 \
PLATFORM_STATIC_SERVICES=users=127.0.0.1:18091/15091 \
GATEWAY_REDIS_URL="$redis_url" GATEWAY_RATE_LIMIT_REQUESTS=100000000 GATEWAY_RATE_LIMIT_PERIOD=1s \
GATEWAY_LOG=warn "$bin/gateway" >/dev/null &
pids+=($!)
for url in http://127.0.0.1:18091/health/ready http://127.0.0.1:18080/health/ready; do
  for _ in $(seq 1 100); do curl -fs "$url" >/dev/null && break; sleep 0.1; done
done
curl -fs -X POST http://127.0.0.1:18080/api/v1/users -H 'content-type: application/json' \
  -d '{"username":"bench","email":"bench@example.com","password":"benchmark password"}' >/dev/null
curl -fs http://127.0.0.1:18080/api/v1/users/1 >/dev/null

run() { # name url -> "name req/s p99 non2xx"
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2" |
    awk -v name="$1" '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "%s %s %s non2xx=%s\n", name, rps, p99, bad+0}'
}

echo "== GET /api/v1/users/1 through the gateway, wrk -t1 -c$CONNECTIONS -d$DURATION"
echo "round phase req_per_s p99"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round $(run redis-up http://127.0.0.1:18080/api/v1/users/1)"
  kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  echo "$round $(run redis-down http://127.0.0.1:18080/api/v1/users/1)"
  start_redis
  # Both guards probe every 250 ms; give them a moment to find Redis again.
  sleep 2
done
echo "== the same at an equal offered load: $RATE req/s open loop, 8 s, $CONNECTIONS connections"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round redis-up   $("$bin/http-rate" 127.0.0.1:18080 /api/v1/users/1 "$RATE" 8 "$CONNECTIONS")"
  kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  echo "$round redis-down $("$bin/http-rate" 127.0.0.1:18080 /api/v1/users/1 "$RATE" 8 "$CONNECTIONS")"
  start_redis
  sleep 2
done
echo "users ready while Redis was down: see /health/ready (checked by tests/tests/redis_outage.rs)"

echo "== 100 concurrent sign-ins (wrong passwords), users VmHWM"
grep VmHWM "/proc/$users_pid/status" | awk '{printf "before: VmHWM %.1f MiB\n", $2/1024}'
seq 1 100 | xargs -P 100 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
  -X POST http://127.0.0.1:18080/api/v1/auth/login -H 'content-type: application/json' \
  -d '{"login":"nobody{}","password":"wrong password"}' | sort | uniq -c | awk '{printf "  %s answered %s\n", $1, $2}'
grep VmHWM "/proc/$users_pid/status" | awk '{printf "after:  VmHWM %.1f MiB\n", $2/1024}'
