#!/usr/bin/env bash
# tests.sh - the lock protocol's proofs on REAL kernel NFS and SMB clients.
#
# Usage: scripts/uml/tests.sh [nfs3|nfs4.2|cifs|knfsd3|knfsd4.2 ...] [-- TEST-FILTER...]
#        (default: nfs3 nfs4.2 cifs, every test; the knfsd kinds, against the
#        kernel's own nfsd in a third guest, run when named)
#
# For each kind, scripts/uml/kernel-clients.sh boots two user-mode-linux guests
# mounting one export (one boot per kind) and runs
#   cargo test --locked --test kernel_clients -- --include-ignored --test-threads=1
# on this host, which drives the guests (see tests/kernel_clients.rs).
#
# Each test prints its duration (KIND TEST: N s), each kind its total.
# On request: MC_KC_MEASURE=1 also measures what docs/locking.md's table shows
# but no test asserts (about a minute more a kind on NFS);
# MC_KC_FAULT_MATRIX_KINDS="nfs4.2 cifs" runs the crash-and-fault matrix's subset
# on CIFS too (5 minutes more); MC_KC_FAULT_MATRIX_ONLY picks its cases.
# MC_KC_REPEAT=N with TEST-FILTERs runs them N times on one boot of each kind, each
# run's verdict and time printed and the tally at the end (failing if any run failed),
# e.g. `MC_KC_REPEAT=40 scripts/uml/tests.sh nfs4.2 -- --exact hammer_across_two_kernel_clients_never_overlaps`;
# with KC_CAPTURE (kernel-clients.sh: the bridge's packets) it stops after the first
# failing run, so the capture ends with it.
#
# Needs root and /dev/net/tun (kernel-clients.sh installs its Debian packages).
# Without them, or when the packages cannot be installed, this prints a loud
# SKIPPED banner and exits 0, or 1 when KERNEL_CLIENTS_REQUIRED=1 (so a CI that
# must run them cannot pass by skipping). A kind whose servers or guests do not come
# up is retried once, with a loud banner; any other failure of a boot or a test fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Defects these tests found in code outside this harness, not fixed yet: KIND:TEST
# and the issue. Each still runs, alone, and its failure is shown in a loud
# banner without failing the run; once it passes, a banner says to take it off.
# With TEST-FILTERs given, nothing is treated as known.
KNOWN_DEFECTS=(
    # A client open() of the lock kept asleep in update_open_stateid behind nfs-ganesha 4.3's
    # OPEN/CLOSE race (seen on the wire; its issue #1395) while the other hammer of the guest
    # polls the lock: 1 hang in 85 runs, then none in 200 one boot at a time (140 of them
    # with changing hands polled slowly too), its cause not found. The same hammer gates on
    # NFSv4.2 against the kernel's nfsd (knfsd4.2), which never showed it (60 of 60).
    # docs/locking.md says more.
    "nfs4.2:hammer_across_two_kernel_clients_never_overlaps nfs-ganesha 4.3's OPEN/CLOSE race (docs/locking.md, \"A stall in NFSv4.1+ open()\")"
)

banner() {
    {
        echo "##########################################################################"
        printf '#  %s\n' "$@"
        echo "##########################################################################"
    } >&2
}

skipped() {
    banner "KERNEL CLIENT TESTS SKIPPED: $*" \
        "(the NFSv3, NFSv4.2 and CIFS proofs of the lock protocol did NOT run)"
    if [[ ${KERNEL_CLIENTS_REQUIRED:-0} == 1 ]]; then
        exit 1
    fi
    exit 0
}

