#!/usr/bin/env bash
# netmounts.sh - give the test suite REAL network mounts on one Debian 12 box.
#
# Usage:
#   scripts/netmounts.sh run   KIND -- COMMAND [ARGS...]
#   scripts/netmounts.sh check KIND
#   KIND is `sshfs` or `smb`. Must run as root; needs /dev/fuse.
#
# `run` exports one fresh directory over the network (loopback only) and
# mounts it TWICE through two independent FUSE clients, as if two hosts
# shared it. COMMAND then runs with:
#   MC_NET_KIND    sshfs | smb
#   MC_NET_A       the export as seen through mount A
#   MC_NET_B       the same export as seen through mount B
#   MC_NET_EXPORT  the export directory on local disk (the server's view)
# The exit code of COMMAND is the exit code of the script. `check` does the
# same setup, runs a short self-test (noclobber create via A seen from B,
# write via B read via A, rename, rename-over) and prints a report.
#
# Everything lives in one `mktemp -d` directory (<tmp> below):
#   export/        the exported directory (= MC_NET_EXPORT)
#   mnt-a, mnt-b   the two FUSE mount points
#   logs/          daemon and client logs (shown on setup failure)
# sshfs: MC_NET_A = <tmp>/mnt-a                     (mount of export/)
# smb:   MC_NET_A = <tmp>/mnt-a/127.0.0.1:PORT/share (smbnetfs mounts the whole
#        network neighbourhood; the port is part of the libsmbclient URL).
#
# Choices:
# - Missing packages are installed with apt-get (noninteractive; `apt-get
#   update` only when something is missing); package service start-up is
#   blocked with a temporary policy-rc.d when none exists.
# - Servers are started by this script, never by systemd/service, in their
#   own session (setsid), bound to 127.0.0.1 on a random free high port:
#     sshfs: /usr/sbin/sshd -D -f <own config>, own host key, key-only root
#            login with a generated client key, internal-sftp, UsePAM no.
#     smb:   smbd --foreground with its own smb.conf (all state under the temp
#            dir), NetBIOS off, user `root` with a random password in its own
#            tdbsam, on-demand RPC helpers off (no stray samba-dcerpcd).
#   Port 445 is not needed: smbnetfs reaches the share as 127.0.0.1:PORT.
# - Clients keep their DEFAULT caching, because that is what users get:
#     sshfs: dir_cache=yes (20 s dcache), kernel page cache; only the ssh
#            connection is configured (own ssh_config: strict host key check
#            against the generated key, BatchMode, ServerAliveInterval=5).
#     smbnetfs: libfuse2 defaults (attr/entry timeout 1 s); browsing off.
#   Each mount is its own FUSE process with its own kernel caches, so A and B
#   disagree for a while exactly as two hosts would.
# - Teardown (trap on EXIT/INT/TERM): unmount both, stop the FUSE clients
#   and daemons by the pids recorded here (plus their descendants), lazy
#   unmount as a fallback, then remove the temp dir. Every wait is bounded.
#
# Knobs: NETMOUNTS_TIMEOUT (seconds to wait for mounts, default 20).
#
# Observed on Debian 12 (sshfs 3.7.3, smbnetfs 0.6.3 + Samba 4.17), for tests:
# - O_EXCL create of a name that already exists fails with EEXIST on both
#   kinds. But in a real race (A and B create at the same moment):
#     sshfs: exactly one wins; the loser mostly gets EPERM, not EEXIST.
#     smb:   NOT exclusive - smbnetfs creates with smbc_creat (O_TRUNC, no
#            O_EXCL), so most races end with BOTH opens succeeding.
#   mkdir() is exclusive on both (loser: EEXIST); renameat2(RENAME_NOREPLACE)
#   is EINVAL on both.
# - sshfs caches stat results ~20 s: a deletion, size or mtime change made via
#   A shows in stat() via B only after ~20-21 s (open() refreshes it), and an
#   O_EXCL create via B of a file A deleted still fails EEXIST meanwhile.
#   smbnetfs: the same staleness is ~1 s. New names show at once on both.
# - rename-over: atomic on sshfs (posix-rename); on smb it is unlink+rename
#   (the target is briefly absent) and fails EEXIST if B holds the target open;
#   unlink of a file open via B fails EBUSY on smb.
# - link(): works on sshfs (exclusive; nlink shows 1 through the mount; loser
#   of a race gets EEXIST or EPERM), EPERM always on smb.
# - mtime set by write/truncate: the server's clock, full ns precision.
#   utime(UTIME_NOW) and explicit times: whole seconds only, and NOW is the
#   CLIENT's clock (sshfs process / client kernel), not the server's.
# - smb: open(O_APPEND) fails EIO and mount A then fails everything for ~3 s.
set -euo pipefail

