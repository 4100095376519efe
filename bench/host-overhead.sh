#!/usr/bin/env bash
# What the service host costs per request: `GET /health/live` on a real
# platform service (users) versus bare actix-web serving the same body with
# the same worker count. The difference is the host's middleware: request
# metrics (counter + three histograms), a tracing span per request and W3C
# trace-context extraction. The service runs twice: with the default log
# level (`info`) and with `warn`. With no OTLP endpoint configured, a
# request gets a span only when it carries `traceparent`; the
# `service-info-traced` row sends one, so it pays for the span.
#
# Both servers get one HTTP worker; wrk gets one thread, so server and load
# generator each have a core of this 2-core machine. Rounds alternate A B A B
# so drift in machine speed hits both alike.
#
#   bash bench/host-overhead.sh            # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=20s bash bench/host-overhead.sh
set -euo pipefail
# Every process of the run signs and checks service tokens with it.
export PLATFORM_SERVICE_SECRET=${PLATFORM_SERVICE_SECRET:-bench-service-secret-of-at-least-32-bytes}
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null; }

cargo build --release -q -p users -p platform-bench
target=${CARGO_TARGET_DIR:-target}/release

USERS_HTTP_ADDR=127.0.0.1:18081 USERS_GRPC_ADDR=127.0.0.1:15051 USERS_HTTP_WORKERS=1 \
  "$target/users" >/dev/null &
service_pid=$!
USERS_HTTP_ADDR=127.0.0.1:18082 USERS_GRPC_ADDR=127.0.0.1:15052 USERS_HTTP_WORKERS=1 \
  USERS_LOG=warn "$target/users" >/dev/null &
quiet_pid=$!
"$target/bare-http" 127.0.0.1:19000 1 &
bare_pid=$!
trap 'kill $service_pid $quiet_pid $bare_pid 2>/dev/null || true' EXIT

for url in http://127.0.0.1:18081/health/live http://127.0.0.1:18082/health/live http://127.0.0.1:19000/health/live; do
  for _ in $(seq 1 100); do curl -fs "$url" >/dev/null && break; sleep 0.1; done
done

run() { # name url [wrk args] -> "req/s p99"
  local name=$1 url=$2
  shift 2
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" |
    awk -v name="$name" '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} END {printf "%s %s %s\n", name, rps, p99}'
}

echo "round name req_per_s p99"
for round in $(seq 1 "$ROUNDS"); do
  echo "$round $(run service-info http://127.0.0.1:18081/health/live)"
  echo "$round $(run service-info-traced http://127.0.0.1:18081/health/live \
    -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')"
  echo "$round $(run service-warn http://127.0.0.1:18082/health/live)"
  echo "$round $(run bare http://127.0.0.1:19000/health/live)"
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "RSS after load (KiB): service-info $(rss $service_pid), service-warn $(rss $quiet_pid), bare $(rss $bare_pid)"
