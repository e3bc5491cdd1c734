#!/usr/bin/env bash
# make-library.sh - a synthetic media library for the scan benchmarks, at no disk cost.
#
# Usage: bench/make-library.sh DIR DIRS FILES_PER_DIR [MEDIA_CONVERTER]
#
# The clips and the template directory live beside it, in DIR.clips.
# Makes DIR/dNNN/dNNN_MMM/ leaf directories (DIRS of them, 100 per parent) of
# FILES_PER_DIR files each. Every file is a hard link to one of four tiny real
# clips made by ffmpeg (H.264 mkv, HEVC mkv, MPEG-4 avi, H.264 mp4), so 100,000
# files cost four clips of disk. The clips are dated two hours back, past
# --min-age.
#
# With MEDIA_CONVERTER (a path to the binary), each leaf directory also gets a
# warm cache: `cache build` runs on one template directory and its
# .mediabox_cache.json is copied (a real copy, not a link) into every other.
# Hard links share size and mtime, so every copy's fingerprints match.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 DIR DIRS FILES_PER_DIR [MEDIA_CONVERTER]" >&2
  exit 2
fi
root=$1 dirs=$2 per_dir=$3 converter=${4:-}
if ! { [ "$dirs" -ge 1 ] && [ "$per_dir" -ge 1 ]; }; then
  echo "$0: DIRS and FILES_PER_DIR must be >= 1" >&2
  exit 2
fi
if [ -e "$root" ]; then
  echo "$0: $root exists; remove it first" >&2
  exit 2
fi
clips="${root%/}.clips"   # beside the library, so that find and the scan see only it
if [ -e "$clips" ]; then
  echo "$0: $clips exists; remove it first" >&2
  exit 2
fi
mkdir -p "$root" "$clips"

ff() { ffmpeg -hide_banner -nostdin -v error -y "$@"; }
src=(-f lavfi -i testsrc2=s=160x90:r=24:d=1 -f lavfi -i sine=f=440:d=1)
ff "${src[@]}" -c:v libx264 -preset ultrafast -crf 23 -c:a aac "$clips/h264.mkv"
ff "${src[@]}" -c:v libx265 -preset ultrafast -x265-params log-level=error -c:a aac "$clips/hevc.mkv"
ff "${src[@]}" -c:v mpeg4 -q:v 4 -c:a libmp3lame "$clips/mpeg4.avi"
ff "${src[@]}" -c:v libx264 -preset ultrafast -crf 23 -c:a aac "$clips/h264.mp4"
touch -d '2 hours ago' "$clips"/*

# The template leaf: names like a TV season, cycling through the four clips.
template="$clips/template"
mkdir "$template"
kinds=(h264.mkv hevc.mkv mpeg4.avi h264.mp4)
for ((i = 0; i < per_dir; i++)); do
  clip=${kinds[i % 4]}
  printf -v name 'Show S01E%03d.%s' "$((i + 1))" "${clip##*.}"
  ln "$clips/$clip" "$template/$name"
done

cache=""
if [ -n "$converter" ]; then
  "$converter" cache build "$template" -q >/dev/null 2>&1
  cache=$(<"$template/.mediabox_cache.json")
  rm "$template/.mediabox_cache.json"
fi

# One row of up to 100 leaves, then as many rows as needed: cp -al makes hard
# links, a few hundred processes for the whole tree.
made=0
for ((row = 0; made < dirs; row++)); do
  printf -v parent '%s/d%03d' "$root" "$row"
  mkdir "$parent"
  for ((leaf = 0; leaf < 100 && made < dirs; leaf++, made++)); do
    printf -v dir '%s/d%03d_%03d' "$parent" "$row" "$leaf"
    cp -al "$template" "$dir"
    if [ -n "$cache" ]; then
      # A shell builtin write: no process per directory.
      printf '%s' "$cache" >"$dir/.mediabox_cache.json"
    fi
  done
done
echo "$0: $((dirs * per_dir)) files in $dirs directories under $root" >&2