readonly PROG=netmounts
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
readonly SHARE=share
readonly READY_TIMEOUT=${NETMOUNTS_TIMEOUT:-20}

WORK=""              # the temp dir
CREATED_POLICY=""    # policy-rc.d we created and must remove
CMD_PID=""           # COMMAND, while it runs
FUSE_PIDS=()         # sshfs / smbnetfs processes we started
DAEMON_PIDS=()       # sshd / smbd processes we started
MOUNTS=()            # mount points we created
PORT=""

usage() {
    cat >&2 <<EOF
usage: $0 run KIND -- COMMAND [ARGS...]
       $0 check KIND
KIND: sshfs | smb
EOF
    exit 2
}

# ---------------------------------------------------------------- processes

# ours PID: the process is one we started - our direct child, or a helper
# whose command line names our temp dir. Guards against a recycled pid.
ours() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    rest=${rest#* }
    [[ ${rest%% *} == "$$" ]] && return 0
    [[ -n $WORK ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$WORK"
}

# stop_ours PID: stop_tree, for a process that is still ours (not a recycled pid).
stop_ours() {
    [[ -n $1 ]] && ours "$1" || return 0
    stop_tree "$@"
}

# ------------------------------------------------------------------- mounts

is_mounted() {
    # Parse mountinfo instead of stat'ing: a hung FUSE mount must not hang us.
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

unmount() {
    local m=$1 lazy=${2:-}
    is_mounted "$m" || return 0
    if [[ -n $lazy ]]; then
        timeout -k 2 10 fusermount3 -uz "$m" 2>/dev/null ||
            timeout -k 2 10 umount -l "$m" 2>/dev/null || true
    else
        timeout -k 2 5 fusermount3 -u "$m" 2>/dev/null || true
    fi
}

# ----------------------------------------------------------------- teardown

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n $CMD_PID ]] && alive "$CMD_PID"; then
        say "stopping COMMAND (pid $CMD_PID)"
        stop_ours "$CMD_PID"
    fi
    local m p
    for m in "${MOUNTS[@]}"; do unmount "$m"; done
    for p in "${FUSE_PIDS[@]}"; do stop_ours "$p"; done
    for m in "${MOUNTS[@]}"; do
        if is_mounted "$m"; then
            say "warning: $m was busy or hung (a process still uses it?); lazy unmount"
            unmount "$m" lazy
        fi
    done
    for p in "${DAEMON_PIDS[@]}"; do stop_ours "$p"; done
    if [[ -n $WORK && -s $WORK/smb/pid/samba-dcerpcd.pid ]]; then
        # Only if smbd started one despite the config: it is ours, by pidfile.
        p=$(<"$WORK/smb/pid/samba-dcerpcd.pid")
        [[ $p =~ ^[0-9]+$ ]] && stop_ours "$p"
    fi
    [[ -n $CREATED_POLICY ]] && rm -f "$CREATED_POLICY"
    if [[ -n $WORK && -d $WORK ]]; then
        local busy=""
        for m in "${MOUNTS[@]}"; do is_mounted "$m" && busy=1; done
        if [[ -n $busy ]]; then
            say "warning: a mount is still present, leaving $WORK"
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
    exit "$rc"
}

# ----------------------------------------------------------------- helpers

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

random_port() {
    local p
    while :; do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        port_open "$p" || break
    done
    echo "$p"
}

show_logs() {
    local f
    for f in "$WORK"/logs/*; do
        [[ -s $f ]] || continue
        say "--- ${f##*/} (last lines)"
        tail -n 15 "$f" | sed 's/^/    /' >&2
    done
}

