#!/usr/bin/env bash
# open-races.sh - finds nfs-ganesha's OPEN/CLOSE race in captures of the kernel-client
# bridge (kernel-clients.sh's KC_CAPTURE), and what each instance cost.
#
# Usage: scripts/uml/open-races.sh CAPTURE...   (pcap files, in the order they were written)
#
# The race (docs/locking.md, "A stall in NFSv4.1+ `open()`"): an OPEN answered with an open
# stateid whose state its client had already sent a CLOSE for (answered OK, before or just
# after that OPEN's answer: ganesha sends the two answers in either order).
# Linux's NFSv4.1+ client holds such an answer until the missing update arrives, 5 s at a
# time. For each instance this prints its time, the client, the stateid's seqid, how long
# until that client next named the state in a call (how long the open slept), whether the
# client held the lock's acquire guard the whole time (taken by CREATE, given up by
# RENAME), and how many OPENs and guard LOOKUPs that client sent meanwhile; then the count,
# and how many were followed by no use of the state within 1 s: an open asleep. (An OPEN
# answered before the CLOSE it raced often returns at once.)
# Compounds of several RPCs in one frame are left out, and counted. Needs tshark and python3.
set -euo pipefail

(($#)) || { echo "usage: $0 CAPTURE..." >&2; exit 2; }
command -v tshark >/dev/null || { echo "open-races.sh: needs tshark (Debian: tshark)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "open-races.sh: needs python3" >&2; exit 2; }

for capture in "$@"; do
    tshark -r "$capture" -Y nfs -T fields -E separator='|' \
        -e frame.time_epoch -e ip.src -e rpc.msgtyp -e rpc.xid -e nfs.opcode \
        -e nfs.stateid.seqid -e nfs.stateid.other -e nfs.nfsstat4 -e nfs.pathname.component \
        -e nfs.open.opentype 2>/dev/null
done | python3 -c '
import bisect, collections, sys

GUARD = ".mediabox.lock.acquire"
CLOSE, CREATE, LOOKUP, OPEN, RENAME = "4", "6", "15", "18", "29"
calls, closed, opened = {}, {}, []
uses = collections.defaultdict(list)        # (client, state) -> times of calls naming it
sent = collections.defaultdict(list)        # (client, "open" | "guard lookup") -> times
guard = []                                  # (time, client or None): who holds the guard
skipped, last = 0, 0.0
for line in sys.stdin:
    f = line.rstrip("\n").split("|")
    if len(f) < 10:
        continue
    t, src, typ, xid, ops, seqids, others, status, names, opentype = f[:10]
    if "," in xid or "," in typ:
        skipped += 1
        continue
    t, ops = float(t), ops.split(",")
    last = max(last, t)
    seqids, others = seqids.split(",") if seqids else [], others.split(",") if others else []
    names = names.split(",") if names else []
    if typ == "0":
        calls[xid] = (t, src, ops, seqids, others, names)
        for other in others:
            uses[(src, other)].append(t)
        if OPEN in ops:
            sent[(src, "open")].append(t)
        if LOOKUP in ops and any(name.endswith(GUARD) for name in names):
            sent[(src, "guard lookup")].append(t)
        continue
    if typ != "1" or xid not in calls:
        continue
    sent_at, client, cops, cseqids, cothers, cnames = calls.pop(xid)
    if not status or any(s != "0" for s in status.split(",")):
        continue
    if CLOSE in cops and cothers:
        key = (client, cothers[-1])
        closed[key] = min(closed.get(key, sent_at), sent_at)
    if CREATE in cops and any(name.endswith(GUARD) for name in cnames):
        guard.append((t, client))
    if RENAME in cops and cnames and cnames[0].endswith(GUARD):
        guard.append((t, None))
    if OPEN in cops and others:
        opened.append((t, client, others[-1], seqids[-1] if seqids else "?"))

# A CLOSE sent before the answer to an OPEN left the server: the server had closed the state.
races = [o for o in opened if closed.get((o[1], o[2]), o[0] + 1) < o[0]]

def count(times, start, end):
    return bisect.bisect_left(times, end) - bisect.bisect_right(times, start)

guard.sort()
guard_times = [g[0] for g in guard]
for t, client, state, seqid in races:
    later = [u for u in uses[(client, state)] if u > t]
    slept = later[0] - t if later else None
    end = last if slept is None else t + slept
    i = bisect.bisect_right(guard_times, t) - 1
    held = i >= 0 and guard[i][1] == client and bisect.bisect_right(guard_times, end - 0.001) - 1 == i
    opens = count(sent[(client, "open")], t, end)
    lookups = count(sent[(client, "guard lookup")], t, end)
    throughout = "yes" if held else "no"
    asleep = "past the capture" if slept is None else f"{slept:.2f} s"
    print(f"{t:.3f} client {client} seqid {seqid}: slept {asleep}; held the acquire guard "
          f"throughout: {throughout}; its OPENs meanwhile {opens}, "
          f"guard LOOKUPs {lookups}")
asleep = sum(1 for t, client, state, _ in races
             if not [u for u in uses[(client, state)] if t < u < t + 1])
print(f"{len(races)} races, {asleep} of them followed by no use of the state within 1 s "
      f"(an open asleep); {skipped} frames of several RPCs left out")
'
