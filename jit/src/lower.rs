//! Lowering one IR function to one Cranelift function.
//!
//! Buffers: inputs and parameters come in as arrays of pointers; every other value gets
//! an offset in one scratch arena, except reshapes and value-preserving casts (aliases of
//! their operand) and transposes of the last two axes whose only users are matrix products
//! (which read the operand with swapped strides instead).
//!
//! Elementwise ops become f32x4 loops with a scalar tail; everything else calls a kernel
//! from `kernels.rs` with a descriptor of constant sizes and strides.

use std::collections::HashMap;

use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use nnc_ir::{Attr, DType, Dim, Func, Lowering, Op, Value};

use crate::{emit, kernels};

pub(crate) type Entry =
    unsafe extern "C" fn(*const *const f32, *const *const f32, *const *mut f32, *mut f32);

/// What keeps a compiled function's machine code alive.
enum Code {
    Cranelift(Box<JITModule>),
    #[cfg(feature = "llvm")]
    Llvm(#[allow(dead_code)] crate::llvm::LlvmCode),
}

/// A compiled function.
pub struct Kernel {
    module: Option<Code>,
    entry: Entry,
    scratch_len: usize,
    unshared_len: usize,
    outputs: Vec<(DType, Vec<usize>)>,
    in_place: bool,
    _descs: Vec<Box<[i64]>>,
}

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
    ) -> Result<(), String> {
        if scratch.len() < self.scratch_len {
            scratch.resize(self.scratch_len, 0.0);
        }
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
    ) -> Result<(), String> {
        if scratch.len() < self.scratch_len {
            scratch.resize(self.scratch_len, 0.0);
        }
        let ins: Vec<*const f32> = inputs.iter().map(|v| v.as_ptr()).collect();
        let ps: Vec<*const f32> = params.iter().map(|v| v.as_ptr()).collect();
        let outs: Vec<*mut f32> = outputs.iter_mut().map(|v| v.as_mut_ptr()).collect();
        // The code reads and writes exactly the buffers the plan sized.
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
fn index_errors() -> Result<(), String> {
    match kernels::take_index_error() {
        None => Ok(()),
        Some(e) => {
            let op = if e.gather { Op::Gather } else { Op::ScatterAdd };
            Err(nnc_ir::op::index_error(
                op,
                e.line as usize,
                f64::from(e.id),
                e.rows as usize,
            ))
        }
    }
}

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Loc {
    Input(usize),
    Param(usize),
    Scratch(usize),
    /// Written straight into the caller's output buffer.
    Output(usize),
}

fn shape_of(ty: &nnc_ir::TensorType, dims: &HashMap<String, usize>) -> Result<Vec<usize>, String> {
    ty.shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Ok(*n as usize),
            Dim::Sym(s) => dims
                .get(s)
                .copied()
                .ok_or_else(|| format!("no size for dimension {s}")),
        })
        .collect()
}

fn strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// The run-time kernels declared in a module, in `KernelFn` order.
pub(crate) struct Helpers(Vec<FuncId>);

/// The host's ISA (every feature it reports, so `fma` where it exists) and whether it has
/// FMA. Objects are position-independent, so they link into PIE executables.
pub(crate) fn host_isa(
    pic: bool,
) -> Result<(std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, bool), String> {
    let mut fb = settings::builder();
    let set =
        |fb: &mut settings::Builder, k: &str, v: &str| fb.set(k, v).map_err(|e| e.to_string());
    set(&mut fb, "opt_level", "speed")?;
    set(&mut fb, "use_colocated_libcalls", "false")?;
    set(&mut fb, "is_pic", if pic { "true" } else { "false" })?;
    let ib = cranelift_native::builder().map_err(|e| e.to_string())?;
    let isa = ib
        .finish(settings::Flags::new(fb))
        .map_err(|e| e.to_string())?;
    let has_fma = isa
        .isa_flags()
        .iter()
        .any(|v| v.name == "has_fma" && v.as_bool() == Some(true));
    Ok((isa, has_fma))
}

/// Declares the run-time kernels (`nnc-rt`'s ABI table) as imported functions of
/// `module`.
pub(crate) fn declare_kernels<M: Module>(module: &mut M) -> Result<Helpers, String> {
    let mut ids = Vec::new();
    for k in &kernels::KERNELS {
        let mut sig = module.make_signature();
        for _ in k.params {
            sig.params.push(AbiParam::new(types::I64));
        }
        ids.push(
            module
                .declare_function(k.name, Linkage::Import, &sig)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(Helpers(ids))
}

/// A JIT module for the host with the kernels' symbols registered by address.
fn new_module() -> Result<(JITModule, Helpers, bool), String> {
    let (isa, has_fma) = host_isa(false)?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for k in &kernels::KERNELS {
        jb.symbol(k.name, (k.addr)() as *const u8);
    }
    let mut module = JITModule::new(jb);
    let helpers = declare_kernels(&mut module)?;
    Ok((module, helpers, has_fma))
}

/// Merges each axis into the next where the walk is contiguous (`stride[a] == stride[a
/// + 1] * shape[a + 1]`, zero strides included), so strided kernels run longer rows:
/// pooling's reduction over `[N, C, 2, 2, OH, OW]` becomes one over `[N*C, 4, OH*OW]`.
fn merge_axes(shape: &[usize], strides: &[i64]) -> (Vec<usize>, Vec<i64>) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: Vec<i64> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 && !out_shape.is_empty() {
            continue;
        }
        match (out_shape.last_mut(), out_strides.last_mut()) {
            (Some(pn), Some(ps)) if *ps == s * n as i64 || *pn == 1 => {
                *pn *= n;
                *ps = s;
            }
            _ => {
                out_shape.push(n);
                out_strides.push(s);
            }
        }
    }
    (out_shape, out_strides)
}

/// Transposes of the last two axes whose every user is a matrix product.
fn absorbed_transposes(f: &Func) -> Vec<bool> {
    let mut absorbed: Vec<bool> = f
        .nodes
        .iter()
        .map(|n| match (&n.op, &n.attr) {
            (Op::Transpose, Attr::Perm(p)) => {
                let r = p.len();
                r >= 2
                    && p[r - 2] == r - 1
                    && p[r - 1] == r - 2
                    && p[..r - 2].iter().enumerate().all(|(i, &k)| i == k)
            }
            _ => false,
        })
        .collect();
    for n in &f.nodes {
        if n.op != Op::MatMul {
            for a in &n.args {
                if let Value::Node(i) = a {
                    absorbed[*i as usize] = false;
                }
            }
        }
    }
    for o in &f.outputs {
        if let Value::Node(i) = o {
            absorbed[*i as usize] = false;
        }
    }
    absorbed
}

/// Batched products `[T, m, K] x [T, K, n]` whose only user sums them over the batch
/// (`sum axes=[0]`), with the left operand a transpose read through strides and the right
/// one row-major: both are then one `[m, T*K] x [T*K, n]` product, computed by the sum's
/// step into its buffer without the `[T, m, n]` in between (a recurrence's weight
/// gradient over all its steps).
fn summed_products(f: &Func, absorbed: &[bool]) -> Vec<bool> {
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        for a in &n.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
            }
        }
    }
    f.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let lhs_absorbed = matches!(n.args.first(), Some(Value::Node(j)) if absorbed[*j as usize]);
            let rhs_plain = matches!(n.args.get(1), Some(&v) if !matches!(v, Value::Node(j) if absorbed[j as usize]));
            n.op == Op::MatMul
                && n.ty.rank() == 3
                && n.args.iter().all(|&a| f.ty(a).rank() == 3)
                && lhs_absorbed
                && rhs_plain
                && users[i].len() == 1
                && !f.outputs.contains(&Value::Node(i as u32))
                && {
                    let u = &f.nodes[users[i][0]];
                    u.op == Op::Sum && matches!(&u.attr, Attr::Axes(a) if a == &[0])
                }
        })
        .collect()
}

