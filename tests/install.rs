//! installers/install.sh, run for real into a temporary prefix and a clean temporary HOME.
//!
//! It builds with the real `cargo build --release --locked`, reusing this build's target
//! directory and cargo's real home (no download). `crontab` and `systemctl` are fakes first on
//! PATH that keep their state in files, so the test never touches the machine's crontab or
//! systemd.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TAG: &str = "# media-converter schedule (installers/install.sh)";
const UNRELATED: &str = "5 4 * * * echo someone else's job";

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    prefix: PathBuf,
    home: PathBuf,
    library: PathBuf,
    fake_bin: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let sandbox = Sandbox {
            prefix: root.join("prefix"),
            home: root.join("home"),
            library: root.join("My Library"),
            fake_bin: root.join("fake-bin"),
            root,
            _dir: dir,
        };
        for d in [&sandbox.home, &sandbox.library, &sandbox.fake_bin] {
            fs::create_dir_all(d).unwrap();
        }
        sandbox.fake(
            "crontab",
            r#"case $1 in
  -l) [ -f "$FAKE_CRONTAB" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
      cat "$FAKE_CRONTAB" ;;
  -) cat > "$FAKE_CRONTAB" ;;
  *) cat "$1" > "$FAKE_CRONTAB" ;;
esac"#,
        );
        sandbox.fake(
            "systemctl",
            r#"printf '%s\n' "$*" >> "$FAKE_SYSTEMCTL_LOG""#,
        );
        fs::write(sandbox.crontab_file(), format!("{UNRELATED}\n")).unwrap();
        sandbox
    }

    fn fake(&self, name: &str, body: &str) {
        let path = self.fake_bin.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn crontab_file(&self) -> PathBuf {
        self.root.join("crontab")
    }

    fn crontab(&self) -> String {
        fs::read_to_string(self.crontab_file()).unwrap_or_default()
    }

    fn systemctl_calls(&self) -> String {
        fs::read_to_string(self.root.join("systemctl.log")).unwrap_or_default()
    }

    fn unit(&self, name: &str) -> PathBuf {
        self.home.join(".config/systemd/user").join(name)
    }

    /// Runs the installer as a user would, in the sandbox's environment.
    fn install(&self, args: &[&str]) -> Output {
        self.install_with_path(args, &self.path_with_fakes())
    }

    fn install_with_path(&self, args: &[&str], path: &str) -> Output {
        let real_home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| real_home.join(".cargo"));
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| real_home.join(".rustup"));
        Command::new("bash")
            .arg(repo().join("installers/install.sh"))
            .arg("--prefix")
            .arg(&self.prefix)
            .args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env("CARGO_HOME", cargo_home)
            .env("RUSTUP_HOME", rustup_home)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("PATH", path)
            .env("FAKE_CRONTAB", self.crontab_file())
            .env("FAKE_SYSTEMCTL_LOG", self.root.join("systemctl.log"))
            .output()
            .unwrap()
    }

    fn path_with_fakes(&self) -> String {
        let path = std::env::var("PATH").unwrap_or_default();
        format!("{}:{path}", self.fake_bin.display())
    }

    /// Every file under the prefix, relative to it, sorted.
    fn prefix_files(&self) -> Vec<String> {
        let mut files = vec![];
        let mut dirs = vec![self.prefix.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&self.prefix).unwrap();
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort();
        files
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory this test was built in, so the installer's release build reuses it.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/install-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"))
}

