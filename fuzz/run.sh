#!/usr/bin/env bash
# run.sh - fuzzes the native header reader for SECONDS (default 60), seeded with real clips.
#
# Usage: fuzz/run.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer's flags need a nightly compiler,
# which RUSTC_BOOTSTRAP=1 stands in for on a stable toolchain. The seeds are tiny clips of
# each container the reader knows, made by the real ffmpeg. A crash leaves its input in
# fuzz/artifacts/header/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
seeds=corpus/header
mkdir -p "$seeds"
if [ -z "$(ls -A "$seeds")" ]; then
  src=(-f lavfi -i testsrc2=s=64x64:r=10:d=0.3 -f lavfi -i sine=d=0.3)
  for out in h264.mkv h264.mp4 h264.mov vp9.webm; do
    codec=libx264
    [ "$out" = vp9.webm ] && codec=libvpx-vp9
    ffmpeg -hide_banner -nostdin -v error -y "${src[@]}" -c:v "$codec" "$seeds/$out"
  done
  ffmpeg -hide_banner -nostdin -v error -y "${src[@]}" -c:v libx265 -x265-params log-level=error \
    -pix_fmt yuv420p10le -color_trc smpte2084 -color_primaries bt2020 -colorspace bt2020nc \
    -tag:v hvc1 "$seeds/hevc10.mp4"
fi
# AVI came later than the others: seeded into a corpus made before it too.
if [ ! -e "$seeds/mpeg4.avi" ]; then
  ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i testsrc2=s=64x64:r=10:d=0.3 \
    -f lavfi -i sine=d=0.3 -c:v mpeg4 -c:a libmp3lame "$seeds/mpeg4.avi"
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run header "$seeds" -- \
  -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=1024 -print_final_stats=1