/// Ops computed in registers inside a fused loop: the op table's `Fused` lowering, except
/// integer division (a kernel: it truncates and defines x / 0 = 0).
fn fusible(_f: &Func, n: &nnc_ir::Node) -> bool {
    let int_div = n.op == Op::Div && n.ty.dtype == DType::I32;
    matches!(n.op.info().lowering, Lowering::Fused { .. }) && !int_div
}

/// A broadcast of a rank-0 value: the same scalar at every element.
fn scalar_broadcast(f: &Func, n: &nnc_ir::Node) -> bool {
    n.op == Op::Broadcast && f.ty(n.args[0]).rank() == 0
}

/// Nodes computed inside their users' loops instead of in memory: fusible ops and scalar
/// broadcasts whose every user is a fusible op over as many elements, and that are not
/// outputs. A node with several users is recomputed in each user's loop, so that is
/// allowed only where it costs one cheap op: constants, scalar broadcasts, and single
/// arithmetic ops (not exp, ln, tanh, sqrt or division) over values in memory. Without
/// this bound a recurrence (an LSTM's cell state, used by the next step and by the
/// backward pass) was recomputed from its first step in every loop that needed it.
fn inlined_nodes(f: &Func, dims: &HashMap<String, usize>) -> Result<Vec<bool>, String> {
    let count = |ty: &nnc_ir::TensorType| -> Result<usize, String> {
        Ok(shape_of(ty, dims)?.iter().product())
    };
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        for a in &n.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
            }
        }
    }
    let mut out = vec![false; f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        if !(fusible(f, n) || scalar_broadcast(f, n)) || users[i].is_empty() {
            continue;
        }
        if f.outputs.contains(&Value::Node(i as u32)) {
            continue;
        }
        let c = count(&n.ty)?;
        let mut ok = true;
        for &u in &users[i] {
            let un = &f.nodes[u];
            ok &= fusible(f, un) && un.op != Op::Const && count(&un.ty)? == c;
        }
        let mut distinct = users[i].clone();
        distinct.dedup();
        let shared = distinct.len() > 1;
        let cheap = n.op == Op::Const
            || scalar_broadcast(f, n)
            || (n.op.info().lowering == (Lowering::Fused { cheap: true })
                && n.args.iter().all(|a| match a {
                    Value::Node(j) => !out[*j as usize],
                    _ => true,
                }));
        out[i] = ok && (!shared || cheap);
    }
    Ok(out)
}

/// Where a scan keeps what it needs inside its buffer (offsets in f32 elements, each
/// aligned to 16 bytes), and what its kernel is told.
pub(crate) struct ScanLayout {
    /// Each result: the final carries, then the stacked outputs.
    pub results: Vec<usize>,
    /// The buffer of each carry a step reads.
    pub carries: Vec<usize>,
    /// The body's scratch arena.
    pub scratch: usize,
    /// Elements in all.
    pub total: usize,
    pub desc: kernels::ScanDesc,
}

fn scan_layout(f: &Func, i: usize, dims: &HashMap<String, usize>) -> Result<ScanLayout, String> {
    let n = &f.nodes[i];
    let Attr::Loop(l) = &n.attr else {
        return Err(format!("%{i} is not a scan"));
    };
    let size = |ty: &nnc_ir::TensorType| -> Result<usize, String> {
        Ok(shape_of(ty, dims)?.iter().product())
    };
    let tys: Vec<&nnc_ir::TensorType> = n.args.iter().map(|&a| f.ty(a)).collect();
    let (nc, ns) = (l.carries, l.sequences);
    let mut top = 0;
    let mut place = |len: usize| {
        top += len.div_ceil(4) * 4;
        top - len.div_ceil(4) * 4
    };
    let mut results = Vec::new();
    for ty in l.result_types(&tys) {
        results.push(place(size(&ty)?));
    }
    let csz: Vec<usize> = tys[..nc]
        .iter()
        .map(|t| size(t))
        .collect::<Result<_, _>>()?;
    let carries = csz.iter().map(|&c| place(c)).collect();
    let body = plan(&l.body, dims)?;
    let scratch = place(body.scratch);
    let step = |ty: &nnc_ir::TensorType| -> Result<usize, String> {
        Ok(shape_of(ty, dims)?.iter().skip(1).product())
    };
    let steps = match l.steps(&tys) {
        Some(d) => shape_of(
            &nnc_ir::TensorType::new(DType::F32, nnc_ir::Shape(vec![d.clone()])),
            dims,
        )?[0],
        None => 0,
    };
    let desc = kernels::ScanDesc {
        carries: csz,
        sequences: tys[nc..nc + ns]
            .iter()
            .map(|t| step(t))
            .collect::<Result<_, _>>()?,
        constants: n.args.len() - nc - ns,
        outputs: l.body.outputs[nc..]
            .iter()
            .map(|&o| size(l.body.ty(o)))
            .collect::<Result<_, _>>()?,
        steps,
        reverse: l.reverse,
    };
    Ok(ScanLayout {
        results,
        carries,
        scratch,
        total: top,
        desc,
    })
}

/// Where every value lives, and which nodes are computed where.
pub(crate) struct Plan {
    pub loc: Vec<Loc>,
    /// The node is computed by its own loop or kernel call into its own buffer.
    pub own: Vec<bool>,
    /// The node is computed in registers inside its users' loops.
    pub inlined: Vec<bool>,
    /// The node is a transpose its matrix-product users read through strides.
    pub absorbed: Vec<bool>,
    /// The node is a batched product its sum computes as one product.
    pub summed: Vec<bool>,
    pub shapes: Vec<Vec<usize>>,
    /// The order of execution: each step is one node's kernel call or loop, or one fused
    /// loop computing several nodes (same element count) with a store for each.
    pub steps: Vec<Vec<usize>>,
    /// Scratch elements with buffers reused after their last read.
    pub scratch: usize,
    /// Scratch elements if every buffer had its own place.
    pub unshared: usize,
}

