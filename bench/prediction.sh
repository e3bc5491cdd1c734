#!/usr/bin/env bash
# How well the quality search's samples predict the size of the whole file's video: for each
# file, at one CRF and preset, the samples encoded as a search encodes them (`-ss START -t 8
# -i FILE`, libx265 with the real encode's options, Matroska), against the whole file (or a
# stretch of it) encoded once with the same options, read packet by packet over each
# sample's window (ffprobe), so each sample's bytes meet the same frames' bytes in the film.
#
# Per sample: its file size, its packets' bytes, its frames, its first (IDR) frame's bytes;
# the same window in the full encode: its packets' bytes, its frames, its keyframes. Per
# file: the video the samples predict, by the old rule (the samples' file sizes over their
# seconds, times the duration) and the new one (`src/quality.rs`, `predicted_size`: the
# samples' video packets times the source's video bytes over the source's bytes in the
# windows), against the full encode's video bytes. Prints the details; one line per file
# into OUT.
#
# Usage: bench/prediction.sh [FILE...]      (default: the files below from the corpus)
#   e.g. CRF=24 PRESET=medium bench/prediction.sh ~/.cache/media-converter/corpus/demo.asf:
#   one file at the quality its search found, whose new predicted size / original (last
#   column) says whether `--min-savings` would skip it.
# Cost (2026-12-02, 2 shared cores at a load of 11 to 16): the default set at CRF 24,
# veryfast, 15 minutes wall, 4 CPU minutes, most of both the 120 s of 720p's full encode.
# Environment: CRF (24), PRESET (veryfast), BBB_SECS (120: the stretch of the 10-minute Big
# Buck Bunny from its middle, stream-copied, as bench/quality-film.sh takes it; 0 leaves it
# out), OUT (prediction.tsv: one line per file).
# Needs: scripts/corpus.sh (--large for the Big Buck Bunny), ffmpeg with libx265, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
crf=${CRF:-24}
preset=${PRESET:-veryfast}
bbb_secs=${BBB_SECS:-120}
out=${OUT:-$PWD/prediction.tsv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

corpus=$(scripts/corpus.sh --dir)
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  scripts/corpus.sh >/dev/null
  files=("$corpus/demo.asf" "$corpus/demo.f4v" "$corpus/bikes.mp4" "$corpus/flashmob.mkv")
  if [ "$bbb_secs" != 0 ]; then
    scripts/corpus.sh --large >/dev/null
    sdist=$corpus/.downloads/pypi-sdist-moviepy-2.2.1/moviepy-2.2.1.tar.gz
    zip=moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip
    tar -xzf "$sdist" -C "$work" "$zip"
    unzip -q -p "$work/$zip" moviepy_10_minutes/resources/bbb.mp4 >"$work/bbb-10min.mp4"
    one=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$work/bbb-10min.mp4")
    from=$(python3 -c "print(round(($one - $bbb_secs) / 2, 3))")
    ffmpeg -hide_banner -nostdin -v error -y -ss "$from" -i "$work/bbb-10min.mp4" -map 0 \
      -c copy -t "$bbb_secs" "$work/bbb-${bbb_secs}s.mp4"
    rm "$work/bbb-10min.mp4"
    files+=("$work/bbb-${bbb_secs}s.mp4")
  fi
fi

x265=(-c:v:0 libx265 -preset:v:0 "$preset" -crf:v:0 "$crf" -pix_fmt:v:0 yuv420p
  -profile:v:0 main -x265-params:v:0 log-level=error)

# "pts_time,size,flags" of stream $2 of $1 (all of it, or the read interval $3).
packets() {
  local interval=()
  [ -n "${3:-}" ] && interval=(-read_intervals "$3")
  ffprobe -v error -select_streams "$2" -show_entries packet=pts_time,size,flags \
    -of csv=p=0 "${interval[@]}" "$1"
}

printf 'file\tcrf\tpreset\tduration\tsamples\tvideo_old\tvideo_new\tvideo_full_encode\told/full\tnew/full\tnew_file/original\n' >"$out"
for file in "${files[@]}"; do
  name=$(basename "$file")
  index=$(ffprobe -v error -select_streams V -show_entries stream=index -of csv=p=0 "$file" | head -n1 | tr -cd 0-9)
  duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$file")
  origin=$(ffprobe -v error -show_entries format=start_time -of csv=p=0 "$file")
  [[ $origin =~ ^[0-9.]+$ ]] || origin=0
  # The search's windows (src/quality.rs, sample_windows).
  windows=$(python3 - "$duration" <<'EOF'
import sys
d = float(sys.argv[1])
if d <= 40:
    print(f"0 {d}")
else:
    n = min(max(round(d / 600), 3), 12)
    share = d / n
    for i in range(n):
        print(f"{max(share * (i + 0.5) - 4, 0):.3f} 8.000")
EOF
)
  rm -rf "$work/f" && mkdir -p "$work/f"
  full=$work/f/full.mkv
  ffmpeg -hide_banner -nostdin -nostats -loglevel error -y -i "$file" -map "0:$index" "${x265[@]}" "$full"
  packets "$full" 0 >"$work/f/full.csv"
  packets "$file" "$index" >"$work/f/source.csv"
  all=$(ffprobe -v error -show_entries packet=size -of csv=p=0 "$file" | awk '{b += $1} END {print b + 0}')
  i=0
  while read -r start length; do
    sample=$work/f/s$i.mkv
    if [ "$start" = 0 ] && [ "$(wc -l <<<"$windows")" = 1 ]; then
      ffmpeg -hide_banner -nostdin -nostats -loglevel error -y -i "$file" -map "0:$index" "${x265[@]}" "$sample"
    else
      ffmpeg -hide_banner -nostdin -nostats -loglevel error -y -ss "$start" -t "$length" -i "$file" \
        -map "0:$index" "${x265[@]}" "$sample"
    fi
    packets "$sample" 0 >"$work/f/s$i.csv"
    echo "$start $length $(stat -c %s "$sample")" >"$work/f/s$i.win"
    # From the window's start to an absolute end past it, in the file's own times, as
    # src/quality.rs reads it (a "%+LENGTH" end counts from the keyframe before the window).
    packets "$file" "$index" "$(python3 -c "print(f'{$origin + $start:.3f}%{$origin + $start + $length + 1:.3f}')")" \
      >"$work/f/src$i.csv"
    i=$((i + 1))
  done <<<"$windows"
  python3 - "$work/f" "$name" "$crf" "$preset" "$duration" "$out" "$origin" "$all" "$(stat -c %s "$file")" <<'EOF'
import glob, os, sys
d, name, crf, preset, duration, out, origin, all_packets, size = sys.argv[1:]
origin, all_packets, size = float(origin), int(all_packets), int(size)
duration = float(duration)
def rows(path):
    r = []
    for line in open(path):
        p = line.strip().split(",")
        if len(p) < 3 or p[0] in ("", "N/A"):
            continue
        r.append((float(p[0]), int(p[1]), "K" in p[2]))
    return r
full = rows(f"{d}/full.csv")
full_bytes = sum(s for _, s, _ in full)
t0 = min(t for t, _, _ in full)
source = rows(f"{d}/source.csv")
src_bytes = sum(s for _, s, _ in source)
n = len(glob.glob(f"{d}/s*.win"))
tot_file = tot_pkt = tot_src = tot_film = 0
secs = 0.0
print(f"{name}: CRF {crf} preset {preset}, {duration:.1f} s; full encode {full_bytes} video bytes "
      f"({len(full)} frames, {sum(k for *_, k in full)} keyframes); source video {src_bytes} bytes")
print("  window       | sample: file  packets frames IDR  | film: bytes frames keys | "
      "sample/film | source window | film / source, window and whole")
for i in range(n):
    start, length, fsize = open(f"{d}/s{i}.win").read().split()
    start, length, fsize = float(start), float(length), int(fsize)
    s = rows(f"{d}/s{i}.csv")
    pkt = sum(b for _, b, _ in s)
    idr = s[0][1] if s else 0
    inside = [(t, b, k) for t, b, k in full if start <= t - t0 < start + length]
    fb = sum(b for _, b, _ in inside)
    # As src/quality.rs's sum_packets counts the source's packets in the window.
    src = sum(b for t, b, _ in rows(f"{d}/src{i}.csv") if start <= t - origin < start + length)
    print(f"  {start:6.1f}+{length:<5.1f} | {fsize:8d} {pkt:8d} {len(s):5d} {idr:6d} | "
          f"{fb:8d} {len(inside):5d} {sum(k for *_, k in inside):3d} | "
          f"{fsize / max(fb, 1):.3f} ({pkt / max(fb, 1):.3f}) | {src:8d} | "
          f"{fb / max(src, 1):.3f} {full_bytes / max(src_bytes, 1):.3f}")
    tot_file += fsize; tot_pkt += pkt; tot_src += src; tot_film += fb; secs += length
scale = max(duration / secs, 1.0)
old = tot_file * scale
ratio = src_bytes * tot_pkt / max(tot_src, 1)
print(f"  samples' share of the film's bytes: {tot_film / full_bytes:.3f}, of its time: {secs / duration:.3f}; "
      f"of the source's bytes: {tot_src / max(src_bytes, 1):.3f}")
print(f"  old (sample files / {secs:.0f} s x {duration:.1f} s): {old:.0f} = {old / full_bytes:.3f}; "
      f"packets x time: {tot_pkt * scale / full_bytes:.3f}; "
      f"new (sample packets x source video / source's window bytes): {ratio:.0f} = {ratio / full_bytes:.3f}")
# The whole new file as src/quality.rs predicts it: the other streams' packets, the new
# video, and the container's bytes (kept where the container is, else Matroska's 1%).
others = all_packets - src_bytes
keeps = name.lower().rsplit(".", 1)[-1] in ("mkv", "webm", "mp4", "m4v", "mov")
container = size - all_packets if keeps else (others + ratio) * 0.01
new_file = others + ratio + container
print(f"  whole file: {size} bytes, of which video {src_bytes}, other streams {others}, container "
      f"{size - all_packets}; predicted {new_file:.0f} = {new_file / size:.3f} of it "
      f"(with the full encode's video instead: {(others + full_bytes + (size - all_packets if keeps else (others + full_bytes) * 0.01)) / size:.3f})")
with open(out, "a") as f:
    f.write(f"{name}\t{crf}\t{preset}\t{duration:.1f}\t{n}\t{old:.0f}\t{ratio:.0f}\t{full_bytes}\t"
            f"{old / full_bytes:.3f}\t{ratio / full_bytes:.3f}\t{new_file / size:.3f}\n")
EOF
done
echo "bench: wrote $out" >&2
