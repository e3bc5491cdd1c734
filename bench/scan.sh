#!/usr/bin/env bash
# scan.sh - how fast a warm scan is, what the cache costs and saves, and how soon a cold
# library starts converting.
#
# Usage: bench/scan.sh [WORK_DIR]      (default: a fresh mktemp -d, removed at the end)
#        bench/scan.sh --kernel KIND [WORK_DIR]   (only 5., on local disk and through a
#                                                  kernel client; see "kernel" below)
# Env:   FILES_DIRS (10000), FILES_PER_DIR (10), COLD_FILES (200), RUNS (3),
#        FIRST_FILES (30000), COORDINATION (1; 0 skips bench/locks.sh --cold),
#        WARM_ONLY (1: only measurement 2 against 1, with CPU seconds, then stop),
#        BEFORE (another build's binary: its warm dry run in the same rounds, side by side)
#
# Measures, side by side, in one run:
#   1. `find DIR -type f -printf '%s %T@\n'`: the bare cost of walking and stat-ing;
#   2. a warm `media-converter --dir DIR --dry-run` over the same library (every
#      directory's cache warm), stdout to /dev/null; ffprobe calls are counted by
#      a wrapper first on PATH and must be 0; peak RSS from /usr/bin/time;
#   3. a cold `cache build` of COLD_FILES files with --probe-jobs 1 and with
#      --probe-jobs $(nproc): the speedup of probing in parallel;
#   4. the cold survey of the same COLD_FILES files, native header reads first (a real
#      run's survey, `--max-files 0`: it decides from the headers wherever they vouch,
#      candidates too, whose ffprobe comes when a worker claims one), against ffprobe
#      for every file (`cache build`), both at --probe-jobs $(nproc), and the share of
#      files that still needed ffprobe;
#   5. the seconds from start to the first `converting` event of a real run on a cold
#      library of FIRST_FILES files (no cache anywhere), best of RUNS; the run is
#      stopped (SIGTERM) there, and its caches and locks removed before the next;
#   6. bench/locks.sh --no-net --cold: N = 1, 2, 4, 8 processes converting one cold
#      library, throughput against the ideal (N x 1 process, or the CPU floor of N
#      processes sharing this machine's cores; bench/locks.sh says which) and against
#      N x 1 process.
# Times are the best of RUNS (the page cache warm). Prints a markdown table. Files are
# counted outside hidden folders: a run's presence records (`.mediabox-hosts/*.json`) are
# not media.
# Needs: cargo, ffmpeg/ffprobe, GNU find, /usr/bin/time (apt-get install time).
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=${FILES_DIRS:-10000}
per_dir=${FILES_PER_DIR:-10}
cold_files=${COLD_FILES:-200}
runs=${RUNS:-3}

