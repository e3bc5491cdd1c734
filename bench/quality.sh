#!/usr/bin/env bash
# --target-vmaf side by side with ab-av1's crf-search, on real files of the corpus.
#
# For each file, with libx265 at one preset and one VMAF target, on one ffmpeg (the static
# 6.0 with libvmaf of scripts/ffmpeg-6.sh), VMAF at native resolution for both tools
# (ab-av1 with --vmaf-scale none, the convention docs/quality.md names):
#   ours     media-converter --file COPY --target-vmaf T --min-savings 0: the quality found,
#            the predicted score, its trials and search time (the `searched` event), the
#            converted file's size; then on a second copy, stopped with SIGINT as soon as
#            it is searched (bench/search-only.sh): the search's CPU seconds (user and system,
#            every ffmpeg included), which a loaded machine does not inflate as it does the
#            wall;
#   ab-av1   ab-av1 crf-search with the same encoder, preset and target: its CRF (to 0.1),
#            predicted score, wall-clock time and CPU seconds (its sample cache off, so that
#            a second run of this script searches again);
#   encodes  the video alone, with the same ffmpeg command, at our quality, at ab-av1's CRF
#            and at --quality 22: its size, wall-clock time (the full encode the search is
#            measured against) and the whole file's VMAF against the source, every frame.
# Prints a Markdown table (the README's) and keeps the raw figures in $OUT (default
# ./quality-bench.tsv).
#
# Usage: bench/quality.sh [TARGET [PRESET [FILE...]]]   (default 95, medium, the set below)
#
#        bench/quality.sh --neighbours FILE N [TARGET [PRESET]]
#   Seeding from neighbours: N segments of FILE (a corpus file, cut evenly and encoded
#   near-losslessly with x264 CRF 14) in one folder, searched one after another in name
#   order, one --file run each (each starts from a neighbour's result in the folder's
#   cache), against each searched alone in a folder of its own (every run stopped with
#   SIGINT once searched, bench/search-only.sh):
#   the trials and CPU seconds each way, the qualities found and their scores (files up to
#   40 s are searched whole: the score is the whole file's). Prints a Markdown table.
# CONVERT=0 leaves out our conversion of the file (for a long file: its search is measured by the
# search-only run, its size and score by the encode at the quality found, with the same command
# as ab-av1's); Q22_VMAF=0 leaves out the whole-file VMAF of the --quality 22 encode.
# AB_MAX_PERCENT (default 100) is ab-av1's --max-encoded-percent: past it, ab-av1 gives up on a
# file that would grow (as ours skips it, `predicted_not_smaller`); 1000 lets it search to the end.
# Needs: scripts/ffmpeg-6.sh, scripts/corpus.sh, and ab-av1 (AB_AV1, else PATH, else it is
# installed with `cargo install ab-av1 --locked` into ~/.cache/media-converter/ab-av1: a
# few minutes of compiling, once).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
mode=side-by-side
if [ "${1:-}" = --neighbours ]; then
  mode=neighbours
  neighbours_file=$2
  segments=$3
  shift 3
