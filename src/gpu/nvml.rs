//! NVIDIA GPUs through NVML, loaded at run time.
//!
//! nvml-wrapper opens `libnvidia-ml.so.1` (`nvml.dll` on Windows) with `dlopen` when asked,
//! so the binary starts and runs on machines without the NVIDIA driver; there NVML is
//! simply [`Nvidia::Unavailable`] with the reason.

use std::sync::mpsc;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::EncoderType;
use nvml_wrapper::error::NvmlError;

use super::{Nvenc, Nvidia, NvidiaGpu};

/// How long NVML may take to answer: initialising it wakes every GPU, which takes seconds
/// on a large machine without persistence mode, and a wedged driver could take forever.
const NVML_TIMEOUT: Duration = Duration::from_secs(15);

/// What NVML reports about this machine's NVIDIA GPUs.
pub fn query_nvidia() -> Nvidia {
    let (tx, rx) = mpsc::channel();
    // On a thread, so that a driver that never answers costs this run 15 s, not forever;
    // such a thread is left behind and ends with the process.
    let spawned = std::thread::Builder::new()
        .name("nvml".into())
        .spawn(move || {
            let _ = tx.send(query_blocking());
        });
    if let Err(err) = spawned {
        return Nvidia::Unavailable {
            reason: format!("cannot start a thread to ask NVML: {err}"),
        };
    }
    rx.recv_timeout(NVML_TIMEOUT)
        .unwrap_or_else(|_| Nvidia::Unavailable {
            reason: format!("NVML did not answer within {} s", NVML_TIMEOUT.as_secs()),
        })
}

fn query_blocking() -> Nvidia {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(err) => {
            return Nvidia::Unavailable {
                reason: init_failure(&err),
            };
        }
    };
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(err) => {
            return Nvidia::Unavailable {
                reason: format!("NVML cannot count the GPUs: {err}"),
            };
        }
    };
    let gpus = (0..count)
        .map(|index| match nvml.device_by_index(index) {
            Ok(device) => NvidiaGpu {
                index,
                name: device
                    .name()
                    .unwrap_or_else(|err| format!("unnamed GPU ({err})")),
                encoder_utilization: device.encoder_utilization().ok().map(|u| u.utilization),
                nvenc: nvenc_from(device.encoder_capacity(EncoderType::HEVC)),
            },
            // A GPU that fell off the bus is still worth listing, with why.
            Err(err) => NvidiaGpu {
                index,
                name: format!("inaccessible GPU ({err})"),
                encoder_utilization: None,
                nvenc: Nvenc::Unknown,
            },
        })
        .collect();
    Nvidia::Available {
        driver_version: nvml.sys_driver_version().ok(),
        gpus,
    }
}

/// Whether a GPU has an HEVC encoder, from NVML's encoder-capacity answer.
fn nvenc_from(capacity: Result<u32, NvmlError>) -> Nvenc {
    match capacity {
        Ok(0) | Err(NvmlError::NotSupported) => Nvenc::Absent,
        Ok(_) => Nvenc::Present,
        Err(_) => Nvenc::Unknown,
    }
}

/// Why NVML is not there, in words that point at the fix.
fn init_failure(err: &NvmlError) -> String {
    match err {
        // The loader's own words name the library and why: "libnvidia-ml.so.1: cannot
        // open shared object file: No such file or directory".
        NvmlError::LibloadingError(cause) => format!("no NVIDIA driver ({cause})"),
        NvmlError::LibraryNotFound => "no NVIDIA driver (the NVML library was not found)".into(),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is installed but not loaded".into(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".into(),
        other => format!("NVML failed to start: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_capacity_decides_whether_a_gpu_has_nvenc() {
        assert_eq!(nvenc_from(Ok(0)), Nvenc::Absent);
        assert_eq!(nvenc_from(Err(NvmlError::NotSupported)), Nvenc::Absent);
        assert_eq!(nvenc_from(Ok(4000)), Nvenc::Present);
        assert_eq!(nvenc_from(Err(NvmlError::GpuLost)), Nvenc::Unknown);
    }

    #[test]
    fn init_failures_name_the_cause() {
        assert!(init_failure(&NvmlError::LibraryNotFound).starts_with("no NVIDIA driver"));
        assert_eq!(
            init_failure(&NvmlError::DriverNotLoaded),
            "the NVIDIA driver is installed but not loaded"
        );
    }

    #[test]
    fn a_machine_without_the_driver_gets_a_reason_not_a_crash() {
        match query_nvidia() {
            Nvidia::Unavailable { reason } => assert!(!reason.is_empty()),
            // A developer machine with an NVIDIA card: every GPU has a name.
            Nvidia::Available { gpus, .. } => assert!(gpus.iter().all(|g| !g.name.is_empty())),
        }
    }
}
