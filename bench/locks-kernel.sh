#!/usr/bin/env bash
# bench/locks-kernel.sh - claims per second on REAL kernel NFS and SMB clients:
# the rows bench/locks.sh cannot measure on a machine whose kernel has no NFS or
# CIFS client.
#
# Usage: bench/locks-kernel.sh [nfs3|nfs4.2|cifs|knfsd3|knfsd4.2 ...]
#        (default: all five; knfsd: the kernel's own nfsd in a third guest)
#
# For each kind, scripts/uml/kernel-clients.sh boots two user-mode-linux guests
# (two hosts) mounting one export, and lock_hammer (release build) claims and
# releases one lock: 1 process on one client, uncontended; 2 processes on one
# client; 1 + 1 and 2 + 2 processes on the two clients, all on one file. Claims
# per second = all claims / wall time of the slowest process (measured on this
# host, so it includes up to ~50 ms of job start-up).
#
# The guests are user-mode-linux: every system call costs a few context switches
# of the host, so these figures are lower than on hardware; they compare kinds
# and client counts with each other, not with bench/locks.sh's local-disk rows.
#
# Needs root and /dev/net/tun. Prints a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
HAMMER=$(pwd)/$TARGET/release/examples/lock_hammer
say() { printf 'bench: %s\n' "$*" >&2; }

if [[ ${1:-} == --inner ]]; then
    # Inside kernel-clients.sh (for the knfsd kinds, in their server guest): measure
    # through the guests' mounts, print one line.
    # shellcheck source=scripts/uml/agent.sh
    source scripts/uml/agent.sh
    results=$MC_KC_CTL/bench
    mkdir -p "$results" "$MC_KC_EXPORT/bench"
    # contended ITERATIONS GUEST...: one hammer per GUEST word on one lock;
    # prints claims per second.
    contended() {
        local iterations=$1 guest n=0 ids=() guests=() start end
        shift
        start=$(date +%s.%N)
        for guest in "$@"; do
            n=$((n + 1))
            ids+=("$(kc_spawn "$guest" "exec $HAMMER --dir $MC_KC_SHARE/bench \
                --iterations $iterations --timeout-ms 300000 --out /run/kc/ctl/bench/$n")")
            guests+=("$guest")
        done
        for n in "${!ids[@]}"; do
            kc_wait "${guests[$n]}" "${ids[$n]}" 600 >"$results/log.$n" ||
                { cat "$results/log.$n" >&2; return 1; }
        done
        end=$(date +%s.%N)
        awk -v n="$((iterations * $#))" -v s="$start" -v e="$end" \
            'BEGIN { printf "%.0f", n / (e - s) }'
    }
    one=$(contended 300 a)
    one_two=$(contended 100 a a)
    two=$(contended 100 a b)
    two_four=$(contended 50 a a b b)
    echo "$one $one_two $two $two_four"
    exit 0
fi

kinds=("$@")
((${#kinds[@]})) || kinds=(nfs3 nfs4.2 cifs knfsd3 knfsd4.2)
[[ $EUID -eq 0 && -c /dev/net/tun ]] || { say "needs root and /dev/net/tun"; exit 1; }
say "building lock_hammer (release)"
cargo build --release --locked --example lock_hammer >&2

declare -A ROW
for kind in "${kinds[@]}"; do
    say "claims per second on $kind (scripts/uml/kernel-clients.sh)"
    ROW[$kind]=$(scripts/uml/kernel-clients.sh run "$kind" -- "$0" --inner | tail -n 1)
done

echo
echo "Claims per second on kernel clients (user-mode-linux 6.1 guests; release build; $(nproc) cores):"
echo
echo "| share | 1 process, 1 client | 2 processes, 1 client | 1 + 1 processes, 2 clients | 2 + 2 processes, 2 clients |"
echo "|---|---:|---:|---:|---:|"
for kind in "${kinds[@]}"; do
    read -r one one_two two two_four <<<"${ROW[$kind]}"
    echo "| $kind | $one | $one_two | $two | $two_four |"
done
