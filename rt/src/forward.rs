//! The deployed forward pass, written once for every backend: an object from `nnc build`
//! exports `<model>_forward(inputs..., outputs..., batch)` and `<model>_load(path)` as
//! two-line trampolines that hand a [`ForwardDesc`] (read-only data in the object) to
//! [`nnc_rt_forward`] and [`nnc_rt_load`]. Checking the arguments, allocating scratch
//! memory, running the compiled kernels over the batch in chunks and reporting errors all
//! happen here, so Cranelift and LLVM objects behave identically.

use std::ffi::c_char;

/// The exported functions' return codes, as the generated C header names them.
pub const OK: i32 = 0;
/// A null pointer, batch 0, or (fixed batch) another batch.
pub const EINVAL: i32 = 1;
/// Scratch memory could not be allocated.
pub const ENOMEM: i32 = 2;
/// `_load`: the file cannot be read or is not safetensors (as `nnc_rt_load_weights`).
pub const EIO: i32 = 3;
/// `_load`: a weight is missing or has another type or size, or the checksum fails.
pub const EWEIGHTS: i32 = 4;
/// `_forward` before a successful `_load`.
pub const ENOWEIGHTS: i32 = 5;
/// `_forward`: an id a gather (an embedding) read is outside its table; the outputs of
/// the rows holding it are not valid.
pub const EINDEX: i32 = 6;

/// A compiled kernel's entry: `(inputs, params, outputs, scratch)`, each an array of
/// pointers except the scratch arena.
pub type Entry =
    unsafe extern "C" fn(*const *const f32, *const *const f32, *const *mut f32, *mut f32);

/// One kernel of a deployed model and the rows it computes per call.
#[repr(C)]
pub struct ForwardKernel {
    /// Rows per call.
    pub rows: u64,
    /// Its entry.
    pub entry: Entry,
}

/// Set in [`ForwardDesc::flags`]: the weights come from a file through `<model>_load`.
pub const WEIGHTS_FROM_FILE: u64 = 1;
/// Set in [`ForwardDesc::flags`]: the model gathers rows by id, so ids outside their table
/// are reported ([`EINDEX`]).
pub const GATHERS: u64 = 2;

/// What `<model>_forward` and `<model>_load` need, laid out as 8-byte words so a backend
/// writes it as plain data with relocations.
#[repr(C)]
pub struct ForwardDesc {
    /// Number of inputs, then of outputs: the trampoline's pointer arguments, in order.
    pub inputs: u64,
    pub outputs: u64,
    /// Per input, then per output, two words: 1 if it has batch rows (its pointer moves by
    /// the second word, its bytes per row, from chunk to chunk), else 0 (passed as is).
    pub rows: *const u64,
    /// The kernels, most rows per call first; each runs while that many rows remain, so
    /// the last (one row, when the batch may be any) finishes the batch.
    pub kernel_count: u64,
    pub kernels: *const ForwardKernel,
    /// The only batch accepted, or 0 for any batch of at least one row.
    pub fixed_batch: u64,
    /// Scratch bytes a kernel call needs (allocated per call: calls may run concurrently).
    pub scratch_bytes: u64,
    /// The weights' address table the kernels read (filled by `_load` for file weights).
    pub params: *mut *mut f32,
    pub param_count: u64,
    /// For `_load`: each weight's name (a C string) and float count; null when embedded.
    pub names: *const *const c_char,
    pub lens: *const u64,
    /// [`WEIGHTS_FROM_FILE`], [`GATHERS`].
    pub flags: u64,
}

/// Runs a deployed model's forward pass: `io` holds its input pointers then its output
/// pointers. Returns [`OK`], [`EINVAL`], [`ENOMEM`], [`ENOWEIGHTS`] or [`EINDEX`].
///
/// # Safety
/// `desc` is a descriptor an object from `nnc build` holds; `io` holds
/// `desc.inputs + desc.outputs` pointers, each null or addressing the floats its input or
/// output has for `batch` rows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_rt_forward(
    desc: *const ForwardDesc,
    io: *const *mut f32,
    batch: u64,
) -> i32 {
    if desc.is_null() || io.is_null() {
        return EINVAL;
    }
    // The object's own data, laid out as this struct.
    let d = unsafe { &*desc };
    let n = (d.inputs + d.outputs) as usize;
    let io = unsafe { std::slice::from_raw_parts(io, n) };
    if io.iter().any(|p| p.is_null())
        || batch == 0
        || (d.fixed_batch != 0 && batch != d.fixed_batch)
    {
        return EINVAL;
    }
    if d.flags & WEIGHTS_FROM_FILE != 0 && d.param_count > 0 && unsafe { *d.params }.is_null() {
        return ENOWEIGHTS;
    }
    let rows = unsafe { std::slice::from_raw_parts(d.rows, 2 * n) };
    let kernels = unsafe { std::slice::from_raw_parts(d.kernels, d.kernel_count as usize) };
    // One allocation holds the scratch arena and the two pointer arrays, so running out of
    // memory is ENOMEM, never an abort.
    let ptr_bytes = 8 * n.max(1);
    let Ok(layout) = std::alloc::Layout::from_size_align(d.scratch_bytes as usize + ptr_bytes, 64)
    else {
        return ENOMEM;
    };
    let block = unsafe { std::alloc::alloc(layout) };
    if block.is_null() {
        return ENOMEM;
    }
    let scratch = block.cast::<f32>();
    let ptrs = unsafe { block.add(d.scratch_bytes as usize) }.cast::<*mut f32>();
    let mut row = 0u64;
    for k in kernels {
        while batch - row >= k.rows {
            for (j, &p) in io.iter().enumerate() {
                let at = if rows[2 * j] != 0 {
                    unsafe { p.cast::<u8>().add((row * rows[2 * j + 1]) as usize) }.cast()
                } else {
                    p
                };
                unsafe { ptrs.add(j).write(at) };
            }
            let ins = ptrs.cast_const().cast::<*const f32>();
            let outs = unsafe { ptrs.add(d.inputs as usize) }.cast_const();
            let params = d.params.cast_const().cast::<*const f32>();
            unsafe { (k.entry)(ins, params, outs, scratch) };
            row += k.rows;
        }
    }
    unsafe { std::alloc::dealloc(block, layout) };
    if d.flags & GATHERS != 0 && crate::nnc_rt_index_error() != 0 {
        return EINDEX;
    }
    OK
}

/// `<model>_load(path)`: reads the model's weights from a safetensors file by name
/// ([`crate::weights::nnc_rt_load_weights`] with the descriptor's names and sizes).
///
/// # Safety
/// `desc` is a descriptor an object from `nnc build` holds; `path` a C string or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_rt_load(desc: *const ForwardDesc, path: *const c_char) -> i32 {
    if desc.is_null() {
        return EINVAL;
    }
    let d = unsafe { &*desc };
    unsafe { crate::weights::nnc_rt_load_weights(path, d.param_count, d.names, d.lens, d.params) }
}
