#!/usr/bin/env bash
# The jobs issue's figures, in one run on the local RabbitMQ:
#
#  1. No-op jobs per second end to end (enqueue with a confirm -> handler ->
#     ack), from 32 publishers, 64 running at once:
#       floor     lapin alone: publish with confirms, consume with acks
#       memory    JobQueue on RabbitMQ, jobs' records in the process
#       postgres  JobQueue on RabbitMQ, jobs' records in PostgreSQL
#       celery    Celery 5.4 (PyPI), same broker, confirms, late acks,
#                 prefork with 2 processes
#     Goal: memory and postgres >= 0.8x floor, >= 5x celery.
#  2. p99 enqueue-to-start latency at half of each one's peak (open loop).
#
#   bash bench/jobs.sh            # ROUNDS=3 JOBS=20000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-20000}
CELERY_JOBS=${CELERY_JOBS:-5000}
VENV=${VENV:-$HOME/.cache/platform-tools/celery-venv}

cargo build --release -q -p platform-bench --bin jobs-rate
bin=${CARGO_TARGET_DIR:-target}/release/jobs-rate
if [ ! -x "$VENV/bin/celery" ]; then
  echo "installing Celery into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "celery==5.4.0" "redis==5.2.1"
fi

rate_of() { sed -n 's/.*rate=\([0-9]*\).*/\1/p'; }
declare -A peak
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round"
  for mode in floor memory postgres; do
    line=$("$bin" "$mode" peak "$JOBS" 32 64)
    echo "$line"
    peak[$mode]=$(echo "$line" | rate_of)
  done
  (cd bench/celery && "$VENV/bin/celery" -A noop_tasks worker --concurrency=2 \
    --loglevel=WARNING >/dev/null 2>&1 & echo $! >/tmp/bench-celery.pid)
  sleep 4
  (cd bench/celery && "$VENV/bin/python" produce.py "$CELERY_JOBS")
  kill "$(cat /tmp/bench-celery.pid)" 2>/dev/null || true
  wait 2>/dev/null || true
done
echo "## latency at half the last round's peak (5 s each)"
for mode in floor memory postgres; do
  "$bin" "$mode" latency $(( ${peak[$mode]} / 2 )) 5 64
done