# listens PID PORT: PID itself holds the listening socket 127.0.0.1:PORT
# (not just anybody: the port may have been taken since we picked it).
listens() {
    local addr inode fd
    addr=$(printf '0100007F:%04X' "$2")
    inode=$(awk -v a="$addr" '$2 == a && $4 == "0A" { print $10; exit }' /proc/net/tcp)
    [[ -n $inode ]] || return 1
    for fd in "/proc/$1/fd/"*; do
        [[ $(readlink "$fd" 2>/dev/null) == "socket:[$inode]" ]] && return 0
    done
    return 1
}

# wait_daemon PID PORT: until the daemon listens (10 s); fail if it dies.
wait_daemon() {
    local pid=$1 port=$2 i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 1
        listens "$pid" "$port" && port_open "$port" && return 0
        sleep 0.1
    done
    return 1
}

# fs_ok CMD...: run a file-system command against a mount, bounded.
fs_ok() { timeout -k 1 5 "$@" >/dev/null 2>&1; }

# wait_mount MOUNTPOINT PID PATH: until mounted and PATH is a usable directory.
wait_mount() {
    local mnt=$1 pid=$2 path=$3 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        alive "$pid" || { say "FUSE client for $mnt exited"; return 1; }
        if is_mounted "$mnt" && fs_ok ls -d -- "$path/."; then return 0; fi
        sleep 0.2
    done
    say "timed out waiting for $path"
    return 1
}

# wait_visible PATH CONTENT: until PATH exists with CONTENT (bounded).
wait_visible() {
    local path=$1 want=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        [[ $(timeout -k 1 5 cat -- "$path" 2>/dev/null) == "$want" ]] && return 0
        sleep 0.2
    done
    return 1
}

# ------------------------------------------------------------------ servers

setup_sshfs() {
    ensure_packages openssh-server openssh-client sshfs fuse3
    local d=$WORK/ssh
    mkdir -p "$d" /run/sshd
    chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -C netmounts-host -f "$d/host_key"
    ssh-keygen -q -t ed25519 -N '' -C netmounts-client -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"

    local try
    for try in 1 2 3 4 5; do
        PORT=$(random_port)
        cat >"$d/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel INFO
EOF
        /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd rejects its config"
        start_bg "$WORK/logs/sshd.log" /usr/sbin/sshd -D -e -f "$d/sshd_config"
        DAEMON_PIDS+=("$BG_PID")
        wait_daemon "$BG_PID" "$PORT" && break
        stop_ours "$BG_PID"
        unset 'DAEMON_PIDS[-1]'
        PORT=""
    done
    [[ -n $PORT ]] || { show_logs; die "sshd did not start"; }

    printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$d/host_key.pub")" \
        >"$d/known_hosts"
    cat >"$d/ssh_config" <<EOF
Host netmounts
    HostName 127.0.0.1
    Port $PORT
    User root
    IdentityFile $d/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $d/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 5
    ServerAliveCountMax 3
    LogLevel ERROR
EOF

    local x mnt
    for x in a b; do
        mnt=$WORK/mnt-$x
        mkdir -p "$mnt"
        MOUNTS+=("$mnt")
        # -f: stay in the foreground so that the pid is sshfs itself.
        start_bg "$WORK/logs/sshfs-$x.log" \
            sshfs -f -F "$d/ssh_config" "netmounts:$WORK/export" "$mnt" \
            -o fsname="netmounts-$x"
        FUSE_PIDS+=("$BG_PID")
        wait_mount "$mnt" "$BG_PID" "$mnt" || { show_logs; die "sshfs mount $x failed"; }
    done
    MC_NET_A=$WORK/mnt-a
    MC_NET_B=$WORK/mnt-b
}