fn ok(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "install.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

fn failed_with_2(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

fn tagged_lines(crontab: &str) -> Vec<&str> {
    crontab.lines().filter(|l| l.contains(TAG)).collect()
}

const INSTALLED: [&str; 5] = [
    "bin/media-converter",
    "share/bash-completion/completions/media-converter",
    "share/fish/vendor_completions.d/media-converter.fish",
    "share/man/man1/media-converter.1",
    "share/zsh/site-functions/_media-converter",
];

#[test]
fn installs_twice_switches_schedules_and_uninstalls_exactly_its_files() {
    let s = Sandbox::new();
    let library = s.library.to_str().unwrap();
    let cron = [
        "--cron",
        "0 1 * * *",
        "--dir",
        library,
        "--args",
        "--type both",
    ];

    ok(&s.install(&cron));
    let mut sorted = INSTALLED;
    sorted.sort();
    assert_eq!(
        s.prefix_files(),
        sorted,
        "exactly our files, no temp leftovers"
    );

    // The installed binary runs from the prefix, and what it generated is in place.
    let bin = s.prefix.join("bin/media-converter");
    let help = Command::new(&bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--min-savings"));
    let read = |relative: &str| fs::read_to_string(s.prefix.join(relative)).unwrap();
    assert!(read("share/bash-completion/completions/media-converter").contains("--dir"));
    assert!(read("share/zsh/site-functions/_media-converter").contains("--dir"));
    assert!(read("share/fish/vendor_completions.d/media-converter.fish").contains("-l dir"));
    let man = read("share/man/man1/media-converter.1");
    assert!(man.contains(".TH media-converter 1"), "{man}");
    assert!(man.contains(r"\-\-min\-savings"));

    let crontab = s.crontab();
    let lines = tagged_lines(&crontab);
    assert_eq!(lines.len(), 1, "{crontab}");
    let line = lines[0];
    assert!(line.starts_with("0 1 * * * "), "{line}");
    assert!(line.contains(&format!("'{}'", bin.display())), "{line}");
    // The library path has a space: quoted for sh.
    assert!(
        line.contains(&format!("--dir '{library}' --type both")),
        "{line}"
    );
    assert!(
        line.contains(">> '") && line.contains("schedule.log' 2>&1"),
        "{line}"
    );
    assert!(crontab.contains(UNRELATED));

    // Again: the same files, still one line of ours, the other job untouched.
    ok(&s.install(&cron));
    assert_eq!(s.prefix_files(), sorted);
    let crontab = s.crontab();
    assert_eq!(tagged_lines(&crontab).len(), 1, "{crontab}");
    assert_eq!(crontab.matches(UNRELATED).count(), 1, "{crontab}");

    // Switching to a systemd timer replaces the cron line: one schedule, never two.
    ok(&s.install(&[
        "--systemd-timer",
        "--dir",
        library,
        "--on-calendar",
        "*-*-* 02:30",
    ]));
    let timer = fs::read_to_string(s.unit("media-converter.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:30"), "{timer}");
    let service = fs::read_to_string(s.unit("media-converter.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart=\"{}\" --dir \"{library}\"",
            bin.display()
        )),
        "{service}"
    );
    assert!(tagged_lines(&s.crontab()).is_empty(), "{}", s.crontab());
    assert!(
        s.systemctl_calls()
            .contains("--user enable --now media-converter.timer")
    );

    ok(&s.install(&["--uninstall"]));
    assert!(s.prefix_files().is_empty(), "{:?}", s.prefix_files());
    assert!(!s.unit("media-converter.timer").exists());
    assert!(!s.unit("media-converter.service").exists());
    assert!(
        s.systemctl_calls()
            .contains("--user disable --now media-converter.timer")
    );
    assert_eq!(s.crontab().trim(), UNRELATED);

    // Uninstalling what is not there is fine too.
    ok(&s.install(&["--uninstall"]));
}

#[test]
fn help_and_usage_errors() {
    let s = Sandbox::new();
    let (stdout, _) = ok(&s.install(&["--help"]));
    for option in [
        "--prefix",
        "--cron",
        "--systemd-timer",
        "--uninstall",
        "--dir",
    ] {
        assert!(stdout.contains(option), "{option} not in\n{stdout}");
    }
    let library = s.library.to_str().unwrap();
    let e = failed_with_2(&s.install(&["--cron", "0 1 * * *"]));
    assert!(e.contains("--dir"), "{e}");
    let e = failed_with_2(&s.install(&["--cron", "0 1 *", "--dir", library]));
    assert!(e.contains("five fields"), "{e}");
    let e = failed_with_2(&s.install(&["--cron", "@daily", "--systemd-timer", "--dir", library]));
    assert!(e.contains("one schedule"), "{e}");
    // The calendar is checked by systemd's own parser where there is one, before anything
    // is written.
    if which::which("systemd-analyze").is_ok() {
        let bad = [
            "--systemd-timer",
            "--dir",
            library,
            "--on-calendar",
            "nightly-ish",
        ];
        let e = failed_with_2(&s.install(&bad));
        assert!(e.contains("does not understand"), "{e}");
        assert!(!s.unit("media-converter.timer").exists());
    }
    let e = failed_with_2(&s.install(&["--frobnicate"]));
    assert!(e.contains("unknown option"), "{e}");
    assert!(
        s.prefix_files().is_empty(),
        "a usage error installs nothing"
    );
    assert_eq!(s.crontab().trim(), UNRELATED);
}

/// A PATH with only the tools the script uses (no cargo, ffmpeg only when asked for), after
/// fakes of apt-get (which fails, so nothing on the machine is touched) and sudo.
fn minimal_path(s: &Sandbox, with_ffmpeg: bool) -> String {
    let tools = s.root.join(if with_ffmpeg {
        "tools"
    } else {
        "tools-no-ffmpeg"
    });
    fs::create_dir(&tools).unwrap();
    let mut names = vec![
        "bash", "env", "dirname", "sed", "mkdir", "mktemp", "cat", "chmod", "mv", "rm", "id",
        "awk", "grep",
    ];
    if with_ffmpeg {
        names.extend(["ffmpeg", "ffprobe"]);
    }
    for tool in names {
        if let Ok(found) = which::which(tool) {
            std::os::unix::fs::symlink(found, tools.join(tool)).unwrap();
        }
    }
    s.fake("apt-get", r#"echo "fake apt-get $*" >&2; exit 100"#);
    s.fake("sudo", r#""$@""#);
    format!("{}:{}", s.fake_bin.display(), tools.display())
}

#[test]
fn without_cargo_it_says_how_to_get_rust_and_exits_2() {
    let s = Sandbox::new();
    let e = failed_with_2(&s.install_with_path(&[], &minimal_path(&s, true)));
    assert!(e.contains("fake apt-get install -y -qq cargo"), "{e}");
    assert!(e.contains("rustup"), "{e}");
    assert!(s.prefix_files().is_empty());
}

#[test]
fn without_ffmpeg_it_tries_the_package_manager_and_exits_2() {
    let s = Sandbox::new();
    let e = failed_with_2(&s.install_with_path(&[], &minimal_path(&s, false)));
    assert!(e.contains("fake apt-get update"), "{e}");
    assert!(e.contains("apt-get could not install ffmpeg"), "{e}");
    assert!(s.prefix_files().is_empty());
}
