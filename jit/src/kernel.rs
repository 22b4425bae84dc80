//! A compiled function: the machine code (Cranelift's or LLVM's) kept alive, its entry
//! `(inputs, params, outputs, scratch)`, what it needs to run, and `run`.

use crate::Error;

use crate::kernels;
use cranelift_jit::JITModule;
use nnc_ir::{DType, Op};

pub(crate) type Entry =
    unsafe extern "C" fn(*const *const f32, *const *const f32, *const *mut f32, *mut f32);

/// What keeps a compiled function's machine code alive.
pub(crate) enum Code {
    Cranelift(Box<JITModule>),
    #[cfg(feature = "llvm")]
    Llvm(#[allow(dead_code)] crate::llvm::LlvmCode),
}

/// A compiled function.
pub struct Kernel {
    pub(crate) module: Option<Code>,
    pub(crate) entry: Entry,
    pub(crate) scratch_len: usize,
    pub(crate) unshared_len: usize,
    pub(crate) outputs: Vec<(DType, Vec<usize>)>,
    pub(crate) in_place: bool,
    pub(crate) _descs: Vec<Box<[i64]>>,
}

// SAFETY: running a kernel only reads its machine code and descriptors, which nothing
// changes after compilation; everything it writes is in the caller's buffers and scratch,
// and the id errors it records are per thread. So one kernel may run on several threads at
// once, each with its own buffers (the training step's batch split over threads).
unsafe impl Sync for Kernel {}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(Code::Cranelift(m)) = self.module.take() {
            // The entry point is never called after this.
            unsafe { m.free_memory() };
        }
    }
}

impl Kernel {
    /// Bytes of scratch memory the function uses (buffers reused after their last read).
    pub fn scratch_bytes(&self) -> usize {
        4 * self.scratch_len
    }

    /// Bytes of scratch memory it would use if no buffer were reused.
    pub fn unshared_bytes(&self) -> usize {
        4 * self.unshared_len
    }

    /// Whether the outputs may overwrite the inputs and parameters they are computed from:
    /// all the work on the largest arrays is one elementwise loop that stores every output,
    /// and such a loop loads all its operands at an index before it stores there.
    pub fn in_place_safe(&self) -> bool {
        self.in_place
    }

    /// The number of elements of each output.
    pub fn output_lens(&self) -> Vec<usize> {
        self.outputs
            .iter()
            .map(|(_, s)| s.iter().product())
            .collect()
    }

    /// Element type and shape of each output.
    pub fn output_types(&self) -> &[(DType, Vec<usize>)] {
        &self.outputs
    }

    /// Runs the function on raw buffers (one pointer per input, parameter and output).
    /// Output nodes are computed straight into the output buffers, so those must not
    /// overlap any input or parameter buffer.
    ///
    /// # Safety
    /// Each pointer must address as many f32 as the compiled function's value has, and
    /// output buffers must not overlap the others, except that with `in_place_safe` each
    /// output may be exactly the input or parameter buffer it replaces.
    pub unsafe fn run_raw(
        &self,
        ins: &[*const f32],
        params: &[*const f32],
        outs: &[*mut f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), Error> {
        if scratch.len() < self.scratch_len {
            scratch.resize(self.scratch_len, 0.0);
        }
        let _flush = nnc_rt::FlushDenormals::new();
        unsafe {
            (self.entry)(
                ins.as_ptr(),
                params.as_ptr(),
                outs.as_ptr(),
                scratch.as_mut_ptr(),
            )
        };
        index_errors()
    }

    /// Runs the function. Buffer lengths must be those the function was compiled for.
    pub fn run(
        &self,
        inputs: &[Vec<f32>],
        params: &[Vec<f32>],
        outputs: &mut [Vec<f32>],
        scratch: &mut Vec<f32>,
    ) -> Result<(), Error> {
        if scratch.len() < self.scratch_len {
            scratch.resize(self.scratch_len, 0.0);
        }
        let ins: Vec<*const f32> = inputs.iter().map(|v| v.as_ptr()).collect();
        let ps: Vec<*const f32> = params.iter().map(|v| v.as_ptr()).collect();
        let outs: Vec<*mut f32> = outputs.iter_mut().map(|v| v.as_mut_ptr()).collect();
        // The code reads and writes exactly the buffers the plan sized.
        let _flush = nnc_rt::FlushDenormals::new();
        unsafe {
            (self.entry)(
                ins.as_ptr(),
                ps.as_ptr(),
                outs.as_ptr(),
                scratch.as_mut_ptr(),
            )
        };
        index_errors()
    }
}

/// The first id a gather or scatter of the last call found outside its table, as the
/// interpreter words it.
fn index_errors() -> Result<(), Error> {
    match kernels::take_index_error() {
        None => Ok(()),
        Some(e) => {
            let op = if e.gather { Op::Gather } else { Op::ScatterAdd };
            Err(Error::Index(nnc_ir::op::index_error(
                op,
                e.line as usize,
                f64::from(e.id),
                e.rows as usize,
            )))
        }
    }
}