/// The values a node computed at its own step reads from memory: the leaves of its fused
/// tree, a matrix product's operands (through absorbed transposes), or its operands.
fn reads(f: &Func, inlined: &[bool], absorbed: &[bool], summed: &[bool], i: usize) -> Vec<Value> {
    let n = &f.nodes[i];
    if let Some(&Value::Node(j)) = n.args.first()
        && summed[j as usize]
    {
        return reads(f, inlined, absorbed, summed, j as usize);
    }
    if n.op == Op::MatMul {
        return n
            .args
            .iter()
            .map(|&a| match a {
                Value::Node(j) if absorbed[j as usize] => f.nodes[j as usize].args[0],
                a => a,
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut stack = vec![i];
    let mut seen = std::collections::HashSet::new();
    while let Some(j) = stack.pop() {
        if !seen.insert(j) {
            continue;
        }
        for &a in &f.nodes[j].args {
            match a {
                Value::Node(k) if inlined[k as usize] => stack.push(k as usize),
                a => out.push(a),
            }
        }
    }
    out
}

/// Plans buffers: aliases, absorbed transposes and inlined nodes take none; outputs are
/// the caller's; every other node gets a 16-byte-aligned range of the scratch arena, reused
/// (first fit) once every node reading it has run.
pub(crate) fn plan(f: &Func, dims: &HashMap<String, usize>) -> Result<Plan, String> {
    let absorbed = absorbed_transposes(f);
    let inlined = inlined_nodes(f, dims)?;
    let summed = summed_products(f, &absorbed);
    let mut shapes: Vec<Vec<usize>> = f
        .nodes
        .iter()
        .map(|n| shape_of(&n.ty, dims))
        .collect::<Result<_, _>>()?;
    // A scan's buffer holds its results, the carries a step reads and its body's scratch.
    let mut scans: HashMap<usize, ScanLayout> = HashMap::new();
    for (i, nd) in f.nodes.iter().enumerate() {
        if nd.op == Op::Scan {
            let l = scan_layout(f, i, dims)?;
            shapes[i] = vec![l.total];
            scans.insert(i, l);
        }
    }
    let n = f.nodes.len();
    let alias: Vec<bool> = f
        .nodes
        .iter()
        .map(|nd| match nd.op {
            Op::Cast => !(f.ty(nd.args[0]).dtype.is_float() && nd.ty.dtype == DType::I32),
            op => op.info().lowering == Lowering::Alias,
        })
        .collect();
    let own: Vec<bool> = (0..n)
        .map(|i| !alias[i] && !absorbed[i] && !inlined[i] && !summed[i])
        .collect();
    // The node whose buffer holds a value (through aliases).
    let root = |mut v: Value| -> Option<usize> {
        loop {
            match v {
                Value::Node(i) if alias[i as usize] => v = f.nodes[i as usize].args[0],
                Value::Node(i) => return Some(i as usize),
                _ => return None,
            }
        }
    };
    // A node returned as an output is computed straight into the caller's buffer (outputs
    // never alias inputs or parameters: `Kernel::run_raw`'s contract).
    let mut direct: HashMap<usize, usize> = HashMap::new();
    for (k, o) in f.outputs.iter().enumerate() {
        if let Value::Node(i) = o
            && own[*i as usize]
        {
            direct.entry(*i as usize).or_insert(k);
        }
    }
    // Steps: a node that can be computed in a loop joins the open loop when it has as many
    // elements and reads nothing computed after that loop's step (except the loop's own
    // members, which it reads in registers).
    let count = |i: usize| shapes[i].iter().product::<usize>();
    let mut steps: Vec<Vec<usize>> = Vec::new();
    let mut step_of = vec![usize::MAX; n];
    let mut open: Option<usize> = None;
    for i in (0..n).filter(|&i| own[i]) {
        let nd = &f.nodes[i];
        if fusible(f, nd) || scalar_broadcast(f, nd) {
            if let Some(st) = open {
                let first = steps[st][0];
                // A broadcast scalar is loaded before the loop runs, so it must come from
                // an earlier step.
                let sb = scalar_broadcast(f, nd);
                let joins = count(first) == count(i)
                    && reads(f, &inlined, &absorbed, &summed, i)
                        .iter()
                        .all(|&v| match root(v) {
                            None => true,
                            Some(r) => step_of[r] < st || (step_of[r] == st && !sb),
                        });
                if joins {
                    steps[st].push(i);
                    step_of[i] = st;
                    continue;
                }
            }
            open = Some(steps.len());
        }
        step_of[i] = steps.len();
        steps.push(vec![i]);
    }
    let mut last_use = vec![0usize; n];
    for i in (0..n).filter(|&i| own[i]) {
        for v in reads(f, &inlined, &absorbed, &summed, i) {
            if let Some(j) = root(v) {
                last_use[j] = last_use[j].max(step_of[i]);
            }
        }
    }
    for &o in &f.outputs {
        if let Some(j) = root(o) {
            last_use[j] = usize::MAX;
        }
    }
    let mut loc = vec![Loc::Scratch(usize::MAX); n];
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, size), sorted by offset
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (last step, offset, size)
    let (mut top, mut unshared) = (0usize, 0usize);
    for (t, step) in steps.iter().enumerate() {
        // Release buffers no step from here on reads.
        live.retain(|&(last, off, size)| {
            if last < t {
                free.push((off, size));
                false
            } else {
                true
            }
        });
        free.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for &(off, size) in &free {
            match merged.last_mut() {
                Some((o, s)) if *o + *s == off => *s += size,
                _ => merged.push((off, size)),
            }
        }
        free = merged;
        for &i in step {
            if let Some(&k) = direct.get(&i) {
                loc[i] = Loc::Output(k);
                continue;
            }
            let size = count(i).div_ceil(4) * 4;
            unshared += size;
            let off = match free.iter().position(|&(_, s)| s >= size) {
                Some(p) => {
                    let (o, s) = free[p];
                    if s == size {
                        free.remove(p);
                    } else {
                        free[p] = (o + size, s - size);
                    }
                    o
                }
                None => {
                    top += size;
                    top - size
                }
            };
            loc[i] = Loc::Scratch(off);
            live.push((last_use[i], off, size));
        }
    }
    // Aliases live where their operand does; a scan's results at their offsets in its
    // buffer.
    for i in 0..n {
        if alias[i] {
            loc[i] = match f.nodes[i].args[0] {
                Value::Input(k) => Loc::Input(k as usize),
                Value::Param(k) => Loc::Param(k as usize),
                Value::Node(k) => loc[k as usize],
            };
            if let (Attr::Output(r), Value::Node(s)) = (&f.nodes[i].attr, f.nodes[i].args[0])
                && let (Some(l), Loc::Scratch(base)) = (scans.get(&(s as usize)), loc[i])
            {
                loc[i] = Loc::Scratch(base + l.results[*r]);
            }
        }
    }
    Ok(Plan {
        loc,
        own,
        inlined,
        absorbed,
        summed,
        shapes,
        steps,
        scratch: top,
        unshared,
    })
}

/// The function with its plan as notes: where each value lives, which nodes are fused
/// into which loop, which call a kernel.
pub fn plan_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, String> {
    let p = plan(f, dims)?;
    // Which loop computes each inlined node (the first root whose tree holds it).
    let mut fused_into: HashMap<usize, usize> = HashMap::new();
    let mut members: HashMap<usize, usize> = HashMap::new();
    for i in (0..f.nodes.len()).filter(|&i| p.own[i]) {
        let mut stack: Vec<usize> = f.nodes[i]
            .args
            .iter()
            .filter_map(|a| match a {
                Value::Node(k) if p.inlined[*k as usize] => Some(*k as usize),
                _ => None,
            })
            .collect();
        while let Some(j) = stack.pop() {
            if fused_into.contains_key(&j) && fused_into[&j] != i {
                continue;
            }
            if fused_into.insert(j, i).is_none() {
                *members.entry(i).or_default() += 1;
            }
            for a in &f.nodes[j].args {
                if let Value::Node(k) = a
                    && p.inlined[*k as usize]
                {
                    stack.push(*k as usize);
                }
            }
        }
    }
    let where_ = |l: Loc| match l {
        Loc::Scratch(o) => format!("scratch[{}..]", o * 4),
        Loc::Output(k) => format!("output {k}"),
        Loc::Input(k) => format!("input {k}"),
        Loc::Param(k) => format!("param {k}"),
    };
    let note = |i: usize| -> Option<String> {
        let n = &f.nodes[i];
        if p.inlined[i] {
            return Some(format!(
                "fused into %{}",
                fused_into.get(&i).copied().unwrap_or(i)
            ));
        }
        if p.absorbed[i] {
            return Some("read through strides by matmul".into());
        }
        if p.summed[i] {
            return Some("one product with its sum over the batch".into());
        }
        if !p.own[i] {
            return Some(format!("alias: {}", where_(p.loc[i])));
        }
        let how = match n.op {
            Op::MatMul => "gemm".to_string(),
            Op::Sum if matches!(n.args[0], Value::Node(j) if p.summed[j as usize]) => {
                "gemm over the batch joined".to_string()
            }
            Op::Sum | Op::Mean | Op::ReduceMax => "kernel reduce".to_string(),
            Op::Broadcast | Op::Transpose => "kernel gather".to_string(),
            Op::OneHot => "kernel one_hot".to_string(),
            Op::Im2col | Op::Col2im | Op::Slice | Op::Pad | Op::Iota | Op::Random => {
                "kernel layout".to_string()
            }
            Op::Pow | Op::Cast => "kernel math".to_string(),
            Op::Div if n.ty.dtype == DType::I32 => "kernel math".to_string(),
            Op::Scan => "kernel scan, its body's plan below".to_string(),
            _ => match members.get(&i) {
                Some(m) => format!("f32x4 loop, {m} fused"),
                None => "f32x4 loop".to_string(),
            },
        };
        let step = p.steps.iter().position(|st| st.contains(&i)).unwrap_or(0);
        let shared = p.steps[step].len();
        let with = if shared > 1 {
            format!(", one of {shared} in step {step}")
        } else {
            format!(", step {step}")
        };
        Some(format!("{how} -> {}{with}", where_(p.loc[i])))
    };
    let head = format!(
        "; @{} for {}: scratch {} bytes ({} without reuse)\n",
        f.name,
        sizes_text(dims),
        4 * p.scratch,
        4 * p.unshared
    );
    let mut text = head + &nnc_ir::print::print_func(f, &note);
    for (i, n) in f.nodes.iter().enumerate() {
        if let Attr::Loop(l) = &n.attr {
            text.push_str(&format!(
                "\n; the body of %{i} in @{}, once per step\n",
                f.name
            ));
            text.push_str(&plan_text(&l.body, dims)?);
        }
    }
    Ok(text)
}

/// The sizes a kernel was specialized to, for the text stages' headers (`B = 32, N = 4`).
fn sizes_text(dims: &HashMap<String, usize>) -> String {
    let mut sizes: Vec<String> = dims.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    sizes.sort();
    if sizes.is_empty() {
        "its fixed sizes".to_string()
    } else {
        sizes.join(", ")
    }
}

/// The Cranelift IR of the compiled function, as text.
pub fn clif_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, String> {
    let names: Vec<String> = kernels::KERNELS
        .iter()
        .enumerate()
        .map(|(i, k)| format!("fn{i} = {}", k.name))
        .collect();
    let head = format!(
        "; @{} for {}\n; {}\n",
        f.name,
        sizes_text(dims),
        names.join(", ")
    );
    compile_inner(f, dims, true).map(|(_, t)| head + &t.unwrap_or_default())
}

pub fn compile(f: &Func, dims: &HashMap<String, usize>) -> Result<Kernel, String> {
    compile_inner(f, dims, false).map(|(k, _)| k)
}

/// Compiles `f` with LLVM: the same program, another code generator.
#[cfg(feature = "llvm")]
pub fn compile_llvm(f: &Func, dims: &HashMap<String, usize>) -> Result<Kernel, String> {
    let prog = program(f, dims)?;
    let (entry, code) = crate::llvm::compile(f, &prog)?;
    Ok(Kernel {
        module: Some(Code::Llvm(code)),
        entry,
        scratch_len: prog.scratch,
        unshared_len: prog.unshared,
        outputs: prog.outputs,
        in_place: prog.in_place,
        _descs: Vec::new(),
    })
}

/// The LLVM IR of `f` for these sizes: as generated, then after LLVM's O3 pipeline.
#[cfg(feature = "llvm")]
pub fn llvm_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, String> {
    let prog = program(f, dims)?;
    let (before, after) = crate::llvm::ir_text(f, &prog)?;
    Ok(format!(
        "; @{} for {}: as generated\n{before}\n; after O3 for the host CPU\n{after}",
        f.name,
        sizes_text(dims)
    ))
}

fn compile_inner(
    f: &Func,
    dims: &HashMap<String, usize>,
    text: bool,
) -> Result<(Kernel, Option<String>), String> {
    let (mut module, helpers, has_fma) = new_module()?;
    let name = format!("nnc_{}", f.name.replace('.', "_"));
    let mut descs = if text {
        Descs::Numbered(Vec::new())
    } else {
        Descs::Addresses(Vec::new())
    };
    let l = lower_into(
        &mut module,
        &helpers,
        has_fma,
        f,
        dims,
        &name,
        Linkage::Export,
        &mut descs,
    )?;
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let code = module.get_finalized_function(l.id);
    // The function was declared with exactly this signature.
    let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
    let descs = match descs {
        Descs::Addresses(d) | Descs::Numbered(d) => d,
        Descs::Data => Vec::new(),
    };
    Ok((
        Kernel {
            module: Some(Code::Cranelift(Box::new(module))),
            entry,
            scratch_len: l.scratch,
            unshared_len: l.unshared,
            outputs: l.outputs,
            in_place: l.in_place,
            _descs: descs,
        },
        l.clif,
    ))
}

/// Where the kernels' descriptors live: boxed arrays whose addresses are baked into the
/// code (JIT), the same numbered instead of addressed (printed CLIF, stable text), or
/// read-only data objects of the module (object files).
pub(crate) enum Descs {
    Addresses(Vec<Box<[i64]>>),
    Numbered(Vec<Box<[i64]>>),
    Data,
}

/// A kernel of `nnc-rt` that generated code calls.
pub(crate) use kernels::KernelFn;

/// An argument of a kernel call: a buffer, a constant, or a descriptor (an array of
/// constants the call reads through a pointer).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Loc(Loc),
    Imm(i64),
    Desc(Vec<i64>),
    /// An array of buffer addresses (a scan's operands and results).
    Ptrs(Vec<Loc>),
    /// The entry of the program's k-th loop body.
    Body(usize),
}

/// One fused loop: `count` elements; at each index the nodes of `order` are computed from
/// the `leaves` (read at the index), the `scalars` (one value broadcast to every index) and
/// each other, and the `stores` written.
#[derive(Clone, Debug)]
pub(crate) struct LoopSpec {
    pub order: Vec<usize>,
    pub leaves: Vec<(Value, Loc)>,
    pub scalars: Vec<(usize, Loc)>,
    pub stores: Vec<(usize, Loc)>,
    pub members: Vec<usize>,
    pub count: usize,
}

/// One step of a compiled function, in a form both backends take.
#[derive(Clone, Debug)]
pub(crate) enum Instr {
    Call(KernelFn, Vec<Arg>),
    Loop(LoopSpec),
}

/// A function planned for concrete sizes: its steps, the scratch it needs (f32 elements,
/// with and without reuse), its outputs and whether they may overwrite its operands.
pub(crate) struct Program {
    pub instrs: Vec<Instr>,
    /// The body of each scan, in node order, with its own program (`Arg::Body(k)`).
    pub bodies: Vec<(Func, Program)>,
    pub scratch: usize,
    pub unshared: usize,
    pub outputs: Vec<(DType, Vec<usize>)>,
    pub in_place: bool,
}

/// The backend-neutral form of `f` for the sizes `dims`: the buffer plan's steps as kernel
/// calls (with their descriptors computed) and fused loops, then copies of outputs that
/// were not computed in place.
pub(crate) fn program(f: &Func, dims: &HashMap<String, usize>) -> Result<Program, String> {
    if !crate::supports(f) {
        return Err(format!(
            "the JIT compiles f32 and i32 graphs; `@{}` uses f64",
            f.name
        ));
    }
    // Every value at these sizes must fit the memory limit (checked arithmetic: a batch of
    // 10^7 rows is an error here, not an abort when the buffers are allocated).
    let limit = nnc_ir::limits::memory_limit() as u128;
    for ty in f
        .inputs
        .iter()
        .map(|a| &a.ty)
        .chain(f.params.iter().map(|p| &p.ty))
        .chain(f.nodes.iter().map(|n| &n.ty))
    {
        let mut n: u128 = 4;
        for d in ty.shape.dims() {
            let k = match d {
                Dim::Known(k) => *k as u128,
                Dim::Sym(s) => *dims
                    .get(s)
                    .ok_or_else(|| format!("no size for dimension {s}"))?
                    as u128,
            };
            n = n.saturating_mul(k);
        }
        if n > limit {
            return Err(format!(
                "`@{}` at {} needs a {ty} of {}, more than the memory limit of {} (`--memory-limit` sets another)",
                f.name,
                sizes_text(dims),
                nnc_ir::limits::bytes_text(n),
                nnc_ir::limits::bytes_text(limit)
            ));
        }
    }
    let Plan {
        loc,
        own: _,
        inlined,
        absorbed,
        summed,
        shapes,
        steps,
        scratch,
        unshared,
    } = plan(f, dims)?;
    if scratch as u128 * 4 > limit {
        return Err(format!(
            "`@{}` at {} needs {} of scratch memory, more than the memory limit of {}",
            f.name,
            sizes_text(dims),
            nnc_ir::limits::bytes_text(scratch as u128 * 4),
            nnc_ir::limits::bytes_text(limit)
        ));
    }
    let value_loc = |loc: &[Loc], v: Value| match v {
        Value::Input(i) => Loc::Input(i as usize),
        Value::Param(i) => Loc::Param(i as usize),
        Value::Node(i) => loc[i as usize],
    };
    let value_shape = |v: Value| -> Result<Vec<usize>, String> {
        match v {
            Value::Node(i) => Ok(shapes[i as usize].clone()),
            v => shape_of(f.ty(v), dims),
        }
    };
    let mut prog: Vec<Instr> = Vec::new();
    let mut bodies: Vec<(Func, Program)> = Vec::new();
    for step in &steps {
        let i = step[0];
        let n = &f.nodes[i];
        let here = loc[i];
        let count: usize = shapes[i].iter().product();
        let dst = Arg::Loc(here);
        let arg = |k: usize| Arg::Loc(value_loc(&loc, n.args[k]));
        let is_int = n.ty.dtype == DType::I32;
        match n.op {
            Op::Pow => {
                let (x, y) = (arg(0), arg(1));
                let k = Arg::Imm(kernels::MathKind::Pow as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x, y, dst, cnt]));
            }
            Op::Div if is_int => {
                let (x, y) = (arg(0), arg(1));
                let k = Arg::Imm(kernels::MathKind::IntDiv as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x, y, dst, cnt]));
            }
            Op::Cast => {
                // Float to int (the other casts are aliases).
                let x = arg(0);
                let k = Arg::Imm(kernels::MathKind::Trunc as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x.clone(), x, dst, cnt]));
            }
            _ if fusible(f, n) || scalar_broadcast(f, n) => {
                // One loop for every node of the step: each member's inlined tree,
                // operands first, then the member, stored to its buffer.
                let mut order = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let mut leaves: Vec<Value> = Vec::new();
                let mut scalars: Vec<(usize, Value)> = Vec::new();
                for &m in step {
                    let mut stack = vec![(m, false)];
                    while let Some((j, done)) = stack.pop() {
                        if done {
                            order.push(j);
                            continue;
                        }
                        if !seen.insert(j) {
                            continue;
                        }
                        stack.push((j, true));
                        let nj = &f.nodes[j];
                        if scalar_broadcast(f, nj) {
                            scalars.push((j, nj.args[0]));
                            continue;
                        }
                        for &a in &nj.args {
                            match a {
                                Value::Node(k) if inlined[k as usize] => {
                                    stack.push((k as usize, false))
                                }
                                // A member (or an alias of one) is read in registers.
                                _ if member_of(f, a, step).is_some() => {}
                                _ if !leaves.contains(&a) => leaves.push(a),
                                _ => {}
                            }
                        }
                    }
                }
                prog.push(Instr::Loop(LoopSpec {
                    order,
                    leaves: leaves.iter().map(|&v| (v, value_loc(&loc, v))).collect(),
                    scalars: scalars
                        .iter()
                        .map(|&(j, v)| (j, value_loc(&loc, v)))
                        .collect(),
                    stores: step.iter().map(|&m| (m, loc[m])).collect(),
                    members: step.clone(),
                    count,
                }));
            }
            Op::Sum if matches!(n.args[0], Value::Node(j) if summed[j as usize]) => {
                let Value::Node(j) = n.args[0] else {
                    return Err("summed product without its product".into());
                };
                let mm = &f.nodes[j as usize];
                let Value::Node(t) = mm.args[0] else {
                    return Err("summed product without its transpose".into());
                };
                let p = f.nodes[t as usize].args[0];
                let ps = value_shape(p)?; // [T, K, m]
                let qs = value_shape(mm.args[1])?; // [T, K, n]
                let (m, k, nn) = (ps[2], ps[0] * ps[1], qs[2]);
                let d = vec![
                    1, m as i64, k as i64, nn as i64, 1, m as i64, nn as i64, 1, 0, 0,
                ];
                let (ap, bp) = (
                    Arg::Loc(value_loc(&loc, p)),
                    Arg::Loc(value_loc(&loc, mm.args[1])),
                );
                prog.push(Instr::Call(
                    KernelFn::Matmul,
                    vec![ap, bp, dst, Arg::Desc(d)],
                ));
            }
            Op::Sum | Op::Mean | Op::ReduceMax => {
                let Attr::Axes(axes) = &n.attr else {
                    return Err("reduction without axes".into());
                };
                let xs = value_shape(n.args[0])?;
                let kept: Vec<usize> = (0..xs.len()).filter(|a| !axes.contains(a)).collect();
                let out_strides = strides(&kept.iter().map(|&a| xs[a]).collect::<Vec<_>>());
                let mut ostr = vec![0i64; xs.len()];
                for (k, &a) in kept.iter().enumerate() {
                    ostr[a] = out_strides[k];
                }
                let kind = match n.op {
                    Op::Sum => 0,
                    Op::Mean => 1,
                    _ => 2,
                };
                let reduced: usize = axes.iter().map(|&a| xs[a]).product();
                let (xs, ostr) = merge_axes(&xs, &ostr);
                let mut d = vec![xs.len() as i64, kind, reduced as i64, count as i64];
                d.extend(xs.iter().map(|&s| s as i64));
                d.extend(ostr);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Reduce, vec![x, dst, dp]));
            }
            Op::Broadcast | Op::Transpose => {
                let xs = value_shape(n.args[0])?;
                let xstr = strides(&xs);
                let out = &shapes[i];
                let mut per_out = vec![0i64; out.len()];
                match &n.attr {
                    Attr::Dims(d) => d
                        .iter()
                        .enumerate()
                        .for_each(|(k, &o)| per_out[o] = xstr[k]),
                    Attr::Perm(p) => p
                        .iter()
                        .enumerate()
                        .for_each(|(k, &a)| per_out[k] = xstr[a]),
                    _ => return Err("layout op without its attribute".into()),
                }
                let (out, per_out) = merge_axes(out, &per_out);
                let mut d = vec![out.len() as i64];
                d.extend(out.iter().map(|&s| s as i64));
                d.extend(per_out);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Gather, vec![x, dst, dp]));
            }
            Op::OneHot => {
                let classes = *shapes[i].last().unwrap_or(&1);
                let x = arg(0);
                let nn = Arg::Imm((count / classes.max(1)) as i64);
                let c = Arg::Imm(classes as i64);
                prog.push(Instr::Call(KernelFn::OneHot, vec![x, dst, nn, c]));
            }
            Op::Im2col | Op::Col2im => {
                let Attr::Window {
                    kernel,
                    stride,
                    pad,
                } = n.attr
                else {
                    return Err("window op without its attribute".into());
                };
                let (img, cols) = if n.op == Op::Im2col {
                    (value_shape(n.args[0])?, shapes[i].clone())
                } else {
                    (shapes[i].clone(), value_shape(n.args[0])?)
                };
                let d = [
                    img[0] * img[1],
                    img[2],
                    img[3],
                    kernel[0],
                    kernel[1],
                    cols[4],
                    cols[5],
                    stride[0],
                    stride[1],
                    pad[0],
                    pad[1],
                ];
                let kind = Arg::Imm(if n.op == Op::Im2col {
                    kernels::LayoutKind::Im2col
                } else {
                    kernels::LayoutKind::Col2im
                } as i64);
                let x = arg(0);
                let dp = Arg::Desc(d.iter().map(|&v| v as i64).collect());
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, x, dst, dp]));
            }
            Op::Slice | Op::Pad => {
                let Attr::Offset { axis, start } = n.attr else {
                    return Err("slice without its attribute".into());
                };
                let (big, small) = if n.op == Op::Slice {
                    (value_shape(n.args[0])?, shapes[i].clone())
                } else {
                    (shapes[i].clone(), value_shape(n.args[0])?)
                };
                let outer: usize = big[..axis].iter().product();
                let inner: usize = big[axis + 1..].iter().product();
                let d = vec![
                    outer as i64,
                    big[axis] as i64,
                    small[axis] as i64,
                    inner as i64,
                    start as i64,
                ];
                let kind = Arg::Imm(if n.op == Op::Slice {
                    kernels::LayoutKind::Slice
                } else {
                    kernels::LayoutKind::Pad
                } as i64);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, x, dst, dp]));
            }
            Op::Random => {
                let Attr::Value(stream) = n.attr else {
                    return Err("random without its stream".into());
                };
                let kind = Arg::Imm(kernels::LayoutKind::Random as i64);
                let key = arg(0);
                let dp = Arg::Desc(vec![count as i64, stream as i64]);
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, key, dst, dp]));
            }
            Op::Iota => {
                let Attr::Axes(axes) = &n.attr else {
                    return Err("iota without its axis".into());
                };
                let out = &shapes[i];
                let a = axes[0];
                let d = vec![
                    out[..a].iter().product::<usize>() as i64,
                    out[a] as i64,
                    out[a + 1..].iter().product::<usize>() as i64,
                ];
                let kind = Arg::Imm(kernels::LayoutKind::Iota as i64);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(
                    KernelFn::Layout,
                    vec![kind, dst.clone(), dst, dp],
                ));
            }
            Op::Concat => {
                let Attr::Axis(axis) = n.attr else {
                    return Err("concat without its axis".into());
                };
                // Each operand placed at its offset along the axis (no zero fill: the
                // pieces cover the result).
                let out = &shapes[i];
                let outer: usize = out[..axis].iter().product();
                let inner: usize = out[axis + 1..].iter().product();
                let mut start = 0;
                for k in 0..n.args.len() {
                    let len = value_shape(n.args[k])?[axis];
                    let d = vec![
                        outer as i64,
                        out[axis] as i64,
                        len as i64,
                        inner as i64,
                        start as i64,
                    ];
                    let kind = Arg::Imm(kernels::LayoutKind::Place as i64);
                    prog.push(Instr::Call(
                        KernelFn::Layout,
                        vec![kind, arg(k), dst.clone(), Arg::Desc(d)],
                    ));
                    start += len;
                }
            }
            Op::Gather | Op::ScatterAdd => {
                let Attr::Index { axis, line } = n.attr else {
                    return Err("gather without its axis".into());
                };
                let table = if n.op == Op::Gather {
                    value_shape(n.args[0])?
                } else {
                    shapes[i].clone()
                };
                let ids: usize = value_shape(n.args[1])?.iter().product();
                let d = vec![
                    table[..axis].iter().product::<usize>() as i64,
                    table[axis] as i64,
                    table[axis + 1..].iter().product::<usize>() as i64,
                    ids as i64,
                    line as i64,
                ];
                let kind = Arg::Imm(if n.op == Op::Gather {
                    kernels::TakeKind::Gather
                } else {
                    kernels::TakeKind::ScatterAdd
                } as i64);
                let (ids, x) = (arg(1), arg(0));
                prog.push(Instr::Call(
                    KernelFn::Take,
                    vec![kind, ids, x, dst, Arg::Desc(d)],
                ));
            }
            Op::MatMul => {
                let out = &shapes[i];
                let r = out.len();
                let (m, nn) = (out[r - 2], out[r - 1]);
                let batch: usize = out[..r - 2].iter().product();
                let a_shape = value_shape(n.args[0])?;
                let b_shape = value_shape(n.args[1])?;
                let k = a_shape[a_shape.len() - 1];
                // An absorbed transpose is read through its operand with swapped strides.
                let operand = |k_arg: usize, rows: usize, cols: usize| -> (Loc, i64, i64) {
                    let v = n.args[k_arg];
                    if let Value::Node(j) = v
                        && absorbed[j as usize]
                    {
                        let src = f.nodes[j as usize].args[0];
                        // The source is [cols, rows]: element (r, c) at c * rows + r.
                        return (value_loc(&loc, src), 1, rows as i64);
                    }
                    (value_loc(&loc, v), cols as i64, 1)
                };
                let (al, a_rs, a_cs) = operand(0, m, k);
                let (bl, b_rs, b_cs) = operand(1, k, nn);
                // A rank-2 operand is shared by the batch (batch stride 0).
                let a_bs = if a_shape.len() == 2 { 0 } else { m * k };
                let b_bs = if b_shape.len() == 2 { 0 } else { k * nn };
                // A row-major batch times a shared matrix is one taller product.
                let (batch, m, a_bs) = if b_bs == 0 && a_bs != 0 && a_cs == 1 && a_rs == k as i64 {
                    (1, batch * m, 0)
                } else {
                    (batch, m, a_bs)
                };
                let d = vec![
                    batch as i64,
                    m as i64,
                    k as i64,
                    nn as i64,
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    a_bs as i64,
                    b_bs as i64,
                ];
                let (ap, bp) = (Arg::Loc(al), Arg::Loc(bl));
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Matmul, vec![ap, bp, dst, dp]));
            }
            Op::Scan => {
                let Attr::Loop(l) = &n.attr else {
                    return Err("scan without its body".into());
                };
                let Loc::Scratch(base) = here else {
                    return Err("a scan's buffer is not in scratch memory".into());
                };
                let lay = scan_layout(f, i, dims)?;
                let mut ptrs: Vec<Loc> = n.args.iter().map(|&a| value_loc(&loc, a)).collect();
                let at = |o: usize| Loc::Scratch(base + o);
                ptrs.extend(lay.results.iter().map(|&o| at(o)));
                ptrs.extend(lay.carries.iter().map(|&o| at(o)));
                ptrs.push(at(lay.scratch));
                let k = bodies.len();
                bodies.push((l.body.clone(), program(&l.body, dims)?));
                prog.push(Instr::Call(
                    KernelFn::Scan,
                    vec![Arg::Desc(lay.desc.encode()), Arg::Ptrs(ptrs), Arg::Body(k)],
                ));
            }
            Op::Reshape | Op::StopGradient | Op::ScanOut => {}
            op => return Err(format!("the JIT cannot lower `{}` yet", op.mnemonic())),
        }
    }
    // Copy each output to the caller's buffer.
    let mut outputs = Vec::new();
    for (k, &o) in f.outputs.iter().enumerate() {
        let shape = value_shape(o)?;
        let len: usize = shape.iter().product();
        outputs.push((f.ty(o).dtype, shape));
        let l = value_loc(&loc, o);
        if l == Loc::Output(k) {
            continue;
        }
        let dst = Arg::Loc(Loc::Output(k));
        let src = Arg::Loc(l);
        let cnt = Arg::Imm(len as i64);
        prog.push(Instr::Call(KernelFn::Copy, vec![dst, src, cnt]));
    }
    let in_place = {
        let count = |i: usize| shapes[i].iter().product::<usize>();
        let big = (0..f.nodes.len()).map(count).max().unwrap_or(0);
        let big_steps: Vec<&Vec<usize>> = steps
            .iter()
            .filter(|st| st.iter().any(|&i| count(i) == big))
            .collect();
        // Inlined nodes run inside their user's loop; every other big node must be a
        // member of the one loop, and so must every output.
        let all_in_loop = (0..f.nodes.len())
            .filter(|&i| count(i) == big && !inlined[i])
            .all(|i| big_steps.len() == 1 && big_steps[0].contains(&i));
        let fused_loop = big_steps
            .first()
            .is_some_and(|st| fusible(f, &f.nodes[st[0]]));
        let outputs_stored = f.outputs.iter().all(|o| {
            matches!(o, Value::Node(i) if big_steps.first().is_some_and(|st| st.contains(&(*i as usize))))
        });
        big_steps.len() == 1 && all_in_loop && fused_loop && outputs_stored
    };
    Ok(Program {
        instrs: prog,
        bodies,
        scratch,
        unshared,
        outputs,
        in_place,
    })
}

