//! The tool over real media that other people made (`tests/corpus/manifest.tsv`, fetched by
//! `scripts/corpus.sh`): every file converted with every stream kept and the output decoding
//! as cleanly as its source, or skipped or failed with a reason that is true, the original
//! byte for byte as it was.
//!
//! Without the corpus the test says so loudly and passes, unless
//! `MEDIA_CONVERTER_CORPUS_REQUIRED=1` (CI), where a missing corpus fails it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// What the run must do with one file of the corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Replaced by a verified HEVC file with every stream kept.
    Converted,
    /// Left alone with this skip reason.
    Skipped(&'static str),
    /// Failed with an error that contains this text; the original untouched.
    Failed(&'static str),
    /// Not taken for media at all (no event).
    NotMedia,
}

use Expect::*;

/// Each file and what must become of it with the default settings. A file added to the
/// manifest's default set must be added here too.
const EXPECTED: &[(&str, Expect)] = &[
    ("10min.mkv", Skipped("not_smaller")),
    ("flashmob.mkv", Skipped("not_smaller")),
    ("Panasonic_AG_HMC_151.MTS", Skipped("undescribed_stream")),
    (
        "breakdance.flv",
        Failed("the original may be truncated or damaged"),
    ),
    ("matrix_ping_pong.wmv", Converted),
    (
        "pentax_320x240.mov",
        Failed("Cannot determine format of input stream"),
    ),
    ("quicktime.mp4", Converted),
    ("sample.ts", Skipped("undescribed_stream")),
    (
        "smallville.s03e02.avi",
        Failed("Cannot determine format of input stream"),
    ),
    ("firstrun.rm", NotMedia),
    ("kde_click.wav", Skipped("not_smaller")),
    ("hotel_california.flac", Skipped("already_efficient")),
    ("interlude_david_aubrun.ogg", Skipped("lossy")),
    ("marc_kravetz.mp3", Skipped("lossy")),
    ("sample.mkv", Failed("ffprobe cannot read it")),
    ("sample.mp4", Skipped("not_smaller")),
    ("mp4-with-audio.mp4", Skipped("no_video")),
    ("mpeg4.mp4", Skipped("no_video")),
    ("issue55.flv", Skipped("no_video")),
    ("vbr_requires_parsespeed_1.mp4", Skipped("no_video")),
    ("bigbuckbunny.mp4", Skipped("not_smaller")),
    ("bikes.mp4", Skipped("not_smaller")),
    ("carphone_pristine.mp4", Converted),
    ("carphone_distorted.mp4", Skipped("not_smaller")),
    ("blue.mpg", Converted),
    ("house_lo.wav", Converted),
    ("house_lo.ogg", Skipped("lossy")),
    ("xine-ui_logo.mpg", Converted),
    // Theora that ffmpeg (5.1 and 6.0) cannot decode: 668 frames fail in the source itself.
    ("demo.ogg", Failed("Error while decoding stream")),
    ("demo.ogv", Failed("Error while decoding stream")),
    ("demo.3gp", Skipped("not_smaller")),
    ("demo.asf", Skipped("not_smaller")),
    ("demo.webm", Skipped("already_efficient")),
    ("demo.f4v", Skipped("not_smaller")),
    ("demo.vob", Skipped("not_smaller")),
    ("demo.rm", NotMedia),
    ("demo.aif", Converted),
    // demo.aif became demo.flac first (the larger saving goes first): found once claimed.
    ("demo.wv", Skipped("output_exists")),
    // Two files of the library whose converted names meet: `collide.mpg` would become
    // `collide.mkv`, which is taken. Decided at plan time, never after an encode.
    ("collide.mpg", Skipped("output_exists")),
    ("collide.mkv", Skipped("not_smaller")),
];

/// Copies standing in for a library's own files: (name in the library, corpus file).
const COPIES: &[(&str, &str)] = &[("collide.mpg", "blue.mpg"), ("collide.mkv", "10min.mkv")];

/// The default set's names, from the manifest.
fn manifest_names() -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifest.tsv");
    fs::read_to_string(manifest)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|cols| cols.get(1) == Some(&"default"))
        .map(|cols| cols[0].to_string())
        .collect()
}

/// The corpus, or None (said loudly) when it has not been fetched and is not required.
fn corpus() -> Option<PathBuf> {
    let dir = corpus_dir();
    let missing: Vec<_> = manifest_names()
        .into_iter()
        .filter(|n| !dir.join(n).is_file())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let required = std::env::var("MEDIA_CONVERTER_CORPUS_REQUIRED").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "the real-media corpus is missing {missing:?} in {}: run scripts/corpus.sh",
        dir.display()
    );
    eprintln!(
        "\n!!! REAL-MEDIA TEST NOT RUN: the corpus is not in {} (missing {} files); \
         run scripts/corpus.sh to fetch it\n",
        dir.display(),
        missing.len()
    );
    None
}

