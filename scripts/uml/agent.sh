# shellcheck shell=bash
# agent.sh - run jobs in the guests of kernel-clients.sh from bash (sourced).
#
# A job is a bash script renamed into $MC_KC_CTL/GUEST/jobs/ID.sh; the guest's
# agent (guest-init.sh) runs it and leaves run/ID.out and, at its end, run/ID.rc.
# tests/kernel_clients.rs speaks the same protocol from Rust.

# kc_spawn GUEST SCRIPT: start SCRIPT in GUEST; prints the job id.
kc_spawn() {
    local me=$MC_KC_CTL/$1 id
    id=job-$$-$RANDOM$RANDOM
    printf '%s\n' "$2" >"$me/$id.tmp"
    mv "$me/$id.tmp" "$me/jobs/$id.sh"
    echo "$id"
}

# kc_wait GUEST ID TIMEOUT_S: wait for the job's end; prints its output and
# returns its exit status (124 past TIMEOUT_S: the job is left running).
kc_wait() {
    local run=$MC_KC_CTL/$1/run t
    for ((t = 0; t < $3 * 20; t++)); do
        if [[ -e $run/$2.rc ]]; then
            cat "$run/$2.out"
            return "$(cat "$run/$2.rc")"
        fi
        sleep 0.05
    done
    return 124
}

# kc_run GUEST TIMEOUT_S SCRIPT: both of the above.
kc_run() {
    local id
    id=$(kc_spawn "$1" "$3")
    kc_wait "$1" "$id" "$2"
}