/// One IR function lowered into a module: its id and what the caller must know to run it.
pub(crate) struct Lowered {
    pub id: FuncId,
    /// f32 elements of scratch memory it needs.
    pub scratch: usize,
    pub unshared: usize,
    pub outputs: Vec<(DType, Vec<usize>)>,
    pub in_place: bool,
    pub clif: Option<String>,
}

/// Lowers `f`, specialized to `dims`, into `module` as the function `name` with the entry
/// signature `(inputs, params, outputs, scratch)`, each an array of pointers except the
/// scratch arena.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lower_into<M: Module>(
    module: &mut M,
    helpers: &Helpers,
    has_fma: bool,
    f: &Func,
    dims: &HashMap<String, usize>,
    name: &str,
    linkage: Linkage,
    descs: &mut Descs,
) -> Result<Lowered, String> {
    let prog = program(f, dims)?;
    lower_program(module, helpers, has_fma, f, &prog, name, linkage, descs)
}

/// Lowers a planned function, and first each of its loop bodies (as local functions
/// `{name}_loop{k}`, whose CLIF follows its own in text).
#[allow(clippy::too_many_arguments)]
fn lower_program<M: Module>(
    module: &mut M,
    helpers: &Helpers,
    has_fma: bool,
    f: &Func,
    prog: &Program,
    name: &str,
    linkage: Linkage,
    descs: &mut Descs,
) -> Result<Lowered, String> {
    let mut bodies = Vec::new();
    let mut body_text = String::new();
    for (k, (bf, bp)) in prog.bodies.iter().enumerate() {
        let bname = format!("{name}_loop{k}");
        let l = lower_program(
            module,
            helpers,
            has_fma,
            bf,
            bp,
            &bname,
            Linkage::Local,
            descs,
        )?;
        if let Some(t) = l.clif {
            body_text.push('\n');
            body_text.push_str(&t);
        }
        bodies.push(l.id);
    }
    let text = matches!(descs, Descs::Numbered(_));
    let ptr = types::I64;
    let mut sig: Signature = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(ptr));
    }
    let id = module
        .declare_function(name, linkage, &sig)
        .map_err(|e| e.to_string())?;
    let mut ctx = Context::new();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();

    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let [ins, pars, outs, scr] = [0, 1, 2, 3].map(|k| b.block_params(entry)[k]);
        let out_ptrs: Vec<_> = (0..f.outputs.len())
            .map(|k| {
                b.ins()
                    .load(ptr, MemFlagsData::new().with_notrap(), outs, (8 * k) as i32)
            })
            .collect();
        let flags = MemFlagsData::new().with_notrap();
        let in_ptrs: Vec<_> = (0..f.inputs.len())
            .map(|i| b.ins().load(ptr, flags, ins, (8 * i) as i32))
            .collect();
        let par_ptrs: Vec<_> = (0..f.params.len())
            .map(|i| b.ins().load(ptr, flags, pars, (8 * i) as i32))
            .collect();
        let refs: Vec<_> = helpers
            .0
            .iter()
            .map(|&h| module.declare_func_in_func(h, b.func))
            .collect();
        let body_refs: Vec<_> = bodies
            .iter()
            .map(|&id| module.declare_func_in_func(id, b.func))
            .collect();

        let addr = |b: &mut FunctionBuilder, l: Loc| match l {
            Loc::Input(i) => in_ptrs[i],
            Loc::Param(i) => par_ptrs[i],
            Loc::Scratch(o) => b.ins().iadd_imm_s(scr, (o * 4) as i64),
            Loc::Output(k) => out_ptrs[k],
        };
        // Descriptors are baked in as addresses; in printed CLIF, as their index, so the
        // text does not change from run to run; in objects, as read-only data.
        let mut desc_ptr = |b: &mut FunctionBuilder, d: Vec<i64>| -> Result<_, String> {
            Ok(match descs {
                Descs::Addresses(v) => {
                    let boxed = d.into_boxed_slice();
                    let p = boxed.as_ptr() as i64;
                    v.push(boxed);
                    b.ins().iconst(ptr, p)
                }
                Descs::Numbered(v) => {
                    let p = v.len() as i64;
                    v.push(d.into_boxed_slice());
                    b.ins().iconst(ptr, p)
                }
                Descs::Data => {
                    let id = module
                        .declare_anonymous_data(false, false)
                        .map_err(|e| e.to_string())?;
                    let mut data = cranelift_module::DataDescription::new();
                    data.define(d.iter().flat_map(|v| v.to_le_bytes()).collect());
                    data.set_align(8);
                    module.define_data(id, &data).map_err(|e| e.to_string())?;
                    let gv = module.declare_data_in_func(id, b.func);
                    b.ins().symbol_value(ptr, gv)
                }
            })
        };

        for instr in &prog.instrs {
            match instr {
                Instr::Call(k, args) => {
                    let mut vals = Vec::with_capacity(args.len());
                    for a in args {
                        vals.push(match a {
                            Arg::Loc(l) => addr(&mut b, *l),
                            Arg::Imm(v) => b.ins().iconst(ptr, *v),
                            Arg::Desc(d) => desc_ptr(&mut b, d.clone())?,
                            Arg::Ptrs(ls) => {
                                let slot = b.create_sized_stack_slot(StackSlotData::new(
                                    StackSlotKind::ExplicitSlot,
                                    (8 * ls.len()) as u32,
                                    3,
                                ));
                                for (j, &l) in ls.iter().enumerate() {
                                    let a = addr(&mut b, l);
                                    b.ins().stack_store(ptr, a, slot, (8 * j) as i32);
                                }
                                b.ins().stack_addr(ptr, slot, 0)
                            }
                            Arg::Body(k) => b.ins().func_addr(ptr, body_refs[*k]),
                        });
                    }
                    let h = refs[*k as usize];
                    b.ins().call(h, &vals);
                }
                Instr::Loop(spec) => {
                    let tree = Tree {
                        order: spec.order.clone(),
                        leaves: spec
                            .leaves
                            .iter()
                            .map(|&(v, l)| (v, addr(&mut b, l)))
                            .collect(),
                        scalars: spec
                            .scalars
                            .iter()
                            .map(|&(j, l)| (j, addr(&mut b, l)))
                            .collect(),
                        stores: spec
                            .stores
                            .iter()
                            .map(|&(m, l)| (m, addr(&mut b, l)))
                            .collect(),
                        members: spec.members.clone(),
                    };
                    fused_loop(&mut b, f, &tree, spec.count, has_fma)?;
                }
            }
        }
        b.ins().return_(&[]);
        b.finalize(module.target_config());
        let clif = text.then(|| ctx.func.display().to_string() + &body_text);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("{e:?}"))?;
        module.clear_context(&mut ctx);
        Ok(Lowered {
            id,
            scratch: prog.scratch,
            unshared: prog.unshared,
            outputs: prog.outputs.clone(),
            in_place: prog.in_place,
            clif,
        })
    }
}

