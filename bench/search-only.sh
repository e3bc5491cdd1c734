#!/usr/bin/env bash
# Runs a `media-converter ... --json` command until its quality search is settled, then
# stops it as Ctrl-C does (SIGINT) before the long encode: the search alone, measured in full
# whatever --min-savings would decide (a search ends early once a trial shows the file cannot
# shrink enough, docs/quality.md, so a high --min-savings no longer measures a whole search).
# The search is already in the cache when `searched` is printed. Exits 0 once stopped, or
# with the command's own status when it ends first (a skip, a failure).
#
# Usage: bench/search-only.sh EVENTS.jsonl ERR.log COMMAND [ARG...]   (pass --min-savings 0)
set -uo pipefail
events=$1 err=$2
shift 2
: >"$events"
"$@" >"$events" 2>"$err" &
pid=$!
until grep -q '"event":"searched"' "$events"; do
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit; }
  sleep 0.2
done
kill -INT "$pid"
wait "$pid" || true
