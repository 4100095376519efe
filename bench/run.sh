#!/usr/bin/env bash
# Runs every benchmark in bench/. Each script prints its own figures; the
# numbers quoted in BENCHMARKS.md come from these commands.
set -euo pipefail
cd "$(dirname "$0")"
for script in ./*.sh; do
  [ "$script" = ./run.sh ] && continue
  echo "== $script"
  bash "$script"
done
