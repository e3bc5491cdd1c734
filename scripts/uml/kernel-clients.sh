#!/usr/bin/env bash
# kernel-clients.sh - two hosts with REAL Linux kernel NFS or SMB clients, on one
# Debian 12 box, without KVM: user-mode-linux guests against servers started here.
#
# Usage:
#   scripts/uml/kernel-clients.sh run   KIND -- COMMAND [ARGS...]
#   scripts/uml/kernel-clients.sh check KIND
#   KIND: nfs3 | nfs4.2 | cifs (ganesha for NFS, Samba for SMB 3.1.1), or
#         knfsd3 | knfsd4.2 (a third guest, `srv`, runs the kernel's own nfsd on an
#         ext4 disk: what NAS appliances run; see "The kernel's nfsd" below).
#   Must run as root; needs /dev/net/tun. Installs its Debian packages itself.
#
# `run` makes a network namespace holding a bridge, starts the server(s) in it,
# boots two guests `a` and `b` (Debian's `linux.uml`, kernel 6.1), each with its
# own hostname (kc-a, kc-b), /etc/machine-id, boot id, kernel clock and caches,
# each mounting the one export on /run/kc/share with the kernel's default mount
# options, and then runs COMMAND on this host with:
#   MC_KC_KIND     the KIND
#   MC_KC_CTL      the control directory (the guests see it; see guest-init.sh):
#                  a job for guest G is a bash script renamed into $MC_KC_CTL/G/jobs/ID.sh;
#                  G/run/ID.pid, ID.out and ID.rc come back
#   MC_KC_GUESTS   "a b"
#   MC_KC_SHARE    /run/kc/share: the export as each guest's kernel client shows it
#   MC_KC_EXPORT   the export directory on this host (the server's view)
#   MC_KC_CAPTURE  KC_CAPTURE, when the bridge is captured (see the knobs)
# Every guest's root is this host's `/`, read-only, so the project's binaries
# run in them by their absolute paths; results come back through MC_KC_CTL.
# The exit code of COMMAND is the exit code of the script; 75 when the servers or
# guests did not come up (COMMAND never ran), 3 when its packages cannot be installed. `check` runs a short
# self-test instead (a file made through a is read through b).
#
# The kernel's nfsd (knfsd3, knfsd4.2): nfsd cannot export hostfs (no file handles),
# so the export is an ext4 disk of the server guest (a sparse image in the temp dir),
# which this host cannot read while the guest runs. COMMAND therefore runs IN the
# server guest, as a job of its agent, at this host's working directory, with the
# environment above and this host's MC_*, RUST_*, FAULT_MATRIX_* and KERNEL_CLIENTS_*
# variables; there MC_KC_EXPORT is the server's own view of the export (its ext4 at
# the path of the host's empty export directory) and MC_KC_CTL the host's control
# directory at its host path. Its output is copied to this host's stdout as it comes;
# it has no stdin, and the host's root is read-only there (write to /tmp, the export
# or MC_KC_CTL). Mounts: vers=3 (with the ports and `nolock` as for ganesha) or
# vers=4.2; nfsd's NFSv4 grace period is cut to its least (10 s) and waited out
# before COMMAND starts.
#
# Choices:
# - Servers: nfs-ganesha (VFS FSAL, NFSv3 + v4.x, grace period off) with its own
#   rpcbind, both in a private mount namespace so their sockets in /run are
#   theirs; Samba's smbd with its own smb.conf. All bound to the namespace's
#   bridge; nothing listens outside it.
# - NFSv3 mounts need `nolock` (no lockd/statd in the guests; the protocol under
#   test never uses byte-range locks) and fixed ports (no portmapper query).
# - Guests are stopped by a `halt` file (they unmount and power off), then by
#   their pids: every wait is bounded, a hung guest is killed.
#
# Knobs: KC_BOOT_TIMEOUT (seconds for a guest to boot and mount, default 60),
#        KC_MEM (guest memory, default 192M),
#        KC_SERVER_MEM (the knfsd server guest's memory, default 512M: its page
#        cache, and COMMAND with what it runs), KC_DISK (its ext4 disk, default 4G),
#        KC_SMB_LOG_LEVEL (smbd's `log level`, default 0; its log is among those
#        shown on a failure and kept with KC_KEEP_FAILED=1),
#        KC_SMB_SHARE_OPTS (more lines for the share's section of smb.conf),
#        KC_CAPTURE (a directory: every packet on the namespace's bridge is written
#        there by tcpdump, the first 512 bytes of each, to a ring of 10 files of
#        100 MB, bridge.pcap0 to bridge.pcap9, the newest last written; read them with
#        `tshark -r FILE -Y nfs`; its log is bridge.log there).
set -euo pipefail