# ---- kernel ----
# bench/scan.sh --kernel KIND [WORK_DIR]: only measurement 5, the seconds from start to the
# first `converting` event on a cold library of FIRST_FILES files, best of RUNS, on local
# disk and through a Linux kernel client, side by side in one run. KIND is one of
# scripts/uml/kernel-clients.sh's (nfs3, nfs4.2, cifs, knfsd3, knfsd4.2): the tool runs in
# its guest `a` (user-mode-linux, kernel 6.1) with the library on the export, made there
# by make-library.sh. Before each try the run's own files (caches, presence records) are
# removed on the server and the guest's caches dropped, so every try starts cold; a try
# that has not converted within KERNEL_LIMIT seconds (600) counts as none. Needs root and
# /dev/net/tun. The guest makes every system call cost several host context switches:
# compare its figure with the local one as an upper bound of what a NAS adds.
kernel=""
if [ "${1:-}" = --kernel ]; then
  [ $# -ge 2 ] || { echo "usage: $0 --kernel KIND [WORK_DIR]" >&2; exit 2; }
  kernel=$2
  shift 2
fi

# make_cold DIR: remove what a run leaves that would make the next one warm (caches,
# presence records).
make_cold() {
  find "$1" \( -name .mediabox_cache.json -o -name .mediabox-hosts \) -prune \
    -exec rm -rf {} + 2>/dev/null || true
}

# kernel_min A B: the smaller of two figures, either of which may be "none".
kernel_min() {
  if [ "$1" = none ] || [ -z "$1" ]; then echo "${2:-none}"
  elif [ "$2" = none ] || [ -z "$2" ]; then echo "$1"
  else awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'
  fi
}

# --kernel-inner BIN FILES RUNS: run by kernel-clients.sh (on this host, or in the knfsd
# kinds' server guest); prints "FIRST_CONVERTING <best seconds or none> <files>".
if [ "${1:-}" = --kernel-inner ]; then
  # shellcheck source=scripts/uml/agent.sh
  source scripts/uml/agent.sh
  klib=$MC_KC_EXPORT/first
  echo "scan.sh: generating a cold library of $3 files on the $MC_KC_KIND export" >&2
  kstart=$SECONDS
  bench/make-library.sh "$klib" "$((($3 + 9) / 10))" 10 2>/dev/null
  kcount=$(find "$klib" -type f -not -path '*/.*' | wc -l)
  echo "scan.sh: generated in $((SECONDS - kstart)) s" >&2
  # The try, in the guest: its own clock from start to the first `converting` line.
  kscript=$(
    printf 'bin=%q lib=%q limit=%q\n' "$2" "$MC_KC_SHARE/first" "${KERNEL_LIMIT:-600}"
    cat <<'EOF'
sync
echo 3 >/proc/sys/vm/drop_caches
out=/tmp/first.jsonl
: >"$out"
start=$(date +%s.%N)
SECONDS=0
NO_COLOR=1 "$bin" --dir "$lib" --json --min-age 0s >"$out" 2>/tmp/first.err &
pid=$!
t=none
while kill -0 "$pid" 2>/dev/null && ((SECONDS < limit)); do
  if grep -q '"event":"converting"' "$out"; then
    t=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    break
  fi
  sleep 0.02
done
kill -TERM "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ "$t" != none ] || { echo "no converting event; its stderr:" >&2; tail -n 5 /tmp/first.err >&2; }
echo "$t"
EOF
  )
  kbest=none
  for ((r = 0; r < $4; r++)); do
    make_cold "$klib"
    t=$(kc_run a "$((${KERNEL_LIMIT:-600} + 120))" "$kscript" | tail -n 1) || t=none
    echo "scan.sh: $MC_KC_KIND, try $((r + 1)): ${t:-none} s" >&2
    kbest=$(kernel_min "$kbest" "${t:-none}")
  done
  echo "FIRST_CONVERTING $kbest $kcount"
  exit 0
fi

# kernel_main: the --kernel run (called once first_converting is defined).
kernel_main() {
  if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
    echo "scan.sh: --kernel needs root and /dev/net/tun" >&2
    exit 1
  fi
  if [ ! -d "$first" ]; then
    echo "scan.sh: generating a cold library of $first_files files" >&2
    bench/make-library.sh "$first" "$(((first_files + 9) / 10))" 10 2>/dev/null
  fi
  local count best=none r line kbest kcount
  count=$(find "$first" -type f -not -path '*/.*' | wc -l)
  echo "scan.sh: time to the first conversion, $count cold files, local disk" >&2
  for ((r = 0; r < runs; r++)); do
    best=$(kernel_min "$best" "$(first_converting)")
  done
  echo "scan.sh: the same through $kernel (scripts/uml/kernel-clients.sh)" >&2
  line=$(scripts/uml/kernel-clients.sh run "$kernel" -- \
    "$PWD/bench/scan.sh" --kernel-inner "$bin" "$first_files" "$runs" |
    tee >(cat >&2) | grep '^FIRST_CONVERTING' | tail -n 1) || true
  read -r _ kbest kcount <<<"${line:-x failed 0}"
  cat <<EOF
Machine: $(nproc) cores, $(uname -sr), load average at the end $(cut -d' ' -f1-3 /proc/loadavg);
best of $runs runs, each cold (no cache anywhere; the guest's caches dropped).

| first \`converting\` event, cold library | files | seconds |
|---|---:|---:|
| local disk | $count | $best |
| $kernel, Linux 6.1 kernel client (user-mode-linux guest) | $kcount | $kbest |
EOF
}
# ---- end kernel ----
[ -x /usr/bin/time ] || { echo "scan.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

echo "scan.sh: building the release binary" >&2
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-target}/release/media-converter
bin=$(realpath "$bin")

first_files=${FIRST_FILES:-30000}
first="$work/first"
# Seconds from start to the first `converting` event; the run is then stopped cleanly and
# what it left (caches, presence records) removed, so each try starts cold.
first_converting() {
  make_cold "$first"
  local out="$work/first.jsonl" start pid t=""
  : >"$out"
  start=$(date +%s.%N)
  "$bin" --dir "$first" --json --min-age 0s >"$out" 2>/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if grep -q '"event":"converting"' "$out"; then
      t=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
      break
    fi
    sleep 0.02
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "${t:-none}"
}
[ -z "$kernel" ] || { kernel_main; exit 0; }

# ffprobe that counts its calls, first on PATH.
calls="$work/ffprobe-calls"
mkdir -p "$work/bin"
real_ffprobe=$(command -v ffprobe)
cat >"$work/bin/ffprobe" <<EOF
#!/bin/sh
echo x >> '$calls'
exec '$real_ffprobe' "\$@"
EOF
chmod +x "$work/bin/ffprobe"
counted_path="$work/bin:$PATH"

# One /usr/bin/time figure (FORMAT) of a command whose output is discarded.
measure() {
  local format=$1
  shift
  /usr/bin/time -f "$format" -o "$work/time.out" "$@" >/dev/null 2>&1 || true
  tail -1 "$work/time.out"
}

# Seconds (wall) of the best of $runs runs of a command; output discarded.
best_of() {
  local best="" t
  for ((r = 0; r < runs; r++)); do
    t=$(measure '%e' "$@")
    if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$t
    fi
  done
  echo "$best"
}

lib="$work/library"
if [ ! -d "$lib" ]; then
  echo "scan.sh: generating $((dirs * per_dir)) files in $dirs directories" >&2
  gen_start=$(date +%s.%N)
  bench/make-library.sh "$lib" "$dirs" "$per_dir" "$bin"
  gen_secs=$(awk -v a="$gen_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "scan.sh: generated in ${gen_secs}s" >&2
fi
files=$(find "$lib" -type f -not -path '*/.*' | wc -l)

echo "scan.sh: warm scan, $files files" >&2
find "$lib" -type f -printf '%s %T@\n' >/dev/null   # warm the page cache
# The warm rows side by side: each round runs find, the dry run, its --json form and, with
# BEFORE (another build's binary), that build's dry run, one after another, so a change in
# the machine's load falls on all alike. Wall: the best round; CPU seconds (user + system,
# which the load inflates less): the lowest and the highest.
before=${BEFORE:-}
declare -A wall cpu_lo cpu_hi
smaller() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# "wall user system" seconds of a command, to the millisecond (`time`'s %e counts in 10 ms,
# 7% of a warm `find` over 100,000 files); output discarded.
measure_ms() {
  python3 -c 'import resource, subprocess, sys, time
usage = lambda: resource.getrusage(resource.RUSAGE_CHILDREN)
r, t = usage(), time.perf_counter()
subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
e, q = time.perf_counter() - t, usage()
print("%.3f %.3f %.3f" % (e, q.ru_utime - r.ru_utime, q.ru_stime - r.ru_stime))' "$@"
}
warm_one() {
  local key=$1 e u s c
  shift
  read -r e u s <<<"$(measure_ms "$@")"
  c=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.3f", u + s }')
  if [ -z "${wall[$key]:-}" ] || smaller "$e" "${wall[$key]}"; then wall[$key]=$e; fi
  if [ -z "${cpu_lo[$key]:-}" ] || smaller "$c" "${cpu_lo[$key]}"; then cpu_lo[$key]=$c; fi
  if [ -z "${cpu_hi[$key]:-}" ] || smaller "${cpu_hi[$key]}" "$c"; then cpu_hi[$key]=$c; fi
}
rm -f "$calls"
# Other work on the machine moves every wall figure: the load is shown as the rounds start
# and as they end.
warm_load=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r < runs; r++)); do
  warm_one find find "$lib" -type f -printf '%s %T@\n'
  PATH=$counted_path warm_one dry "$bin" --dir "$lib" --dry-run
  PATH=$counted_path warm_one json "$bin" --dir "$lib" --dry-run --json
  [ -z "$before" ] || PATH=$counted_path warm_one before "$before" --dir "$lib" --dry-run
done
find_secs=${wall[find]} dry_secs=${wall[dry]} json_secs=${wall[json]}
warm_calls=$( [ -f "$calls" ] && wc -l <"$calls" || echo 0)
rss_kb=$(PATH=$counted_path measure '%M' "$bin" --dir "$lib" --dry-run)
planned=$("$bin" --dir "$lib" --dry-run --json | grep -c '"event":"planned"')
# "0.61 s (1.33x find), CPU 0.60-0.70 s (2.10x find)" for KEY.
warm_row() {
  awk -v w="${wall[$1]}" -v fw="$find_secs" -v lo="${cpu_lo[$1]}" -v hi="${cpu_hi[$1]}" \
    -v flo="${cpu_lo[find]}" 'BEGIN {
      printf "%s s (%.2fx find), CPU %s-%s s (%.2fx find)", w, w / fw, lo, hi, lo / flo }'
}
if [ "${WARM_ONLY:-0}" = 1 ]; then
  cat <<EOF
Machine: $(nproc) cores, $(uname -sr), load average $warm_load as the rounds started,
$(cut -d' ' -f1-3 /proc/loadavg) at the end; $runs rounds, page cache warm; wall: the best
round; CPU: user + system, lowest-highest.

| measurement, $files files in $dirs directories | result |
|---|---|
| \`find DIR -type f -printf '%s %T@\\n'\` | ${find_secs} s, CPU ${cpu_lo[find]}-${cpu_hi[find]} s |
| warm \`--dry-run\` (plan lines to /dev/null) | $(warm_row dry) |
| warm \`--dry-run --json\` (to /dev/null) | $(warm_row json) |
EOF
  [ -z "$before" ] || echo "| the same dry run by $before | $(warm_row before) |"
  cat <<EOF
| ffprobe calls during the warm runs | ${warm_calls} |
| files planned by the warm dry run | ${planned} of ${files} |
| peak RSS of the warm \`--dry-run\` | $(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }') MB |
EOF
  exit 0
fi

echo "scan.sh: cold cache build of $cold_files files" >&2
cold="$work/cold"
rm -rf "$cold" "$cold.clips"
bench/make-library.sh "$cold" "$(((cold_files + 9) / 10))" 10 2>/dev/null
cold_count=$(find "$cold" -type f -not -path '*/.*' | wc -l)
jobs=$(nproc)
cold_build() {
  find "$cold" -name .mediabox_cache.json -delete
  measure '%e' "$bin" cache build "$cold" --probe-jobs "$1" -q
}
serial=$(cold_build 1)
parallel=$(cold_build "$jobs")
for ((r = 1; r < runs; r++)); do
  s=$(cold_build 1); p=$(cold_build "$jobs")
  serial=$(awk -v a="$s" -v b="$serial" 'BEGIN { print (a < b) ? a : b }')
  parallel=$(awk -v a="$p" -v b="$parallel" 'BEGIN { print (a < b) ? a : b }')
done

echo "scan.sh: cold survey of $cold_count files, native reads first, --probe-jobs $jobs" >&2
cold_survey() {
  find "$cold" \( -name .mediabox_cache.json -o -name .mediabox-hosts \) -prune \
    -exec rm -rf {} + 2>/dev/null || true
  rm -f "$calls"
  PATH=$counted_path measure '%e' "$bin" --dir "$cold" --max-files 0 --min-age 0s \
    --probe-jobs "$jobs" -q
}
native=$(cold_survey)
native_calls=$( [ -f "$calls" ] && wc -l <"$calls" || echo 0)
for ((r = 1; r < runs; r++)); do
  n=$(cold_survey)
  native=$(awk -v a="$n" -v b="$native" 'BEGIN { print (a < b) ? a : b }')
done

if [ ! -d "$first" ]; then
  echo "scan.sh: generating a cold library of $first_files files" >&2
  bench/make-library.sh "$first" "$(((first_files + 9) / 10))" 10 2>/dev/null
fi
first_count=$(find "$first" -type f -not -path '*/.*' | wc -l)
echo "scan.sh: time to the first conversion, $first_count cold files" >&2
first_secs=$(first_converting)
for ((r = 1; r < runs; r++)); do
  f=$(first_converting)
  first_secs=$(awk -v a="$f" -v b="$first_secs" 'BEGIN { print (a < b) ? a : b }')
done
# Surveying everything before converting anything, as before, at the cold cache build's rate.
survey_first=$(awk -v p="$parallel" -v n="$cold_count" -v f="$first_count" \
  'BEGIN { printf "%.0f", p / n * f }')

coordination="(not run: COORDINATION=0)"
if [ "${COORDINATION:-1}" = 1 ]; then
  echo "scan.sh: bench/locks.sh --no-net --cold" >&2
  if bench/locks.sh --no-net --cold >"$work/locks.md"; then
    # The 8-process row: its ratio to the ideal (see bench/locks.sh) and to 8 x 1 process.
    coordination=$(awk -F'|' '$2 + 0 == 8 { gsub(/ /, "", $7); gsub(/ /, "", $8); print $7 " of ideal, " $8 }' \
      "$work/locks.md")
  else
    coordination="(bench/locks.sh failed; see above)"
  fi
fi

ratio=$(awk -v a="$dry_secs" -v b="$find_secs" 'BEGIN { printf "%.2f", a / b }')
json_ratio=$(awk -v a="$json_secs" -v b="$find_secs" 'BEGIN { printf "%.2f", a / b }')
speedup=$(awk -v a="$serial" -v b="$parallel" 'BEGIN { printf "%.2f", a / b }')
per_probe=$(awk -v a="$serial" -v n="$cold_count" 'BEGIN { printf "%.0f", a * 1000 / n }')
rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
native_rate=$(awk -v s="$native" -v n="$cold_count" 'BEGIN { printf "%.0f", n / s }')
ffprobe_rate=$(awk -v s="$parallel" -v n="$cold_count" 'BEGIN { printf "%.0f", n / s }')
native_ratio=$(awk -v a="$parallel" -v b="$native" 'BEGIN { printf "%.1f", a / b }')
needed=$(awk -v c="$native_calls" -v n="$cold_count" 'BEGIN { printf "%.0f", c * 100 / n }')

load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
cat <<EOF
Machine: $(nproc) cores, $(uname -sr), load average at the end $load (other work on
the machine slows the parallel figures); best of $runs runs, page cache warm.

| measurement | result | target |
|---|---|---|
| \`find DIR -type f -printf '%s %T@\\n'\`, $files files in $dirs directories | ${find_secs} s | |
| warm \`--dry-run\` (plan lines to /dev/null), same library | ${dry_secs} s (${ratio}x find) | <= 2x find, < 3 s |
| warm \`--dry-run --json\` (to /dev/null) | ${json_secs} s (${json_ratio}x find) | |
| ffprobe calls during the warm runs | ${warm_calls} | 0 |
| files planned by the warm dry run | ${planned} | ${files} |
| peak RSS of the warm \`--dry-run\` | ${rss_mb} MB | < 100 MB |
| cold \`cache build\`, ${cold_count} files, \`--probe-jobs 1\` | ${serial} s (${per_probe} ms a file) | |
| cold \`cache build\`, ${cold_count} files, \`--probe-jobs ${jobs}\` | ${parallel} s (${speedup}x) | >= 1.8x on 2 cores |
| cold survey, ffprobe for every file (\`cache build\`, \`--probe-jobs ${jobs}\`) | ${ffprobe_rate} files/s | |
| cold survey, native reads first (a run's survey, \`--max-files 0\`, \`--probe-jobs ${jobs}\`) | ${native_rate} files/s (${native_ratio}x) | >= 10x |
| files of that survey that still needed ffprobe | ${needed}% (${native_calls} calls) | |
| first \`converting\` event, cold library of ${first_count} files | ${first_secs} s | < 10 s |
| the same, surveying everything first (at the cold \`cache build\` rate) | ~${survey_first} s | |
| 8 processes converting one cold library (bench/locks.sh --cold) | ${coordination} of 8 x 1 process | >= 90% of ideal |
EOF
