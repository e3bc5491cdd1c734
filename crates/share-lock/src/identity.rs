//! Who we are: the host and the process that own a lock.
//!
//! A lock names its owner by a stable machine id and a pid *with its start time*, so
//! that the same machine can tell at once whether the owner still runs
//! (`docs/locking.md`): a pid alone is not enough, because pids are reused and a reboot
//! starts them all over. And a pid is asked about only in the boot and pid namespace it
//! was recorded in: containers sharing a machine id number their processes apart.

use std::ffi::OsString;

/// Overrides the host name written into locks (tests, cloned VMs).
pub const HOSTNAME_ENV: &str = "MEDIA_CONVERTER_HOSTNAME";

/// Overrides the machine id written into locks (tests, cloned VMs that share one
/// `/etc/machine-id` and would otherwise take each other's processes for their own).
pub const HOST_ID_ENV: &str = "MEDIA_CONVERTER_HOST_ID";

/// Prefix of a host id made from the host name when the platform gives no machine id,
/// so that a reader of a lock can see that the id is only as unique as the name.
const HASHED_HOSTNAME_PREFIX: &str = "hostname-hash-";

/// The machine this process runs on, as lock files name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// Human-readable host name, for messages ("held by nas-worker-2").
    pub hostname: String,
    /// Stable machine id; two hosts with the same id are taken to be one machine.
    pub host_id: String,
}

impl HostIdentity {
    /// The identity of this machine: the environment overrides first, then the
    /// platform's machine id, then a hash of the host name.
    ///
    /// Never fails: a host without a machine id still gets a usable (if weaker) one.
    pub fn current() -> HostIdentity {
        let hostname = env_override(HOSTNAME_ENV).unwrap_or_else(system_hostname);
        let host_id = env_override(HOST_ID_ENV)
            .or_else(platform::machine_id)
            .unwrap_or_else(|| hashed_hostname_id(&hostname));
        HostIdentity { hostname, host_id }
    }
}

fn env_override(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn system_hostname() -> String {
    let name: OsString = gethostname::gethostname();
    let name = name.to_string_lossy().trim().to_owned();
    if name.is_empty() {
        "unknown-host".to_owned()
    } else {
        name
    }
}

/// A host id derived from the host name, stable across runs and Rust versions
/// (FNV-1a, not `DefaultHasher`, whose output may change between releases).
fn hashed_hostname_id(hostname: &str) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = hostname
        .to_lowercase()
        .bytes()
        .fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
    format!("{HASHED_HOSTNAME_PREFIX}{hash:016x}")
}

/// Machine ids are opaque, but an empty one or systemd's placeholder for "not yet
/// generated" would make every such host the same machine.
fn usable_machine_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    (!id.is_empty() && id != "uninitialized").then(|| id.to_owned())
}

/// Identifies one run of process `pid`: equal tokens mean the same process, a
/// different token under the same pid means the pid was reused (or the machine
/// rebooted). `None` when the process does not exist or the platform cannot say.
pub fn process_start_token(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    platform::process_start_token(pid)
}

/// Whether the process that owns a lock still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The pid runs, and it is the same process (its start token matches).
    Alive,
    /// No such process, or the pid now belongs to another process.
    Gone,
    /// Cannot tell (no permission, no start token to compare, unsupported platform).
    Unknown,
}

/// Whether the process `pid` that recorded start token `token` still runs on this
/// machine. Only meaningful for a pid recorded on this same machine.
pub fn process_liveness(pid: u32, token: Option<&str>) -> Liveness {
    // Pid 0 would mean "my process group" to kill(2): never ask about it.
    if pid == 0 {
        return Liveness::Unknown;
    }
    // A pid means something only in the pid namespace and boot it was recorded in:
    // containers sharing a machine id (and a host name) number their processes apart,
    // and a cloned machine or a reboot starts them all over. Elsewhere it cannot be
    // asked about, and the lock's age decides.
    if token.is_none_or(|token| !platform::same_pid_world(token)) {
        return Liveness::Unknown;
    }
    match platform::pid_exists(pid) {
        Some(false) => Liveness::Gone,
        None => Liveness::Unknown,
        Some(true) => match (token, platform::process_start_token(pid)) {
            (Some(recorded), Some(current)) if recorded == current => Liveness::Alive,
            (Some(_), Some(_)) => Liveness::Gone,
            // Without both tokens a running pid may be the owner or a stranger.
            _ => Liveness::Unknown,
        },
    }
}