setup_smb() {
    ensure_packages samba smbclient smbnetfs fuse3
    local d=$WORK/smb
    mkdir -p "$d"/{private,lock,state,cache,pid,ncalrpc}
    chmod 700 "$d/private"
    local password
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

    local try
    for try in 1 2 3 4 5; do
        PORT=$(random_port)
        cat >"$d/smb.conf" <<EOF
[global]
    server role = standalone server
    workgroup = WORKGROUP
    interfaces = 127.0.0.1/8
    bind interfaces only = yes
    smb ports = $PORT
    disable netbios = yes
    rpc start on demand helpers = no
    private dir = $d/private
    lock directory = $d/lock
    state directory = $d/state
    cache directory = $d/cache
    pid directory = $d/pid
    ncalrpc dir = $d/ncalrpc
    log file = $WORK/logs/smbd.log
    max log size = 0
    passdb backend = tdbsam:$d/private/passdb.tdb
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    map archive = no

[$SHARE]
    path = $WORK/export
    read only = no
    create mask = 0644
    directory mask = 0755
EOF
        if [[ $try == 1 ]]; then
            printf '%s\n%s\n' "$password" "$password" |
                smbpasswd -c "$d/smb.conf" -s -a root >/dev/null ||
                die "smbpasswd failed"
        fi
        start_bg "$WORK/logs/smbd.out" \
            smbd --foreground --no-process-group -s "$d/smb.conf"
        DAEMON_PIDS+=("$BG_PID")
        wait_daemon "$BG_PID" "$PORT" && break
        stop_ours "$BG_PID"
        unset 'DAEMON_PIDS[-1]'
        PORT=""
    done
    [[ -n $PORT ]] || { show_logs; die "smbd did not start"; }

    local x mnt home
    for x in a b; do
        mnt=$WORK/mnt-$x
        home=$d/home-$x
        mkdir -p "$mnt" "$home/.smb"
        # libsmbclient reads $HOME/.smb/smb.conf: keep it off the LAN.
        cat >"$home/.smb/smb.conf" <<EOF
[global]
    workgroup = WORKGROUP
    disable netbios = yes
    name resolve order = host
    client min protocol = SMB2
EOF
        cat >"$home/.smb/smbnetfs.conf" <<EOF
smb_query_browsers "false"
use_libsecret "false"
auth "root" "$password"
EOF
        chmod 600 "$home/.smb/"*
        MOUNTS+=("$mnt")
        start_bg "$WORK/logs/smbnetfs-$x.log" env HOME="$home" \
            smbnetfs "$mnt" -f -o "config=$home/.smb/smbnetfs.conf"
        FUSE_PIDS+=("$BG_PID")
        wait_mount "$mnt" "$BG_PID" "$mnt/127.0.0.1:$PORT/$SHARE" ||
            { show_logs; die "smbnetfs mount $x failed"; }
    done
    MC_NET_A=$WORK/mnt-a/127.0.0.1:$PORT/$SHARE
    MC_NET_B=$WORK/mnt-b/127.0.0.1:$PORT/$SHARE
}

setup() {
    local kind=$1
    [[ $EUID -eq 0 ]] || die "must run as root"
    [[ -c /dev/fuse ]] || die "/dev/fuse is missing"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/netmounts.XXXXXX")
    mkdir -p "$WORK/export" "$WORK/logs"
    chmod 755 "$WORK" "$WORK/export"
    case $kind in
        sshfs) setup_sshfs ;;
        smb) setup_smb ;;
    esac
    # Both mounts must reach the same export: A -> B and B -> A.
    local probe=.netmounts-probe-$$
    if ! { echo from-a >"$MC_NET_A/$probe-a" &&
        wait_visible "$MC_NET_B/$probe-a" from-a &&
        echo from-b >"$MC_NET_B/$probe-b" &&
        wait_visible "$MC_NET_A/$probe-b" from-b &&
        [[ -f $WORK/export/$probe-a && -f $WORK/export/$probe-b ]]; }; then
        show_logs
        die "$kind mounts do not share the export"
    fi
    rm -f "$MC_NET_A/$probe-a" "$MC_NET_B/$probe-b"
    export MC_NET_KIND=$kind MC_NET_A MC_NET_B MC_NET_EXPORT=$WORK/export
    say "$kind ready (port $PORT): MC_NET_A=$MC_NET_A MC_NET_B=$MC_NET_B"
}

