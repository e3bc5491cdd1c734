//! The dashboard's controls (`--allow-control`): pause and resume the library, retry a failed
//! file, move a file or folder to the front of every host's order. Each request must carry
//! the token printed at start (`X-Token`), come from the page's own origin, and name only
//! paths inside the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::http::{Request, Response};
use crate::{cache, priority, unattended};

/// What the controls need to know.
pub struct App {
    /// The library, canonical.
    pub root: PathBuf,
    pub allow_control: bool,
    pub token: String,
    /// Where the server listens.
    pub address: SocketAddr,
    /// This host's name, for the pause file.
    pub hostname: String,
}

#[derive(Debug, Default, Deserialize)]
struct Body {
    #[serde(default)]
    path: String,
}

/// A fresh random token: 128 bits, hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|err| anyhow::anyhow!("no randomness for a token: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl App {
    /// On loopback, a request must name the server by its loopback address: a page of another
    /// site whose name was pointed at 127.0.0.1 (DNS rebinding) is refused, even for reading.
    pub fn check_host(&self, request: &Request) -> Result<(), Response> {
        if !self.address.ip().is_loopback() {
            return Ok(());
        }
        let port = self.address.port();
        let allowed = [
            self.address.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        match request.header("host") {
            Some(host) if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) => Ok(()),
            _ => Err(Response::text(
                421,
                "this server answers only to its loopback address",
            )),
        }
    }

    /// Carries out one control request.
    pub fn control(&self, request: &Request) -> Response {
        if !self.allow_control {
            return Response::text(
                403,
                "controls are off: start the dashboard with --allow-control to use them",
            );
        }
        if !tokens_match(request.header("x-token").unwrap_or_default(), &self.token) {
            return Response::text(
                403,
                "missing or wrong token (printed when the dashboard started)",
            );
        }
        // Browsers send Origin with every POST; one from another site is refused outright.
        if let (Some(origin), Some(host)) = (request.header("origin"), request.header("host")) {
            if origin != format!("http://{host}") {
                return Response::text(403, "requests from other sites are refused");
            }
        }
        let body: Body = if request.body.is_empty() {
            Body::default()
        } else {
            match serde_json::from_slice(&request.body) {
                Ok(body) => body,
                Err(err) => {
                    return Response::text(400, &format!("the body is not a request: {err}"));
                }
            }
        };
        let result = match request.path.as_str() {
            "/api/pause" => unattended::pause(
                &self.root,
                &self.hostname,
                Some("from the dashboard".into()),
            )
            .map(|_| "paused: hosts finish their files and start no new one".to_owned()),
            "/api/resume" => unattended::resume(&self.root)
                .map(|was| if was { "resumed" } else { "was not paused" }.to_owned()),
            "/api/retry" => match self.inside(&body.path) {
                Ok(file) => retry(&file, &body.path),
                Err(refused) => return refused,
            },
            "/api/priority" => match self.inside(&body.path) {
                Ok(_) => priority::push_front(&self.root, &normal(&body.path))
                    .map(|_| format!("{} goes first on every host", body.path)),
                Err(refused) => return refused,
            },
            "/api/unpriority" => {
                if !priority::is_relative_inside(&body.path) {
                    return Response::text(400, "not a path inside the library");
                }
                priority::remove(&self.root, &normal(&body.path))
                    .map(|_| format!("{} keeps its place in the order again", body.path))
            }
            _ => return Response::text(404, "no such control"),
        };
        match result {
            Ok(message) => Response::new(
                200,
                "application/json",
                serde_json::json!({ "ok": true, "message": message }).to_string(),
            ),
            Err(err) => Response::text(500, &format!("could not: {err}")),
        }
    }

    /// The existing file or folder `relative` names inside the library, symbolic links
    /// resolved, or why not.
    fn inside(&self, relative: &str) -> Result<PathBuf, Response> {
        if !priority::is_relative_inside(relative) {
            return Err(Response::text(400, "not a path inside the library"));
        }
        let resolved = self
            .root
            .join(relative)
            .canonicalize()
            .map_err(|_| Response::text(404, "no such file or folder in the library"))?;
        if !resolved.starts_with(&self.root) || resolved == self.root {
            return Err(Response::text(400, "not a path inside the library"));
        }
        Ok(resolved)
    }
}