/// The fields of `/proc/PID/stat` that liveness needs.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The second field (`comm`) is the executable name in
/// parentheses and may itself hold spaces and parentheses, so the fixed fields are
/// found after the *last* `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace();
    // Field 3 is the state; starttime is field 22, i.e. 19 fields later.
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Finds the `IOPlatformUUID` in the output of `ioreg -rd1 -c IOPlatformExpertDevice`.
#[cfg(any(target_os = "macos", test))]
fn parse_ioreg_uuid(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim().trim_matches('"') != "IOPlatformUUID" {
            return None;
        }
        usable_machine_id(value.trim().trim_matches('"'))
    })
}

#[cfg(target_os = "linux")]
mod platform {
    use super::{ProcStat, parse_proc_stat, usable_machine_id};
    use std::fs;

    pub(super) fn machine_id() -> Option<String> {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|path| usable_machine_id(&fs::read_to_string(path).ok()?))
    }

    fn proc_stat(pid: u32) -> Option<ProcStat> {
        parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub(super) fn process_start_token(pid: u32) -> Option<String> {
        let stat = proc_stat(pid)?;
        Some(format!("{}:{}", pid_world()?, stat.start_ticks))
    }

    /// Where a pid of ours means what it says: this boot (starttime counts clock ticks
    /// since boot, and pids start over) and this pid namespace (a container numbers its
    /// processes apart; the link names the namespace by its inode).
    fn pid_world() -> Option<String> {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let namespace = fs::read_link("/proc/self/ns/pid").ok()?;
        let namespace = namespace.to_string_lossy();
        let namespace = namespace
            .strip_prefix("pid:[")
            .and_then(|rest| rest.strip_suffix(']'))?;
        Some(format!("linux:{}:pidns-{namespace}", boot_id.trim()))
    }

    /// Whether `token` was recorded in this boot and pid namespace.
    pub(super) fn same_pid_world(token: &str) -> bool {
        let Some((world, ticks)) = token.rsplit_once(':') else {
            return false;
        };
        !ticks.is_empty() && pid_world().as_deref() == Some(world)
    }

    pub(super) fn pid_exists(pid: u32) -> Option<bool> {
        let exists = super::unix_pid_exists(pid)?;
        if !exists {
            return Some(false);
        }
        // A zombie (or a task being torn down) still answers kill(0) but will never
        // heartbeat again; its owner has to reap it, we need not wait for that.
        match proc_stat(pid) {
            Some(stat) => Some(!matches!(stat.state, 'Z' | 'X' | 'x')),
            None => Some(true),
        }
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod platform {
    use std::process::{Command, Stdio};

    #[cfg(target_os = "macos")]
    pub(super) fn machine_id() -> Option<String> {
        let output = quiet_command("ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"])?;
        super::parse_ioreg_uuid(&output)
    }

    #[cfg(not(target_os = "macos"))]
    pub(super) fn machine_id() -> Option<String> {
        // The BSDs keep a generated host UUID here.
        let id = std::fs::read_to_string("/etc/hostid").ok()?;
        super::usable_machine_id(&id)
    }

    pub(super) fn process_start_token(pid: u32) -> Option<String> {
        // `lstart` is the absolute start time to the second: a pid reused within the
        // same second is the one case this cannot tell apart.
        let pid = pid.to_string();
        let output = quiet_command("ps", &["-o", "lstart=", "-p", &pid])?;
        let lstart = output.split_whitespace().collect::<Vec<_>>().join(" ");
        (!lstart.is_empty()).then(|| format!("ps:{lstart}"))
    }

    pub(super) fn pid_exists(pid: u32) -> Option<bool> {
        super::unix_pid_exists(pid)
    }

    /// No pid namespaces to tell apart here; the start time tells reboots apart.
    pub(super) fn same_pid_world(token: &str) -> bool {
        token.starts_with("ps:")
    }

    fn quiet_command(program: &str, args: &[&str]) -> Option<String> {
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// `kill(pid, 0)`: `Some(true)` when the pid exists (even if it is not ours to
/// signal), `Some(false)` when there is no such process.
#[cfg(unix)]
fn unix_pid_exists(pid: u32) -> Option<bool> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: signal 0 performs only the existence and permission checks.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Some(false),
        Some(libc::EPERM) => Some(true),
        _ => None,
    }
}

#[cfg(windows)]
mod platform {
    use std::ptr;
    use windows_sys::Win32::Foundation::{
        CloseHandle, ERROR_INVALID_PARAMETER, ERROR_SUCCESS, FILETIME, GetLastError, HANDLE,
        STILL_ACTIVE,
    };
    use windows_sys::Win32::System::Registry::{
        HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RRF_SUBKEY_WOW6464KEY, RegGetValueW,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    pub(super) fn machine_id() -> Option<String> {
        let key = wide(r"SOFTWARE\Microsoft\Cryptography");
        let value = wide("MachineGuid");
        let mut buffer = [0u16; 128];
        let mut size = u32::try_from(std::mem::size_of_val(&buffer)).ok()?;
        // SAFETY: both names are NUL-terminated, the buffer and its byte size agree.
        // RRF_SUBKEY_WOW6464KEY reads the 64-bit view even from a 32-bit build,
        // where the 32-bit view may lack the value.
        let status = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY,
                ptr::null_mut(),
                buffer.as_mut_ptr().cast(),
                &mut size,
            )
        };
        if status != ERROR_SUCCESS {
            return None;
        }
        let chars = (size as usize / 2).min(buffer.len());
        let text = String::from_utf16_lossy(&buffer[..chars]);
        super::usable_machine_id(text.trim_end_matches('\0'))
    }

    /// Closes the process handle on every path.
    struct ProcessHandle(HANDLE);

    impl Drop for ProcessHandle {
        fn drop(&mut self) {
            // SAFETY: the handle came from OpenProcess and is closed only here.
            unsafe { CloseHandle(self.0) };
        }
    }

    /// Err(true) when there is no such process, Err(false) when we may not look.
    fn open_process(pid: u32) -> Result<ProcessHandle, bool> {
        // SAFETY: plain call; a null handle reports failure through GetLastError.
        let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if handle.is_null() {
            // SAFETY: reads this thread's last error, set by the failed call above.
            let no_such_process = unsafe { GetLastError() } == ERROR_INVALID_PARAMETER;
            return Err(no_such_process);
        }
        Ok(ProcessHandle(handle))
    }

    pub(super) fn process_start_token(pid: u32) -> Option<String> {
        let process = open_process(pid).ok()?;
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        // SAFETY: the handle is open with query rights; all four pointers are valid.
        let ok = unsafe {
            GetProcessTimes(process.0, &mut created, &mut exited, &mut kernel, &mut user)
        };
        if ok == 0 {
            return None;
        }
        // The creation time in 100 ns units since 1601 is unique per process for all
        // practical purposes, across reboots too.
        let ticks = (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime);
        Some(format!("win:{ticks}"))
    }

    pub(super) fn pid_exists(pid: u32) -> Option<bool> {
        match open_process(pid) {
            Err(true) => Some(false),
            Err(false) => None,
            Ok(process) => {
                let mut code = 0u32;
                // SAFETY: the handle is open with query rights; `code` is valid.
                let ok = unsafe { GetExitCodeProcess(process.0, &mut code) };
                // A process object outlives its process while handles to it remain.
                (ok != 0).then_some(code == STILL_ACTIVE as u32)
            }
        }
    }

    /// The creation time is unique across reboots; no pid namespaces on Windows.
    pub(super) fn same_pid_world(token: &str) -> bool {
        token.starts_with("win:")
    }

    fn wide(text: &str) -> Vec<u16> {
        text.encode_utf16().chain(std::iter::once(0)).collect()
    }
}