# ---------------------------------------------------------------- self-test

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# until_ms TIMEOUT_S CMD...: retry CMD every 50 ms; print elapsed ms or fail.
until_ms() {
    local limit=$(($1 * 1000)) t0 t
    shift
    t0=$(now_ms)
    while :; do
        if "$@"; then echo $(($(now_ms) - t0)); return 0; fi
        t=$(($(now_ms) - t0))
        ((t < limit)) || return 1
        sleep 0.05
    done
}

content_is() { [[ $(timeout -k 1 5 cat -- "$1" 2>/dev/null) == "$2" ]]; }
exists() { timeout -k 1 5 stat -- "$1" >/dev/null 2>&1; }
absent() { ! timeout -k 1 5 stat -- "$1" >/dev/null 2>&1 && fs_ok ls -d -- "${1%/*}/."; }
noclobber_write() { (set -o noclobber; echo "$2" >"$1") 2>/dev/null; }

self_test() {
    local A=$MC_NET_A B=$MC_NET_B fails=0 ms
    report() { printf '  %-44s %s\n' "$1" "$2"; }
    bad() { report "$1" "FAIL${2:+ ($2)}"; fails=$((fails + 1)); }
    echo "netmounts check: kind=$MC_NET_KIND port=$PORT"
    echo "  A=$A"
    echo "  B=$B"

    if noclobber_write "$A/lock" owner-a; then
        report "noclobber create via A" ok
    else
        bad "noclobber create via A"
    fi
    if ms=$(until_ms "$READY_TIMEOUT" content_is "$B/lock" owner-a); then
        report "A's file visible via B" "ok after ${ms} ms"
    else
        bad "A's file visible via B"
    fi
    if noclobber_write "$B/lock" owner-b; then
        bad "noclobber create via B refused" "B overwrote A's file"
    else
        report "noclobber create via B refused" ok
    fi
    if ! { content_is "$A/lock" owner-a && content_is "$WORK/export/lock" owner-a; }; then
        bad "lock content still A's"
    fi

    echo data-from-b >"$B/data" 2>/dev/null || bad "write via B"
    if ms=$(until_ms "$READY_TIMEOUT" content_is "$A/data" data-from-b); then
        report "write via B read via A" "ok after ${ms} ms"
    else
        bad "write via B read via A"
    fi

    if timeout -k 1 5 mv -- "$A/data" "$A/renamed" 2>/dev/null; then
        report "rename via A" ok
    else
        bad "rename via A"
    fi
    if ms=$(until_ms "$READY_TIMEOUT" content_is "$B/renamed" data-from-b) &&
        until_ms "$READY_TIMEOUT" absent "$B/data" >/dev/null; then
        report "rename seen via B" "ok after ${ms} ms"
    else
        bad "rename seen via B"
    fi

    echo old >"$A/target"
    if timeout -k 1 5 mv -f -- "$A/renamed" "$A/target" 2>/dev/null &&
        content_is "$A/target" data-from-b; then
        report "rename over existing file via A" ok
    else
        bad "rename over existing file via A"
    fi
    if ms=$(until_ms "$READY_TIMEOUT" content_is "$B/target" data-from-b); then
        report "rename-over seen via B" "ok after ${ms} ms"
    else
        bad "rename-over seen via B"
    fi

    rm -f "$A/lock" "$A/target" "$A/renamed" "$A/data" 2>/dev/null
    if ((fails)); then
        echo "netmounts check: $fails FAILED"
        return 1
    fi
    echo "netmounts check: all ok"
}

# --------------------------------------------------------------------- main

main() {
    (($# >= 2)) || usage
    local action=$1 kind=$2
    shift 2
    case $kind in sshfs | smb) ;; *) usage ;; esac
    trap teardown EXIT
    trap 'on_signal INT' INT
    trap 'on_signal TERM' TERM
    case $action in
        check)
            (($# == 0)) || usage
            setup "$kind"
            self_test
            ;;
        run)
            [[ ${1:-} == -- ]] && shift
            (($#)) || usage
            setup "$kind"
            # In the background so that a TERM to this script is handled at
            # once (teardown stops COMMAND); <&0 keeps our stdin for it.
            "$@" <&0 &
            CMD_PID=$!
            local rc=0
            wait "$CMD_PID" || rc=$?
            CMD_PID=""
            exit "$rc"
            ;;
        *) usage ;;
    esac
}

main "$@"