/// ffmpeg's decode errors for a file, with the addresses that differ from run to run taken
/// out, so the source's and the output's can be compared.
fn decode_errors(path: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v?", "-map", "0:a?", "-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| match (l.find(" @ 0x"), l.find(']')) {
            (Some(at), Some(end)) if at < end => format!("{}{}", &l[..at], &l[end..]),
            _ => l.to_string(),
        })
        .collect()
}

/// SSIM ("All") of the output's main video against the source's.
fn ssim(output: &Path, source: &Path) -> Option<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(output)
        .arg("-i")
        .arg(source)
        .args([
            "-lavfi",
            "[0:v:0]setpts=PTS-STARTPTS[a];[1:v:0]setpts=PTS-STARTPTS[b];[a][b]ssim",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().rev().find(|l| l.contains("SSIM"))?;
    let all = line.split("All:").nth(1)?;
    all.split_whitespace().next()?.parse().ok()
}

/// A stream as the comparison sees it: its type (cover art apart from video), codec and
/// the dispositions a player acts on.
///
/// Where the source marks no stream default (AVI, ASF), a muxer that marks the first of each
/// kind (Matroska) adds a flag and loses nothing: `default` then counts for neither.
fn stream_shapes(probe: &Value, any_default: bool) -> Vec<(String, String, i64, i64)> {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let d = &s["disposition"];
            let kind = if s["codec_type"] == "video" && d["attached_pic"] == 1 {
                "cover".to_string()
            } else {
                s["codec_type"].as_str().unwrap_or("?").to_string()
            };
            let codec = s["codec_name"].as_str().unwrap_or("none").to_string();
            (
                kind,
                codec,
                d["default"].as_i64().filter(|_| any_default).unwrap_or(0),
                d["forced"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn chapters(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_chapters", "-print_format", "json"])
        .arg(path)
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    value["chapters"].as_array().map_or(0, Vec::len)
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    })
}

fn file_of(event: &Value) -> String {
    Path::new(event["file"].as_str().unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_file_of_the_corpus_is_converted_whole_or_left_with_a_true_reason() {
    let Some(corpus) = corpus() else { return };
    let names = manifest_names();
    for name in &names {
        assert!(
            EXPECTED.iter().any(|(n, _)| n == name),
            "{name} is in the manifest but not in EXPECTED"
        );
    }
    let library = tempfile::tempdir().unwrap();
    let lib = library.path();
    let mut source_of: BTreeMap<String, PathBuf> = BTreeMap::new();
    for name in &names {
        source_of.insert(name.clone(), corpus.join(name));
    }
    for (name, from) in COPIES {
        source_of.insert(name.to_string(), corpus.join(from));
    }
    for (name, source) in &source_of {
        fs::copy(source, lib.join(name)).unwrap();
    }
    age_all(lib);

    // The plan first: what a dry run promises is what the run does, for every skip. It also
    // records ffprobe's facts of every file it would convert in the caches, so the run's
    // first choice is among all of them: demo.aif, the larger saving, takes demo.flac before
    // demo.wv whatever the load.
    let dry = cmd()
        .args(["--type", "both", "--dry-run", "--json", "--dir"])
        .arg(lib)
        .output()
        .unwrap();
    let planned: BTreeMap<String, Value> = of_kind(&events(&dry), "planned")
        .into_iter()
        .map(|e| (file_of(e), e.clone()))
        .collect();

    let started = std::time::Instant::now();
    let run = cmd()
        .args(["--type", "both", "--json", "--dir"])
        .arg(lib)
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let events = events(&run);
    assert!(
        !String::from_utf8_lossy(&run.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let mut outcome: BTreeMap<String, &Value> = BTreeMap::new();
    for e in &events {
        if matches!(
            e["event"].as_str(),
            Some("converted" | "skipped" | "failed")
        ) {
            let previous = outcome.insert(file_of(e), e);
            assert!(previous.is_none(), "two outcomes for {}", file_of(e));
        }
    }

    let mut rows = Vec::new();
    let (mut savings, mut ssims) = (Vec::new(), Vec::new());
    let mut estimate_errors = Vec::new();
    let mut problems = Vec::new();
    for (name, expect) in EXPECTED {
        let source = &source_of[*name];
        let event = outcome.get(*name);
        let got = event.map_or("none".to_string(), |e| {
            let kind = e["event"].as_str().unwrap_or_default();
            match kind {
                "skipped" => format!("skipped {}", e["reason"].as_str().unwrap_or_default()),
                "failed" => format!("failed: {}", e["error"].as_str().unwrap_or_default()),
                _ => kind.to_string(),
            }
        });
        let ok = match (expect, event) {
            (NotMedia, None) => true,
            (Converted, Some(e)) => e["event"] == "converted",
            (Skipped(reason), Some(e)) => e["event"] == "skipped" && e["reason"] == *reason,
            (Failed(text), Some(e)) => {
                e["event"] == "failed" && e["error"].as_str().unwrap_or_default().contains(text)
            }
            _ => false,
        };
        if !ok {
            problems.push(format!("{name}: expected {expect:?}, got {got}"));
        }
        // A skip decided at plan time is planned as that skip. A name taken by another
        // file of the same run (demo.wv after demo.aif) is found once the file is claimed.
        let plan_time = ["undescribed_stream", "no_video", "lossy"];
        if let (Skipped(reason), Some(plan)) = (expect, planned.get(*name)) {
            let clash_known = *reason == "output_exists" && COPIES.iter().any(|c| c.0 == *name);
            if (plan_time.contains(reason) || clash_known) && plan["reason"] != *reason {
                problems.push(format!("{name}: the dry run planned {plan}, not {reason}"));
            }
        }
        let mut row = format!("| {name} | {got} |");
        match event {
            Some(e) if e["event"] == "converted" => {
                let output = PathBuf::from(e["output"].as_str().unwrap());
                let (before, after) = (
                    e["before_bytes"].as_f64().unwrap(),
                    e["after_bytes"].as_f64().unwrap(),
                );
                let (src, new) = (ffprobe(source), ffprobe(&output));
                let dropped = e["dropped"].as_array().map_or(0, Vec::len);
                let data = |p: &Value| {
                    p["streams"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| s["codec_type"] == "data")
                        .count()
                };
                if dropped != data(&src) {
                    problems.push(format!("{name}: {dropped} streams named dropped"));
                }
                // Every stream but the main video is the same stream with the same
                // dispositions; the main video is HEVC now.
                let any_default = src["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["disposition"]["default"] == 1);
                let keep = |p: &Value| {
                    let mut shapes = stream_shapes(p, any_default);
                    shapes.retain(|s| s.0 != "data");
                    // The stream that is re-encoded: the main video, or an audio file's audio.
                    let main = ["video", "audio"]
                        .iter()
                        .find_map(|kind| shapes.iter().position(|s| s.0 == *kind));
                    if let Some(main) = main {
                        shapes[main].1 = "re-encoded".into();
                    }
                    shapes.sort();
                    shapes
                };
                if keep(&src) != keep(&new) {
                    problems.push(format!(
                        "{name}: streams differ: source {:?}, output {:?}",
                        keep(&src),
                        keep(&new)
                    ));
                }
                if chapters(source) != chapters(&output) {
                    problems.push(format!("{name}: chapters differ"));
                }
                // The output decodes as cleanly as the source: no error the source lacks.
                let source_errors = decode_errors(source);
                let new_errors: Vec<_> = decode_errors(&output)
                    .into_iter()
                    .filter(|l| !source_errors.contains(l))
                    .collect();
                if !new_errors.is_empty() {
                    problems.push(format!("{name}: the output decodes with {new_errors:?}"));
                }
                let saving = 100.0 * (1.0 - after / before);
                row += &format!(" {saving:.0}% |");
                if new["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["codec_name"] == "hevc")
                {
                    savings.push(saving);
                    let score = ssim(&output, source);
                    row += &score.map_or(" - |".into(), |s| format!(" {s:.3} |"));
                    ssims.extend(score);
                    if let Some(estimate) = planned
                        .get(*name)
                        .and_then(|p| p["estimated_bytes"].as_f64())
                    {
                        estimate_errors.push(100.0 * (estimate - after) / after);
                    }
                } else {
                    row += " - |";
                }
            }
            _ => {
                if lib.join(name).exists() || *expect != NotMedia {
                    let now = fs::read(lib.join(name)).unwrap_or_default();
                    if now != fs::read(source).unwrap() {
                        problems.push(format!("{name}: left alone but not byte-identical"));
                    }
                }
                row += " | |";
            }
        }
        rows.push(row);
    }

    // The estimates again, once the library's cache has seen this run: a dry run over a fresh
    // copy (new mtimes, so no history skips a file) with the run's cache. Each "convert" plan
    // against what the run made of that file: its new size, or its own size when the run
    // kept it. In-sample: the cache holds these very files' outcomes.
    let fresh = tempfile::tempdir().unwrap();
    for (name, source) in &source_of {
        fs::copy(source, fresh.path().join(name)).unwrap();
    }
    age_all(fresh.path());
    fs::copy(lib.join(CACHE_FILE), fresh.path().join(CACHE_FILE)).unwrap();
    let calibrated = cmd()
        .args(["--type", "both", "--dry-run", "--json", "--dir"])
        .arg(fresh.path())
        .output()
        .unwrap();
    let calibrated: BTreeMap<String, Value> = of_kind(&common::events(&calibrated), "planned")
        .into_iter()
        .map(|e| (file_of(e), e.clone()))
        .collect();
    let mut accuracy = Vec::new();
    for (label, plans) in [("model", &planned), ("calibrated", &calibrated)] {
        let (mut promised, mut achieved, mut errors) = (0.0, 0.0, Vec::new());
        for (name, plan) in plans.iter().filter(|(_, p)| p["action"] == "convert") {
            let size = plan["size_bytes"].as_f64().unwrap();
            let after = outcome
                .get(name)
                .filter(|e| e["event"] == "converted")
                .map_or(size, |e| e["after_bytes"].as_f64().unwrap());
            let estimate = plan["estimated_bytes"].as_f64().unwrap();
            promised += size - estimate;
            achieved += size - after;
            errors.push((100.0 * (estimate - after) / after).abs());
        }
        accuracy.push(format!(
            "{label}: {} plans, promised {promised:.0} bytes saved where the run saved \
             {achieved:.0} ({:.1}x), median error of the size estimate {:.0}%",
            errors.len(),
            promised / achieved,
            median(&mut errors).unwrap_or_default()
        ));
    }
    println!("{}", accuracy.join("\n"));

    // Nothing of ours is left behind: no temp output, backup, lock or guard.
    for path in walk(lib) {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with('.') {
            problems.push(format!("left behind: {name}"));
        }
    }

    let saving = median(&mut savings);
    let score = median(&mut ssims);
    let mut abs_errors: Vec<f64> = estimate_errors.iter().map(|e: &f64| e.abs()).collect();
    let estimate = median(&mut abs_errors);
    println!("| file | outcome | saving | SSIM |\n|---|---|---:|---:|");
    for row in &rows {
        println!("{row}");
    }
    println!(
        "\n{} files in {secs:.1} s: {} converted, {} skipped, {} failed; median saving of \
         the HEVC conversions {}, median SSIM {}, median error of the dry run's size \
         estimate {} (signed: {:?})",
        EXPECTED.len(),
        of_kind(&events, "converted").len(),
        of_kind(&events, "skipped").len(),
        of_kind(&events, "failed").len(),
        saving.map_or("-".into(), |s| format!("{s:.0}%")),
        score.map_or("-".into(), |s| format!("{s:.3}")),
        estimate.map_or("-".into(), |s| format!("{s:.0}%")),
        estimate_errors
            .iter()
            .map(|e| format!("{e:+.0}%"))
            .collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(run.status.code(), Some(1), "failures make the exit code 1");
}

/// The cover image's bytes, as ffmpeg reads them from a file's first attached picture.
fn cover_md5(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:v", "-map", "-0:V", "-c", "copy", "-f", "md5", "-",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_matroska_cover_stays_a_cover_and_attachments_stay() {
    let Some(corpus) = corpus() else { return };
    let library = tempfile::tempdir().unwrap();
    let file = library.path().join("flashmob.mkv");
    fs::copy(corpus.join("flashmob.mkv"), &file).unwrap();
    age(&file);
    let source = ffprobe(&corpus.join("flashmob.mkv"));
    // A quality low enough that this already small H.264 shrinks. A temp directory of its
    // own shows what the run leaves there.
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd()
        .env("TMPDIR", tmp.path())
        .args([
            "--json",
            "--quality",
            "36",
            "--preset",
            "veryfast",
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    let new = ffprobe(&file);
    let shapes = |p: &Value| {
        let mut s = stream_shapes(p, true);
        s.iter_mut().find(|s| s.0 == "video").unwrap().1 = "main".into();
        s.sort();
        s
    };
    assert_eq!(shapes(&source), shapes(&new));
    let cover = cover_md5(&corpus.join("flashmob.mkv"));
    assert!(cover.starts_with("MD5="), "{cover}");
    assert_eq!(
        cover_md5(&file),
        cover,
        "the cover image is not the same bytes"
    );
    let attachment_names = |p: &Value| -> Vec<String> {
        let mut names: Vec<String> = p["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["tags"]["filename"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    assert_eq!(attachment_names(&source), attachment_names(&new));
    // The copy of the cover made for the encode is gone.
    assert_eq!(walk(tmp.path()), Vec::<PathBuf>::new());
}
