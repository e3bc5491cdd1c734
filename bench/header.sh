#!/usr/bin/env bash
# header.sh - the native header reader against ffprobe on the same files.
#
# Usage: bench/header.sh [DIR] [JOBS]
#
# With DIR, measures the media files under it (a real library, the corpus). Without, makes
# a synthetic library with bench/make-library.sh (1,000 hard links to four tiny clips:
# H.264 mkv, HEVC mkv, MPEG-4 avi, H.264 mp4, all four of kinds the native reader knows)
# and removes it afterwards. JOBS defaults to the core count.
# The page cache is left as it is: both readers see the same warm or cold files.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-}
jobs=${2:-$(nproc)}
if [ -z "$dir" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  dir="$work/library"
  "$repo/bench/make-library.sh" "$dir" 10 100 >/dev/null
fi
cargo build --quiet --release --example header_bench --manifest-path "$repo/Cargo.toml"
"$repo/target/release/examples/header_bench" "$dir" "$jobs"
