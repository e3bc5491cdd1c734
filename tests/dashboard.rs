//! `dashboard` and `metrics`: the real binary serving a real library over real HTTP, and
//! Debian's Chromium driving the page while a conversion runs.
// Symbolic links, `kill` and Chromium from Debian: Unix only.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

/// A dashboard process, killed when dropped.
struct Dashboard {
    child: Child,
    address: SocketAddr,
    token: Option<String>,
    /// Kept open: the dashboard may say more.
    _stdout: BufReader<ChildStdout>,
}

impl Dashboard {
    fn start(library: &Path, args: &[&str]) -> Dashboard {
        let mut child = cmd()
            .arg("dashboard")
            .arg(library)
            .args(["--listen", "127.0.0.1:0", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut address, mut token) = (None, None);
        let control = args.contains(&"--allow-control");
        while address.is_none() || (control && token.is_none()) {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the dashboard ended before saying where it listens"
            );
            let event: Value = serde_json::from_str(&line).unwrap();
            let message = event["message"].as_str().unwrap_or_default();
            if let Some(url) = message.split("http://").nth(1) {
                let host = url.split('/').next().unwrap();
                address = Some(host.parse().unwrap());
            }
            if let Some(t) = message.split("#token=").nth(1) {
                token = Some(t.trim().to_owned());
            }
        }
        Dashboard {
            child,
            address: address.unwrap(),
            token,
            _stdout: stdout,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Sends `request` as it is; the status and body of the answer.
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.address).as_bytes())
    }

    fn status(&self) -> Value {
        let (code, body) = self.get("/api/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `/api/status` once the first read of the library has ended.
    fn read_status(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            if !status["totals"].is_null() {
                return status;
            }
            assert!(Instant::now() < deadline, "the library was never read");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn post(&self, path: &str, token: &str, body: &str) -> (u16, String) {
        self.raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nX-Token: {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.address,
                body.len()
            )
            .as_bytes(),
        )
    }

    fn control(&self, path: &str, body: &str) -> (u16, String) {
        self.post(path, self.token.as_deref().unwrap(), body)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file and folder under `dir`, with its size and mtime: what "nothing written" means.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            found.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    found
}

fn convert(library: &Path, host: &str, args: &[&str]) {
    let out = cmd()
        .env("MEDIA_CONVERTER_HOSTNAME", host)
        .env("MEDIA_CONVERTER_HOST_ID", format!("{host}-id"))
        .args(args)
        .args(["--json", "--preset", "ultrafast"])
        .current_dir(library)
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
}

/// A library with history: two files converted by `attic`, one kept as not smaller, one that
/// failed.
fn library_with_history(d: &Path) {
    fs::create_dir_all(d.join("Movies")).unwrap();
    fs::create_dir_all(d.join("TV")).unwrap();
    h264_aac_srt_mkv(&d.join("Movies/a.mkv"));
    h264_aac_srt_mkv(&d.join("Movies/b.mkv"));
    truncated_mkv(&d.join("Movies/broken.mkv"));
    age_all(d);
    convert(d, "attic", &["--dir", "."]);
    h264_aac_srt_mkv(&d.join("TV/kept.mkv"));
    h264_aac_srt_mkv(&d.join("TV/next.mkv"));
    age_all(&d.join("TV"));
    convert(
        d,
        "attic",
        &["--file", "TV/kept.mkv", "--min-savings", "99"],
    );
}

#[test]
fn the_dashboard_shows_the_share_and_changes_only_what_it_is_allowed_to() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    library_with_history(d);
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.mkv"), b"not yours").unwrap();
    std::os::unix::fs::symlink(outside.path(), d.join("escape")).unwrap();
    let before = tree(d);

    // Read only: the page, its assets, the JSON and the metrics, and not one write.
    let dash = Dashboard::start(d, &[]);
    let (code, page) = dash.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"/app.js\">"), "{page}");
    assert_eq!(dash.get("/app.js").0, 200);
    assert_eq!(dash.get("/style.css").0, 200);
    let status = dash.read_status();
    assert_eq!(status["control"], false);
    let totals = &status["totals"];
    assert_eq!(totals["converted"], 2, "{status:#}");
    assert_eq!(totals["not_smaller"]["files"], 1);
    assert_eq!(totals["failed"]["files"], 1);
    // Movies/broken.mkv, failed once, is tried again; the run given `--file TV/kept.mkv`
    // never surveyed TV/next.mkv.
    assert_eq!(totals["candidates"]["files"], 1, "{status:#}");
    assert_eq!(
        totals["candidates"]["bytes"],
        fs::metadata(d.join("Movies/broken.mkv")).unwrap().len()
    );
    assert_eq!(totals["unknown"]["files"], 1, "{status:#}");
    assert_eq!(
        totals["unknown"]["bytes"],
        fs::metadata(d.join("TV/next.mkv")).unwrap().len()
    );
    let failure = &status["failures"][0];
    assert_eq!(failure["file"], "Movies/broken.mkv");
    assert!(!failure["error"].as_str().unwrap().is_empty());
    assert_eq!(status["not_smaller"][0]["file"], "TV/kept.mkv");
    assert_eq!(status["history"][0]["host"], "attic");
    assert_eq!(status["history"][0]["files"], 2);
    let attic = &status["hosts"][0];
    assert_eq!(
        (&attic["host"], &attic["state"]),
        (&"attic".into(), &"stopped".into())
    );
    let (code, metrics) = dash.get("/metrics");
    assert_eq!(code, 200);
    let library = d.canonicalize().unwrap();
    for line in [
        format!(
            "mediaconverter_converted_files{{library=\"{}\"}} 2",
            library.display()
        ),
        "mediaconverter_host_state{host=\"attic\",state=\"stopped\"} 1".into(),
        "mediaconverter_host_converted_files{host=\"attic\"} 2".into(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    // Without --allow-control nothing changes, whatever is asked; misdirected, oversized and
    // unknown requests are refused.
    assert_eq!(dash.post("/api/pause", "", "{}").0, 403);
    assert_eq!(dash.post("/api/priority", "x", r#"{"path":"TV"}"#).0, 403);
    assert_eq!(
        dash.raw(b"GET /api/status HTTP/1.1\r\nHost: rebound.example\r\n\r\n")
            .0,
        421
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX: {}\r\n\r\n",
        dash.address,
        "a".repeat(20_000)
    );
    assert_eq!(dash.raw(huge.as_bytes()).0, 431);
    assert_eq!(dash.post("/api/pause", "", &"x".repeat(100_000)).0, 413);
    assert_eq!(dash.get("/etc/passwd").0, 404);
    assert_eq!(dash.get("/../../etc/passwd").0, 404);
    assert_eq!(dash.raw(b"DELETE /api/status HTTP/1.1\r\n\r\n").0, 421);
    let delete = format!(
        "DELETE /api/status HTTP/1.1\r\nHost: {}\r\n\r\n",
        dash.address
    );
    assert_eq!(dash.raw(delete.as_bytes()).0, 405);
    // SIGTERM (or Ctrl-C) ends it at once, cleanly.
    let mut dash = dash;
    let stopped = Instant::now();
    let killed = Command::new("kill")
        .arg(dash.child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(dash.child.wait().unwrap().code(), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    drop(dash);
    assert_eq!(
        tree(d),
        before,
        "the read-only dashboard wrote to the share"
    );

    // The same through `metrics --textfile`, written whole.
    let prom = outside.path().join("media.prom");
    let out = cmd()
        .arg("metrics")
        .arg(d)
        .arg("--textfile")
        .arg(&prom)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = fs::read_to_string(&prom).unwrap();
    assert!(text.contains("mediaconverter_saved_bytes{"), "{text}");
    assert!(text.contains("mediaconverter_candidate_files{"), "{text}");

    // With --allow-control: the token, and paths inside the library only.
    let dash = Dashboard::start(d, &["--allow-control"]);
    assert_eq!(dash.status()["control"], true);
    assert_eq!(dash.post("/api/pause", "", "{}").0, 403, "no token");
    assert_eq!(dash.post("/api/pause", "0123", "{}").0, 403, "wrong token");
    assert!(!d.join(".mediabox.pause").exists());
    let secret = outside.path().join("secret.mkv");
    for path in [
        "../secret.mkv".to_owned(),
        "Movies/../../secret.mkv".into(),
        secret.to_string_lossy().into_owned(),
        "escape/secret.mkv".into(),
        "escape".into(),
        ".".into(),
        "Movies/nothing.mkv".into(),
    ] {
        for control in ["/api/retry", "/api/priority"] {
            let body = serde_json::json!({ "path": path }).to_string();
            let (code, answer) = dash.control(control, &body);
            assert!(
                code == 400 || code == 404,
                "{control} {path:?}: {code} {answer}"
            );
        }
    }
    assert!(!d.join(".mediabox.priority").exists());
    assert_eq!(fs::read(&secret).unwrap(), b"not yours");

    let (code, answer) = dash.control("/api/pause", "{}");
    assert_eq!(code, 200, "{answer}");
    let pause: Value =
        serde_json::from_str(&fs::read_to_string(d.join(".mediabox.pause")).unwrap()).unwrap();
    assert_eq!(pause["reason"], "from the dashboard");
    assert_eq!(dash.control("/api/resume", "{}").0, 200);
    assert!(!d.join(".mediabox.pause").exists());

    // Retry: the failure is forgotten in the cache, so hosts try the file again.
    let (code, answer) = dash.control("/api/retry", r#"{"path":"Movies/broken.mkv"}"#);
    assert_eq!(code, 200, "{answer}");
    let cache = read_cache(&d.join("Movies"));
    assert!(
        cache["files"]["broken.mkv"]["failed"].is_null(),
        "{cache:#}"
    );

    // Priority: a folder goes to the front of every host's --order.
    let (code, answer) = dash.control("/api/priority", r#"{"path":"TV"}"#);
    assert_eq!(code, 200, "{answer}");
    let list: Value =
        serde_json::from_str(&fs::read_to_string(d.join(".mediabox.priority")).unwrap()).unwrap();
    assert_eq!(list["paths"], serde_json::json!(["TV"]));
    drop(dash);
    fs::remove_file(d.join("escape")).unwrap();
    h264_aac_srt_mkv(&d.join("Movies/c.mkv"));
    age_all(&d.join("Movies"));
    let out = cmd()
        .arg("--dir")
        .arg(d)
        // The bar TV/kept.mkv was kept under: a lower one its new file meets plans it again.
        .args([
            "--dry-run",
            "--json",
            "--order",
            "name",
            "--min-savings",
            "99",
        ])
        .output()
        .unwrap();
    let planned: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "planned" && e["action"] == "convert")
        .map(|e| e["file"].as_str().unwrap().to_owned())
        .collect();
    // The retried file is a candidate again; the priority folder goes before the names that
    // sort first.
    let planned: Vec<_> = planned
        .iter()
        .map(|p| {
            Path::new(p)
                .strip_prefix(d)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        planned,
        ["TV/next.mkv", "Movies/broken.mkv", "Movies/c.mkv"]
    );

    // Beyond loopback only when asked.
    let out = cmd()
        .arg("dashboard")
        .arg(d)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-remote"),
        "{out:?}"
    );
}

// Linux keeps any bytes as a name; other systems refuse names that are not UTF-8.
#[cfg(target_os = "linux")]
#[test]
fn the_dashboard_counts_every_media_file_as_status_does() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("a.mkv"));
    // Latin-1 from an old Windows share: not a valid Unicode name.
    let latin1 = d.join(std::ffi::OsStr::from_bytes(b"caf\xe9.mkv"));
    fs::copy(d.join("a.mkv"), &latin1).unwrap();
    age_all(d);
    let status = status_json(d);
    let dash = Dashboard::start(d, &[]);
    let seen = dash.read_status();
    assert_eq!(status["totals"]["files"]["files"], 2, "{status:#}");
    assert_eq!(status["totals"]["unknown"]["files"], 2, "{status:#}");
    for tally in ["files", "unknown", "candidates"] {
        assert_eq!(
            seen["totals"][tally], status["totals"][tally],
            "{tally}: {seen:#}"
        );
    }
}

/// Says `message` on stderr past the test harness's capture.
fn loud(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

/// Chromium and the node package that drives it, or `None` after saying loudly why not
/// (a failure instead when `BROWSER_TESTS_REQUIRED=1`, as `.ci/run` sets when it could
/// install them).
fn browser() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let package = script.with_file_name("node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output().is_ok();
    let missing = [
        (!Path::new(&chromium).exists()).then_some("chromium (apt-get install chromium)"),
        (!package.exists()).then_some("playwright-core (npm ci in tests/browser)"),
        (!node).then_some("node"),
    ];
    let missing: Vec<_> = missing.into_iter().flatten().collect();
    if missing.is_empty() {
        return Some(script);
    }
    let message = format!("BROWSER TEST SKIPPED: missing {}", missing.join(", "));
    assert!(
        std::env::var("BROWSER_TESTS_REQUIRED").as_deref() != Ok("1"),
        "{message}"
    );
    loud(&message);
    None
}

fn drive(script: &Path, url: &str, library: &Path, mode: &str, shot: &Path) -> Value {
    let out = Command::new("timeout")
        .arg("180")
        .arg("node")
        .arg(script)
        .arg(url)
        .arg(library)
        .arg("den-pc")
        .arg(mode)
        .arg(shot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

#[test]
fn a_real_browser_sees_a_host_convert_and_pauses_the_library() {
    let Some(script) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    library_with_history(d);
    long_h264_mkv(&d.join("Movies/long.mkv"), 30, "640x360");
    // Only the new file: touching the others would void their history in the caches.
    age(&d.join("Movies/long.mkv"));
    // Still being written as far as --min-age can tell: no host surveys it yet.
    h264_aac_srt_mkv(&d.join("Movies/arriving.mkv"));
    // long.mkv known from the cache (arriving.mkv, too new, is not surveyed): den-pc's first
    // choice is among long.mkv, Movies/broken.mkv (known, tried again) and whatever else it
    // has surveyed, and `--order largest` takes long.mkv whatever the load, so the job the
    // page shows is long.mkv, not a smaller file the survey happened to find first.
    let built = cmd()
        .args(["cache", "build", "-q"])
        .arg(d.join("Movies"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let worker = convert_as(d, "den-pc");

    // Without --allow-control the page offers nothing, and the server refuses a forged request.
    let dash = Dashboard::start(d, &[]);
    let shots = tempfile::tempdir().unwrap();
    let seen = drive(
        &script,
        &dash.url(),
        d,
        "readonly",
        &shots.path().join("ro.png"),
    );
    assert_eq!(seen["controls_visible"], false, "{seen}");
    assert_eq!(seen["retry_buttons"], 0, "{seen}");
    assert_eq!(seen["refused"], 403, "{seen}");
    assert_eq!(seen["paused"], false, "{seen}");
    // The card for files ffprobe has not surveyed says what `status` and `cache stats` say.
    let cards: Vec<&str> = seen["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        cards
            .iter()
            .any(|c| c.contains("not surveyed by ffprobe yet")
                && c.contains("`cache build` surveys them")),
        "{cards:?}"
    );
    drop(dash);
    // With it, pressing pause writes the pause file.
    let dash = Dashboard::start(d, &["--allow-control"]);
    let url = format!("{}#token={}", dash.url(), dash.token.as_deref().unwrap());
    let shot = std::env::var_os("DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| shots.path().join("dashboard.png"));
    let seen = drive(&script, &url, d, "control", &shot);
    assert_eq!(seen["state"], "working", "{seen}");
    assert_ne!(seen["first_percent"], seen["later_percent"], "{seen}");
    assert_eq!(seen["file"], "Movies/long.mkv");
    assert!(
        seen["hosts"].as_u64().unwrap() >= 2,
        "den-pc and attic: {seen}"
    );
    assert!(seen["chart"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["paused"], true);
    assert!(
        seen["banner"].as_str().unwrap().contains("Paused"),
        "{seen}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["failures"], 1, "{seen}");
    assert_eq!(seen["retry_buttons"], 1, "{seen}");
    assert!(d.join(".mediabox.pause").exists());
    assert!(
        fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
    drop(dash);
    drop(worker);
}
