//! Reading `strace -f -y -s 0` output: every traced system call, the thread and program
//! that made it, its ordinal among that thread's calls of the same name, and which of the
//! library's files it changed.
//!
//! The ordinal matters because `-e inject=CALL:...:when=N` counts per traced thread (each
//! thread and each child starts its own count), not across the whole run: to hit one
//! call, the harness injects at that call's ordinal in its own thread, and reads the
//! faulted run's trace to learn which calls were actually hit.

use std::collections::HashMap;
use std::path::Path;

/// The calls that can change a file or directory, and the calls needed to tell threads and
/// programs apart.
pub const TRACED: &[&str] = &[
    "execve",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "openat",
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fchmod",
    "fchown",
    "utimensat",
    "link",
    "linkat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
];

/// Calls that change the share whatever their arguments (given a path on it).
const MUTATING: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "fsync",
    "fdatasync",
    "ftruncate",
    "utimensat",
    "link",
    "linkat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
];

/// One system call as strace printed it.
#[derive(Debug, Clone)]
pub struct Call {
    pub tid: u32,
    pub name: String,
    /// 1-based, among the calls named `name` of thread `tid`: what `when=` counts.
    pub ordinal: u32,
    /// The argument text printed at entry.
    pub args: String,
    /// The text after ` = `, once the call returned.
    pub result: Option<String>,
    /// strace changed its result (`(INJECTED)`).
    pub injected: bool,
    /// The thread was killed in it (it never returned).
    pub killed: bool,
}

impl Call {
    /// Every path the call names: quoted strings and the paths `-y` prints after a
    /// file descriptor (`3</lib/x>`), never the working directory of `AT_FDCWD`.
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        let bytes = self.args.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            match bytes[at] {
                b'"' => {
                    let end = self.args[at + 1..]
                        .find('"')
                        .map_or(bytes.len(), |e| at + 1 + e);
                    paths.push(self.args[at + 1..end].to_owned());
                    at = end + 1;
                }
                b'<' if at > 0 && bytes[at - 1].is_ascii_digit() => {
                    let end = self.args[at + 1..]
                        .find('>')
                        .map_or(bytes.len(), |e| at + 1 + e);
                    paths.push(self.args[at + 1..end].to_owned());
                    at = end + 1;
                }
                _ => at += 1,
            }
        }
        paths
    }

    /// Whether the call (if it ran) changes something under `dir`.
    pub fn mutates_under(&self, dir: &Path) -> bool {
        let prefix = format!("{}/", dir.display());
        let on_share = self.paths().iter().any(|p| p.starts_with(&prefix));
        if !on_share {
            return false;
        }
        if self.name == "openat" {
            // Opening an existing file for writing changes nothing yet; creating does.
            return ["O_CREAT", "O_TRUNC"]
                .iter()
                .any(|flag| self.args.contains(flag));
        }
        MUTATING.contains(&self.name.as_str())
    }

    /// The new thread or process a successful clone made.
    fn cloned(&self) -> Option<u32> {
        if !matches!(self.name.as_str(), "clone" | "clone3" | "fork" | "vfork") {
            return None;
        }
        self.result.as_deref()?.trim().parse().ok()
    }
}

/// A whole trace: the calls in the order strace printed their entries, and which program
/// each thread ran.
#[derive(Debug, Default)]
pub struct Trace {
    pub calls: Vec<Call>,
    program: HashMap<u32, String>,
}

impl Trace {
    pub fn parse(text: &str) -> Trace {
        let mut calls: Vec<Call> = Vec::new();
        let mut pending: HashMap<u32, usize> = HashMap::new();
        let mut counts: HashMap<(u32, String), u32> = HashMap::new();
        let mut killed: Vec<u32> = Vec::new();
        for line in text.lines() {
            let Some((tid, rest)) = line.split_once(' ') else {
                continue;
            };
            let Ok(tid) = tid.parse::<u32>() else {
                continue;
            };
            let rest = rest.trim_start();
            if rest.starts_with("+++ killed by SIGKILL") {
                killed.push(tid);
                continue;
            }
            if rest.starts_with("---") || rest.starts_with("+++") {
                continue;
            }
            if let Some(resumed) = rest.strip_prefix("<... ") {
                if let Some(index) = pending.remove(&tid) {
                    let call = &mut calls[index];
                    // `<... name resumed>MORE_ARGS) = RESULT`
                    let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
                    finish(call, tail);
                }
                continue;
            }
            let Some(open) = rest.find('(') else {
                continue;
            };
            let name = rest[..open].to_owned();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let count = counts.entry((tid, name.clone())).or_insert(0);
            *count += 1;
            let body = &rest[open + 1..];
            let mut call = Call {
                tid,
                name,
                ordinal: *count,
                args: String::new(),
                result: None,
                injected: false,
                killed: false,
            };
            if let Some(args) = body.strip_suffix(" <unfinished ...>") {
                call.args = args.to_owned();
                pending.insert(tid, calls.len());
            } else {
                finish(&mut call, body);
            }
            calls.push(call);
        }
        // A thread killed in a call never returns from it: its last call, if unfinished or
        // answered `?`.
        for tid in killed {
            if let Some(call) = calls.iter_mut().rev().find(|c| c.tid == tid) {
                if call
                    .result
                    .as_deref()
                    .is_none_or(|r| r.trim_start().starts_with('?'))
                {
                    call.killed = true;
                }
            }
        }
        let program = programs(&calls);
        Trace { calls, program }
    }