/// One value of an elementwise op, on vectors (`ty` = F32X4) or scalars (F32).
/// A fused elementwise expression: the root node and the inlined nodes under it, in an
/// order where operands come first, and what its leaves read.
struct Tree {
    /// Inlined nodes (operands before users), the root last.
    order: Vec<usize>,
    /// Values read from memory, one element per index, with their base addresses.
    leaves: Vec<(Value, cranelift_codegen::ir::Value)>,
    /// Scalars broadcast to every element (a `broadcast` of a rank-0 value), with the
    /// address of the scalar.
    scalars: Vec<(usize, cranelift_codegen::ir::Value)>,
    /// The nodes the loop stores, with their buffers.
    stores: Vec<(usize, cranelift_codegen::ir::Value)>,
    /// The step's nodes (read in registers by later members, also through aliases).
    members: Vec<usize>,
}

/// The member of `step` whose buffer `v` reads (through aliases), if any.
pub(crate) fn member_of(f: &Func, mut v: Value, step: &[usize]) -> Option<usize> {
    loop {
        match v {
            Value::Node(i) if step.contains(&(i as usize)) => return Some(i as usize),
            Value::Node(i) if f.nodes[i as usize].op.info().lowering == Lowering::Alias => {
                let nd = &f.nodes[i as usize];
                if nd.op == Op::Cast
                    && f.ty(nd.args[0]).dtype.is_float()
                    && nd.ty.dtype == DType::I32
                {
                    return None;
                }
                v = nd.args[0];
            }
            _ => return None,
        }
    }
}

