#!/usr/bin/env bash
# The ab-av1 the quality benchmarks compare with: $AB_AV1, else the one on PATH, else one
# installed from crates.io with cargo into ${XDG_CACHE_HOME:-~/.cache}/media-converter/ab-av1.
# Prints its path.
set -euo pipefail
if [ -n "${AB_AV1:-}" ]; then
  echo "$AB_AV1"
elif command -v ab-av1; then
  :
else
  root=${XDG_CACHE_HOME:-$HOME/.cache}/media-converter/ab-av1
  [ -x "$root/bin/ab-av1" ] ||
    CARGO_HOME="$root/cargo" cargo install ab-av1 --locked --root "$root" >&2
  echo "$root/bin/ab-av1"
fi
