#!/usr/bin/env bash
# dashboard.sh - how fast the dashboard reads a large library and answers.
#
# Usage: bench/dashboard.sh [WORK_DIR]   (default: a fresh mktemp -d, removed at the end)
# Env:   FILES_DIRS (3000), FILES_PER_DIR (10), RUNS (3)
#
# Generates FILES_DIRS x FILES_PER_DIR files with warm caches (bench/make-library.sh), gives
# every HEVC file a conversion in its cache's history (five hosts, thirty days) and every
# AVI a failure, then measures, best of RUNS with the page cache warm:
#   1. `metrics DIR`: one full read of every cache, rendered;
#   2. `dashboard DIR`: from start until it answers /api/status with the whole library read;
#   3. GET /api/status, GET / and GET /metrics from a running dashboard (curl's time_total);
#   4. with Chromium and tests/browser set up, the page loaded until its totals and chart show.
# Prints a markdown table. Needs: cargo, ffmpeg, curl, python3, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=${FILES_DIRS:-3000}
per_dir=${FILES_PER_DIR:-10}
runs=${RUNS:-3}

if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

echo "dashboard.sh: building the release binary" >&2
cargo build --release --locked -q
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/media-converter")

lib="$work/library"
if [ ! -d "$lib" ]; then
  bench/make-library.sh "$lib" "$dirs" "$per_dir" "$bin"
  echo "dashboard.sh: writing history into every cache" >&2
  python3 - "$lib" <<'PY'
import json, os, sys
hosts = ["den", "attic", "nas", "office", "htpc"]
n = 0
for dirpath, _, names in os.walk(sys.argv[1]):
    if ".mediabox_cache.json" not in names:
        continue
    path = os.path.join(dirpath, ".mediabox_cache.json")
    cache = json.load(open(path))
    for name, entry in cache["files"].items():
        n += 1
        # Strides prime to the template's layout, so every host and day gets its share.
        at = "2026-11-%02dT12:00:00Z" % (1 + n // 11 % 30)
        if name.endswith(".mkv") and entry["info"]["streams"][0]["codec"] == "hevc":
            entry["converted"] = {"at": at, "host": hosts[n // 7 % 5], "encoder": "libx265",
                                  "before_bytes": entry["size"] * 3, "after_bytes": entry["size"],
                                  "seconds": 30.0}
        elif name.endswith(".avi"):
            entry["failed"] = {"at": at, "host": hosts[n // 7 % 5], "error": "ffmpeg exited 1",
                               "attempts": 1 + n % 3}
    json.dump(cache, open(path, "w"))
PY
fi
files=$(find "$lib" -type f -not -name '.*' | wc -l)

best() { sort -g | head -1; }

# 1. metrics: a whole read, rendered.
for ((r = 0; r < runs; r++)); do
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$bin" metrics "$lib" >"$work/metrics.prom"
  cat "$work/time.out"
done >"$work/metrics.times"
metrics_secs=$(cut -d' ' -f1 "$work/metrics.times" | best)
metrics_rss=$(cut -d' ' -f2 "$work/metrics.times" | sort -n | tail -1)

# 2 and 3: a dashboard from start to its first full answer, then its answers.
port=18765
start_to_answer=()
for ((r = 0; r < runs; r++)); do
  t0=$(date +%s.%N)
  "$bin" dashboard "$lib" --listen "127.0.0.1:$port" -q 2>/dev/null &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/api/status" -o "$work/status.json"; do sleep 0.01; done
  t1=$(date +%s.%N)
  start_to_answer+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
  if [ "$r" -lt $((runs - 1)) ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
done
startup=$(printf '%s\n' "${start_to_answer[@]}" | best)
read_secs=$(python3 -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['library_read_secs'])" "$work/status.json")
served=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['totals']['files']['files'])" "$work/status.json")
answer() {
  for ((r = 0; r < 10; r++)); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$1"
  done | best
}
api=$(answer /api/status)
page=$(answer /)
prom=$(answer /metrics)
json_bytes=$(stat -c %s "$work/status.json")
# 4. In Chromium, when tests/browser is set up: from navigation to the totals drawn.
browser="not measured (needs chromium and npm ci in tests/browser)"
if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ -d tests/browser/node_modules/playwright-core ]; then
  browser=$(cd tests/browser && URL="http://127.0.0.1:$port/" RUNS="$runs" node --input-type=module -e '
    import { chromium } from "playwright-core";
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"] });
    const page = await browser.newPage();
    let best = Infinity;
    for (let r = 0; r < Number(process.env.RUNS); r++) {
      const t0 = Date.now();
      await page.goto(process.env.URL);
      await page.waitForFunction(() => document.querySelectorAll("#totals .card").length > 2
        && document.querySelector("#chart svg"));
      best = Math.min(best, (Date.now() - t0) / 1000);
    }
    await browser.close();
    console.log(best.toFixed(3) + " s");')
fi
kill "$pid"
wait "$pid" 2>/dev/null || true

cat <<TABLE
| measurement ($files files, $dirs directories) | result |
|---|---|
| \`metrics DIR\`: every cache read and rendered | ${metrics_secs} s, peak RSS $((metrics_rss / 1024)) MB |
| \`dashboard DIR\`: start to the first full /api/status | ${startup} s (library read ${read_secs} s; ${served} files in it) |
| GET /api/status ($((json_bytes / 1024)) KiB) | ${api} s |
| GET / | ${page} s |
| GET /metrics | ${prom} s |
| the page in Chromium, navigation to totals and chart drawn | ${browser} |
TABLE
