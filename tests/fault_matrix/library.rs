//! One case's library: the clip to convert, a bystander, and the checks that say whether
//! anything was lost after a fault and a recovery.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The file every variant converts, the file that must never change, and the cache.
pub const BYSTANDER: &str = "other.mkv";
pub const CACHE: &str = ".mediabox_cache.json";

/// How the file is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// `clip.avi` becomes `clip.mkv` (a new name); otherwise `clip.mkv` is replaced in place.
    pub container_change: bool,
    /// `--keep-original`.
    pub keep: bool,
    /// The share has hard links; without, every `linkat` fails with `EPERM` (smbnetfs).
    pub links: bool,
}

impl Variant {
    pub fn all() -> Vec<Variant> {
        let mut all = Vec::new();
        for container_change in [false, true] {
            for keep in [false, true] {
                for links in [true, false] {
                    all.push(Variant {
                        container_change,
                        keep,
                        links,
                    });
                }
            }
        }
        all
    }

    pub fn name(self) -> String {
        let mut name = String::from(if self.container_change {
            "avi->mkv"
        } else {
            "mkv"
        });
        if self.keep {
            name.push_str(" keep");
        }
        if !self.links {
            name.push_str(" no-links");
        }
        name
    }

    /// The name as a file name.
    pub fn slug(self) -> String {
        self.name().replace("->", "-to-").replace(' ', "_")
    }

    /// The plain variant of the same container: the claim and the encode are the same in
    /// every variant of a container, so only it is faulted before the swap.
    pub fn is_base(self) -> bool {
        !self.keep && self.links
    }

    pub fn source(self) -> &'static str {
        if self.container_change {
            "clip.avi"
        } else {
            "clip.mkv"
        }
    }

    pub fn destination(self) -> &'static str {
        "clip.mkv"
    }

    pub fn kept(self) -> String {
        format!(".{}.mediabox-kept", self.source())
    }
}

/// Runs ffmpeg, panicking with its stderr on failure.
fn ffmpeg(args: &[&str], out: &Path) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .output()
        .expect("ffmpeg must be installed for the tests");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A template library for `variant`'s container: the 1 s clip, a distinct bystander, both