readonly PROG=kernel-clients
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
# shellcheck source=scripts/lib.sh
source "$HERE/../lib.sh"
readonly BOOT_TIMEOUT=${KC_BOOT_TIMEOUT:-60}
readonly MEM=${KC_MEM:-192M}
readonly GUEST_SHARE=/run/kc/share
readonly PACKAGES=(user-mode-linux nfs-ganesha nfs-ganesha-vfs rpcbind samba kmod iproute2)
# Only for the knfsd kinds: the server's daemons and tools, and mkfs.ext4.
readonly KNFSD_PACKAGES=(nfs-kernel-server e2fsprogs)
readonly SERVER_MEM=${KC_SERVER_MEM:-512M}
readonly KNFSD_GRACE=10

WORK=""            # the temp dir
NS=""              # the network namespace
NET=""             # its first three octets
CREATED_POLICY=""  # policy-rc.d we created and must remove
CMD_PID=""         # COMMAND, while it runs
CMD_STARTED=""     # set once COMMAND (or the self-test) has started
SERVER_PIDS=()     # server process trees we started
GUEST_PIDS=()      # linux.uml processes we started
GUEST_NAMES=()     # their names
GUEST_CONFIG=""    # more lines for the next boot_guest's config
GUEST_ARGS=()      # more linux.uml arguments for the next boot_guest
GUEST_MEM=""       # the next boot_guest's memory, if not $MEM
KNFSD_SINCE=""     # SECONDS when the knfsd server guest was serving

usage() {
    cat >&2 <<EOF
usage: $0 run KIND -- COMMAND [ARGS...]
       $0 check KIND
KIND: nfs3 | nfs4.2 | cifs | knfsd3 | knfsd4.2
EOF
    exit 2
}

# ---------------------------------------------------------------- processes

# ----------------------------------------------------------------- teardown