/// `dst[i] = tree(i)` for `i < count`: one f32x4 loop with a scalar tail, every inlined
/// node computed in registers.
/// Emits one loop computing `tree` over `count` elements, f32x4 then a scalar tail. With
/// `fma` (the ISA reports it), `a * b + c` and `a * b - c` computed in the loop become one
/// fused multiply-add (one rounding instead of two; the unused product is dead code).
fn fused_loop(
    b: &mut FunctionBuilder,
    f: &Func,
    tree: &Tree,
    count: usize,
    fma: bool,
) -> Result<(), String> {
    let flags = MemFlagsData::new().with_notrap();
    // Loop-invariant values, computed once before the loop: constants and broadcast
    // scalars, as scalars and as vectors.
    let mut invariant: HashMap<
        usize,
        (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value),
    > = HashMap::new();
    for &j in &tree.order {
        let n = &f.nodes[j];
        let scalar = match (n.op, &n.attr) {
            (Op::Const, Attr::Value(v)) => Some(b.ins().f32const(*v as f32)),
            // Not a broadcast of a value this loop computes (read in the loop instead).
            (Op::Broadcast, _) if member_of(f, n.args[0], &tree.members).is_none() => tree
                .scalars
                .iter()
                .find(|(k, _)| *k == j)
                .map(|&(_, addr)| b.ins().load(types::F32, flags, addr, 0)),
            _ => None,
        };
        if let Some(s) = scalar {
            let v = b.ins().splat(types::F32X4, s);
            invariant.insert(j, (s, v));
        }
    }
    let body = |b: &mut FunctionBuilder, off: cranelift_codegen::ir::Value, ty: types::Type| {
        let vector = ty.is_vector();
        let mut memo: HashMap<Value, cranelift_codegen::ir::Value> = HashMap::new();
        for &(v, base) in &tree.leaves {
            let p = b.ins().iadd(base, off);
            memo.insert(v, b.ins().load(ty, flags, p, 0));
        }
        for &j in &tree.order {
            let n = &f.nodes[j];
            let y = match invariant.get(&j) {
                Some(&(s, v)) => {
                    if vector {
                        v
                    } else {
                        s
                    }
                }
                None => {
                    let get = |memo: &HashMap<Value, cranelift_codegen::ir::Value>, a: Value| {
                        match memo.get(&a) {
                            Some(&v) => v,
                            // An earlier member of this loop, read through an alias.
                            None => {
                                let m = member_of(f, a, &tree.members).expect("a leaf or a member");
                                memo[&Value::Node(m as u32)]
                            }
                        }
                    };
                    let xs: Vec<_> = n.args.iter().map(|&a| get(&memo, a)).collect();
                    // A product computed in this loop, as its two factors.
                    let product = |k: usize| match n.args[k] {
                        Value::Node(m)
                            if f.nodes[m as usize].op == Op::Mul
                                && tree.order.contains(&(m as usize))
                                && !invariant.contains_key(&(m as usize)) =>
                        {
                            let a = &f.nodes[m as usize].args;
                            Some((get(&memo, a[0]), get(&memo, a[1])))
                        }
                        _ => None,
                    };
                    match (
                        fma,
                        n.op,
                        product(0),
                        n.args.get(1).and_then(|_| product(1)),
                    ) {
                        (true, Op::Add, Some((p, q)), _) => b.ins().fma(p, q, xs[1]),
                        (true, Op::Add, None, Some((p, q))) => b.ins().fma(p, q, xs[0]),
                        (true, Op::Sub, Some((p, q)), _) => {
                            let c = b.ins().fneg(xs[1]);
                            b.ins().fma(p, q, c)
                        }
                        (true, Op::Sub, None, Some((p, q))) => {
                            let p = b.ins().fneg(p);
                            b.ins().fma(p, q, xs[0])
                        }
                        _ => emit::compute(&mut Clif { b: &mut *b, ty }, n.op, &xs)?,
                    }
                }
            };
            memo.insert(Value::Node(j as u32), y);
        }
        let flags = MemFlagsData::new().with_notrap();
        for &(m, dst) in &tree.stores {
            let p = b.ins().iadd(dst, off);
            b.ins().store(flags, memo[&Value::Node(m as u32)], p, 0);
        }
        Ok::<(), String>(())
    };
    let vec_end = (count / 4 * 4) as i64;
    if vec_end > 0 {
        let header = b.create_block();
        let body_block = b.create_block();
        let exit = b.create_block();
        b.append_block_param(header, types::I64);
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(header, &[zero.into()]);
        b.switch_to_block(header);
        let i = b.block_params(header)[0];
        let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, i, vec_end);
        b.ins().brif(more, body_block, &[], exit, &[]);
        b.switch_to_block(body_block);
        b.seal_block(body_block);
        let off = b.ins().ishl_imm_u(i, 2);
        body(b, off, types::F32X4)?;
        let next = b.ins().iadd_imm_s(i, 4);
        b.ins().jump(header, &[next.into()]);
        b.seal_block(header);
        b.switch_to_block(exit);
        b.seal_block(exit);
    }
    for j in vec_end as usize..count {
        let off = b.ins().iconst(types::I64, (4 * j) as i64);
        body(b, off, types::F32)?;
    }
    Ok(())
}