/// a day old, and a cache that already knows them (so the run starts with the claim).
pub fn make_template(dir: &Path, variant: Variant, bin: &Path) {
    fs::create_dir_all(dir).expect("template dir");
    let video = ["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1"];
    let tone = ["-f", "lavfi", "-i", "sine=f=440:d=1"];
    let source = dir.join(variant.source());
    if variant.container_change {
        let args: Vec<&str> = [&video[..], &tone[..]]
            .concat()
            .into_iter()
            .chain(["-c:v", "mpeg4", "-q:v", "2", "-c:a", "libmp3lame"])
            .collect();
        ffmpeg(&args, &source);
    } else {
        let args: Vec<&str> = [&video[..], &tone[..]]
            .concat()
            .into_iter()
            .chain(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8"])
            .chain(["-c:a", "aac"])
            .collect();
        ffmpeg(&args, &source);
    }
    // HEVC already: the recoveries scan the whole directory, and must leave it as it is.
    let bystander = ["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1"]
        .into_iter()
        .chain(["-vf", "hue=h=90", "-c:v", "libx265", "-preset", "ultrafast"])
        .chain(["-x265-params", "log-level=error"])
        .collect::<Vec<_>>();
    ffmpeg(&bystander, &dir.join(BYSTANDER));
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    for name in [variant.source(), BYSTANDER] {
        fs::File::options()
            .write(true)
            .open(dir.join(name))
            .and_then(|f| f.set_modified(day_ago))
            .expect("age a template file");
    }
    let out = Command::new(bin)
        .args(["cache", "build"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run cache build");
    assert!(
        out.status.success(),
        "cache build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cp -a`: contents, mtimes and hard links as they are.
///
/// Retried once, loudly, after 2 s: on Linux's cifs client against Samba, opening one name of
/// a hard-linked file within about a second of closing another name of it fails with EINVAL
/// (the client keys its lease by the inode and keeps a closed handle for `closetimeo`, 1 s;
/// Samba refuses one key for two names), which a run killed a moment ago leaves behind.
pub fn copy_tree(from: &Path, to: &Path) {
    let copy = || {
        let _ = fs::remove_dir_all(to);
        Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .expect("run cp")
            .success()
    };
    if copy() {
        return;
    }
    eprintln!(
        "\n*** cp -a {} {} failed; retrying ONCE in 2 s ***\n",
        from.display(),
        to.display()
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(copy(), "cp -a {} {}", from.display(), to.display());
}

/// What a verified HEVC file is here: ffprobe finds HEVC video of the source's length, and
/// ffmpeg decodes all of it without an error.
pub fn is_verified_hevc(path: &Path) -> bool {
    use std::collections::HashMap;
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::sync::{Mutex, PoisonError};
    // The same bytes come up again and again (the encoder is deterministic): probed once.
    static SEEN: Mutex<Option<HashMap<(u64, usize), bool>>> = Mutex::new(None);
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let key = (hasher.finish(), bytes.len());
    let known =
        |seen: &mut Option<HashMap<_, bool>>| seen.get_or_insert_default().get(&key).copied();
    if let Some(verdict) = known(&mut SEEN.lock().unwrap_or_else(PoisonError::into_inner)) {
        return verdict;
    }
    let verdict = probe_and_decode(path);
    SEEN.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_default()
        .insert(key, verdict);
    verdict
}

fn probe_and_decode(path: &Path) -> bool {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name:format=duration"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output();
    let Ok(probe) = probe else {
        return false;
    };
    let text = String::from_utf8_lossy(&probe.stdout);
    let hevc = text.lines().any(|l| l == "codec_name=hevc");
    let duration: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    if !probe.status.success() || !hevc || (duration - 1.0).abs() > 0.25 {
        return false;
    }
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output();
    decode.is_ok_and(|d| d.status.success() && d.stderr.is_empty())
}

/// The library as a recovery left it, judged.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Anything lost or damaged: the case fails.
    pub losses: Vec<String>,
    /// A broken media file in the library (the original intact): a failure, not a loss.
    pub damage: Vec<String>,
    /// The original kept, but not where `--keep-original` promises it: a failure, not a
    /// loss (its bytes are still in the directory).
    pub misplaced: Vec<String>,
    /// Files of ours left behind (a failure after `locks clean`).
    pub debris: Vec<String>,
    /// What the original's name holds: "original" or "hevc".
    pub state: String,
}

/// Judges `dir` after a recovery. `original` and `bystander` are the bytes before the run.
pub fn judge(dir: &Path, variant: Variant, original: &[u8], bystander: &[u8]) -> Judgement {
    let mut j = Judgement::default();
    let read = |name: &str| fs::read(dir.join(name)).ok();
    let source = read(variant.source());
    let destination = dir.join(variant.destination());
    let kept = read(&variant.kept());
    let hidden_copies = || -> Vec<String> {
        let mut at = Vec::new();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if fs::read(entry.path()).is_ok_and(|b| b == original) {
                at.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        at
    };
    if read(BYSTANDER).as_deref() != Some(bystander) {
        j.losses
            .push(format!("the bystander {BYSTANDER} changed or is gone"));
    }
    let source_is_original = source.as_deref() == Some(original);
    if variant.container_change {
        let converted = destination.exists() && is_verified_hevc(&destination);
        if destination.exists() && !converted {
            j.damage.push(format!(
                "{} ({} bytes) is not a verified HEVC file",
                variant.destination(),
                fs::metadata(&destination).map_or(0, |m| m.len())
            ));
        }
        match (source_is_original, source.is_some(), converted) {
            (true, _, true) => j.state = "both".into(),
            (true, _, false) => j.state = "original".into(),
            (false, false, true) => j.state = "hevc".into(),
            (false, true, _) => j.losses.push(format!(
                "{} holds something that is not the original",
                variant.source()
            )),
            (false, false, false) => j.losses.push(format!(
                "{} is gone and {} is not a verified HEVC file; the original is at {:?}",
                variant.source(),
                variant.destination(),
                hidden_copies()
            )),
        }
    } else if source_is_original {
        j.state = "original".into();
    } else if source.is_some() && is_verified_hevc(&destination) {
        j.state = "hevc".into();
    } else {
        j.losses.push(format!(
            "{} holds {}; the original is at {:?}",
            variant.source(),
            if source.is_some() {
                "neither the original nor a verified HEVC file"
            } else {
                "nothing"
            },
            hidden_copies()
        ));
    }
    if variant.keep && j.state == "hevc" && kept.as_deref() != Some(original) {
        j.misplaced.push(format!(
            "converted with --keep-original, but {} does not hold the original; it is at {:?}",
            variant.kept(),
            hidden_copies()
        ));
    }
    let expected = [
        variant.source().to_owned(),
        variant.destination().to_owned(),
        BYSTANDER.to_owned(),
        CACHE.to_owned(),
        variant.kept(),
    ];
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            j.debris.push(name);
        }
    }
    j.debris.sort();
    j
}

/// Where a case keeps its copies.
pub fn case_dir(root: &Path, id: usize) -> PathBuf {
    root.join(format!("case-{id:04}"))
}
