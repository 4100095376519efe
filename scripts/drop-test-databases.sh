#!/usr/bin/env bash
# Tests create one PostgreSQL database each (<label>_test_<uuid>) so they can
# run in parallel; this drops those left by earlier runs. Run it only when
# no test is running (make test calls it before the suite).
set -euo pipefail
url=${TEST_DATABASE_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
command -v psql >/dev/null || exit 0
psql "$url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE '%\_test\_%'" 2>/dev/null |
  while read -r db; do
    psql "$url" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
  done
