#!/usr/bin/env bash
# The quality search on a film-length file: `--target-vmaf` against the full encode it
# precedes and against ab-av1's crf-search, on one real film of at least an hour.
#
# The film: the 10-minute 720p Big Buck Bunny (H.264 1280x720 24 fps and AAC, 596.5 s, real
# footage, `moviepy_10_minutes/resources/bbb.mp4` in moviepy 2.2.1's sdist, which
# `scripts/corpus.sh --large` fetches) played LOOPS times in a row (-stream_loop) and cut at
# FILM_SECS, stream-copied: no re-encode, so the source is the original's own H.264.
#
# Measured, each with its wall-clock seconds and its CPU seconds (user + system, children
# included; a shared machine's load inflates the first, hardly the second):
#   ours     media-converter --file FILM --target-vmaf T --preset P --min-savings 0: the search
#            alone, the run stopped with SIGINT as soon as its `searched` event appears
#            (bench/search-only.sh; a high --min-savings would end the search at its first
#            trial that shows the film cannot shrink enough, not measure it whole); the
#            `searched` event gives the quality found, the trials, the predicted score and the
#            search's own seconds;
#   stretch  the full encode (libx265, preset P, the quality found, video alone, the same
#            ffmpeg command as bench/quality.sh) of a STRETCH_SECS stretch from the middle of
#            the 10-minute loop, timed, and extrapolated LINEARLY to the whole film: a full encode of an
#            hour of 720p at preset medium takes hours on two shared cores. The table says
#            "extrapolated";
#   ab-av1   ab-av1 crf-search on the whole film, same encoder, preset and target, VMAF at
#            native resolution (--vmaf-scale none), its sample cache off; stopped after
#            AB_LIMIT seconds if it has not finished (the table then says how long it ran);
#            --max-encoded-percent AB_MAX_PERCENT: at 100 ab-av1 gives up once a trial shows
#            the film would not shrink (as our search ends early), 1000 measures its whole search.
#
# Usage: bench/quality-film.sh [TARGET [PRESET]]          (default 95, medium)
# Environment: FILM_SECS (3600), STRETCH_SECS (300), KEEP_WORK (1: keep the logs), AB_LIMIT (3600),
# AB_MAX_PERCENT (100), OUT (quality-film.tsv)
# Needs: scripts/ffmpeg-6.sh, scripts/corpus.sh --large, ab-av1 (as bench/quality.sh finds
# or installs it), GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
target=${1:-95}
preset=${2:-medium}
film_secs=${FILM_SECS:-3600}
stretch_secs=${STRETCH_SECS:-300}
ab_limit=${AB_LIMIT:-3600}
out=${OUT:-$PWD/quality-film.tsv}

ff6=$(scripts/ffmpeg-6.sh)
export PATH="$ff6:$PATH"
bin=${BIN:-$repo/target/debug/media-converter}
[ -x "$bin" ] || cargo build --quiet
ab=$(scripts/ab-av1.sh)
# KEEP_WORK=1 keeps the work folder (the film, every log) and names it.
work=$(mktemp -d)
if [ "${KEEP_WORK:-}" = 1 ]; then
  echo "bench: work folder $work (kept)" >&2
else
  trap 'rm -rf "$work"' EXIT
fi

# The 10-minute film, which `scripts/corpus.sh --large` fetches (and checks) as bbb.mp4.
scripts/corpus.sh --large >/dev/null
bbb=$(scripts/corpus.sh --dir)/bbb.mp4
one=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$bbb")
loops=$(python3 -c "import math,sys; print(math.ceil($film_secs / $one))")
mkdir -p "$work/lib"
film=$work/lib/film.mp4
ffmpeg -hide_banner -nostdin -v error -y -stream_loop $((loops - 1)) -i "$bbb" \
  -map 0 -c copy -t "$film_secs" "$film"
touch -d '1 hour ago' "$film"
duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$film")
size=$(stat -c %s "$film")
echo "bench: film of $duration s ($size bytes): bbb.mp4 ($one s) x $loops, stream-copied" >&2

# Runs a command under GNU time; prints "wall user+system" seconds into $1.
timed() {
  local into=$1
  shift
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" || true
  tail -n 1 "$work/time" | awk '{ printf "%s %.1f\n", $1, $2 + $3 }' >"$into"
}
json() { python3 -c 'import json,sys; e=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"e": e}))' "$1" "$2"; }

# Ours: the search alone.
echo "bench: ours: --target-vmaf $target --preset $preset" >&2
timed "$work/ours.time" bench/search-only.sh "$work/ours.jsonl" "$work/ours.err" \
  "$bin" --file "$film" --target-vmaf "$target" --preset "$preset" \
  --min-savings 0 --ffmpeg "$ff6/ffmpeg" --ffprobe "$ff6/ffprobe" --json
searched=$(grep '"event":"searched"' "$work/ours.jsonl" | head -n 1 || true)
[ -n "$searched" ] || { echo "bench: no search: $(tail -n 5 "$work/ours.err")" >&2; exit 1; }
q=$(json "$searched" 'e["quality"]')
read -r ours_wall ours_cpu <"$work/ours.time"
ours_search=$(json "$searched" '"%.1f" % e["seconds"]')
echo "bench: ours: $ours_wall s wall, $ours_cpu s CPU: $searched" >&2