#[cfg(not(any(unix, windows)))]
mod platform {
    pub(super) fn machine_id() -> Option<String> {
        None
    }

    pub(super) fn process_start_token(_pid: u32) -> Option<String> {
        None
    }

    pub(super) fn pid_exists(_pid: u32) -> Option<bool> {
        None
    }

    pub(super) fn same_pid_world(_token: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, state: char, start: u64) -> String {
        // 52 fields as in Linux 6.x; starttime is field 22.
        let mut fields: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        fields[22 - 4] = start.to_string();
        format!("4242 ({comm}) {state} {}\n", fields.join(" "))
    }

    #[test]
    fn proc_stat_finds_starttime_after_the_last_parenthesis() {
        for comm in ["ffmpeg", "a b", "evil) S 1 2 (x", "((", ")", "x) Z 9 9 9 9"] {
            let parsed = parse_proc_stat(&stat_line(comm, 'S', 987_654_321));
            assert_eq!(
                parsed,
                Some(ProcStat {
                    state: 'S',
                    start_ticks: 987_654_321
                }),
                "comm {comm:?}"
            );
        }
    }

    #[test]
    fn proc_stat_reads_zombie_state() {
        let parsed = parse_proc_stat(&stat_line("ffmpeg", 'Z', 5));
        assert_eq!(parsed.map(|s| s.state), Some('Z'));
    }

