//! nnc's native backend: an IR function, specialized to concrete sizes for its symbolic
//! dimensions, compiled to native code. The modules follow the pipeline:
//!
//! ```text
//! Func + {B: 32} --plan.rs-->    buffers (offsets in one scratch arena, aliases), fusion
//!                --program.rs--> Program: kernel calls with descriptors, fused loops
//!                --cranelift.rs | llvm.rs--> machine code (emit.rs: the elementwise
//!                                code of a fused loop, once, over each backend's `Lanes`)
//!                (wide.rs: a JIT function's fused loops as zmm or ymm machine code,
//!                which the Cranelift function calls, on AVX-512 or AVX2 hosts)
//!                --kernel.rs-->  Kernel: the code kept alive, `run`
//! ahead of time: aot.rs (spec, error codes, C header) --object.rs--> an object file
//! ```
//!
//! Values are f32 in memory; `i32` values (labels) are held as exactly representable
//! floats. The reference interpreter is the oracle: `tests/jit.rs` compares every example
//! and random graphs against it. Imports form no cycle: plan <- program <- wide <-
//! cranelift, llvm <- object, with kernel, emit and aot as leaves.

mod aot;
mod cranelift;
mod emit;
mod error;
mod kernel;
#[cfg(feature = "llvm")]
mod llvm;
pub mod object;
mod plan;
mod program;
mod wide;

use std::collections::HashMap;

use nnc_ir::{DType, Dim, Func};
use nnc_runtime::Tensor;

pub use cranelift::clif_text;
pub use error::Error;
pub use kernel::Kernel;
/// The run-time kernels compiled code calls (a crate of their own: AOT objects link them).
pub use nnc_rt as kernels;
pub use plan::plan_text;
pub use wide::{set_loop_lanes, wide_loops_assembled, with_eight_lane_loops, with_wide_loops};

/// Which code generator compiles the program of a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codegen {
    /// Cranelift: fast to compile, 128-bit vectors (the default).
    #[default]
    Cranelift,
    /// LLVM at O3 for the host CPU (AVX-512 where it exists); needs the `llvm` feature.
    Llvm,
}

/// Whether this build has the LLVM backend.
pub const HAS_LLVM: bool = cfg!(feature = "llvm");

/// What asking for LLVM in a build without it says.
pub const NO_LLVM: &str = "this nnc was built without the LLVM backend; build it with `cargo build --release --features llvm` (needs llvm-19-dev)";

/// Compiles `f` for the given sizes of its symbolic dimensions, with Cranelift.
pub fn compile(f: &Func, dims: &HashMap<String, usize>) -> Result<Kernel, Error> {
    cranelift::compile(f, dims)
}

/// Compiles `f` with the chosen code generator.
pub fn compile_with(
    codegen: Codegen,
    f: &Func,
    dims: &HashMap<String, usize>,
) -> Result<Kernel, Error> {
    match codegen {
        Codegen::Cranelift => cranelift::compile(f, dims),
        #[cfg(feature = "llvm")]
        Codegen::Llvm => llvm::compile_llvm(f, dims),
        #[cfg(not(feature = "llvm"))]
        Codegen::Llvm => Err(Error::NoLlvm),
    }
}

/// The LLVM IR of `f` for these sizes, as generated and after O3.
pub fn llvm_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, Error> {
    #[cfg(feature = "llvm")]
    {
        llvm::llvm_text(f, dims)
    }
    #[cfg(not(feature = "llvm"))]
    {
        let _ = (f, dims);
        Err(Error::NoLlvm)
    }
}

/// Compiles functions on first use and caches them per (function name, sizes).
#[derive(Default)]
pub struct Jit {
    cache: HashMap<(String, Vec<(String, usize)>), Kernel>,
    scratch: Vec<f32>,
    /// Kernels compiled so far (a cache miss each).
    pub compiled: usize,
    /// Time spent compiling them.
    pub compile_time: std::time::Duration,
    /// The code generator.
    pub codegen: Codegen,
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jit {{ {} kernels }}", self.cache.len())
    }
}

impl Jit {
    /// A JIT with an empty cache.
    pub fn new() -> Jit {
        Jit::default()
    }

    /// A JIT with an empty cache that compiles with `codegen`.
    pub fn with_codegen(codegen: Codegen) -> Jit {
        Jit {
            codegen,
            ..Jit::default()
        }
    }

