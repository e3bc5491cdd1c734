#!/usr/bin/env bash
# Measures what media-converter costs on top of the ffmpeg it drives.
#
# One 10 s 640x360 H.264 clip is converted, in alternation, RUNS times each by:
#   bare    the exact ffmpeg encode command media-converter runs (captured from `-v`);
#   replay  every command media-converter runs for the file (probe, encode, verification),
#           replayed from the same capture, one after another;
#   tool    media-converter --file itself.
# tool/bare is the whole price of safety (verification included: target < 1.15);
# tool/replay is the orchestration alone (target < 1.03).
#
# Usage: bench/transcode.sh [PRESET]   (default medium; RUNS=5 to change the count)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-medium}
runs=${RUNS:-5}

cargo build --release --quiet
bin=$PWD/target/release/media-converter
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

ffmpeg -hide_banner -nostdin -v error -f lavfi -i testsrc2=s=640x360:r=24:d=10 \
  -f lavfi -i sine=d=10 -c:v libx264 -preset ultrafast -crf 12 -c:a aac source.mkv

# A fresh original each time, and no cache: every run pays for its probe, as a first run does.
fresh_copy() {
  rm -f clip.mkv .clip.mkv.* .mediabox_cache.json
  cp source.mkv clip.mkv
  touch -d '1 hour ago' clip.mkv
}
now() { date +%s.%N; }

# Warm-up, and the capture of every command the tool runs.
fresh_copy
"$bin" --file clip.mkv --preset "$preset" -v 2>trace.log >/dev/null
grep '^running: ' trace.log | sed 's/^running: //' >all.sh
grep -- '-progress pipe:1' all.sh >encode.sh
[ -s encode.sh ] || { echo "no encode command captured; see $work/trace.log" >&2; exit 1; }

declare -a bare replay tool
for ((i = 0; i < runs; i++)); do
  fresh_copy; t0=$(now); bash encode.sh >/dev/null 2>&1; t1=$(now)
  bare+=("$(echo "$t1 - $t0" | bc)")
  fresh_copy; t0=$(now); bash all.sh >/dev/null 2>&1; t1=$(now)
  replay+=("$(echo "$t1 - $t0" | bc)")
  fresh_copy; t0=$(now); "$bin" --file clip.mkv --preset "$preset" -q >/dev/null 2>&1; t1=$(now)
  tool+=("$(echo "$t1 - $t0" | bc)")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mb=$(median "${bare[@]}"); mr=$(median "${replay[@]}"); mt=$(median "${tool[@]}")
echo "| preset $preset, $runs runs, median | seconds | ratio to bare ffmpeg |"
echo "|---|---|---|"
printf '| bare ffmpeg encode | %.2f | 1.000 |\n' "$mb"
printf '| every command replayed (probe + encode + verify) | %.2f | %.3f |\n' "$mr" "$(echo "$mr / $mb" | bc -l)"
printf '| media-converter --file | %.2f | %.3f |\n' "$mt" "$(echo "$mt / $mb" | bc -l)"
printf '\norchestration alone (tool / replay): %.3f\n' "$(echo "$mt / $mr" | bc -l)"