    #[test]
    fn proc_stat_rejects_truncated_or_garbage_lines() {
        assert_eq!(parse_proc_stat(""), None);
        assert_eq!(parse_proc_stat("4242 (ffmpeg"), None);
        assert_eq!(parse_proc_stat("4242 (ffmpeg) S 1 2 3"), None);
        let line = stat_line("ffmpeg", 'S', 7).replace(" 7 ", " seven ");
        assert_eq!(parse_proc_stat(&line), None);
    }

    #[test]
    fn ioreg_uuid_is_found_among_other_properties() {
        let output = r#"+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000242>
    {
      "IOPlatformSerialNumber" = "C02XXXXX"
      "IOPlatformUUID" = "3B5C1E8A-1F2D-5E6A-9C3B-0123456789AB"
      "manufacturer" = <"Apple Inc.">
    }"#;
        assert_eq!(
            parse_ioreg_uuid(output).as_deref(),
            Some("3B5C1E8A-1F2D-5E6A-9C3B-0123456789AB")
        );
        assert_eq!(parse_ioreg_uuid("no uuid here"), None);
        assert_eq!(parse_ioreg_uuid(r#""IOPlatformUUID" = """#), None);
    }

    #[test]
    fn hashed_hostname_id_is_stable_recognisable_and_case_blind() {
        let id = hashed_hostname_id("NAS-Worker-2");
        assert!(id.starts_with(HASHED_HOSTNAME_PREFIX));
        assert_eq!(id, hashed_hostname_id("nas-worker-2"));
        assert_ne!(id, hashed_hostname_id("nas-worker-3"));
        // Pinned: a change here would make every such host forget its own locks.
        assert_eq!(hashed_hostname_id(""), "hostname-hash-cbf29ce484222325");
    }

    #[test]
    fn placeholder_machine_ids_are_refused() {
        assert_eq!(usable_machine_id("  \n"), None);
        assert_eq!(usable_machine_id("uninitialized\n"), None);
        assert_eq!(usable_machine_id("0123abcd\n").as_deref(), Some("0123abcd"));
    }

    #[test]
    fn own_process_is_alive_with_its_token_and_gone_with_another() {
        let pid = std::process::id();
        let token = process_start_token(pid);
        if cfg!(any(target_os = "linux", windows)) {
            assert!(token.is_some());
        }
        if let Some(token) = token.as_deref() {
            assert_eq!(process_liveness(pid, Some(token)), Liveness::Alive);
            // Another start of the same pid in this boot and namespace: gone.
            let (world, _) = token.rsplit_once(':').unwrap_or_default();
            assert_eq!(
                process_liveness(pid, Some(&format!("{world}:1"))),
                Liveness::Gone
            );
        }
        assert_eq!(process_liveness(pid, None), Liveness::Unknown);
        assert_eq!(process_liveness(0, token.as_deref()), Liveness::Unknown);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_token_carries_the_boot_id_and_the_pid_namespace() {
        let token = process_start_token(std::process::id()).unwrap_or_default();
        let boot_id =
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let namespace = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
        let inode = namespace
            .to_string_lossy()
            .replace("pid:[", "")
            .replace(']', "");
        assert!(token.starts_with("linux:"), "{token}");
        assert!(token.contains(boot_id.trim()), "{token}");
        assert!(token.contains(&format!(":pidns-{inode}:")), "{token}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pid_recorded_in_another_namespace_or_boot_cannot_be_judged() {
        // Before, a pid from another pid namespace (a container sharing the machine
        // id) was looked up here, found absent or another process, and judged gone.
        let own = process_start_token(std::process::id()).unwrap_or_default();
        let (world, ticks) = own.rsplit_once(':').unwrap_or_default();
        let (boot, _) = world.rsplit_once(':').unwrap_or_default();
        for stranger in [
            format!("{boot}:pidns-1:{ticks}"),
            format!("linux:another-boot:{}:{ticks}", &world[world.len() - 5..]),
            // What older versions recorded: no namespace.
            format!("{boot}:{ticks}"),
        ] {
            for pid in [std::process::id(), 1, 0x7fff_fff0] {
                assert_eq!(
                    process_liveness(pid, Some(&stranger)),
                    Liveness::Unknown,
                    "{stranger} pid {pid}"
                );
            }
        }
    }

    #[test]
    fn a_pid_that_cannot_exist_is_gone() {
        // Above Linux's pid_max (4 194 304) and any realistic Windows pid.
        let token = process_start_token(std::process::id());
        if let Some((world, _)) = token.as_deref().and_then(|t| t.rsplit_once(':')) {
            let liveness = process_liveness(0x7fff_fff0, Some(&format!("{world}:5")));
            assert_eq!(liveness, Liveness::Gone);
        }
    }
}
