#!/bin/bash
# guest-init.sh - PID 1 of a user-mode-linux guest started by kernel-clients.sh.
#
# The guest's root is the host's `/`, read-only (hostfs). The kernel command
# line names the guest and the host directory it shares with the host as
# KC_NAME=... KC_CTL=..., which the kernel hands to init as environment
# variables; the rest of its settings are in $KC_CTL/$KC_NAME/config (written
# by kernel-clients.sh):
#   KC_IP          this guest's address (CIDR)
#   KC_MACHINE_ID  its /etc/machine-id
#   KC_MODULES     kernel modules to load, space-separated
#   KC_FSTYPE, KC_MOUNT, KC_OPTS   the share: mount -t KC_FSTYPE -o KC_OPTS KC_MOUNT
#   KC_SETUP       optional: a script sourced before the agent starts (a server's setup)
# It mounts what a host needs and the share on /run/kc/share, then serves jobs
# from $KC_CTL/$KC_NAME (the agent below) until a `halt` file appears there.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root LANG=C.UTF-8
# The host's XSAVE area may be larger than this kernel switches between the
# threads of a process (see xstate-shim.c): keep the C library off AVX-512.
export GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /var/tmp 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run/kc/ctl /run/kc/share /run/kc/etc
mount -t hostfs hostfs /run/kc/ctl -o "$KC_CTL"
me=/run/kc/ctl/$KC_NAME
exec >>"$me/console.log" 2>&1
# shellcheck source=/dev/null
source "$me/config"
log() { echo "guest $KC_NAME: $*"; }
fail() {
    log "SETUP FAILED: $*"
    echo "$*" >"$me/failed"
    poweroff_now
}
poweroff_now() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 5
    exit 0   # init exiting panics the kernel, which ends the process too
}

# Its own identity: hostname, machine id (boot_id is the kernel's own).
hostname "kc-$KC_NAME"
printf '%s\n' "$KC_MACHINE_ID" >/run/kc/etc/machine-id
mount --bind /run/kc/etc/machine-id /etc/machine-id
printf '127.0.0.1 localhost\n127.0.1.1 kc-%s\n' "$KC_NAME" >/run/kc/etc/hosts
mount --bind /run/kc/etc/hosts /etc/hosts

# The UML modules: modprobe -d wants them under lib/modules of its directory;
# the kernel's own module requests go through the same wrapper.
mkdir -p /run/kc/mods/lib/modules
mount --bind /usr/lib/uml/modules /run/kc/mods/lib/modules
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/kc/mods "$@"\n' >/run/kc/modprobe
chmod 755 /run/kc/modprobe
echo /run/kc/modprobe >/proc/sys/kernel/modprobe

ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add "$KC_IP" dev eth0 || fail "cannot address eth0"
echo 1 >/proc/sys/kernel/sysrq

for module in $KC_MODULES; do
    /run/kc/modprobe "$module" || fail "modprobe $module failed"
done

if [[ -n ${KC_FSTYPE:-} ]]; then
    ok=""
    for _ in $(seq 1 40); do
        if mount -t "$KC_FSTYPE" -o "$KC_OPTS" "$KC_MOUNT" /run/kc/share 2>"$me/mount.err"; then
            ok=1
            break
        fi
        sleep 0.25
    done
    [[ -n $ok ]] || fail "mount -t $KC_FSTYPE $KC_MOUNT: $(cat "$me/mount.err")"
fi
# A server guest's own setup (kernel-clients.sh's knfsd kinds: knfsd-server.sh).
if [[ -n ${KC_SETUP:-} ]]; then
    # shellcheck source=/dev/null
    source "$KC_SETUP"
fi
log "ready: $(uname -r) $(hostname) $(grep " /run/kc/share " /proc/mounts)"

# ---------------------------------------------------------------- the agent
# A job is a bash script the host renames into $me/jobs/ID.sh. The agent moves
# it to $me/run/, runs it in the background, records its pid in ID.pid and,
# when it ends, its exit status in ID.rc (written then renamed, so the host
# never reads half of it). Output goes to ID.out. Polling uses `read -t` on a
# FIFO, a builtin, so an idle guest forks nothing.
mkdir -p "$me/jobs" "$me/run"
mkfifo /run/kc/tick
exec 9<>/run/kc/tick
: >"$me/ready"
shopt -s nullglob
while [[ ! -e $me/halt ]]; do
    for job in "$me"/jobs/*.sh; do
        id=${job##*/}
        id=${id%.sh}
        mv "$job" "$me/run/$id.sh" || continue
        (
            cd /run/kc/ctl || exit 1
            bash "$me/run/$id.sh" >"$me/run/$id.out" 2>&1 </dev/null
            echo $? >"$me/run/$id.rc.tmp"
            mv "$me/run/$id.rc.tmp" "$me/run/$id.rc"
        ) &
        echo $! >"$me/run/$id.pid"
    done
    read -r -t 0.02 -u 9 _
done
log "halting"
umount -f -l /run/kc/share 2>/dev/null
poweroff_now
