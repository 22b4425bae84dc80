//! Weights from a safetensors file for an object built with `nnc build --weights file`:
//! the checkpoint format's checksum (shared with nnc's own checkpoint reader) and the
//! C entry points the generated `<model>_load` calls.
//!
//! A file written by nnc carries an FNV-1a checksum of its tensors and metadata under
//! `nnc.checksum`; it is verified when present, so a damaged checkpoint is refused here as
//! it is by `nnc eval`. Any other safetensors file is accepted if it has every weight by
//! name, as float32, with the right number of elements.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

use safetensors::tensor::{Dtype, SafeTensors};

/// The metadata key of the checksum.
pub const CHECKSUM_KEY: &str = "nnc.checksum";

/// The 64-bit FNV-1a hash: names random streams and checksums checkpoints.
#[derive(Clone, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(m) | LoadError::Weights(m) => f.write_str(m),
        }
    }
}

impl Fnv {
    /// The hash of nothing.
    pub fn new() -> Fnv {
        Fnv(0xCBF2_9CE4_8422_2325)
    }

    /// Mixes in bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The checksum of a checkpoint: every tensor (name, type, shape, bytes; sorted by name)
/// and every metadata entry but the checksum itself.
pub fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
    meta: &BTreeMap<String, String>,
) -> u64 {
    let mut h = Fnv::new();
    let mut items: Vec<_> = tensors.collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in items {
        h.write(name.as_bytes());
        h.write(dtype.as_bytes());
        for &d in shape {
            h.write(&(d as u64).to_le_bytes());
        }
        h.write(data);
    }
    for (k, v) in meta {
        if k != CHECKSUM_KEY {
            h.write(k.as_bytes());
            h.write(v.as_bytes());
        }
    }
    h.finish()
}

/// Why weights could not be read.
#[derive(Debug, PartialEq)]
pub enum LoadError {
    /// The file cannot be read, or is not a valid safetensors file.
    Io(String),
    /// A weight is missing, has another type or size, or the checksum does not match.
    Weights(String),
}

/// A safetensors file's tensors and metadata (the checksum taken out), after verifying
/// the checksum where there is one; `required` refuses a file without it (nnc's own
/// checkpoints always have one).
pub fn verified(
    bytes: &[u8],
    required: bool,
) -> Result<(SafeTensors<'_>, BTreeMap<String, String>), LoadError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        LoadError::Io(format!("the checkpoint is truncated or corrupt ({e})"))
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(&e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(&e))?;
    let mut meta: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    match meta.remove(CHECKSUM_KEY) {
        Some(stored) => {
            let named = st.tensors();
            let sum = checksum(
                named
                    .iter()
                    .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())),
                &meta,
            );
            if format!("{sum:016x}") != stored {
                return Err(LoadError::Weights(format!(
                    "the checkpoint is corrupt: its contents do not match its checksum \
                     (stored {stored}, computed {sum:016x})"
                )));
            }
        }
        None if required => {
            return Err(LoadError::Weights(format!(
                "the file has no `{CHECKSUM_KEY}`: it was not written by nnc, or its header is damaged"
            )));
        }
        None => {}
    }
    Ok((st, meta))
}

/// The named float32 tensors of a safetensors file, each with the given element count.
pub fn read_f32(bytes: &[u8], wanted: &[(&str, usize)]) -> Result<Vec<Vec<f32>>, LoadError> {
    let (st, _) = verified(bytes, false)?;
    wanted
        .iter()
        .map(|&(name, len)| {
            let t = st
                .tensor(name)
                .map_err(|_| LoadError::Weights(format!("no tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 {
                return Err(LoadError::Weights(format!(
                    "`{name}` is {:?}, not F32",
                    t.dtype()
                )));
            }
            let n: usize = t.shape().iter().product();
            if n != len {
                return Err(LoadError::Weights(format!(
                    "`{name}` has {n} elements, the model needs {len}"
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        })
        .collect()
}

static LAST_ERROR: Mutex<Option<CString>> = Mutex::new(None);

fn fail(code: i32, msg: String) -> i32 {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
    code
}

/// Reads `count` weights named `names[i]` with `lens[i]` floats each from the safetensors
/// file at `path` into new buffers, and on success stores them in `table` (freeing the
/// buffers a previous load stored there). On failure `table` is unchanged and
/// `nnc_rt_error` says why. Returns 0, 1 (a null argument), 3 (the file cannot be read
/// or is not safetensors) or 4 (a weight is missing or wrong, or the checksum fails).
///
/// # Safety
/// `names` and `lens` hold `count` entries (C strings and sizes); `table` holds `count`
/// pointers, each null or a buffer a previous call stored with the same length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_rt_load_weights(
    path: *const c_char,
    count: u64,
    names: *const *const c_char,
    lens: *const u64,
    table: *mut *mut f32,
) -> i32 {
    if path.is_null() || (count > 0 && (names.is_null() || lens.is_null() || table.is_null())) {
        return fail(1, "a null argument".into());
    }
    let n = count as usize;
    let path = unsafe { CStr::from_ptr(path) }
        .to_string_lossy()
        .into_owned();
    let names: Vec<String> = (0..n)
        .map(|i| {
            unsafe { CStr::from_ptr(*names.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let lens: Vec<usize> = (0..n).map(|i| unsafe { *lens.add(i) } as usize).collect();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return fail(3, format!("cannot read `{path}`: {e}")),
    };
    let wanted: Vec<(&str, usize)> = names
        .iter()
        .map(String::as_str)
        .zip(lens.iter().copied())
        .collect();
    match read_f32(&bytes, &wanted) {
        Ok(values) => {
            for (i, v) in values.into_iter().enumerate() {
                let slot = unsafe { &mut *table.add(i) };
                if !slot.is_null() {
                    // Stored by an earlier call with this length.
                    drop(unsafe {
                        Box::from_raw(std::ptr::slice_from_raw_parts_mut(*slot, lens[i]))
                    });
                }
                *slot = Box::into_raw(v.into_boxed_slice()) as *mut f32;
            }
            0
        }
        Err(LoadError::Io(m)) => fail(3, format!("`{path}`: {m}")),
        Err(LoadError::Weights(m)) => fail(4, format!("`{path}`: {m}")),
    }
}

/// Why the last failed `nnc_rt_load_weights` failed (empty before any failure). The
/// string stays valid until the next failure.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_rt_error() -> *const c_char {
    let guard = LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(s) => s.as_ptr(),
        None => c"".as_ptr(),
    }
}