# --inner KIND [FILTER...]: inside kernel-clients.sh; runs the tests.
if [[ ${1:-} == --inner ]]; then
    kind=$2
    shift 2
    run() {
        if [[ $kind == knfsd* ]]; then
            # In the server guest (kernel-clients.sh), where cargo cannot write.
            "$MC_KC_TEST_BIN" --include-ignored --test-threads=1 --nocapture "$@"
        else
            cargo test --locked --test kernel_clients -- --include-ignored --test-threads=1 \
                --nocapture "$@"
        fi
    }
    # repeat FILTER...: the filtered tests, MC_KC_REPEAT times (see the header).
    repeat() {
        local times=${MC_KC_REPEAT:-1} i started passed=0 failed=0
        [[ $times =~ ^[1-9][0-9]{0,3}$ ]] || {
            echo "tests.sh: MC_KC_REPEAT must be a count from 1 to 9999, not '$times'" >&2
            return 2
        }
        ((times > 1)) || { run "$@"; return; }
        for ((i = 1; i <= times; i++)); do
            started=$SECONDS
            if run "$@"; then
                passed=$((passed + 1))
                echo "kernel-clients: $kind: run $i of $times passed in $((SECONDS - started)) s" >&2
                continue
            fi
            failed=$((failed + 1))
            echo "kernel-clients: $kind: run $i of $times FAILED in $((SECONDS - started)) s" >&2
            if [[ -n ${MC_KC_CAPTURE:-} ]]; then
                banner "stopping after the first failing run: the capture in $MC_KC_CAPTURE" \
                    "ends with it"
                break
            fi
        done
        echo "kernel-clients: $kind: $passed of $((passed + failed)) runs passed" \
            "($failed failed)" >&2
        ((failed == 0))
    }
    (($#)) && { repeat "$@"; exit; }
    [[ ${MC_KC_REPEAT:-1} == 1 ]] ||
        banner "MC_KC_REPEAT=$MC_KC_REPEAT is for TEST-FILTERs: the whole suite runs once"
    known=() skips=()
    for entry in "${KNOWN_DEFECTS[@]}"; do
        [[ ${entry%%:*} == "$kind" ]] || continue
        entry=${entry#*:}
        known+=("$entry")
        skips+=(--skip "${entry%% *}")
    done
    rc=0
    run "${skips[@]}" || rc=$?
    for entry in "${known[@]}"; do
        if run --exact "${entry%% *}"; then
            banner "KNOWN DEFECT PASSED this time on $kind: ${entry%% *}" \
                "once fixed, take it off KNOWN_DEFECTS in scripts/uml/tests.sh"
        else
            banner "KNOWN DEFECT STILL FAILS on $kind (not counted as a failure):" \
                "${entry%% *}" "${entry#* }"
        fi
    done
    exit "$rc"
fi

kinds=()
while (($#)) && [[ $1 != -- ]]; do
    case $1 in
        nfs3 | nfs4.2 | cifs | knfsd3 | knfsd4.2) kinds+=("$1") ;;
        *) echo "tests.sh: unknown kind $1" >&2; exit 2 ;;
    esac
    shift
done
[[ ${1:-} == -- ]] && shift
filters=("$@")
((${#kinds[@]})) || kinds=(nfs3 nfs4.2 cifs)

[[ $EUID -eq 0 ]] || skipped "not root (the guests need a network namespace and TAP devices)"
[[ -c /dev/net/tun ]] || skipped "/dev/net/tun is missing (no TAP devices in this container)"

# Build outside the guests; they only run what was built. The fault matrix's own test
# binary runs in a guest too (tests/kernel_clients.rs finds it in MC_KC_FAULT_MATRIX).
cargo test --locked --test kernel_clients --no-run
matrix=$(cargo test --locked --test fault_matrix --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*fault_matrix-[0-9a-f]*\))$/\1/p' | tail -n 1)
[[ -n $matrix ]] || { echo "tests.sh: cannot find the fault_matrix test binary" >&2; exit 1; }
[[ $matrix == /* ]] || matrix=$PWD/$matrix
export MC_KC_FAULT_MATRIX=$matrix
# The knfsd kinds run tests/kernel_clients.rs's binary itself, in their server guest.
MC_KC_TEST_BIN=$(cargo test --locked --test kernel_clients --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*kernel_clients-[0-9a-f]*\))$/\1/p' | tail -n 1)
[[ -n $MC_KC_TEST_BIN ]] || { echo "tests.sh: cannot find the kernel_clients test binary" >&2; exit 1; }
[[ $MC_KC_TEST_BIN == /* ]] || MC_KC_TEST_BIN=$PWD/$MC_KC_TEST_BIN
export MC_KC_TEST_BIN

# run_kind KIND: boot KIND's guests and run the tests in them (kernel-clients.sh's exit
# code: 75 when the servers or guests did not come up, 3 without its packages).
run_kind() {
    scripts/uml/kernel-clients.sh run "$1" -- "$0" --inner "$1" "${filters[@]}"
}

# Every kind runs, so that one failing kind does not hide the others' results.
failed=()
for kind in "${kinds[@]}"; do
    started=$SECONDS
    echo "kernel-clients: $kind: booting the guests and running tests/kernel_clients.rs" >&2
    rc=0
    run_kind "$kind" || rc=$?
    if ((rc == 75)); then
        # The servers or the guests did not come up: the harness, not a test. Once more.
        banner "KERNEL CLIENTS: $kind: the servers or guests did not come up (see above);" \
            "retrying ONCE (no test had run)"
        rc=0
        run_kind "$kind" || rc=$?
    fi
    # 3: its Debian packages could not be installed.
    ((rc != 3)) || skipped "the packages for $kind could not be installed (see above)"
    if ((rc == 0)); then
        echo "kernel-clients: $kind: passed in $((SECONDS - started)) s" >&2
    else
        echo "kernel-clients: $kind: FAILED (exit $rc) in $((SECONDS - started)) s" >&2
        failed+=("$kind")
    fi
done
if ((${#failed[@]})); then
    echo "kernel-clients: FAILED on: ${failed[*]}" >&2
    exit 1
fi
