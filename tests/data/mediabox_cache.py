"""What the original mediabox tool does with a directory's `.mediabox_cache.json`.

A re-statement, in this project's own words, of the few steps that touch the file, so that
tests can show the original reading our caches without crashing. Upstream:
wildardoc/mediabox, scripts/media_database.py at commit
8e58b2227987a0abdac6b20baa2abddc580e48bd (MediaDatabase._load_cache, _save_cache,
cleanup_stale_entries, get_statistics, store_probe); scripts/media_update.py at the same
commit calls cleanup_stale_entries on every directory before its first file.

The step that matters: the original walks every top-level value of the file and calls
`.get(...)` on it, so any top-level value that is not a JSON object raises AttributeError
and stops the original at start.

Usage: mediabox_cache.py DIR cleanup|stats|store NAME
Prints one JSON object; a crash is a Python traceback and exit status 1.
"""

import hashlib
import json
import os
import sys

CACHE = ".mediabox_cache.json"


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


def main():
    directory, step = sys.argv[1], sys.argv[2]
    if step == "cleanup":
        result = cleanup(directory)
    elif step == "stats":
        result = stats(directory)
    elif step == "store":
        result = store(directory, sys.argv[3])
    else:
        raise SystemExit(f"unknown step {step}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
