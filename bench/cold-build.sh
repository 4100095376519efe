#!/usr/bin/env bash
# Cold release build of one service (default: the notifications stub) in
# an empty target directory, with crates already downloaded: what a
# service's own dependency set costs on this machine. Prints the seconds
# and the number of distinct crates in its normal dependency tree.
#
#   bash bench/cold-build.sh [package]
#
# To compare against another commit, run it in a checkout of that commit
# (`git worktree add /tmp/before <rev>`).
set -euo pipefail
cd "$(dirname "$0")/.."
package=${1:-notifications}
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
cargo fetch --quiet
start=$(date +%s)
CARGO_TARGET_DIR=$target CARGO_INCREMENTAL=0 cargo build --quiet --release -p "$package"
end=$(date +%s)
crates=$(cargo tree -p "$package" -e normal --prefix none | sort -u | wc -l)
echo "$package: cold release build $((end - start)) s, $crates crates"
