//! The memory limit: a tensor whose element count overflows, or whose bytes exceed the
//! limit (the machine's physical memory unless set; `nnc --memory-limit` sets it), is
//! refused. The front end checks every type with known sizes written or computed from
//! static values (parameters, inputs, `full`, `reshape`), so a model that cannot fit is an
//! error with a span at `nnc check`; the JIT checks the buffers of a function compiled for
//! a batch size, so a batch that cannot fit is an error, not an abort when it allocates.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::{DType, Dim, TensorType};

static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets the memory limit in bytes (0: the machine's physical memory).
pub fn set_memory_limit(bytes: u64) {
    MEMORY_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The memory limit in bytes.
pub fn memory_limit() -> u64 {
    match MEMORY_LIMIT.load(Ordering::Relaxed) {
        0 => physical_memory(),
        n => n,
    }
}

/// `MemTotal` of /proc/meminfo (read once); 64 GiB where it cannot be read.
pub fn physical_memory() -> u64 {
    static MEMORY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(read_meminfo)
}

fn read_meminfo() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kb.checked_mul(1024)
        })
        .unwrap_or(64 << 30)
}

/// Bytes of one element in memory (the JIT holds i32 as f32).
fn element_bytes(d: DType) -> u64 {
    match d {
        DType::F64 => 8,
        DType::F32 | DType::I32 => 4,
    }
}

/// Why a type is too large to hold, if it is: the product of its known sizes (a lower
/// bound where it has symbolic ones: at a batch of 1) overflows, or exceeds the limit.
pub fn too_large(ty: &TensorType) -> Option<String> {
    let mut n: u64 = 1;
    for d in ty.shape.dims() {
        if let Dim::Known(k) = d {
            match n.checked_mul(*k) {
                Some(m) => n = m,
                None => return Some(format!("`{ty}` has more than 2^64 elements")),
            }
        }
    }
    let limit = memory_limit();
    let whose = if MEMORY_LIMIT.load(Ordering::Relaxed) == 0 {
        "the machine's memory; `--memory-limit` sets another"
    } else {
        "as set"
    };
    match n.checked_mul(element_bytes(ty.dtype)) {
        Some(b) if b <= limit => None,
        _ => Some(format!(
            "`{ty}` needs {} of memory, more than the limit of {} ({whose})",
            bytes_text(n as u128 * element_bytes(ty.dtype) as u128),
            bytes_text(limit as u128)
        )),
    }
}

/// `1.5 GiB`, `12 TiB`, ...
pub fn bytes_text(b: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
