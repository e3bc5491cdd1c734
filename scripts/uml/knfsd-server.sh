# shellcheck shell=bash
# knfsd-server.sh - the file server guest of kernel-clients.sh's knfsd kinds: the Linux
# kernel's own NFS server (nfsd), as NAS appliances run it, on an ext4 disk.
#
# Sourced by guest-init.sh (its KC_SETUP) once the guest has its network and its
# modules (nfsd, which brings lockd and sunrpc), before its agent starts. Settings from
# the guest's config (written by kernel-clients.sh):
#   KC_EXPORT     the export's path: the ext4 disk /dev/ubda is mounted there, at the
#                 same path as the (empty) export directory on the host, so that a
#                 program run in this guest finds the server's view at MC_KC_EXPORT
#   KC_HOST_CTL   the control directory's path on the host: mounted at that same path
#                 (hostfs), so that programs run here reach the other guests' jobs by
#                 the paths they would use on the host
#   KC_GRACE      nfsd's NFSv4 grace period, seconds (10, nfsd's least)
# The export's own file system must be one nfsd can export (hostfs is not: it has no
# file handles), hence a disk of its own. nfsd, mountd and rpcbind use their Debian
# defaults (nfs-kernel-server 2.6), but for mountd's fixed port (20048) and the grace
# period; the export's options are nfs-utils' defaults (sync, root squashed off for the
# tests' root, subtree checks off).

knfsd_start() {
    mkdir -p "$KC_EXPORT" "$KC_HOST_CTL" /run/rpcbind
    mount -t ext4 /dev/ubda "$KC_EXPORT" || fail "cannot mount the export's disk"
    chmod 755 "$KC_EXPORT"
    mount -t hostfs hostfs "$KC_HOST_CTL" -o "$KC_HOST_CTL" ||
        fail "cannot mount the control directory"
    # nfs-utils keeps its export tables in /var/lib/nfs, read-only here.
    mount -t tmpfs -o mode=755 tmpfs /var/lib/nfs || fail "no tmpfs for /var/lib/nfs"
    mkdir -p /var/lib/nfs/v4recovery /var/lib/nfs/rpc_pipefs
    : >/var/lib/nfs/etab
    : >/var/lib/nfs/rmtab
    mount -t rpc_pipefs sunrpc /var/lib/nfs/rpc_pipefs 2>/dev/null
    mount -t nfsd nfsd /proc/fs/nfsd || fail "cannot mount the nfsd file system"
    # lockd registers with rpcbind when nfsd starts, and mountd does too.
    rpcbind -w || fail "rpcbind did not start"
    exportfs -o rw,sync,no_root_squash,no_subtree_check,fsid=0 "*:$KC_EXPORT" ||
        fail "exportfs $KC_EXPORT failed"
    rpc.mountd --port 20048 || fail "rpc.mountd did not start"
    rpc.nfsd --grace-time "${KC_GRACE:-10}" 8 || fail "rpc.nfsd did not start"
    log "nfsd: $(cat /proc/fs/nfsd/versions); exported: $(exportfs -v | tr -s ' \n\t' ' ')"
}

knfsd_start
