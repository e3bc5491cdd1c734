#!/usr/bin/env bash
# bench/locks.sh - what the lock protocol costs: claims per second on each kind of
# share, and the throughput of 1, 2, 4 and 8 processes converting one library.
#
# Usage: bench/locks.sh [--no-net] [--real-ffprobe] [--cold] [--files N] [--encode-secs S]
#
# 1. Claims per second: one lock_hammer process (release build) claiming and
#    releasing one file, uncontended, then four processes contending for it; on
#    local disk, and (as root, with FUSE) through scripts/netmounts.sh on sshfs and
#    smbnetfs (two processes per mount, one mount per "host").
# 2. Coordination: N processes of the release binary, each its own host, run
#    `--dir lib --json --min-age 0s` over the same N_FILES real H.264 clips. A fake
#    ffmpeg first on PATH sleeps ENCODE_SECS per encode and copies a real 1 s HEVC
#    clip into the output, and skips the decode check; everything else is the real
#    ffmpeg (examples/bench_fake, compiled: shell fakes cost more CPU than what is
#    measured). ffprobe answers are real, but by default memoized per identical
#    file (all sources are copies of one clip, all outputs of one HEVC clip): a
#    real ffprobe costs ~0.1 s of CPU, every process probes every file at startup,
#    and on a 2-core machine 8 x 200 probes would measure the CPU, not the
#    coordination. --real-ffprobe measures with the real one throughout.
#    By default the library's cache is warmed once (`cache build`) and copied for every N,
#    as it is when hosts share a library: then a process's start-up is its scan, and
#    what is measured is the claiming. --cold starts every N without a cache, so
#    every process probes every file at the same moment.
#    A file converted (`converting` event) more than once is a failure of the protocol.
#
#    What "ideal" means. N real hosts each bring their own CPU; here N processes share
#    this machine's cores. The fake encoder sleeps and costs no CPU, but every process
#    still pays its start-up (encoder trial encodes with the real ffmpeg, the scan) and
#    every file its claims, probes and swap. So N processes cannot finish faster than
#    their CPU work spread over the cores, and the ideal wall time for N is the larger of
#      - N x 1 process:  the 1-process wall time / N, and
#      - the CPU floor:  (the 1-process run's CPU seconds + (N - 1) x one process's
#                        start-up CPU seconds, measured on an empty library) / cores.
#    "vs ideal" = ideal wall time / measured wall time; "vs N x 1" keeps the plain ratio
#    (1-process wall / (N x N-process wall)), which on 8 real hosts is the same thing.
#    Both are shown, with the load average at the start and end of each N (other work on
#    the machine slows the N-process runs more than the 1-process one); 1 against 2
#    processes is the least load-sensitive row. "probes" counts the fleet's ffprobe runs
#    on source files (memoized or not; not with --real-ffprobe): on a cold library a
#    fleet that shares its probing through the caches probes each file about once.
#    "before it" and "after it" are what lies outside the encode phase: the seconds from
#    the start to the fleet's first encode (start-up: the scan, the survey, the encoder
#    trial, the first claim and probe) and from its last encode's end to the last exit.
#
# Env: BENCH_BIN, the converter to measure (default: the release build of this tree,
# built first). With BENCH_BIN set nothing of this tree is rebuilt: lock_hammer and
# bench_fake are built only where missing.
#
# Prints a markdown table on stdout; progress on stderr. Exit 1 if any file was
# converted twice or not converted.
set -euo pipefail
# A relative BENCH_BIN names a file from where the script was started.
if [[ -n ${BENCH_BIN:-} && $BENCH_BIN != /* ]]; then
    BENCH_BIN=$PWD/$BENCH_BIN
fi
cd "$(dirname "$0")/.."

NET=1
REAL_FFPROBE=0
COLD=0
N_FILES=200
ENCODE_SECS=0.2
while (($#)); do
    case $1 in
        --no-net) NET=0 ;;
        --real-ffprobe) REAL_FFPROBE=1 ;;
        --cold) COLD=1 ;;
        --files) N_FILES=$2; shift ;;
        --encode-secs) ENCODE_SECS=$2; shift ;;
        --net-inner) MODE=net-inner ;;
        *) echo "usage: $0 [--no-net] [--real-ffprobe] [--cold] [--files N] [--encode-secs S]" >&2; exit 2 ;;
    esac
    shift
done

TARGET=${CARGO_TARGET_DIR:-target}
HAMMER=$TARGET/release/examples/lock_hammer
# BENCH_BIN measures another build of the converter (a before/after comparison).
BIN=${BENCH_BIN:-$TARGET/release/media-converter}
say() { printf 'bench: %s\n' "$*" >&2; }

# ------------------------------------------------------------ claims per second

# rate DIR ITERATIONS: one uncontended process; prints claims per second.
rate() {
    local out
    out=$(MEDIA_CONVERTER_HOST_ID=bench-1 "$HAMMER" --dir "$1" --iterations "$2" \
        --out "$WORK/rate.intervals")
    sed -n 's/.*cycles_per_second=\([0-9]*\).*/\1/p' <<<"$out"
}

# contended DIR_A DIR_B ITERATIONS: two processes on each directory (each its own
# host), all claiming one file; prints total claims per second of wall time.
contended() {
    local start end pids=() who dir
    start=$(date +%s.%N)
    for who in a1 a2 b1 b2; do
        dir=$1
        [[ $who == b* ]] && dir=$2
        MEDIA_CONVERTER_HOST_ID=bench-$who "$HAMMER" --dir "$dir" --iterations "$3" \
            --timeout-ms 120000 --out "$WORK/$who.intervals" >"$WORK/$who.log" 2>&1 &
        pids+=($!)
    done
    for who in "${pids[@]}"; do
        wait "$who" || { cat "$WORK"/*.log >&2; return 1; }
    done
    end=$(date +%s.%N)
    awk -v n="$(( $3 * 4 ))" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", n / (e - s) }'
}

if [[ ${MODE:-} == net-inner ]]; then
    # Inside scripts/netmounts.sh: measure through the mounts and print one line.
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    mkdir "$MC_NET_A/rate" "$MC_NET_A/race"
    single=$(rate "$MC_NET_A/rate" 300)
    # Four processes through one mount (one host's view), then two per mount.
    one_mount=$(contended "$MC_NET_A/race" "$MC_NET_A/race" 50)
    mkdir "$MC_NET_A/race2"
    sleep 1
    two_mounts=$(contended "$MC_NET_A/race2" "$MC_NET_B/race2" 50)
    echo "$single $one_mount $two_mounts"
    exit 0
fi

if [[ -n ${BENCH_BIN:-} ]]; then
    if [[ ! -x $BIN ]]; then
        echo "bench: BENCH_BIN=$BIN is not an executable file; name a built media-converter" >&2
        exit 2
    fi
    if [[ -x $HAMMER && -x $TARGET/release/examples/bench_fake ]]; then
        say "measuring $BIN; lock_hammer and bench_fake as built in $TARGET/release"
    else
        say "measuring $BIN; building lock_hammer and bench_fake"
        cargo build --release --locked --example lock_hammer --example bench_fake >&2
    fi
else
    say "building the release binary and lock_hammer"
    cargo build --release --locked --bin media-converter --example lock_hammer --example bench_fake >&2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

declare -A SINGLE ONE_MOUNT TWO_MOUNTS
mkdir -p "$WORK/local/rate" "$WORK/local/race"
say "claims per second on local disk"
SINGLE[local]=$(rate "$WORK/local/rate" 3000)
ONE_MOUNT[local]=$(contended "$WORK/local/race" "$WORK/local/race" 500)
TWO_MOUNTS[local]="-"

if ((NET)); then
    if [[ $EUID -ne 0 || ! -c /dev/fuse ]]; then
        say "SKIPPED the sshfs and smb rows: they need root and /dev/fuse"
        NET=0
    else
        for kind in sshfs smb; do
            say "claims per second through $kind (scripts/netmounts.sh)"
            line=$(scripts/netmounts.sh run "$kind" -- "$0" --net-inner | tail -n 1)
            read -r SINGLE[$kind] ONE_MOUNT[$kind] TWO_MOUNTS[$kind] <<<"$line"
        done
    fi
fi

# ------------------------------------------------------------- coordination

say "making the clips"
mkdir -p "$WORK/pristine" "$WORK/fakebin" "$WORK/memo"
ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i testsrc2=s=160x90:r=24:d=1 \
    -c:v libx264 -preset ultrafast -crf 8 "$WORK/source.mkv"
ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i testsrc2=s=160x90:r=24:d=1 \
    -c:v libx265 -preset ultrafast -x265-params log-level=error "$WORK/hevc.mkv"
for ((i = 0; i < N_FILES; i++)); do
    cp "$WORK/source.mkv" "$WORK/pristine/clip-$(printf %03d "$i").mkv"
done

# The fakes are one compiled example (examples/bench_fake) run as `ffmpeg` and
# `ffprobe`: forking shell scripts per call would cost more CPU than the
# coordination being measured.
FAKE=$(cd "$TARGET/release/examples" && pwd)/bench_fake
ln -s "$FAKE" "$WORK/fakebin/ffmpeg"
((REAL_FFPROBE)) || ln -s "$FAKE" "$WORK/fakebin/ffprobe"
# Looked up apart from the export, so that a missing tool stops the script (set -e).
real_ffmpeg=$(command -v ffmpeg)
real_ffprobe=$(command -v ffprobe)
export BENCH_ENCODE_SECS=$ENCODE_SECS BENCH_HEVC=$WORK/hevc.mkv BENCH_LOG=$WORK/encodes.log \
    BENCH_MEMO=$WORK/memo BENCH_REAL_FFMPEG=$real_ffmpeg BENCH_REAL_FFPROBE=$real_ffprobe

if ((!COLD)); then
    say "warming the library's cache (cache build)"
    # cp -a keeps the mtimes, so the copies below find every entry fresh.
    PATH="$WORK/fakebin:$PATH" "$BIN" cache build "$WORK/pristine" --min-age 0s -q >&2
fi

# CPU seconds (user + system) of this shell's waited-for children so far, into CHILDREN_CPU:
# `times`' second line, taken in this shell (a subshell would see only its own children).
children_cpu() {
    times >"$WORK/times"
    CHILDREN_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
                                  printf "%.2f", t }' "$WORK/times")
}
load() { cut -d' ' -f1 /proc/loadavg; }

# One process's fixed start-up CPU: a run over an empty library (scan, encoder trials).
mkdir -p "$WORK/empty"
children_cpu
before=$CHILDREN_CPU
PATH="$WORK/fakebin:$PATH" MEDIA_CONVERTER_HOST_ID=bench-0 \
    "$BIN" --dir "$WORK/empty" --json --min-age 0s --preset ultrafast --encoder libx265 \
    >/dev/null 2>"$WORK/err.empty" || { say "the empty-library run failed:"; cat "$WORK/err.empty" >&2; }
children_cpu
STARTUP_CPU=$(awk -v a="$before" -v b="$CHILDREN_CPU" 'BEGIN { printf "%.2f", b - a }')

declare -A WALL PHASE CONVERTED DOUBLES LOCKED CPU PROBES LOAD_START LOAD_END LEAD TAIL
FAILED=0
for n in 1 2 4 8; do
    rm -rf "${WORK:?}/lib" "$WORK"/out.* "$WORK/encodes.log"
    cp -a "$WORK/pristine" "$WORK/lib"
    : >"$WORK/encodes.log"
    say "coordination: $n process(es), $N_FILES files"
    LOAD_START[$n]=$(load)
    children_cpu
    cpu_before=$CHILDREN_CPU
    start=$(date +%s.%N)
    pids=()
    for ((p = 1; p <= n; p++)); do
        PATH="$WORK/fakebin:$PATH" MEDIA_CONVERTER_HOST_ID="bench-$p" \
            MEDIA_CONVERTER_HOSTNAME="bench-$p" \
            "$BIN" --dir "$WORK/lib" --json --min-age 0s --preset ultrafast --encoder libx265 \
            >"$WORK/out.$p" 2>"$WORK/err.$p" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || { say "a process failed (exit status $?):"; cat "$WORK"/err.* >&2; FAILED=1; }
    done
    end=$(date +%s.%N)
    LOAD_END[$n]=$(load)
    children_cpu
    CPU[$n]=$(awk -v a="$cpu_before" -v b="$CHILDREN_CPU" 'BEGIN { printf "%.2f", b - a }')
    PROBES[$n]=$(awk '$1 == "probe" && $3 !~ /[.]partial[.]/ { n++ } END { print n + 0 }' "$WORK/encodes.log")
    ((REAL_FFPROBE)) && PROBES[$n]="-"
    WALL[$n]=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
    PHASE[$n]=$(awk '$1 == "start" && (!first || $2 < first) { first = $2 }
                     $1 == "end" && $2 > last { last = $2 }
                     END { printf "%.2f", last - first }' "$WORK/encodes.log")
    # Outside the encode phase: from the start to the first encode, and from the last
    # encode's end to the last process's exit (its verification, swap, cache and exit).
    read -r LEAD[$n] TAIL[$n] < <(awk -v s="$start" -v e="$end" \
        '$1 == "start" && (!first || $2 < first) { first = $2 }
         $1 == "end" && $2 > last { last = $2 }
         END { printf "%.2f %.2f\n", first - s, e - last }' "$WORK/encodes.log")
    CONVERTED[$n]=$(cat "$WORK"/out.* | grep -c '"event":"converted"' || true)
    DOUBLES[$n]=$(cat "$WORK"/out.* | grep '"event":"converting"' |
        grep -o '"file":"[^"]*"' | sort | uniq -d | wc -l)
    LOCKED[$n]=$(cat "$WORK"/out.* | grep '"event":"skipped"' | grep -c '"reason":"locked"' || true)
    if ((CONVERTED[$n] != N_FILES || DOUBLES[$n] != 0)); then
        say "FAILED: $n process(es) converted ${CONVERTED[$n]} of $N_FILES, ${DOUBLES[$n]} twice"
        FAILED=1
    fi
done

# --------------------------------------------------------------------- report

cpus=$(nproc)
echo
echo "Claims per second (acquire + release of one lock; release build; $cpus cores):"
echo
echo "| share | 1 process | 4 processes, one mount | 2 + 2 processes, two mounts |"
echo "|---|---:|---:|---:|"
for kind in local sshfs smb; do
    [[ -n ${SINGLE[$kind]:-} ]] || continue
    echo "| $kind | ${SINGLE[$kind]} | ${ONE_MOUNT[$kind]} | ${TWO_MOUNTS[$kind]} |"
done
echo
probe_note="memoized real ffprobe"
((REAL_FFPROBE)) && probe_note="real ffprobe"
if ((COLD)); then probe_note="$probe_note, no cache"; else probe_note="$probe_note, cache warmed"; fi
echo "Coordination: $N_FILES files on local disk, fake encoder sleeping ${ENCODE_SECS} s, $probe_note, $cpus cores;"
echo "one process's start-up on an empty library: ${STARTUP_CPU} CPU s:"
echo
echo "| processes | load start-end | wall s | CPU s | ideal s | vs ideal | vs N x 1 process | encode phase s | vs N x 1 process | before it s | after it s | probes | converted | twice | skipped as locked |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in 1 2 4 8; do
    awk -v n="$n" -v w="${WALL[$n]}" -v w1="${WALL[1]}" -v p="${PHASE[$n]}" -v p1="${PHASE[1]}" \
        -v cpu="${CPU[$n]}" -v cpu1="${CPU[1]}" -v s0="$STARTUP_CPU" -v cores="$cpus" \
        -v ls="${LOAD_START[$n]}" -v le="${LOAD_END[$n]}" -v pr="${PROBES[$n]}" \
        -v c="${CONVERTED[$n]}" -v d="${DOUBLES[$n]}" -v l="${LOCKED[$n]}" \
        -v lead="${LEAD[$n]}" -v tail="${TAIL[$n]}" \
        'BEGIN { floor = (cpu1 + (n - 1) * s0) / cores; ideal = w1 / n; if (floor > ideal) ideal = floor
                 printf "| %d | %s-%s | %.1f | %.1f | %.1f | %.0f %% | %.0f %% | %.1f | %.0f %% | %.2f | %.2f | %s | %d | %d | %d |\n",
                 n, ls, le, w, cpu, ideal, 100 * ideal / w, 100 * w1 / (n * w), p, 100 * p1 / (n * p),
                 lead, tail, pr, c, d, l }'
done
exit "$FAILED"
