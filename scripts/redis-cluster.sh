#!/usr/bin/env bash
# A six-node Redis Cluster (three masters, three replicas) on loopback
# ports, from the installed redis-server, for the tests' cluster runs:
#   bash scripts/redis-cluster.sh start   # idempotent; waits for cluster_state:ok
#   bash scripts/redis-cluster.sh stop
# Ports REDIS_CLUSTER_PORT .. +5 (default 7101..7106); data under
# REDIS_CLUSTER_DIR (default ${TMPDIR:-/tmp}/platform-redis-cluster; nothing is
# kept across restarts).
set -euo pipefail
FIRST=${REDIS_CLUSTER_PORT:-7101}
DIR=${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/platform-redis-cluster}
ports=$(seq "$FIRST" $((FIRST + 5)))

answers() { redis-cli -p "$1" ping >/dev/null 2>&1; }
healthy() { redis-cli -p "$FIRST" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

start() {
  if answers "$FIRST" && healthy; then
    return 0
  fi
  stop
  rm -rf "$DIR"
  for port in $ports; do
    mkdir -p "$DIR/$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
      --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
      --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 \
      --save "" --appendonly no \
      --dir "$DIR/$port" --logfile "$DIR/$port/redis.log"
  done
  for port in $ports; do
    for _ in $(seq 1 50); do answers "$port" && break; sleep 0.1; done
  done
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 1 100); do
    healthy && { echo "Redis Cluster up on 127.0.0.1:$FIRST-$((FIRST + 5))"; return 0; }
    sleep 0.1
  done
  echo "FATAL: the Redis Cluster did not become healthy" >&2
  exit 1
}

stop() {
  for port in $ports; do
    timeout 3 redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
