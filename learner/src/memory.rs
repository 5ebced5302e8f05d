//! The learner's memory gauges, `volley_learner_memory_bytes{kind}`:
//!
//! - `rss`: the process's resident memory, from `/proc/self/status`;
//! - `gpu_used` and `gpu_total`: memory used on and size of the CUDA device the
//!   learner trains on, from NVML (`libnvidia-ml.so.1`, installed with the NVIDIA
//!   driver, loaded at run time), only when training on CUDA.
//!
//! NVML numbers devices as the driver does, not as `CUDA_VISIBLE_DEVICES` renumbers
//! them: the device is looked up by the first entry of that variable (an index or a
//! `GPU-...` UUID) when it is set, else index 0.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::gauge;
use volley_common::telemetry as t;

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct NvmlMemory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

type InitFn = unsafe extern "C" fn() -> c_int;
type ByIndexFn = unsafe extern "C" fn(c_uint, *mut *mut c_void) -> c_int;
type ByUuidFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type MemoryFn = unsafe extern "C" fn(*mut c_void, *mut NvmlMemory) -> c_int;

/// One CUDA device's memory, through NVML.
struct GpuMemory {
    /// Keeps the library loaded while `memory` is used.
    _lib: libloading::Library,
    device: *mut c_void,
    memory: MemoryFn,
}

// SAFETY: an NVML device handle is a process-wide value that NVML allows to be used
// from any thread; the struct is only moved into the one reporting thread.
unsafe impl Send for GpuMemory {}

impl GpuMemory {
    /// Opens NVML and finds the device; `Err` says why not (no driver, no device).
    fn open() -> Result<GpuMemory, String> {
        // SAFETY: loading the NVIDIA management library runs its initialisers, which
        // have no preconditions.
        let lib = unsafe { libloading::Library::new("libnvidia-ml.so.1") }
            .map_err(|e| format!("cannot load libnvidia-ml.so.1: {e}"))?;
        // SAFETY: the symbol types are those of nvml.h for these entry points.
        let (init, by_index, by_uuid, memory) = unsafe {
            (
                *lib.get::<InitFn>(b"nvmlInit_v2\0")
                    .map_err(|e| e.to_string())?,
                *lib.get::<ByIndexFn>(b"nvmlDeviceGetHandleByIndex_v2\0")
                    .map_err(|e| e.to_string())?,
                *lib.get::<ByUuidFn>(b"nvmlDeviceGetHandleByUUID\0")
                    .map_err(|e| e.to_string())?,
                *lib.get::<MemoryFn>(b"nvmlDeviceGetMemoryInfo\0")
                    .map_err(|e| e.to_string())?,
            )
        };
        // SAFETY: nvmlInit_v2 takes no arguments and may be called more than once.
        let rc = unsafe { init() };
        if rc != 0 {
            return Err(format!("nvmlInit failed with NVML error {rc}"));
        }
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
        let first = visible.split(',').next().unwrap_or("").trim().to_string();
        let mut device: *mut c_void = std::ptr::null_mut();
        let rc = if first.starts_with("GPU-") || first.starts_with("MIG-") {
            let uuid = CString::new(first.clone()).map_err(|e| e.to_string())?;
            // SAFETY: `uuid` is a NUL-terminated string and `device` a valid out pointer.
            unsafe { by_uuid(uuid.as_ptr(), &mut device) }
        } else {
            let index = first.parse::<c_uint>().unwrap_or(0);
            // SAFETY: `device` is a valid out pointer.
            unsafe { by_index(index, &mut device) }
        };
        if rc != 0 || device.is_null() {
            return Err(format!(
                "NVML has no device '{}' (error {rc})",
                if first.is_empty() { "0" } else { &first }
            ));
        }
        Ok(GpuMemory {
            _lib: lib,
            device,
            memory,
        })
    }

    /// `(used, total)` bytes.
    fn read(&self) -> Option<(u64, u64)> {
        let mut m = NvmlMemory::default();
        // SAFETY: `device` came from NVML for the library still loaded in `_lib`, and
        // `m` is a valid `nvmlMemory_t` to write.
        let rc = unsafe { (self.memory)(self.device, &mut m) };
        (rc == 0).then_some((m.used, m.total))
    }
}

/// Resident memory of this process in bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sets the memory gauges every `every` until `stop`, on a thread of its own.
/// `cuda`: whether the learner trains on a CUDA device (then GPU gauges too, when
/// NVML is there; its absence is said once and is not an error).
pub fn spawn_reporter(
    cuda: bool,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("volley-memory".into())
        .spawn(move || {
            let gpu = if cuda {
                match GpuMemory::open() {
                    Ok(g) => Some(g),
                    Err(e) => {
                        volley_common::say!("volley-learner: no GPU memory metrics: {e}");
                        None
                    }
                }
            } else {
                None
            };
            while !stop.load(Ordering::SeqCst) {
                if let Some(b) = rss_bytes() {
                    gauge!(t::LEARNER_MEMORY, "kind" => "rss").set(b as f64);
                }
                if let Some((used, total)) = gpu.as_ref().and_then(GpuMemory::read) {
                    gauge!(t::LEARNER_MEMORY, "kind" => "gpu_used").set(used as f64);
                    gauge!(t::LEARNER_MEMORY, "kind" => "gpu_total").set(total as f64);
                }
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_and_plausible() {
        let b = rss_bytes().expect("statm");
        // A test process with torch linked holds more than 1 MiB and less than 64 GiB.
        assert!(b > 1 << 20 && b < 64 << 30, "rss {b}");
    }
}