# The full encode, on a stretch from the middle of one loop (the film's middle may be a
# loop's end credits and the next one's opening sky, both easier than the rest), extrapolated.
start=$(python3 -c "print(max(0, ($one - $stretch_secs) / 2))")
echo "bench: full encode of $stretch_secs s from $start s at CRF $q" >&2
timed "$work/stretch.time" ffmpeg -hide_banner -nostdin -v error -y -ss "$start" -t "$stretch_secs" \
  -i "$film" -map 0:v:0 -c:v libx265 -preset "$preset" -crf "$q" -x265-params log-level=error \
  -pix_fmt yuv420p "$work/stretch.mkv"
read -r stretch_wall stretch_cpu <"$work/stretch.time"
scale=$(python3 -c "print($duration / $stretch_secs)")
full_wall=$(python3 -c "print('%.0f' % ($stretch_wall * $scale))")
full_cpu=$(python3 -c "print('%.0f' % ($stretch_cpu * $scale))")
echo "bench: stretch: $stretch_wall s wall, $stretch_cpu s CPU; film extrapolated: $full_wall s wall, $full_cpu s CPU" >&2

# ab-av1 on the whole film, with a limit.
echo "bench: ab-av1 crf-search (at most $ab_limit s)" >&2
mkdir -p "$work/ab"
timed "$work/ab.time" timeout "$ab_limit" "$ab" crf-search -i "$film" -e libx265 \
  --preset "$preset" --min-vmaf "$target" --vmaf-scale none --max-encoded-percent "${AB_MAX_PERCENT:-100}" \
  --cache false --stdout-format json --temp-dir "$work/ab" >"$work/ab.json" 2>"$work/ab.err"
read -r ab_wall ab_cpu <"$work/ab.time"
echo "bench: ab-av1: $ab_wall s wall, $ab_cpu s CPU: $(tail -n 1 "$work/ab.json" 2>/dev/null)" >&2
ab_line=$(tail -n 1 "$work/ab.json" || true)
if [ -n "$ab_line" ] && [ "$(json "$ab_line" '"crf" in e')" = True ]; then
  ab_crf=$(json "$ab_line" '"%.1f" % e["crf"]')
  ab_pred=$(json "$ab_line" '"%.2f" % e.get("mean_score", e.get("vmaf", 0))')
else
  ab_crf="none after $ab_wall s"
  ab_pred=-
  echo "bench: ab-av1 gave no CRF: $(tail -n 3 "$work/ab.err")" >&2
fi

printf 'target\tpreset\tduration\tsource_bytes\tloops\tours_quality\tours_predicted\tours_predicted_bytes\tours_trials\tours_sample_secs\tours_search_s\tours_wall_s\tours_cpu_s\tstretch_s\tstretch_wall_s\tstretch_cpu_s\tfull_wall_s_extrapolated\tfull_cpu_s_extrapolated\tab_crf\tab_predicted\tab_wall_s\tab_cpu_s\n' >"$out"
printf '%s\t%s\t%.1f\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
  "$target" "$preset" "$duration" "$size" "$loops" "$q" "$(json "$searched" 'e["predicted_score"]')" \
  "$(json "$searched" 'e["predicted_bytes"]')" "$(json "$searched" 'e["trials"]')" \
  "$(json "$searched" 'e["sample_secs"]')" "$ours_search" "$ours_wall" "$ours_cpu" "$stretch_secs" \
  "$stretch_wall" "$stretch_cpu" "$full_wall" "$full_cpu" "$ab_crf" "$ab_pred" "$ab_wall" "$ab_cpu" >>"$out"

python3 - "$out" <<'EOF'
import csv, sys
r = next(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
f = float
print(f"VMAF target {r['target']}, libx265 preset {r['preset']}, film of {f(r['duration']) / 60:.1f} min "
      f"({r['loops']} x bbb.mp4, stream-copied, {int(r['source_bytes']):,} bytes)\n")
print("| | quality | predicted VMAF | trials | wall s | CPU s | search / full encode (wall, CPU) |")
print("|---|---|---|---|---:|---:|---|")
full_w, full_c = f(r["full_wall_s_extrapolated"]), f(r["full_cpu_s_extrapolated"])
print(f"| ours: search ({r['ours_sample_secs']} s of samples) | {r['ours_quality']} | {r['ours_predicted']} | {r['ours_trials']} "
      f"| {f(r['ours_wall_s']):.0f} | {f(r['ours_cpu_s']):.0f} | {f(r['ours_wall_s']) / full_w:.1%}, {f(r['ours_cpu_s']) / full_c:.1%} |")
ab = r["ab_crf"]
print(f"| ab-av1 crf-search | {ab} | {r['ab_predicted']} | | {f(r['ab_wall_s']):.0f} | {f(r['ab_cpu_s']):.0f} "
      f"| {f(r['ab_wall_s']) / full_w:.1%}, {f(r['ab_cpu_s']) / full_c:.1%} |")
print(f"| full encode at the quality found: {r['stretch_s']} s measured ({f(r['stretch_wall_s']):.0f} s wall, "
      f"{f(r['stretch_cpu_s']):.0f} s CPU), extrapolated | | | | {full_w:.0f} | {full_c:.0f} | |")
EOF
