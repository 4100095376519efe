#!/usr/bin/env bash
# The gateway against nginx, in one run, in front of the same small HTTP
# upstream (bench/src/bin/bare_http.rs, one worker):
#
#  (a) the gateway: HTTP pass-through with rate limiting in Redis (one Lua
#      script per batch of concurrent requests from a client) and the
#      circuit breaker on; one worker;
#  (b) nginx (Debian package): proxy_pass with upstream keep-alive and
#      limit_req; one worker process.
#
#  (c) for scale, bench/src/bin/bare_proxy.rs: hyper on one thread, each
#      client connection paired with its own upstream connection, nothing
#      else — the floor for any Rust proxy on this stack.
#
# Both limits are set far above the offered load so every request is
# decided and none refused. wrk (Debian) drives each in turn, A B C A B C.
# Then REST→gRPC: `GET /api/v1/users/{id}` through the gateway to the users
# service (SQLite, cache warm).
#
#   bash bench/gateway-vs-nginx.sh      # ROUNDS=3 DURATION=10s CONNECTIONS=32
set -euo pipefail
# Every process of the run signs and checks service tokens with it.
export PLATFORM_SERVICE_SECRET=${PLATFORM_SERVICE_SECRET:-bench-service-secret-of-at-least-32-bytes}
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "installing $tool (Debian package)"; apt-get install -y -qq "$tool" >/dev/null; }
done

cargo build --release -q -p gateway -p users -p platform-bench
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/bare-http" 127.0.0.1:19100 1 &
pids+=($!)
"$bin/bare-proxy" 127.0.0.1:19200 127.0.0.1:19100 &
pids+=($!)

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  limit_req_zone \$binary_remote_addr zone=api:10m rate=1000000r/s;
  upstream echo { server 127.0.0.1:19100; keepalive 64; }
  server {
    listen 127.0.0.1:18090;
    location / {
      limit_req zone=api burst=1000000 nodelay;
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"

USERS_HTTP_ADDR=127.0.0.1:18091 USERS_GRPC_ADDR=127.0.0.1:15091 USERS_HTTP_WORKERS=1 \
USERS_DATABASE_URL="sqlite://$work/users.db" USERS_CACHE_DIR="$work/cache" "$bin/users" >/dev/null &
pids+=($!)
GATEWAY_HTTP_ADDR=127.0.0.1:18080 GATEWAY_HTTP_WORKERS=1 \
GATEWAY_PASSTHROUGH=/api/v1/echo=echo \
PLATFORM_STATIC_SERVICES=echo=127.0.0.1:19100,users=127.0.0.1:18091/15091 \
GATEWAY_REDIS_URL="$REDIS" GATEWAY_RATE_LIMIT_REQUESTS=100000000 GATEWAY_RATE_LIMIT_PERIOD=1s \
"$bin/gateway" >/dev/null &
pids+=($!)

for url in http://127.0.0.1:18090/api/v1/echo/ping http://127.0.0.1:18080/api/v1/echo/ping http://127.0.0.1:18091/health/ready; do
  for _ in $(seq 1 100); do curl -fs "$url" >/dev/null && break; sleep 0.1; done
done
curl -fs -X POST http://127.0.0.1:18080/api/v1/users -H 'content-type: application/json' \
  -d '{"username":"bench","email":"bench@example.com","password":"benchmark password"}' >/dev/null
curl -fs http://127.0.0.1:18080/api/v1/users/1 >/dev/null

run() { # name url -> "req/s p99"
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2" |
    awk -v name="$1" '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "%s %s %s non2xx=%s\n", name, rps, p99, bad+0}'
}

echo "round name req_per_s p99"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round $(run gateway http://127.0.0.1:18080/api/v1/echo/ping)"
  echo "$round $(run nginx http://127.0.0.1:18090/api/v1/echo/ping)"
  echo "$round $(run bare-proxy http://127.0.0.1:19200/api/v1/echo/ping)"
done
echo "== REST to gRPC: GET /api/v1/users/1 through the gateway"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round $(run rest-grpc http://127.0.0.1:18080/api/v1/users/1)"
done