fi
target=${1:-95}
preset=${2:-medium}
shift $(($# > 2 ? 2 : $#))
corpus=$(scripts/corpus.sh --dir)
if [ "$mode" = neighbours ]; then
  files=()
elif [ $# -gt 0 ]; then
  files=("$@")
  # A named file of the large set (the 10-minute bbb.mp4) is fetched with it.
  for name in "${files[@]}"; do
    [ -f "$corpus/$name" ] || { scripts/corpus.sh --large >/dev/null; break; }
  done
else
  files=(bigbuckbunny.mp4 bikes.mp4 flashmob.mkv breakdance.flv demo.f4v)
  scripts/corpus.sh >/dev/null
fi
ff6=$(scripts/ffmpeg-6.sh)
export PATH="$ff6:$PATH"
bin=${BIN:-$repo/target/debug/media-converter}
[ -x "$bin" ] || cargo build --quiet
ab=$(scripts/ab-av1.sh)
out=${OUT:-$PWD/quality-bench.tsv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
# Runs a command, writing the CPU seconds (user and system) it and its children used to $1.
cpu() {
  python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.1f" % (r.ru_utime + r.ru_stime))
sys.exit(rc)' "$@"
}
json() { python3 -c 'import json,sys; e=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"e": e}))' "$1" "$2"; }

if [ "$mode" = neighbours ]; then
  src=$corpus/$neighbours_file
  [ -f "$src" ] || { echo "bench: $src is missing" >&2; exit 1; }
  duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$src")
  length=$(echo "$duration / $segments" | bc -l)
  mkdir -p "$work/folder"
  for i in $(seq 0 $((segments - 1))); do
    ffmpeg -hide_banner -nostdin -v error -y -ss "$(echo "$i * $length" | bc -l)" -i "$src" \
      -t "$length" -map 0:v:0 -c:v libx264 -crf 14 -preset veryfast \
      "$work/folder/part$i.mkv"
    mkdir -p "$work/alone$i"
    cp "$work/folder/part$i.mkv" "$work/alone$i/"
  done
  find "$work" -name '*.mkv' -exec touch -d '1 hour ago' {} +
  search() {
    # Each file stopped once searched, its search kept (a high --min-savings would cut a
    # search short at the first trial that shows the file cannot shrink enough).
    cpu "$1.cpu" bench/search-only.sh "$1.jsonl" "$1.err" "$bin" --file "$2" \
      --target-vmaf "$target" --preset "$preset" --min-savings 0 --ffmpeg "$ff6/ffmpeg" \
      --ffprobe "$ff6/ffprobe" --json || true
  }
  echo "bench: $segments parts of $neighbours_file in one folder" >&2
  for i in $(seq 0 $((segments - 1))); do
    search "$work/seeded$i" "$work/folder/part$i.mkv"
  done
  for i in $(seq 0 $((segments - 1))); do
    echo "bench: part$i.mkv alone" >&2
    search "$work/alone$i" "$work/alone$i/part$i.mkv"
  done
  python3 - "$work" "$segments" "$target" "$preset" "$neighbours_file" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
def events(path):
    return [json.loads(l) for l in open(path) if l.strip()]
def by_file(evs):
    out = {}
    for e in evs:
        name = e.get("file", "").rsplit("/", 1)[-1]
        if e["event"] == "searching" and e["trial"] == 0:
            out.setdefault(name, {})["seed"] = e.get("seeded_from")
        if e["event"] == "searched":
            out.setdefault(name, {})["searched"] = e
    return out
seeded = by_file([e for i in range(n) for e in events(f"{work}/seeded{i}.jsonl")])
print(f"{n} parts of {sys.argv[5]}, VMAF target {sys.argv[3]}, libx265 preset {sys.argv[4]}\n")
print("| part | seeded from | trials | quality | score | alone: trials | quality | score |")
print("|---|---|---|---|---|---|---|---|")
totals = [0, 0]
for i in range(n):
    name = f"part{i}.mkv"
    s = seeded[name]["searched"]
    seed = seeded[name].get("seed")
    a = by_file(events(f"{work}/alone{i}.jsonl"))[name]["searched"]
    totals[0] += s["trials"]; totals[1] += a["trials"]
    origin = f"{seed['file']} ({seed['quality']})" if seed else "-"
    print(f"| {name} | {origin} | {s['trials']} | {s.get('quality')} | {s['predicted_score']:.2f} "
          f"| {a['trials']} | {a.get('quality')} | {a['predicted_score']:.2f} |")
cpu_alone = sum(float(open(f"{work}/alone{i}.cpu").read()) for i in range(n))
cpu_seeded = sum(float(open(f"{work}/seeded{i}.cpu").read()) for i in range(n))
print(f"\ntrials: {totals[0]} in one folder, {totals[1]} alone; CPU seconds (search, probe "
      f"and start-up): {cpu_seeded:.1f} in one folder, {cpu_alone:.1f} alone")
EOF
  exit 0
fi

# The video alone at a CRF, timed: prints "bytes seconds".
encode() {
  local src=$1 crf=$2 dst=$3 t0
  t0=$(now)
  ffmpeg -hide_banner -nostdin -v error -y -i "$src" -map 0:v:0 -c:v libx265 -preset "$preset" \
    -crf "$crf" -x265-params log-level=error -pix_fmt yuv420p "$dst"
  echo "$(stat -c %s "$dst") $(secs "$t0" "$(now)")"
}

# The whole file's VMAF against the source, every frame, native resolution. Both streams'
# times from zero and rounded to their frame slot, as the tool's own scoring does
# (src/quality.rs, ALIGN): Matroska stores times to the millisecond, so frame N of a 24 fps
# encode (N x 41.667 ms, stored 83 ms for 83.333) would otherwise meet the source's frame
# N-1, and the 10-minute bbb.mp4 scored 12 points low.
align='settb=AVTB,setpts=if(gt(FRAME_RATE\,0)\,round((PTS-STARTPTS)*TB*FRAME_RATE)/(FRAME_RATE*TB)\,PTS-STARTPTS)'
vmaf() {
  ffmpeg -hide_banner -nostdin -nostats -i "$1" -i "$2" -lavfi \
    "[0:v]format=yuv420p,${align}[d];[1:v:0]format=yuv420p,${align}[r];[d][r]libvmaf=n_threads=$(nproc)" \
    -f null - 2>&1 | sed -n 's/.*VMAF score: \([0-9.]*\).*/\1/p' | tail -n 1
}

printf 'file\tduration\tours_quality\tours_predicted\tours_achieved\tours_trials\tours_search_s\tab_crf\tab_predicted\tab_achieved\tab_search_s\tfull_encode_s\tours_search_cpu_s\tab_search_cpu_s\tours_video_bytes\tab_video_bytes\tq22_video_bytes\tq22_vmaf\tours_file_bytes\tsource_bytes\n' >"$out"
for name in "${files[@]}"; do
  src=$corpus/$name
  [ -f "$src" ] || { echo "bench: $src is missing" >&2; continue; }
  echo "bench: $name" >&2
  dir=$work/${name%.*}
  mkdir -p "$dir"
  duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$src")

  # Ours: a copy, converted in place.
  : >"$dir/ours.jsonl"
  if [ "${CONVERT:-1}" != 0 ]; then
    cp "$src" "$dir/$name"
    touch -d '1 hour ago' "$dir/$name"
    "$bin" --file "$dir/$name" --target-vmaf "$target" --preset "$preset" --min-savings 0 \
      --ffmpeg "$ff6/ffmpeg" --ffprobe "$ff6/ffprobe" --json >"$dir/ours.jsonl" 2>"$dir/ours.err" || true
  fi
  # The search alone, on a second copy, stopped once searched.
  mkdir -p "$dir/cpu"
  cp "$src" "$dir/cpu/$name"
  touch -d '1 hour ago' "$dir/cpu/$name"
  cpu "$dir/ours.cpu" bench/search-only.sh "$dir/cpu.jsonl" "$dir/cpu.err" "$bin" \
    --file "$dir/cpu/$name" --target-vmaf "$target" --preset "$preset" --min-savings 0 \
    --ffmpeg "$ff6/ffmpeg" --ffprobe "$ff6/ffprobe" --json || true
  grep -q '"event":"searched"' "$dir/cpu.jsonl" ||
    echo "bench: the search-only run of $name ended before its search" >&2
  searched=$(cat "$dir/ours.jsonl" "$dir/cpu.jsonl" | grep '"event":"searched"' | head -n 1)
  converted=$(grep '"event":"converted"' "$dir/ours.jsonl" | head -n 1 || true)
  [ -n "$searched" ] || { echo "bench: no search for $name: $(tail -n 3 "$dir/cpu.err")" >&2; continue; }
  q=$(json "$searched" 'e.get("quality")')
  ours_pred=$(json "$searched" '"%.2f" % e["predicted_score"]')
  trials=$(json "$searched" 'e["trials"]')
  ours_search=$(json "$searched" '"%.1f" % e["seconds"]')
  ours_pred_bytes=$(json "$searched" 'e["predicted_bytes"]')
  ours_file=$([ -n "$converted" ] && json "$converted" 'e["after_bytes"]' || echo -)

  # ab-av1, same ffmpeg (first on PATH), same encoder, preset and target.
  t0=$(now)
  ab_json=$(cd "$dir" && cpu "$dir/ab.cpu" "$ab" crf-search -i "$src" -e libx265 --preset "$preset" \
    --min-vmaf "$target" --vmaf-scale none --max-encoded-percent "${AB_MAX_PERCENT:-100}" --cache false \
    --stdout-format json \
    --temp-dir "$dir" 2>"$dir/ab.err" | tail -n 1) || true
  ab_search=$(secs "$t0" "$(now)")
  # A search that finds no CRF (the file would grow past the input) prints no `crf`.
  if [ -n "$ab_json" ] && [ "$(json "$ab_json" '"crf" in e')" = True ]; then
    ab_crf=$(json "$ab_json" '"%.1f" % e["crf"]')
    ab_pred=$(json "$ab_json" '"%.2f" % e["mean_score"] if "mean_score" in e else "%.2f" % e["vmaf"]' 2>/dev/null || echo ?)
  else
    ab_crf=-; ab_pred=-
    echo "bench: ab-av1 found no CRF for $name: $(tail -n 2 "$dir/ab.err")" >&2
  fi

  # A search cut short (the file would not shrink: `predicted_not_smaller`) gives no quality.
  ours_bytes=- ours_vmaf=- full_s=-
  if [ "$q" != None ]; then
    read -r ours_bytes full_s < <(encode "$src" "$q" "$dir/ours.mkv")
    ours_vmaf=$(printf %.2f "$(vmaf "$dir/ours.mkv" "$src")")
  fi
  if [ "$ab_crf" != - ]; then
    read -r ab_bytes ab_full_s < <(encode "$src" "$ab_crf" "$dir/ab.mkv")
    ab_vmaf=$(vmaf "$dir/ab.mkv" "$src")
    [ "$full_s" != - ] || full_s=$ab_full_s
  else
    ab_bytes=-; ab_vmaf=-
  fi
  read -r q22_bytes _ < <(encode "$src" 22 "$dir/q22.mkv")
  q22_vmaf=nan
  [ "${Q22_VMAF:-1}" = 0 ] || q22_vmaf=$(vmaf "$dir/q22.mkv" "$src")
  printf '%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\n' \
    "$name" "$duration" "$q" "$ours_pred" "$ours_vmaf" "$trials" "$ours_search" "$ab_crf" \
    "$ab_pred" "${ab_vmaf:--}" "$ab_search" "$full_s" "$(cat "$dir/ours.cpu")" \
    "$(cat "$dir/ab.cpu")" "$ours_bytes" "$ab_bytes" "$q22_bytes" \
    "$q22_vmaf" "$ours_file" "$(stat -c %s "$src")" "$ours_pred_bytes" >>"$out"
  rm -rf "$dir"/*.mkv
done

python3 - "$out" "$target" "$preset" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"VMAF target {sys.argv[2]}, libx265 preset {sys.argv[3]}, VMAF at native resolution\n")
print("| file | length | ours: CRF | predicted | achieved | trials | search | search CPU | ab-av1: CRF | predicted | achieved | search | search CPU | full encode | search/full (ours, ab-av1) | size ours/ab-av1 | size ours/--quality 22 (its VMAF) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def f(x):
    try: return float(x)
    except ValueError: return None
for r in rows:
    ours_s, ab_s, full = f(r["ours_search_s"]), f(r["ab_search_s"]), f(r["full_encode_s"])
    ob, ab, qb = f(r["ours_video_bytes"]), f(r["ab_video_bytes"]), f(r["q22_video_bytes"])
    ratio = lambda a, b, d=2: f"{a / b:.{d}f}" if a and b else "-"
    print(f"| {r['file']} | {float(r['duration']):.0f} s | {r['ours_quality']} | {r['ours_predicted']} | {r['ours_achieved']} "
          f"| {r['ours_trials']} | {ours_s:.0f} s | {r['ours_search_cpu_s']} s | {r['ab_crf']} | {r['ab_predicted']} | {r['ab_achieved']} | {ab_s:.0f} s | {r['ab_search_cpu_s']} s "
          f"| {f'{full:.0f} s' if full else '-'} | {ratio(ours_s, full)}, {ratio(ab_s, full)} | {ratio(ob, ab, 3)} | {ratio(ob, qb, 3)} ({r['q22_vmaf']}) |")
EOF