stop_guests() {
    local name i pid
    # The clients first: a client whose server has gone cannot unmount.
    for name in "${GUEST_NAMES[@]}"; do
        [[ $name == srv ]] || : >"$WORK/ctl/$name/halt"
    done
    for ((i = ${#GUEST_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${GUEST_PIDS[$i]}
        [[ ${GUEST_NAMES[$i]} != srv ]] || : >"$WORK/ctl/srv/halt"
        # A guest unmounts and powers off in about a second; a hung one is killed.
        for ((t = 0; t < 100; t++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "guest ${GUEST_NAMES[$i]} (pid $pid) did not power off; killing it"
        fi
        stop_tree "$pid" 3
    done
    GUEST_PIDS=()
}

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    rc=$(setup_failure_code "$rc")
    if ((rc != 0)) && [[ -n $WORK && -d $WORK/logs ]]; then
        say "failed (exit $rc); the servers' and guests' logs:"
        show_logs
    fi
    if [[ -n $CMD_PID ]] && alive "$CMD_PID"; then
        say "stopping COMMAND (pid $CMD_PID)"
        stop_tree "$CMD_PID"
    fi
    [[ -n $WORK ]] && stop_guests
    local p
    for p in "${SERVER_PIDS[@]}"; do stop_tree "$p"; done
    [[ -n $NS ]] && ip netns del "$NS" 2>/dev/null
    [[ -n $CREATED_POLICY ]] && rm -f "$CREATED_POLICY"
    if [[ -n $WORK && -d $WORK ]]; then
        if ((rc != 0)) && [[ -n ${KC_KEEP_FAILED:-} ]]; then
            say "keeping $WORK for inspection"
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
    exit "$rc"
}

# setup_failure_code RC: RC, but 75 for an error before COMMAND started (a server, a
# guest's boot or its mount did not come up), so that a caller can tell a harness
# that did not start from a failing test (scripts/uml/tests.sh retries it once).
setup_failure_code() {
    if (($1 == 1)) && [[ -z $CMD_STARTED ]]; then
        echo 75
    else
        echo "$1"
    fi
}

# --------------------------------------------------------------------- logs

show_logs() {
    local f
    for f in "$WORK"/logs/* "$WORK"/ctl/*/console.log "$WORK"/ctl/*/failed; do
        [[ -s $f ]] || continue
        say "--- ${f#"$WORK"/} (last lines)"
        tail -n 20 "$f" | sed 's/^/    /' >&2
    done
}

# ------------------------------------------------------------------ network

# A bridge in a namespace of our own; the server is .1, guests .11, .12, ...
setup_network() {
    NS=kc-$$
    # A /24 of 10.213.0.0/16 picked from the pid: private to the namespace anyway.
    NET=10.213.$(($$ % 250 + 1))
    ip netns add "$NS" || die "cannot create a network namespace"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$NET.1/24" dev br0
    ip -n "$NS" link set br0 up
}

# start_capture DIR: tcpdump on the bridge into a ring of files in DIR (KC_CAPTURE).
start_capture() {
    local dir=$1
    ensure_packages tcpdump
    mkdir -p "$dir" || die "cannot create KC_CAPTURE's $dir"
    # -U: each packet is written as it comes, so a capture cut short loses none; -Z root:
    # it keeps writing to DIR (it would drop to its own user, who may not).
    start_bg "$dir/bridge.log" ip netns exec "$NS" \
        tcpdump -i br0 -n -U -s 512 -C 100 -W 10 -Z root -w "$dir/bridge.pcap"
    SERVER_PIDS+=("$BG_PID")
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q 'listening on' "$dir/bridge.log" 2>/dev/null && break
        alive "$BG_PID" || break
        sleep 0.1
    done
    grep -q 'listening on' "$dir/bridge.log" 2>/dev/null ||
        die "tcpdump did not start: $(cat "$dir/bridge.log" 2>/dev/null)"
    say "capturing the bridge into $dir/bridge.pcap*"
}

add_tap() {
    ip -n "$NS" tuntap add dev "tap-$1" mode tap
    ip -n "$NS" link set "tap-$1" master br0
    ip -n "$NS" link set "tap-$1" up
}

# ------------------------------------------------------------------ servers

start_ganesha() {
    local d=$WORK/ganesha
    mkdir -p "$d/recovery"
    cat >"$d/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Protocols = 3, 4;
    Bind_addr = $NET.1;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}
NFSV4 {
    Graceless = true;
    Grace_Period = 0;
    RecoveryBackend = fs;
    RecoveryRoot = "$d/recovery";
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1;
    Path = "$WORK/export";
    Pseudo = /share;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3, 4;
    Transports = TCP;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
EOF
    # rpcbind and ganesha share a private /run (rpcbind's socket is there).
    # shellcheck disable=SC2016 # expanded by the inner bash
    start_bg "$WORK/logs/ganesha.out" ip netns exec "$NS" \
        unshare -m --propagation private bash -c '
            mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind /run/ganesha || exit 1
            rpcbind -f -w &
            for ((i = 0; i < 100; i++)); do
                [[ -S /run/rpcbind.sock ]] && break
                sleep 0.1
            done
            [[ -S /run/rpcbind.sock ]] || { echo "rpcbind did not start"; exit 1; }
            ganesha.nfsd -F -f "$1/ganesha.conf" -L "$2/ganesha.log" -p /run/ganesha/pid &
            wait -n
            echo "a server exited: $?"
            kill $(jobs -p) 2>/dev/null
        ' ganesha "$d" "$WORK/logs"
    SERVER_PIDS+=("$BG_PID")
    wait_port 2049 "$BG_PID" || { show_logs; die "ganesha did not start"; }
    wait_port 20048 "$BG_PID" || { show_logs; die "ganesha's mount service did not start"; }
}

SMB_PASSWORD=""
start_samba() {
    local d=$WORK/smb
    mkdir -p "$d"/{private,lock,state,cache,pid,ncalrpc}
    chmod 700 "$d/private"
    SMB_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$d/smb.conf" <<EOF
[global]
    server role = standalone server
    workgroup = WORKGROUP
    interfaces = $NET.1/24
    bind interfaces only = yes
    smb ports = 445
    disable netbios = yes
    server min protocol = SMB3_11
    rpc start on demand helpers = no
    private dir = $d/private
    lock directory = $d/lock
    state directory = $d/state
    cache directory = $d/cache
    pid directory = $d/pid
    ncalrpc dir = $d/ncalrpc
    log file = $WORK/logs/smbd.log
    max log size = 0
    log level = ${KC_SMB_LOG_LEVEL:-0}
    debug pid = yes
    passdb backend = tdbsam:$d/private/passdb.tdb
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    map archive = no

[share]
    path = $WORK/export
    read only = no
    create mask = 0644
    directory mask = 0755
    # No leases on the lock files (docs/locking.md, "Measured on real kernel
    # clients"): with them, Samba 4.17 can hold one client's open of a lock for
    # a minute, waiting on a lease break it never sends to the other client.
    veto oplock files = /*.mediabox.lock*/.mediabox.clock-*/
${KC_SMB_SHARE_OPTS:-}
EOF
    printf '%s\n%s\n' "$SMB_PASSWORD" "$SMB_PASSWORD" |
        smbpasswd -c "$d/smb.conf" -s -a root >/dev/null || die "smbpasswd failed"
    start_bg "$WORK/logs/smbd.out" ip netns exec "$NS" \
        smbd --foreground --no-process-group -s "$d/smb.conf"
    SERVER_PIDS+=("$BG_PID")
    wait_port 445 "$BG_PID" || { show_logs; die "smbd did not start"; }
}

# wait_port PORT PID: until something in the namespace accepts on $NET.1:PORT
# (10 s); fail at once if PID (the server's tree) exits.
wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        alive "$2" || return 1
        ip netns exec "$NS" timeout 2 bash -c "exec 3<>/dev/tcp/$NET.1/$1" 2>/dev/null &&
            return 0
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------- guests

# boot_guest NAME INDEX FSTYPE SOURCE OPTIONS MODULES...: boot one guest, which
# mounts SOURCE on /run/kc/share (no mount when FSTYPE is empty).
boot_guest() {
    local name=$1 index=$2 fstype=$3 source=$4 options=$5
    shift 5
    local me=$WORK/ctl/$name
    mkdir -p "$me"
    cat >"$me/config" <<EOF
KC_IP=$NET.$((10 + index))/24
KC_MACHINE_ID=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
KC_MODULES="$*"
KC_FSTYPE=$fstype
KC_MOUNT='$source'
KC_OPTS='$options'
$GUEST_CONFIG
EOF
    add_tap "$name"
    # TMPDIR: where linux.uml keeps the file backing the guest's memory.
    mkdir -p "$WORK/uml/$name"
    start_bg "$WORK/logs/uml-$name.log" ip netns exec "$NS" \
        env TMPDIR="$WORK/uml/$name" LD_PRELOAD="$WORK/xstate-shim.so" linux.uml \
        "umid=kc-$$-$name" "uml_dir=$WORK/uml" "mem=${GUEST_MEM:-$MEM}" \
        rootfstype=hostfs rootflags=/ ro \
        "eth0=tuntap,tap-$name" con=null con0=null,fd:1 \
        "init=$HERE/guest-init.sh" "KC_NAME=$name" "KC_CTL=$WORK/ctl" "${GUEST_ARGS[@]}"
    GUEST_PIDS+=("$BG_PID")
    GUEST_NAMES+=("$name")
}

# ---------------------------------------------------------- the kernel's nfsd

# start_knfsd: boot the server guest `srv` (.10): nfsd exporting an ext4 disk of its
# own at $WORK/export (knfsd-server.sh); returns once it serves.
start_knfsd() {
    local disk=$WORK/export.img
    truncate -s "${KC_DISK:-4G}" "$disk"
    mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$disk" ||
        die "mkfs.ext4 $disk failed"
    GUEST_CONFIG="KC_SETUP=$HERE/knfsd-server.sh
KC_EXPORT=$WORK/export
KC_HOST_CTL=$WORK/ctl
KC_GRACE=$KNFSD_GRACE"
    GUEST_ARGS=("ubd0=$disk")
    GUEST_MEM=$SERVER_MEM
    boot_guest srv 0 "" "" "" nfsd
    GUEST_MEM="" GUEST_CONFIG="" GUEST_ARGS=()
    wait_guests
    KNFSD_SINCE=$SECONDS
}

# wait_grace: until nfsd's NFSv4 grace period is over (counted from its start).
wait_grace() {
    local left=$((KNFSD_GRACE + 1 - (SECONDS - KNFSD_SINCE)))
    ((left <= 0)) || sleep "$left"
}

# run_in_server COMMAND...: COMMAND as a job of the server guest (see the header);
# its output to stdout as it comes; returns its exit code.
run_in_server() {
    local script id run=$WORK/ctl/srv/run tail_pid
    script="cd $(printf %q "$PWD") || exit 1"$'\n'
    script+=$(export -p | grep -E '^declare -x (MC_|RUST_|FAULT_MATRIX_|KERNEL_CLIENTS_)' || true)
    script+=$'\n'"exec $(printf '%q ' "$@")"
    id=$(kc_spawn srv "$script")
    until [[ -e $run/$id.out || -e $run/$id.rc ]]; do
        alive "${GUEST_PIDS[0]}" || die "the server guest exited"
        sleep 0.1
    done
    tail -n +1 -f "$run/$id.out" &
    tail_pid=$!
    until [[ -e $run/$id.rc ]]; do
        alive "${GUEST_PIDS[0]}" || { kill "$tail_pid"; die "the server guest exited"; }
        sleep 0.2
    done
    sleep 0.5
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
    return "$(cat "$run/$id.rc")"
}

# on_server TEST-ARGS...: `test TEST-ARGS` on the file server's view of the export.
on_server() {
    if [[ -n $KNFSD_SINCE ]]; then
        kc_run srv 20 "test $(printf '%q ' "$@")" >/dev/null
    else
        test "$@"
    fi
}

# wait_guests: until every guest has mounted and its agent runs.
wait_guests() {
    local deadline=$((SECONDS + BOOT_TIMEOUT)) i name pending
    while ((SECONDS < deadline)); do
        pending=0
        for i in "${!GUEST_NAMES[@]}"; do
            name=${GUEST_NAMES[$i]}
            if [[ -e $WORK/ctl/$name/failed ]]; then
                show_logs
                die "guest $name: $(cat "$WORK/ctl/$name/failed")"
            fi
            alive "${GUEST_PIDS[$i]}" || { show_logs; die "guest $name exited while booting"; }
            [[ -e $WORK/ctl/$name/ready ]] || pending=1
        done
        ((pending)) || return 0
        sleep 0.1
    done
    show_logs
    die "guests not ready after $BOOT_TIMEOUT s"
}

setup() {
    local kind=$1
    [[ $EUID -eq 0 ]] || die "must run as root"
    [[ -c /dev/net/tun ]] || die "/dev/net/tun is missing"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/kernel-clients.XXXXXX")
    mkdir -p "$WORK/export" "$WORK/logs" "$WORK/ctl"
    chmod 755 "$WORK" "$WORK/export"
    chmod 777 "$WORK/ctl"
    ensure_packages "${PACKAGES[@]}"
    command -v cc >/dev/null || die "no C compiler (cc) for xstate-shim.c"
    cc -O2 -shared -fPIC -o "$WORK/xstate-shim.so" "$HERE/xstate-shim.c" -ldl ||
        die "cannot build xstate-shim.so"
    local started=$SECONDS
    setup_network
    [[ -z ${KC_CAPTURE:-} ]] || start_capture "$KC_CAPTURE"
    local fstype source options modules
    case $kind in
        nfs3 | nfs4.2)
            start_ganesha
            fstype=nfs
            if [[ $kind == nfs3 ]]; then
                source=$NET.1:$WORK/export
                options=vers=3,nolock,addr=$NET.1,port=2049,mountport=20048,mountvers=3,mountproto=tcp,mountaddr=$NET.1
                modules="nfsv3"
            else
                source=$NET.1:/share
                options=vers=4.2,addr=$NET.1
                modules="nfsv4"
            fi
            ;;
        knfsd3 | knfsd4.2)
            ensure_packages "${KNFSD_PACKAGES[@]}"
            start_knfsd
            fstype=nfs
            if [[ $kind == knfsd3 ]]; then
                source=$NET.10:$WORK/export
                options=vers=3,nolock,addr=$NET.10,port=2049,mountport=20048,mountvers=3,mountproto=tcp,mountaddr=$NET.10
                modules="nfsv3"
            else
                # The export is NFSv4's root (fsid=0): the guest's own root is
                # hostfs, which cannot be part of a pseudo file system.
                source=$NET.10:/
                options=vers=4.2,addr=$NET.10
                modules="nfsv4"
            fi
            ;;
        cifs)
            start_samba
            fstype=cifs
            source=//$NET.1/share
            options=vers=3.1.1,ip=$NET.1,username=root,password=$SMB_PASSWORD
            modules="cifs"
            ;;
    esac
    local name index=0
    for name in a b; do
        index=$((index + 1))
        # shellcheck disable=SC2086 # modules: one word each
        boot_guest "$name" "$index" "$fstype" "$source" "$options" $modules
    done
    wait_guests
    [[ -z $KNFSD_SINCE ]] || wait_grace
    export MC_KC_KIND=$kind MC_KC_CTL=$WORK/ctl MC_KC_GUESTS="a b"
    export MC_KC_SHARE=$GUEST_SHARE MC_KC_EXPORT=$WORK/export
    [[ -z ${KC_CAPTURE:-} ]] || export MC_KC_CAPTURE=$KC_CAPTURE
    say "$kind ready in $((SECONDS - started)) s: guests a and b mount it on $GUEST_SHARE"
}

# ---------------------------------------------------------------- self-test

# shellcheck source=scripts/uml/agent.sh
source "$HERE/agent.sh"

self_test() {
    local s=$MC_KC_SHARE
    echo "kernel-clients check: kind=$MC_KC_KIND"
    kc_run a 20 "hostname; grep ' $s ' /proc/mounts; echo from-a > $s/probe" || return 1
    kc_run b 20 "hostname; cat $s/probe; rm $s/probe" || return 1
    # cifs closes lazily (closetimeo=1): the server removes a file deleted
    # while a's handle is open when that handle closes.
    local t
    for ((t = 0; t < 50; t++)); do
        on_server -e "$MC_KC_EXPORT/probe" || break
        sleep 0.1
    done
    ! on_server -e "$MC_KC_EXPORT/probe" || { echo "probe still on the export after 5 s"; return 1; }
    echo "kernel-clients check: all ok"
}

# --------------------------------------------------------------------- main

main() {
    (($# >= 2)) || usage
    local action=$1 kind=$2
    shift 2
    case $kind in nfs3 | nfs4.2 | cifs | knfsd3 | knfsd4.2) ;; *) usage ;; esac
    # The guests see this host's `/` but mount tmpfs of their own on /tmp, /var/tmp and /run
    # (guest-init.sh): a checkout there, and the binaries built in it, are not theirs to run.
    local here
    here=$(cd "$HERE/../.." && pwd -P)
    case $here/ in
        /tmp/* | /var/tmp/* | /run/*)
            echo "kernel-clients.sh: this checkout ($here) is under /tmp, /var/tmp or /run," \
                "which the guests replace with tmpfs of their own, so they cannot run its" \
                "binaries; clone it elsewhere (e.g. under /root or /srv) and run this again" >&2
            exit 2
            ;;
    esac
    trap teardown EXIT
    trap 'on_signal INT' INT
    trap 'on_signal TERM' TERM
    case $action in
        check)
            (($# == 0)) || usage
            setup "$kind"
            CMD_STARTED=1
            self_test
            ;;
        run)
            [[ ${1:-} == -- ]] && shift
            (($#)) || usage
            setup "$kind"
            CMD_STARTED=1
            if [[ -n $KNFSD_SINCE ]]; then
                run_in_server "$@" &
            else
                "$@" <&0 &
            fi
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