/// The relative path as the priority list keeps it: `/`-separated, no `.` parts.
fn normal(relative: &str) -> String {
    relative
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn retry(file: &Path, shown: &str) -> std::io::Result<String> {
    if !file.is_file() {
        return Err(std::io::Error::other(format!("{shown} is not a file")));
    }
    let name = file
        .file_name()
        .and_then(cache::key)
        .ok_or_else(|| std::io::Error::other("no usable file name"))?;
    let had = cache::forget_failures(&cache::dir_of(file), &name)?;
    Ok(if had {
        format!("{shown}: its failures are forgotten; the next run on any host tries it again")
    } else {
        format!("{shown} had no failures recorded")
    })
}

/// Compares without stopping at the first difference, so the time taken tells nothing.
fn tokens_match(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn app(root: &Path, allow_control: bool) -> App {
        App {
            root: root.canonicalize().unwrap(),
            allow_control,
            token: "t0k3n".into(),
            address: "127.0.0.1:8080".parse().unwrap(),
            hostname: "den".into(),
        }
    }

    fn post(path: &str, token: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            headers: vec![
                ("host".into(), "127.0.0.1:8080".into()),
                ("x-token".into(), token.into()),
                ("origin".into(), "http://127.0.0.1:8080".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn controls_need_the_flag_the_token_and_the_pages_origin() {
        let dir = tempfile::tempdir().unwrap();
        let pause_file = dir.path().join(unattended::PAUSE_FILE);
        assert_eq!(
            app(dir.path(), false)
                .control(&post("/api/pause", "t0k3n", ""))
                .status,
            403
        );
        let on = app(dir.path(), true);
        assert_eq!(on.control(&post("/api/pause", "wrong", "")).status, 403);
        assert_eq!(on.control(&post("/api/pause", "", "")).status, 403);
        let mut foreign = post("/api/pause", "t0k3n", "");
        foreign.headers[2].1 = "http://evil.example".into();
        assert_eq!(on.control(&foreign).status, 403);
        assert!(!pause_file.exists(), "nothing refused may write");
        assert_eq!(on.control(&post("/api/pause", "t0k3n", "")).status, 200);
        assert!(pause_file.exists());
        assert_eq!(on.control(&post("/api/resume", "t0k3n", "")).status, 200);
        assert!(!pause_file.exists());
    }

    #[test]
    fn no_request_names_a_path_outside_the_library() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.mkv"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("Movies")).unwrap();
        fs::write(root.join("Movies/a.mkv"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        let on = app(root, true);
        let outside_name = outside.path().join("secret.mkv");
        let attempts = [
            "../secret.mkv".to_owned(),
            "Movies/../../secret.mkv".into(),
            outside_name.to_string_lossy().into_owned(),
            "escape/secret.mkv".into(),
            "Movies\\..\\..\\x".into(),
            ".".into(),
            "".into(),
            "nope.mkv".into(),
        ];
        for attempt in &attempts {
            for control in ["/api/retry", "/api/priority"] {
                let body = serde_json::json!({ "path": attempt }).to_string();
                let status = on.control(&post(control, "t0k3n", &body)).status;
                assert!(
                    status == 400 || status == 404,
                    "{control} {attempt:?} answered {status}"
                );
            }
        }
        assert!(priority::read(root).is_empty(), "nothing was listed");
        let body = r#"{"path":"Movies/./a.mkv"}"#;
        assert_eq!(
            on.control(&post("/api/priority", "t0k3n", body)).status,
            200
        );
        assert_eq!(priority::read(root), ["Movies/a.mkv"]);
        let body = r#"{"path":"Movies/a.mkv"}"#;
        assert_eq!(
            on.control(&post("/api/unpriority", "t0k3n", body)).status,
            200
        );
        assert!(priority::read(root).is_empty());
    }

    #[test]
    fn loopback_servers_answer_only_to_their_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let on = app(dir.path(), true);
        let mut request = post("/", "", "");
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("localhost:8080", true),
            ("rebound.example:8080", false),
            ("127.0.0.1:9090", false),
        ] {
            request.headers[0].1 = host.into();
            assert_eq!(on.check_host(&request).is_ok(), ok, "{host}");
        }
        request.headers.remove(0);
        assert!(on.check_host(&request).is_err(), "no Host at all");
        assert!(
            tokens_match("abc", "abc") && !tokens_match("abd", "abc") && !tokens_match("ab", "abc")
        );
    }
}
