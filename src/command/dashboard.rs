//! `media-converter dashboard DIR`: the fleet at a glance in a browser, read from the share
//! alone, and `media-converter metrics DIR`: the same figures for Prometheus.
//!
//! Two threads read the share: one the presence records, pause and priority files every
//! [`PRESENCE_EVERY`], one every cache of the library (a walk, as `cache stats` does) every
//! [`LIBRARY_EVERY`] or ten times as long as the last walk took. Each renders the page's JSON
//! and the metrics once; requests are answered from memory, however large the library.
//! The server writes to the share only when a control asks it to (`--allow-control`).

mod control;
pub mod http;
mod metrics;
pub mod snapshot;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{DashboardConfig, MetricsConfig};
use crate::exit_codes::ExitCode;
use crate::output::Reporter;
use crate::presence::Watcher;
use crate::signal;
use http::{Request, Response};
use snapshot::{LibraryView, Snapshot};

/// How often the presence records, pause and priority files are read.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);

/// The least time between two walks of the library's caches.
const LIBRARY_EVERY: Duration = Duration::from_secs(30);

const PAGE: &str = include_str!("dashboard/page.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// What the server answers from: rendered once per refresh.
#[derive(Debug, Default)]
struct Rendered {
    json: Vec<u8>,
    metrics: String,
}

/// State shared by the readers and the server.
struct Shared {
    rendered: RwLock<Rendered>,
    library: Mutex<Option<(Arc<LibraryView>, Instant)>>,
    /// Set by a control, so that both readers look again at once.
    wake: (Mutex<Wake>, Condvar),
}

#[derive(Default)]
struct Wake {
    presence: bool,
    library: bool,
}

impl Shared {
    /// Waits up to `timeout` for a wake-up of the reader `which` picks; `false` on Ctrl-C.
    fn wait(&self, timeout: Duration, which: fn(&mut Wake) -> &mut bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &self.wake;
        let mut wake = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if signal::interrupted() {
                return false;
            }
            let flag = which(&mut wake);
            if *flag {
                *flag = false;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            // Woken at least every 100 ms to see Ctrl-C.
            let step = (deadline - now).min(Duration::from_millis(100));
            wake = match cvar.wait_timeout(wake, step) {
                Ok((wake, _)) => wake,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn refresh_now(&self) {
        let (lock, cvar) = &self.wake;
        let mut wake = lock.lock().unwrap_or_else(|p| p.into_inner());
        wake.presence = true;
        wake.library = true;
        cvar.notify_all();
    }
}

/// Serves the dashboard until Ctrl-C.
pub fn run(config: &DashboardConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let root = library_root(&config.dir)?;
    if !config.listen.ip().is_loopback() && !config.allow_remote {
        bail!(
            "--listen {} is reachable from other machines: add --allow-remote to mean it \
             (anyone who can reach it sees the library's file names)",
            config.listen
        );
    }
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let token = control::new_token()?;
    let shared = Arc::new(Shared {
        rendered: RwLock::new(Rendered::default()),
        library: Mutex::new(None),
        wake: (Mutex::new(Wake::default()), Condvar::new()),
    });
    // The first reading of the library before the first request, so the page has it all.
    let view = snapshot::read_library(&root, config.media_type, reporter);
    *lock(&shared.library) = Some((Arc::new(view), Instant::now()));
    let url = format!("http://{}/", page_host(address));
    reporter.note(&format!("dashboard of {} at {url}", root.display()));
    if config.allow_control {
        reporter.note(&format!(
            "controls on; every change needs the token {token}: open {url}#token={token}"
        ));
    }
    // The first reading, before the first request is answered.
    render(
        &shared,
        &root,
        config.allow_control,
        &mut Watcher::default(),
    );
    let app = Arc::new(control::App {
        root: root.clone(),
        allow_control: config.allow_control,
        token,
        address,
        hostname: crate::identity::HostIdentity::current().hostname,
    });
    std::thread::scope(|scope| -> anyhow::Result<()> {
        scope.spawn(|| {
            let mut watcher = Watcher::default();
            loop {
                render(&shared, &root, config.allow_control, &mut watcher);
                if !shared.wait(PRESENCE_EVERY, |w| &mut w.presence) {
                    return;
                }
            }
        });
        scope.spawn(|| {
            loop {
                let last = lock(&shared.library)
                    .as_ref()
                    .map_or(0.0, |(v, _)| v.read_secs);
                let pause = LIBRARY_EVERY.max(Duration::from_secs_f64(last * 10.0));
                if !shared.wait(pause, |w| &mut w.library) {
                    return;
                }
                let view = snapshot::read_library(&root, config.media_type, reporter);
                *lock(&shared.library) = Some((Arc::new(view), Instant::now()));
                shared.refresh_now_presence();
            }
        });
        let handler = {
            let (shared, app) = (Arc::clone(&shared), Arc::clone(&app));
            Arc::new(move |request: &Request| route(&shared, &app, request))
        };
        http::serve(&listener, handler, &signal::interrupted, http::IO_TIMEOUT)
            .with_context(|| format!("serving on {address}"))
    })?;
    Ok(ExitCode::Success)
}

impl Shared {
    fn refresh_now_presence(&self) {
        let (lock, cvar) = &self.wake;
        lock.lock().unwrap_or_else(|p| p.into_inner()).presence = true;
        cvar.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the presence records and renders the page's JSON and the metrics from them and the
/// latest library view.
fn render(shared: &Shared, root: &Path, control: bool, watcher: &mut Watcher) {
    let library = lock(&shared.library).clone();
    let snapshot = snapshot::compose(
        root,
        control,
        snapshot::Judge::Watching(watcher),
        library.as_ref().map(|(view, at)| (view.as_ref(), *at)),
    );
    let rendered = Rendered {
        json: serde_json::to_vec(&snapshot).unwrap_or_default(),
        metrics: metrics::render(&snapshot),
    };
    *shared.rendered.write().unwrap_or_else(|p| p.into_inner()) = rendered;
}

fn route(shared: &Shared, app: &control::App, request: &Request) -> Response {
    if let Err(refused) = app.check_host(request) {
        return refused;
    }
    let rendered = || shared.rendered.read().unwrap_or_else(|p| p.into_inner());
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") => Response::new(200, "text/html; charset=utf-8", PAGE),
        ("GET", "/app.js") => Response::new(200, "text/javascript; charset=utf-8", SCRIPT),
        ("GET", "/style.css") => Response::new(200, "text/css; charset=utf-8", STYLE),
        ("GET", "/api/status") => Response::new(200, "application/json", rendered().json.clone()),
        ("GET", "/metrics") => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            rendered().metrics.clone(),
        ),
        ("POST", path) if path.starts_with("/api/") => {
            let response = app.control(request);
            if response.status == 200 {
                shared.refresh_now();
            }
            response
        }
        (_, "/" | "/app.js" | "/style.css" | "/api/status" | "/metrics") => {
            Response::text(405, "method not allowed")
        }
        _ => Response::text(404, "no such page"),
    }
}

/// How the page's address is written: `127.0.0.1:8080`, `[::1]:8080`.
fn page_host(address: SocketAddr) -> String {
    address.to_string()
}

fn library_root(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// `media-converter metrics DIR [--textfile PATH]`: the figures once, in Prometheus's text
/// format, on stdout or written atomically into PATH (for node_exporter's textfile collector,
/// which must never read half a file).
pub fn metrics(config: &MetricsConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let root = library_root(&config.dir)?;
    let view = snapshot::read_library(&root, config.media_type, reporter);
    let snapshot: Snapshot = snapshot::compose(
        &root,
        false,
        snapshot::Judge::ServerClock,
        Some((&view, Instant::now())),
    );
    let text = metrics::render(&snapshot);
    match &config.textfile {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Some(path) => {
            path.file_name().context("--textfile needs a file name")?;
            crate::atomic::write_atomic(path, text.as_bytes())
                .with_context(|| format!("cannot write --textfile {}", path.display()))?;
        }
    }
    Ok(ExitCode::Success)
}
