#!/usr/bin/env bash
# The embedded search engine (tantivy, through the search crate) against
# SQLite FTS5 (Python's sqlite3) on the same generated posts, in one run.
# Load generator: bench/src/bin/search_load.rs; the peer:
# bench/search-fts5/fts5.py.
#
#  1. Indexing: DOCS (100 000) posts into each, in batches of 500;
#     documents per second.
#  2. Queries: one caller each for SECONDS_ (10) s, fuzzy two-term queries
#     (each word misspelt by one letter) on the engine with typo tolerance,
#     facets, totals and highlights; FTS5 its best equivalent (the words
#     spelt right, the last a prefix, BM25 with the title weighing twice).
#     Throughput, p50, p99.
#  3. Index lag: the users service (release binary, SQLite) writes RATE
#     (50) posts a second for LAG_SECONDS (20) through its outbox to Kafka
#     (librdkafka's mock cluster, the broker process the tests share); the
#     search service (release binary) consumes them into the index of
#     part 1. From each create's answer to the post being searchable.
#
#   bash bench/search-vs-fts5.sh       # DOCS=100000 SECONDS_=10 RATE=50
#   PARTS="index query" bash bench/search-vs-fts5.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DOCS=${DOCS:-100000}
SECONDS_=${SECONDS_:-10}
RATE=${RATE:-50}
LAG_SECONDS=${LAG_SECONDS:-20}
PARTS=${PARTS:-index query lag}
export PLATFORM_SERVICE_SECRET=${PLATFORM_SERVICE_SECRET:-bench-service-secret-of-at-least-32-bytes}

cargo build --release -q -p platform-bench --bin search-load
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
part() { [[ " $PARTS " == *" $1 "* ]]; }

"$bin/search-load" generate "$DOCS" "$work/docs.jsonl" "$work/queries.tsv"
echo "== corpus: $DOCS posts, $(du -h "$work/docs.jsonl" | cut -f1) of JSON lines"
echo "== indexing"
printf 'tantivy:     '; "$bin/search-load" index "$work/index" "$work/docs.jsonl"
printf 'sqlite fts5: '; python3 bench/search-fts5/fts5.py index "$work/fts5.db" "$work/docs.jsonl"
echo "index on disk: tantivy $(du -sh "$work/index" | cut -f1), fts5 $(du -sh "$work/fts5.db" | cut -f1)"

if part query; then
echo "== queries: one caller, ${SECONDS_}s each"
printf 'as bulk-loaded: '; "$bin/search-load" query "$work/index" "$work/queries.tsv" "$SECONDS_"
# What a reindex publishes: its generation merged into one segment.
"$bin/search-load" optimize "$work/index"
printf 'as a reindex leaves it: '; "$bin/search-load" query "$work/index" "$work/queries.tsv" "$SECONDS_"
python3 bench/search-fts5/fts5.py query "$work/fts5.db" "$work/queries.tsv" "$SECONDS_"
fi

if part lag; then
cargo build --release -q -p users -p search
cargo build --release -q -p test-support --features kafka-broker --bin kafka-mock-cluster
"$bin/kafka-mock-cluster" >"$work/kafka" &
pids+=("$!")
for _ in $(seq 100); do [ -s "$work/kafka" ] && break; sleep 0.1; done
brokers=$(head -1 "$work/kafka")
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
USERS_HTTP_ADDR=127.0.0.1:18350 USERS_GRPC_ADDR=127.0.0.1:18351 USERS_ADMIN_ADDR=127.0.0.1:18352 \
  USERS_DATABASE_URL="sqlite://$work/users.db" PLATFORM_KAFKA_BROKERS=$brokers \
  PLATFORM_LOG=warn "$bin/users" >/dev/null &
pids+=("$!")
# The mock cluster answers a fetch that found nothing only when its wait
# runs out (a real broker answers as data arrives): 10 ms, as in
# bench/notifications-vs-sse.sh.
SEARCH_HTTP_ADDR=127.0.0.1:18360 SEARCH_GRPC_ADDR=127.0.0.1:18361 SEARCH_ADMIN_ADDR=127.0.0.1:18362 \
  SEARCH_INDEX_URL="$work/index" SEARCH_DATABASE_URL="sqlite://$work/search-jobs.db" \
  PLATFORM_KAFKA_BROKERS=$brokers PLATFORM_KAFKA_FETCH_WAIT_MAX=10ms \
  PLATFORM_LOG=warn "$bin/search" >/dev/null &
search_pid=$!
pids+=("$search_pid")
wait_port 18351; wait_port 18361
echo "== index lag: $RATE posts/s for ${LAG_SECONDS}s into the $DOCS-post index"
"$bin/search-load" lag http://127.0.0.1:18351 http://127.0.0.1:18361 "$RATE" "$LAG_SECONDS"
curl -s http://127.0.0.1:18362/metrics | python3 bench/search-fts5/lag_histogram.py
echo "search service peak RSS: $(grep VmHWM /proc/$search_pid/status | awk '{print $2, $3}')"
fi