// ---- the elementwise emitter's instructions in CLIF, on f32x4 or f32 ----

type V = cranelift_codegen::ir::Value;

/// Cranelift's `Lanes`: values of type `ty` (f32x4 in a loop's body, f32 in its tail).
struct Clif<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ty: types::Type,
}

impl Clif<'_, '_> {
    fn int_ty(&self) -> types::Type {
        if self.ty.is_vector() {
            types::I32X4
        } else {
            types::I32
        }
    }
}

impl emit::Lanes for Clif<'_, '_> {
    type F = V;
    type I = V;
    type M = V;

    fn konst(&mut self, v: f32) -> emit::R<V> {
        let s = self.b.ins().f32const(v);
        Ok(if self.ty.is_vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        })
    }
    fn iconst(&mut self, v: i32) -> emit::R<V> {
        let s = self.b.ins().iconst(types::I32, v as i64);
        Ok(if self.ty.is_vector() {
            let ity = self.int_ty();
            self.b.ins().splat(ity, s)
        } else {
            s
        })
    }
    fn add(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fadd(x, y))
    }
    fn sub(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fsub(x, y))
    }
    fn mul(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fmul(x, y))
    }
    fn div(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fdiv(x, y))
    }
    fn neg(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fneg(x))
    }
    fn abs(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fabs(x))
    }
    fn sqrt(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().sqrt(x))
    }
    fn cmp(&mut self, c: emit::Cmp, x: V, y: V) -> emit::R<V> {
        let cc = match c {
            emit::Cmp::Lt => FloatCC::LessThan,
            emit::Cmp::Le => FloatCC::LessThanOrEqual,
            emit::Cmp::Gt => FloatCC::GreaterThan,
            emit::Cmp::Ge => FloatCC::GreaterThanOrEqual,
            emit::Cmp::Eq => FloatCC::Equal,
            emit::Cmp::Ne => FloatCC::NotEqual,
            emit::Cmp::Unordered => FloatCC::Unordered,
        };
        Ok(self.b.ins().fcmp(cc, x, y))
    }
    fn select(&mut self, m: V, x: V, y: V) -> emit::R<V> {
        Ok(if self.ty.is_vector() {
            let m = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().select(m, x, y)
        })
    }
    fn indicator(&mut self, m: V) -> emit::R<V> {
        if self.ty.is_vector() {
            // The mask's lanes are all ones or all zeros: and-ing them with 1.0 is one
            // instruction.
            let mf = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            let one = self.konst(1.0)?;
            Ok(self.b.ins().band(mf, one))
        } else {
            let one = self.konst(1.0)?;
            let zero = self.konst(0.0)?;
            Ok(self.b.ins().select(m, one, zero))
        }
    }
    fn bits(&mut self, x: V) -> emit::R<V> {
        let ity = self.int_ty();
        Ok(self.b.ins().bitcast(ity, MemFlagsData::new(), x))
    }
    fn float_bits(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().bitcast(self.ty, MemFlagsData::new(), x))
    }
    fn int_to_float(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fcvt_from_sint(self.ty, x))
    }
    fn iadd(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().iadd(x, y))
    }
    fn isub(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().isub(x, y))
    }
    fn and(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().band(x, y))
    }
    fn or(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().bor(x, y))
    }
    fn shl(&mut self, x: V, by: u32) -> emit::R<V> {
        Ok(self.b.ins().ishl_imm_u(x, i64::from(by)))
    }
    fn ushr(&mut self, x: V, by: u32) -> emit::R<V> {
        Ok(self.b.ins().ushr_imm_u(x, i64::from(by)))
    }
}
