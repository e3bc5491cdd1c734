"""What the original mediabox tool does with a library: which files it takes for media, and
what it does with a directory's `.mediabox_cache.json`.

A re-statement, in this project's own words, of the few steps that matter, so that tests can
show the original reading our caches without crashing and never taking our work files for
media. Upstream: wildardoc/mediabox at commit 8e58b2227987a0abdac6b20baa2abddc580e48bd;
scripts/media_database.py (MediaDatabase._load_cache, _save_cache, cleanup_stale_entries,
get_statistics, store_probe) and scripts/media_update.py (VIDEO_EXTS, AUDIO_EXTS,
get_video_files, get_audio_files; it calls cleanup_stale_entries on every directory before
its first file) and scripts/file_lock.py (FileLock.acquire as media_update.py calls it, with
a 30-minute timeout), and file_lock.py at ad14c5c1ac76ba45f9269b765246774ed4882669, the older version that named its lock
`<file>.mediabox.lock`.

The step that matters: the original walks every top-level value of the file and calls
`.get(...)` on it, so any top-level value that is not a JSON object raises AttributeError
and stops the original at start.

Usage: mediabox_cache.py DIR scan|cleanup|stats|store NAME|lock NAME SUFFIX
Prints one JSON object; a crash is a Python traceback and exit status 1.
"""

import hashlib
import json
import os
import sys
import time

CACHE = ".mediabox_cache.json"
VIDEO = (".mkv", ".mp4", ".avi", ".mov", ".wmv", ".flv", ".ts", ".m2ts")
AUDIO = (".flac", ".wav", ".aiff", ".ape", ".wv", ".m4a", ".ogg", ".opus", ".wma")
# Only its own leftovers are skipped; hidden files are not.
OWN_TEMP = (".tmp.mp4", ".tmp.mkv", ".tmp.avi", ".tmp.mov", ".tmp.mp3", ".tmp.m4a", ".tmp.flac")


def scan(directory):
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            if name.endswith(OWN_TEMP):
                continue
            lower = name.lower()
            if lower.endswith(VIDEO) or (lower.endswith(AUDIO) and not lower.endswith(".mp3")):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return {"media": sorted(found)}


def load(path):
    # The original treats an unreadable or unparseable file as an empty cache.
    if not os.path.exists(path):
        return {}
    try:
        with open(path, "r") as f:
            return json.load(f)
    except (json.JSONDecodeError, IOError):
        return {}


def save(path, data):
    # The original writes `<cache>.tmp`, removes the cache, then renames; no lock.
    temp = path + ".tmp"
    with open(temp, "w") as f:
        json.dump(data, f, indent=2, default=str)
    if os.path.exists(path):
        os.remove(path)
    os.rename(temp, path)


def cleanup(directory):
    path = os.path.join(directory, CACHE)
    data = load(path)
    if not data:
        return {"removed": 0}
    present = set(os.listdir(directory))
    stale = [key for key, entry in data.items()
             if entry.get("file_name") and entry.get("file_name") not in present]
    for key in stale:
        del data[key]
    if stale:
        save(path, data)
    return {"removed": len(stale)}


def stats(directory):
    data = load(os.path.join(directory, CACHE))
    by_action = {}
    for entry in data.values():
        action = entry.get("action", "unknown")
        by_action[action] = by_action.get(action, 0) + 1
        entry.get("is_hdr")
        entry.get("resolution")
        entry.get("codec_video")
        entry.get("codec_audio")
    return {"total_files": sum(by_action.values()), "by_action": by_action}


def store(directory, name):
    # The original keys an entry by a hash of name, size and mtime, and adds it to what is
    # there, whatever else the file holds.
    media = os.path.join(directory, name)
    st = os.stat(media)
    key = hashlib.sha256(f"{name}|{st.st_size}|{st.st_mtime}".encode()).hexdigest()
    path = os.path.join(directory, CACHE)
    data = load(path)
    data[key] = {
        "fingerprint_hash": key, "file_name": name, "file_size": st.st_size,
        "file_mtime": st.st_mtime, "codec_video": "h264", "codec_audio": "aac",
        "width": 160, "height": 90, "resolution": "160x90", "duration": 1.0,
        "bitrate": 100000, "is_hdr": False, "bit_depth": 8, "audio_channels": "2",
        "action": "needs_conversion", "processing_version": "1.0.0", "conversion_count": 0,
    }
    save(path, data)
    return {"stored": key}


def lock(directory, name, suffix):
    """What FileLock(timeout=1800).acquire(wait=False) would find, without acting on it.

    `suffix` is ".lock" (the current version) or ".mediabox.lock" (the older one). Both
    take a lock as held only while it parses, has `hostname`, `timestamp` and `file`, and its
    `timestamp` is at most 30 minutes old by the original's own clock; a held-looking lock
    older than that is removed and the file taken. The current version first removes a lock
    that does not parse or is over 6 hours old.
    """
    path = os.path.join(directory, name + suffix)
    if not os.path.exists(path):
        return {"sees": "nothing", "takes_the_file": True}
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, IOError):
        # The current version removes it; the older one fails to create its own and skips.
        return {"sees": "garbage", "takes_the_file": False, "removes_it": suffix == ".lock"}
    age = time.time() - data.get("timestamp", 0)
    complete = all(key in data for key in ("hostname", "timestamp", "file"))
    if not complete:
        return {"sees": "unnamed", "takes_the_file": False, "removes_it": suffix == ".lock" and age > 21600}
    if age > 1800:
        return {"sees": "stale", "takes_the_file": True, "removes_it": True}
    return {"sees": "held", "host": data["hostname"], "takes_the_file": False}


def main():
    directory, step = sys.argv[1], sys.argv[2]
    if step == "scan":
        result = scan(directory)
    elif step == "cleanup":
        result = cleanup(directory)
    elif step == "stats":
        result = stats(directory)
    elif step == "lock":
        result = lock(directory, sys.argv[3], sys.argv[4])
    elif step == "store":
        result = store(directory, sys.argv[3])
    else:
        raise SystemExit(f"unknown step {step}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