    /// The kernel of `f` for these sizes, compiled on first use.
    pub fn kernel(&mut self, f: &Func, dims: &HashMap<String, usize>) -> Result<&Kernel, Error> {
        let mut key_dims: Vec<(String, usize)> =
            dims.iter().map(|(k, v)| (k.clone(), *v)).collect();
        key_dims.sort();
        let key = (f.name.clone(), key_dims);
        if !self.cache.contains_key(&key) {
            let t = std::time::Instant::now();
            let k = compile_with(self.codegen, f, dims)?;
            self.compile_time += t.elapsed();
            self.compiled += 1;
            self.cache.insert(key.clone(), k);
        }
        Ok(&self.cache[&key])
    }

    /// The kernel `kernel` compiled for `f` at these sizes, if it did.
    pub fn cached(&self, f: &Func, dims: &HashMap<String, usize>) -> Option<&Kernel> {
        let mut key_dims: Vec<(String, usize)> =
            dims.iter().map(|(k, v)| (k.clone(), *v)).collect();
        key_dims.sort();
        self.cache.get(&(f.name.clone(), key_dims))
    }

    /// Evaluates `f` like the interpreter does (same arguments, same results up to f32
    /// rounding), compiling it for these sizes on first use.
    pub fn eval(
        &mut self,
        f: &Func,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>, Error> {
        if inputs.len() != f.inputs.len() || params.len() != f.params.len() {
            return Err(Error::Input(format!(
                "`@{}` called with the wrong number of values",
                f.name
            )));
        }
        let named = f
            .inputs
            .iter()
            .map(|a| (a.name.as_str(), &a.ty))
            .chain(f.params.iter().map(|p| (p.name.as_str(), &p.ty)));
        let dims = bind_dims(named, inputs.iter().chain(params))?;
        let to32 = |t: &Tensor| -> Vec<f32> { t.data.iter().map(|&v| v as f32).collect() };
        let ins: Vec<Vec<f32>> = inputs.iter().map(to32).collect();
        let ps: Vec<Vec<f32>> = params.iter().map(to32).collect();
        let mut scratch = std::mem::take(&mut self.scratch);
        let kernel = self.kernel(f, &dims)?;
        let types = kernel.output_types().to_vec();
        let mut outs: Vec<Vec<f32>> = kernel.output_lens().iter().map(|&n| vec![0.0; n]).collect();
        let ran = kernel.run(&ins, &ps, &mut outs, &mut scratch);
        self.scratch = scratch;
        ran?;
        Ok(outs
            .into_iter()
            .zip(&types)
            .map(|(data, (dtype, shape))| {
                Tensor::new(
                    *dtype,
                    shape.clone(),
                    data.into_iter().map(f64::from).collect(),
                )
            })
            .collect())
    }
}

/// Checks values against declared types and binds each symbolic dimension to the one size
/// all its uses must agree on.
pub fn bind_dims<'a>(
    declared: impl Iterator<Item = (&'a str, &'a nnc_ir::TensorType)>,
    values: impl Iterator<Item = &'a Tensor>,
) -> Result<HashMap<String, usize>, Error> {
    let mut dims: HashMap<String, usize> = HashMap::new();
    for ((name, ty), t) in declared.zip(values) {
        if !t.matches(ty) {
            return Err(Error::Input(format!(
                "`{name}` expects {ty}, got {}",
                t.ty()
            )));
        }
        for (d, &n) in ty.shape.dims().iter().zip(&t.shape) {
            if let Dim::Sym(s) = d {
                if let Some(&prev) = dims.get(s)
                    && prev != n
                {
                    return Err(Error::Input(format!(
                        "`{name}` has {s} = {n}, but an earlier value had {s} = {prev}"
                    )));
                }
                dims.insert(s.clone(), n);
            }
        }
    }
    Ok(dims)
}

/// Whether the JIT compiles functions with these element types (f32 and i32; f64 graphs
/// stay on the interpreter).
pub fn supports(f: &Func) -> bool {
    let ok = |t: &nnc_ir::TensorType| t.dtype != DType::F64;
    f.inputs.iter().all(|a| ok(&a.ty))
        && f.params.iter().all(|p| ok(&p.ty))
        && f.nodes.iter().all(|n| ok(&n.ty))
}
