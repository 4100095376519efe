#!/usr/bin/env bash
# Makes sure the servers the integration tests talk to answer: PostgreSQL,
# Redis and RabbitMQ on their standard loopback ports. A server that does not
# answer is started with the machine's own start command and waited for.
# Under CI=true a server that still does not answer fails the run loudly.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_postgres() { pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start; }
start_redis() {
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_rabbitmq() { rabbitmq-server -detached; }

ensure() {
  local name=$1 port=$2 start=$3
  if answers "$port"; then
    return 0
  fi
  echo "$name is not answering on 127.0.0.1:$port; starting it"
  "$start" || echo "starting $name failed"
  for _ in $(seq 1 90); do
    answers "$port" && { echo "$name is up"; return 0; }
    sleep 1
  done
  if [ "${CI:-}" = "true" ]; then
    echo "FATAL: $name did not come up on 127.0.0.1:$port" >&2
    exit 1
  fi
  echo "warning: $name is not available; tests that need it will fail" >&2
}

ensure PostgreSQL 5432 start_postgres
ensure Redis 6379 start_redis
ensure RabbitMQ 5672 start_rabbitmq
# The tests' Redis Cluster (six nodes on 7101-7106), started by the
# project's own script; under CI=true a cluster that does not form fails.
if ! bash "$(dirname "$0")/redis-cluster.sh" start; then
  if [ "${CI:-}" = "true" ]; then
    echo "FATAL: the Redis Cluster did not come up" >&2
    exit 1
  fi
  echo "warning: the Redis Cluster is not available; tests that need it will fail" >&2
fi