    /// The program (file name of what was executed) thread `tid` ran.
    pub fn program(&self, tid: u32) -> &str {
        self.program.get(&tid).map_or("?", String::as_str)
    }

    /// The calls that changed something under `dir`, in order.
    pub fn mutations_under<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a Call> {
        self.calls.iter().filter(move |c| c.mutates_under(dir))
    }

    /// The calls strace tampered with: injected errors, and the call a thread was killed
    /// in, in order.
    pub fn hits(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| c.injected || c.killed)
            .collect()
    }
}

/// Splits `ARGS) = RESULT` (or the resumed tail; strace may pad before the `=`) into the
/// call.
fn finish(call: &mut Call, text: &str) {
    let split = text.rfind(" = ").and_then(|eq| {
        let head = text[..eq].trim_end().strip_suffix(')')?;
        Some((head, &text[eq + 3..]))
    });
    match split {
        Some((args, result)) => {
            call.args.push_str(args);
            call.injected = result.contains("(INJECTED)");
            call.result = Some(result.to_owned());
        }
        None => call.args.push_str(text),
    }
}

/// Which program each thread ran: threads follow their process, a new process its
/// parent until it executes something else.
fn programs(calls: &[Call]) -> HashMap<u32, String> {
    let mut process_of: HashMap<u32, u32> = HashMap::new();
    let mut exe_at_fork: HashMap<u32, String> = HashMap::new();
    let mut exe: HashMap<u32, String> = HashMap::new();
    // strace may print a child's first calls before its parent's clone returns, so
    // processes are worked out first, programs second.
    for call in calls {
        let Some(child) = call.cloned() else {
            continue;
        };
        let parent_process = *process_of.get(&call.tid).unwrap_or(&call.tid);
        if call.args.contains("CLONE_THREAD") {
            process_of.insert(child, parent_process);
        } else {
            process_of.insert(child, child);
        }
    }
    let process = |tid: u32| *process_of.get(&tid).unwrap_or(&tid);
    for call in calls {
        if call.name == "execve" && call.result.as_deref().is_some_and(|r| r.starts_with('0')) {
            let path = call.paths().into_iter().next().unwrap_or_default();
            let name = Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(path);
            exe.insert(process(call.tid), name);
        } else if let Some(child) = call.cloned() {
            if !call.args.contains("CLONE_THREAD") {
                if let Some(parent) = exe.get(&process(call.tid)) {
                    exe_at_fork.insert(child, parent.clone());
                }
            }
        }
    }
    let mut program = HashMap::new();
    for call in calls {
        let p = process(call.tid);
        let name = exe
            .get(&p)
            .or_else(|| exe_at_fork.get(&p))
            .cloned()
            .unwrap_or_else(|| "?".to_owned());
        program.insert(call.tid, name);
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"100 execve("/usr/bin/media-converter", [...], 0x1 /* 3 vars */) = 0
100 clone3({flags=CLONE_VM|CLONE_THREAD, child_tid=0x7f}, 88 <unfinished ...>
101 write(3</lib/a.mkv.mediabox.lock>, ""..., 373) = 373
100 <... clone3 resumed> => {parent_tid=[101]}, 88)    = 101
101 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD) = 102
102 execve("/usr/bin/ffmpeg", [...], 0x2 /* 3 vars */) = 0
102 write(4</lib/.a.mkv.mediabox-00.partial.mkv>, ""..., 35784) = 35784
101 rename("/lib/x", "/lib/y") = -1 EIO (Input/output error) (INJECTED)
101 write(1<pipe:[5]>, ""..., 10) = 10
101 linkat(AT_FDCWD</lib>, "/lib/a.mkv", AT_FDCWD</lib>, "/lib/.a.orig.mkv", 0) = ?
101 +++ killed by SIGKILL +++
100 +++ killed by SIGKILL +++
"#;

    #[test]
    fn ordinals_programs_hits_and_mutations() {
        let trace = Trace::parse(SAMPLE);
        let writes: Vec<_> = trace.calls.iter().filter(|c| c.name == "write").collect();
        assert_eq!(
            writes
                .iter()
                .map(|c| (c.tid, c.ordinal))
                .collect::<Vec<_>>(),
            [(101, 1), (102, 1), (101, 2)]
        );
        assert_eq!(trace.program(101), "media-converter");
        assert_eq!(trace.program(102), "ffmpeg");
        let hits: Vec<_> = trace.hits().iter().map(|c| c.name.clone()).collect();
        assert_eq!(hits, ["rename", "linkat"]);
        let dir = Path::new("/lib");
        let mutations: Vec<_> = trace.mutations_under(dir).map(|c| c.name.clone()).collect();
        // Not the write to a pipe; the linkat names the share twice, never its cwd.
        assert_eq!(mutations, ["write", "write", "rename", "linkat"]);
        let link = trace.calls.iter().find(|c| c.name == "linkat").unwrap();
        assert_eq!(link.paths(), ["/lib/a.mkv", "/lib/.a.orig.mkv"]);
    }
}
