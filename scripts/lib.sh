# lib.sh - shell helpers shared by the scripts that set up test shares:
# scripts/netmounts.sh (FUSE mounts) and scripts/uml/kernel-clients.sh (kernel
# clients in user-mode-linux guests). Sourced, never run.
#
# The sourcing script sets PROG (the name its messages start with) first, and
# declares WORK (its temp dir, with a logs/ folder) and CREATED_POLICY (empty)
# before calling ensure_packages.
#
# Exit codes of the helpers that exit: 1 for an error (die), 3 when the Debian
# packages a script needs cannot be installed.

# shellcheck shell=bash

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# on_signal NAME: a trap's handler (trap 'on_signal INT' INT): the EXIT trap
# tears down, and the script exits as a shell killed by that signal would.
on_signal() {
    say "interrupted by SIG$1, tearing down"
    case $1 in INT) exit 130 ;; *) exit 143 ;; esac
}

# ---------------------------------------------------------------- processes

# alive PID: running and not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# descendants PID: all descendant pids, one per line.
descendants() {
    local -A kids=()
    local f stat pid rest
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        pid=${stat%% *}
        rest=${stat##*) }          # "S PPID ..."
        rest=${rest#* }
        kids[${rest%% *}]+=" $pid"
    done
    local queue=("$1") p k
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        for k in ${kids[$p]:-}; do
            echo "$k"
            queue+=("$k")
        done
    done
}

# stop_tree PID [GRACE_S]: TERM the process and its descendants, KILL after
# GRACE_S (5) seconds. Only for pids the calling script started.
stop_tree() {
    local root=$1 grace=${2:-5} p i
    [[ -n $root ]] && alive "$root" || return 0
    local pids=("$root")
    mapfile -t -O 1 pids < <(descendants "$root")
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        local any=""
        for p in "${pids[@]}"; do alive "$p" && any=1; done
        [[ -z $any ]] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do
        alive "$p" && kill -KILL "$p" 2>/dev/null
    done
    wait "$root" 2>/dev/null || true   # reap if it is our child
}

# start_bg LOG CMD...: run CMD in its own session in the background, with
# stdin from /dev/null; the pid is left in $BG_PID.
start_bg() {
    local log=$1
    shift
    setsid "$@" </dev/null >>"$log" 2>&1 &
    # shellcheck disable=SC2034 # read by the sourcing script
    BG_PID=$!
}

# ----------------------------------------------------------------- packages

# ensure_packages PACKAGE...: installs the Debian packages that are missing,
# without starting their services; exits 3 if they cannot be installed.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
    say "installing ${missing[*]}"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # Keep the packages' own services (sshd on :22, smbd, rpcbind, ganesha)
        # from starting.
        CREATED_POLICY=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$CREATED_POLICY"
        chmod 755 "$CREATED_POLICY"
    fi
    local log=$WORK/logs/apt.log
    if ! {
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -q update &&
            DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -q -y \
                -o DPkg::Lock::Timeout=120 --no-install-recommends \
                install "${missing[@]}"
    } >"$log" 2>&1; then
        say "error: apt-get install ${missing[*]} failed; last lines of its output:"
        tail -n 15 "$log" | sed 's/^/    /' >&2
        exit 3
    fi
    rm -f "$CREATED_POLICY"
    CREATED_POLICY=""
}
