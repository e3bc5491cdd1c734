#!/usr/bin/env bash
# The encode time that predicting saves: a `--target-vmaf` run over a folder of real files of
# which several will not shrink, against the full encodes those files would have cost.
#
# A folder of the real-media corpus (scripts/corpus.sh): files the default run keeps as
# `not_smaller` (lean H.264, H.263, MPEG-2, MS-MPEG-4 at small sizes) and files it converts.
#   run      media-converter --dir LIB --target-vmaf T --preset P (the default --min-savings
#            10), timed (wall-clock and CPU seconds, children included): per file, the
#            search's seconds (`searched`), and which files it skipped as
#            `predicted_not_smaller` before the long encode;
#   encodes  each skipped file's full encode, the one a run without the prediction would
#            have made at the quality its search found: libx265, preset P, the video alone
#            (as bench/quality.sh encodes), timed the same way, once; its video bytes plus the
#            source's other streams (copied as they are) against the original say whether the
#            file would indeed not have shrunk enough.
# Prints a Markdown table (the README's) and keeps the raw figures in $OUT (default
# ./quality-skips.tsv).
#
# Usage: bench/quality-skips.sh [TARGET [PRESET [FILE...]]]   (default 95, medium, the set below)
# Needs: scripts/ffmpeg-6.sh, scripts/corpus.sh, GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
target=${1:-95}
preset=${2:-medium}
shift $(($# > 2 ? 2 : $#))
if [ $# -gt 0 ]; then
  files=("$@")
else
  files=(bikes.mp4 flashmob.mkv bigbuckbunny.mp4 carphone_distorted.mp4 demo.3gp demo.asf
    demo.f4v demo.vob quicktime.mp4 carphone_pristine.mp4 xine-ui_logo.mpg)
fi
scripts/corpus.sh >/dev/null
corpus=$(scripts/corpus.sh --dir)
ff6=$(scripts/ffmpeg-6.sh)
export PATH="$ff6:$PATH"
bin=${BIN:-$repo/target/debug/media-converter}
[ -x "$bin" ] || cargo build --quiet
out=${OUT:-$PWD/quality-skips.tsv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs a command under GNU time; writes "wall cpu" seconds (cpu: user + system) into $1.
timed() {
  local into=$1
  shift
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" || true
  tail -n 1 "$work/time" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }' >"$into"
}

lib=$work/lib
mkdir -p "$lib"
for name in "${files[@]}"; do
  cp "$corpus/$name" "$lib/"
done
touch -d '1 hour ago' "$lib"/*

echo "bench: --target-vmaf $target --preset $preset on ${#files[@]} files" >&2
timed "$work/run.time" "$bin" --dir "$lib" --target-vmaf "$target" --preset "$preset" \
  --ffmpeg "$ff6/ffmpeg" --ffprobe "$ff6/ffprobe" --json >"$work/run.jsonl" 2>"$work/run.err"
read -r run_wall run_cpu <"$work/run.time"
echo "bench: the run took $run_wall s wall, $run_cpu s CPU" >&2

# Per file: its outcome, search and quality; then each skipped file's full encode.
python3 - "$work/run.jsonl" >"$work/files.tsv" <<'EOF'
import json, os, sys
files = {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    name = os.path.basename(e.get("file") or "")
    if not name:
        continue
    f = files.setdefault(name, {"outcome": "-", "quality": "-", "search_s": "-", "reason": "-", "after": "-", "predicted": "-"})
    if e["event"] == "searched":
        f["quality"] = e.get("quality") if e.get("quality") is not None else "-"
        f["search_s"] = "%.1f" % e["seconds"]
        f["predicted"] = e["predicted_bytes"]
    elif e["event"] == "converted":
        f["outcome"], f["after"] = "converted", e["after_bytes"]
    elif e["event"] == "skipped":
        f["outcome"], f["reason"] = "skipped", e["reason"]
    elif e["event"] == "failed":
        f["outcome"], f["reason"] = "failed", e["error"].replace("\t", " ")[:80]
for name, f in sorted(files.items()):
    print("\t".join(str(x) for x in (name, f["outcome"], f["reason"], f["quality"], f["search_s"], f["after"], f["predicted"])))
EOF

printf 'file\tsource_bytes\tsource_video_bytes\toutcome\treason\tquality\tsearch_s\tafter_bytes\tpredicted_bytes\tfull_encode_video_bytes\tfull_encode_wall_s\tfull_encode_cpu_s\n' >"$out"
while IFS=$'\t' read -r name outcome reason q search after predicted; do
  src=$corpus/$name
  # The video's own bytes, from its packets: the other streams are copied as they are.
  video=$(ffprobe -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$src" |
    awk '{ s += $1 } END { print s + 0 }')
  full_bytes=-; full_wall=-; full_cpu=-
  if [ "$reason" = predicted_not_smaller ] && [ "$q" != - ]; then
    echo "bench: full encode of $name at CRF $q" >&2
    timed "$work/full.time" ffmpeg -hide_banner -nostdin -v error -y -i "$src" -map 0:v:0 \
      -c:v libx265 -preset "$preset" -crf "$q" -x265-params log-level=error -pix_fmt yuv420p \
      "$work/full.mkv"
    read -r full_wall full_cpu <"$work/full.time"
    full_bytes=$(stat -c %s "$work/full.mkv")
    rm -f "$work/full.mkv"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(stat -c %s "$src")" "$video" \
    "$outcome" "$reason" "$q" "$search" "$after" "$predicted" "$full_bytes" "$full_wall" "$full_cpu" >>"$out"
done <"$work/files.tsv"

python3 - "$out" "$target" "$preset" "$run_wall" "$run_cpu" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
target, preset, run_wall, run_cpu = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
print(f"--target-vmaf {target}, libx265 preset {preset}: the run took {run_wall:.0f} s "
      f"({run_cpu:.0f} CPU s) for {len(rows)} files\n")
print("| file | size | outcome | quality found | search | predicted / original | full encode at that quality (wall, CPU) | its file / original |")
print("|---|---:|---|---|---:|---:|---|---:|")
saved_wall = saved_cpu = 0.0
skipped = 0
for r in rows:
    full = "-"
    ratio = "-"
    if r["full_encode_wall_s"] != "-":
        skipped += 1
        saved_wall += float(r["full_encode_wall_s"])
        saved_cpu += float(r["full_encode_cpu_s"])
        full = f"{float(r['full_encode_wall_s']):.1f} s, {float(r['full_encode_cpu_s']):.1f} s"
        # The new video, and every other stream as the source has it.
        whole = int(r["full_encode_video_bytes"]) + int(r["source_bytes"]) - int(r["source_video_bytes"])
        ratio = f"{whole / int(r['source_bytes']):.2f}"
    outcome = r["outcome"] if r["reason"] == "-" else f"{r['outcome']} `{r['reason']}`"
    search = f"{float(r['search_s']):.1f} s" if r["search_s"] != "-" else "-"
    predicted = f"{int(r['predicted_bytes']) / int(r['source_bytes']):.2f}" if r["predicted_bytes"] != "-" else "-"
    print(f"| {r['file']} | {int(r['source_bytes']):,} | {outcome} | {r['quality']} | {search} | {predicted} | {full} | {ratio} |")
if skipped:
    print(f"\n{skipped} files skipped before the long encode: {saved_wall:.0f} s of encoding "
          f"({saved_cpu:.0f} CPU s) not spent, {saved_wall / skipped:.1f} s ({saved_cpu / skipped:.1f} CPU s) "
          f"per skipped file; the run took {run_wall:.0f} s ({run_cpu:.0f} CPU s), so without the "
          f"prediction it would have taken {run_wall + saved_wall:.0f} s ({run_cpu + saved_cpu:.0f} CPU s): "
          f"{saved_wall / (run_wall + saved_wall):.0%} of the wall-clock time and "
          f"{saved_cpu / (run_cpu + saved_cpu):.0%} of the CPU time saved.")
EOF
