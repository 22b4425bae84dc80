//! The fused training step: every parameter lives in one contiguous f32 arena, with its
//! gradient and each optimizer state in arenas of the same layout, so one call of the
//! gradient kernel writes every gradient in place and one call of the update kernel
//! (the rule compiled for `N` = all parameters) updates them all. Nothing is converted or
//! allocated per step but the output the caller asked for. Buffers (batch norm's running
//! statistics) live beside the arena: the gradient kernel writes their new values, and
//! the update kernel never sees them.

use std::collections::HashMap;

use nnc_ir::{Func, ParamKind};
use nnc_runtime::Tensor;

use nnc_jit::Jit;

/// Parameters, gradients and optimizer states in arenas, and the kernels over them.
pub struct FusedStep {
    jit: Jit,
    grad: Option<Func>,
    update: Option<Func>,
    /// Where each parameter lives: (trained, start, length), in the parameter arena `w`
    /// for trained ones, in `buf` for buffers.
    slots: Vec<(bool, usize, usize)>,
    buf: Vec<f32>,
    buf_next: Vec<f32>,
    shapes: Vec<Vec<usize>>,
    w: Vec<f32>,
    g: Vec<f32>,
    /// Where the sum over ranks of `g` (and the buffers) lands in a data-parallel step
    /// (`exchange`); empty in a job of one process.
    g_sum: Vec<f32>,
    states: Vec<Vec<f32>>,
    w_next: Vec<f32>,
    states_next: Vec<Vec<f32>>,
    scratch: Vec<f32>,
    inputs: Vec<Vec<f32>>,
    /// Pieces the gradient step splits its batch into, one per thread (1: not split);
    /// set by the engine when the loss allows it (`nnc_compiler::rows::batch_mean`).
    pub split: usize,
    /// Each piece's gradient arena and scratch after the first (which uses the step's own).
    pieces: Vec<Piece>,
    /// Whether a step of this many rows pays to split (`SPLIT_MIN_FLOPS`), decided once
    /// per batch size rather than by walking the graph every step.
    pays: HashMap<usize, bool>,
}

/// The gradient arena and scratch of one piece of a split batch after the first.
#[derive(Default)]
struct Piece {
    g: Vec<f32>,
    scratch: Vec<f32>,
}

/// A piece's pointers, handed to the thread that computes it.
struct Job {
    ins: Vec<*const f32>,
    params: Vec<*const f32>,
    outs: Vec<*mut f32>,
    scratch: *mut Vec<f32>,
}

// SAFETY: each job's pointers address buffers no other job touches (its own inputs,
// outputs, gradients and scratch) or that every job only reads (the parameters).
unsafe impl Send for Job {}

/// Runs each job with its kernel, the first on this thread and the others on rayon's pool
/// (threads that persist: spawning one per step measured 5-15% slower), each with its
/// matrix products on its own thread only; the first error, in job order.
fn run_jobs(mut jobs: Vec<(Job, &nnc_jit::Kernel)>) -> Result<(), nnc_jit::Error> {
    let run = |(job, kernel): (Job, &nnc_jit::Kernel)| -> Result<(), nnc_jit::Error> {
        nnc_jit::kernels::serial(|| {
            // The job's buffers are its own (see `Job`).
            let scratch = unsafe { &mut *job.scratch };
            unsafe { kernel.run_raw(&job.ins, &job.params, &job.outs, scratch) }
        })
    };
    if jobs.len() <= 1 {
        return jobs.pop().map_or(Ok(()), run);
    }
    let first = jobs.remove(0);
    let rest: Vec<std::sync::Mutex<Option<Result<(), nnc_jit::Error>>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let mut result = Ok(());
    // `in_place_scope`: this thread runs the first job itself rather than handing the
    // scope to the pool.
    rayon::in_place_scope(|scope| {
        let run = &run;
        for (job, slot) in jobs.into_iter().zip(&rest) {
            scope.spawn(move |_| {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(run(job));
            });
        }
        result = run(first);
    });
    result?;
    for slot in rest {
        let r = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        r.unwrap_or_else(|| Err(nnc_jit::Error::Codegen("a piece did not run".into())))?;
    }
    Ok(())
}

/// Whether `f` computes each element from the same element of its operands (and scalars):
/// an optimizer rule that may run on ranges of the parameters separately.
fn elementwise(f: &Func) -> bool {
    f.nodes.iter().all(|n| {
        matches!(
            n.op.info().class,
            nnc_ir::Class::Unary
                | nnc_ir::Class::Binary
                | nnc_ir::Class::Compare
                | nnc_ir::Class::Select
        ) || matches!(
            n.op,
            nnc_ir::Op::Const | nnc_ir::Op::Cast | nnc_ir::Op::Reshape
        ) || (n.op == nnc_ir::Op::Broadcast
            && n.args
                .iter()
                .all(|&a| f.ty(a).shape.dims().iter().all(|d| d.known() == Some(1))))
    })
}

/// Below this many parameters the update is not split over threads.
const SPLIT_MIN_UPDATE: usize = 1 << 16;

/// Matrix-product work (multiply-adds x 2) of one call of `f` at these sizes: what decides
/// whether splitting the batch over threads pays.
pub fn matmul_flops(f: &Func, dims: &HashMap<String, usize>) -> f64 {
    let size = |t: &nnc_ir::TensorType| -> Vec<f64> {
        t.shape
            .dims()
            .iter()
            .map(|d| match d {
                nnc_ir::Dim::Known(n) => *n as f64,
                nnc_ir::Dim::Sym(s) => dims.get(s).copied().unwrap_or(1) as f64,
            })
            .collect()
    };
    let mut flops = 0.0;
    let visit = |g: &Func, times: f64, flops: &mut f64| {
        for n in &g.nodes {
            if n.op == nnc_ir::Op::MatMul {
                let out: f64 = size(&n.ty).iter().product();
                let a = size(g.ty(n.args[0]));
                *flops += 2.0 * out * a.last().copied().unwrap_or(1.0) * times;
            }
        }
    };
    visit(f, 1.0, &mut flops);
    // A scan's body runs once per step.
    for n in &f.nodes {
        if let nnc_ir::Attr::Loop(l) = &n.attr {
            let steps = n
                .args
                .get(l.carries)
                .map_or(1.0, |&s| size(f.ty(s)).first().copied().unwrap_or(1.0));
            visit(&l.body, steps, &mut flops);
        }
    }
    flops
}

/// Below this much matrix-product work per step, the batch is not split: handing pieces to
/// threads and summing their gradients would cost more than it saves (measured on this
/// machine: the digits MLP's step, 1.2 MFLOP, ran slower split; mlp784's, 200 MFLOP, faster).
pub const SPLIT_MIN_FLOPS: f64 = 20e6;

impl std::fmt::Debug for FusedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FusedStep {{ {} parameters, {} values }}",
            self.slots.len(),
            self.w.len()
        )
    }
}

impl FusedStep {
    /// Bytes the training step holds: the parameter, gradient, optimizer-state and buffer
    /// arenas (with the update's second copies), the kernels' scratch arena (the
    /// activations the backward reads, and temporaries) and the input batch in f32.
    pub fn held_bytes(&self) -> usize {
        let floats = self.w.len()
            + self.g.len()
            + self.g_sum.len()
            + self.w_next.len()
            + self.buf.len()
            + self.buf_next.len()
            + self.states.iter().map(Vec::len).sum::<usize>()
            + self.states_next.iter().map(Vec::len).sum::<usize>()
            + self.scratch.capacity()
            + self.inputs.iter().map(Vec::len).sum::<usize>();
        4 * floats
    }

    /// Lays out `params` (with their optimizer `states`, one list per parameter) in arenas.
    /// `grad` returns the loss, the output and one gradient per parameter; `update` is the
    /// rule over one flat `f32[N]` parameter.
    pub fn new(
        grad: Option<&Func>,
        update: Option<&Func>,
        params: &[Tensor],
        states: &[Vec<Tensor>],
        codegen: nnc_jit::Codegen,
    ) -> Result<FusedStep, nnc_jit::Error> {
        let mut slots = Vec::new();
        let (mut w, mut buf) = (Vec::new(), Vec::new());
        for (i, p) in params.iter().enumerate() {
            let trained = grad.is_none_or(|g| g.params[i].kind == ParamKind::Param);
            let arena = if trained { &mut w } else { &mut buf };
            slots.push((trained, arena.len(), p.len()));
            arena.extend(p.data.iter().map(|&v| v as f32));
        }
        let n_states = update
            .map_or(&[][..], |u| u.params.as_slice())
            .iter()
            .filter(|p| p.kind == ParamKind::State)
            .count();
        let mut st = vec![Vec::with_capacity(w.len()); n_states];
        for per_param in states {
            for (k, t) in per_param.iter().enumerate() {
                st[k].extend(t.data.iter().map(|&v| v as f32));
            }
        }
        if st.iter().any(|s| s.len() != w.len()) {
            return Err(nnc_jit::Error::Input(
                "optimizer states do not match the parameters".into(),
            ));
        }
        let n = w.len();
        Ok(FusedStep {
            jit: Jit::with_codegen(codegen),
            grad: grad.cloned(),
            update: update.cloned(),
            slots,
            buf_next: buf.clone(),
            buf,
            shapes: params.iter().map(|p| p.shape.clone()).collect(),
            g: vec![0.0; n],
            g_sum: Vec::new(),
            // Allocated on the first update that cannot run in place.
            w_next: Vec::new(),
            states_next: Vec::new(),
            states: st,
            w,
            scratch: Vec::new(),
            inputs: Vec::new(),
            split: 1,
            pieces: Vec::new(),
            pays: HashMap::new(),
        })
    }

    /// Time spent compiling kernels so far.
    pub fn compile_time(&self) -> std::time::Duration {
        self.jit.compile_time
    }

    /// Runs the gradient kernel on a batch: gradients land in the gradient arena. Returns
    /// the loss and the model's output.
    pub fn gradients(&mut self, inputs: &[Tensor]) -> Result<(f64, Tensor), nnc_jit::Error> {
        let grad = self
            .grad
            .as_ref()
            .ok_or_else(|| nnc_jit::Error::Input("the model has no gradient function".into()))?;
        let dims = load_inputs(&mut self.inputs, &grad.inputs, inputs)?;
        if self.split > 1 && self.buf.is_empty() {
            // Lent out while the pieces run, to borrow the arenas beside it.
            let g = self.grad.take().expect("checked above");
            let r = self.gradients_split(&g, &dims);
            self.grad = Some(g);
            if let Some(r) = r? {
                return Ok(r);
            }
        }
        let grad = self.grad.as_ref().expect("checked above");
        let ps = self.param_ptrs();
        let kernel = self.jit.kernel(grad, &dims)?;
        let (out_dtype, out_shape) = kernel.output_types()[nnc_ir::Outputs::OUTPUT].clone();
        let mut loss = [0.0f32];
        let mut output = vec![0.0f32; out_shape.iter().product()];
        let ins: Vec<*const f32> = self.inputs.iter().map(|v| v.as_ptr()).collect();
        let mut outs: Vec<*mut f32> = vec![loss.as_mut_ptr(), output.as_mut_ptr()];
        // The buffers' new values, then each gradient: exactly its parameter's span of the
        // gradient arena.
        // A buffer the step changes gets its new value in `buf_next`, copied back after
        // the kernel (its old value may be read until the end); one it leaves unchanged
        // (an output that is the parameter itself: feedback alignment's fixed matrices) is
        // "written" over itself, which the copy kernel skips.
        let (b, b_next) = (self.buf.as_mut_ptr(), self.buf_next.as_mut_ptr());
        let first = nnc_ir::Outputs { buffers: 0 }.buffer(0);
        let buffers: Vec<(usize, usize, bool)> = (self.slots.iter().enumerate())
            .filter(|(_, s)| !s.0)
            .enumerate()
            .map(|(k, (i, &(_, s, len)))| {
                (
                    s,
                    len,
                    grad.outputs[first + k] == nnc_ir::Value::Param(i as u32),
                )
            })
            .collect();
        outs.extend(
            buffers
                .iter()
                .map(|&(s, _, same)| unsafe { if same { b.add(s) } else { b_next.add(s) } }),
        );
        let g = self.g.as_mut_ptr();
        outs.extend(trained(&self.slots).map(|(s, _)| unsafe { g.add(s) }));
        unsafe { kernel.run_raw(&ins, &ps, &outs, &mut self.scratch) }?;
        for &(s, len, same) in &buffers {
            if !same {
                self.buf[s..s + len].copy_from_slice(&self.buf_next[s..s + len]);
            }
        }
        Ok((
            f64::from(loss[0]),
            Tensor::new(
                out_dtype,
                out_shape,
                output.into_iter().map(f64::from).collect(),
            ),
        ))
    }

    /// The gradient step with the batch split into `split` equal pieces, each computed on
    /// its own thread by the kernel compiled for a piece's rows, reading its rows of the
    /// inputs in place and writing its rows of the output in place; the first piece's
    /// gradients land in the arena, the others' in their own, and the arena becomes their
    /// average (in piece order, so a given thread count gives the same bits every run), as
    /// does the loss. `None` when the batch does not split evenly or the step is too small
    /// to pay (`SPLIT_MIN_FLOPS`).
    fn gradients_split(
        &mut self,
        grad: &Func,
        dims: &HashMap<String, usize>,
    ) -> Result<Option<(f64, Tensor)>, nnc_jit::Error> {
        let k = self.split;
        // The batch is the first input's leading symbolic dimension.
        let Some(nnc_ir::Dim::Sym(b)) = grad.inputs.first().and_then(|a| a.ty.shape.dims().first())
        else {
            return Ok(None);
        };
        let rows = dims.get(b).copied().unwrap_or(0);
        let pays = *self
            .pays
            .entry(rows)
            .or_insert_with(|| matmul_flops(grad, dims) >= SPLIT_MIN_FLOPS);
        if rows % k != 0 || rows < k || !pays {
            return Ok(None);
        }
        let per = rows / k;
        let mut piece_dims = dims.clone();
        piece_dims.insert(b.clone(), per);
        let ps = self.param_ptrs();
        let n = self.g.len();
        let kernel = self.jit.kernel(grad, &piece_dims)?;
        let (out_dtype, out_shape) = kernel.output_types()[nnc_ir::Outputs::OUTPUT].clone();
        let out_len: usize = out_shape.iter().product();
        let mut output = vec![0.0f32; out_len * k];
        let mut losses = vec![0.0f32; k];
        if self.pieces.len() < k - 1 {
            self.pieces.resize_with(k - 1, Piece::default);
        }
        let spans: Vec<(usize, usize)> = trained(&self.slots).collect();
        let batched: Vec<bool> = grad
            .inputs
            .iter()
            .map(|a| matches!(a.ty.shape.dims().first(), Some(nnc_ir::Dim::Sym(s)) if s == b))
            .collect();
        let mut jobs = Vec::with_capacity(k);
        let (g0, s0) = (self.g.as_mut_ptr(), &mut self.scratch as *mut Vec<f32>);
        let mut arenas: Vec<(*mut f32, *mut Vec<f32>)> = vec![(g0, s0)];
        for p in &mut self.pieces {
            p.g.resize(n, 0.0);
            arenas.push((p.g.as_mut_ptr(), &mut p.scratch as *mut Vec<f32>));
        }
        for (j, &(g, scratch)) in arenas.iter().enumerate() {
            let ins = self
                .inputs
                .iter()
                .zip(&batched)
                .map(|(v, &rows_first)| {
                    let w = v.len() / rows;
                    if rows_first {
                        v[j * per * w..].as_ptr()
                    } else {
                        v.as_ptr()
                    }
                })
                .collect();
            let mut outs: Vec<*mut f32> = vec![
                &mut losses[j] as *mut f32,
                output[j * out_len..].as_mut_ptr(),
            ];
            outs.extend(spans.iter().map(|&(s, _)| unsafe { g.add(s) }));
            jobs.push(Job {
                ins,
                params: ps.clone(),
                outs,
                scratch,
            });
        }
        run_jobs(jobs.into_iter().map(|j| (j, kernel)).collect())?;
        // The average, in piece order.
        let scale = 1.0 / k as f32;
        for p in &self.pieces {
            for (a, &b) in self.g.iter_mut().zip(&p.g) {
                *a += b;
            }
        }
        self.g.iter_mut().for_each(|a| *a *= scale);
        let loss = losses.iter().sum::<f32>() * scale;
        let mut shape = out_shape;
        if let Some(first) = shape.first_mut() {
            *first *= k;
        }
        let output = output.into_iter().map(f64::from).collect();
        Ok(Some((
            f64::from(loss),
            Tensor::new(out_dtype, shape, output),
        )))
    }

    /// A data-parallel step's exchange: the gradient arena then the buffers' values, with
    /// `tail` more slots, as `send` to `f`, which writes their sum over the ranks into
    /// `recv`; the gradients and buffers become that sum's (no copy: the arenas swap).
    /// Returns the sum's tail.
    pub fn exchange(&mut self, tail: usize, f: &mut dyn FnMut(&mut [f32], &mut [f32])) -> Vec<f32> {
        let (p, nb) = (self.g.len(), self.buf.len());
        self.g.extend_from_slice(&self.buf);
        self.g.resize(p + nb + tail, 0.0);
        self.g_sum.resize(p + nb + tail, 0.0);
        f(&mut self.g, &mut self.g_sum);
        std::mem::swap(&mut self.g, &mut self.g_sum);
        self.buf.copy_from_slice(&self.g[p..p + nb]);
        let rest = self.g[p + nb..].to_vec();
        self.g.truncate(p);
        rest
    }

    /// Zero gradients, as from a step over no rows (a rank's empty shard of a small last
    /// batch).
    pub fn zero_gradients(&mut self) {
        self.g.fill(0.0);
    }

    /// Runs a function whose parameters are the arena's (the forward pass, the loss) on
    /// inputs, without converting the parameters.
    pub fn run(&mut self, f: &Func, inputs: &[Tensor]) -> Result<Vec<Tensor>, nnc_jit::Error> {
        if f.params.len() != self.slots.len() || inputs.len() != f.inputs.len() {
            return Err(nnc_jit::Error::Input(format!(
                "`@{}` does not take this model's parameters and inputs",
                f.name
            )));
        }
        let dims = load_inputs(&mut self.inputs, &f.inputs, inputs)?;
        let ps = self.param_ptrs();
        let kernel = self.jit.kernel(f, &dims)?;
        let types = kernel.output_types().to_vec();
        let mut outs: Vec<Vec<f32>> = kernel.output_lens().iter().map(|&n| vec![0.0; n]).collect();
        let ins: Vec<*const f32> = self.inputs.iter().map(|v| v.as_ptr()).collect();
        let out_ptrs: Vec<*mut f32> = outs.iter_mut().map(|v| v.as_mut_ptr()).collect();
        // Fresh output buffers: they overlap nothing.
        unsafe { kernel.run_raw(&ins, &ps, &out_ptrs, &mut self.scratch) }?;
        Ok(outs
            .into_iter()
            .zip(types)
            .map(|(d, (dtype, shape))| {
                Tensor::new(dtype, shape, d.into_iter().map(f64::from).collect())
            })
            .collect())
    }

    /// Where each parameter of the model's functions is read from.
    fn param_ptrs(&self) -> Vec<*const f32> {
        (self.slots.iter())
            .map(|&(trained, s, _)| {
                if trained {
                    self.w[s..].as_ptr()
                } else {
                    self.buf[s..].as_ptr()
                }
            })
            .collect()
    }

    /// Each trained parameter's gradient, to perturb or clip before the update.
    pub fn grads_mut(&mut self) -> Vec<&mut [f32]> {
        let mut rest: &mut [f32] = &mut self.g;
        let mut out = Vec::new();
        for (_, len) in trained(&self.slots) {
            let (head, tail) = rest.split_at_mut(len);
            out.push(head);
            rest = tail;
        }
        out
    }

    /// Applies the update rule to every parameter at once; with the step split over
    /// threads and an elementwise rule (every rule but the norm-based ones), each thread
    /// updates its own range of the arenas.
    pub fn apply(&mut self, lr: f64, step: f64) -> Result<(), nnc_jit::Error> {
        let n = self.w.len();
        let update = self
            .update
            .take()
            .ok_or_else(|| nnc_jit::Error::Input("the model has no update rule".into()))?;
        let r = self.apply_with(&update, lr, step, n);
        self.update = Some(update);
        r
    }

    fn apply_with(
        &mut self,
        update: &Func,
        lr: f64,
        step: f64,
        n: usize,
    ) -> Result<(), nnc_jit::Error> {
        let k = if self.split > 1 && n >= SPLIT_MIN_UPDATE && elementwise(update) {
            self.split
        } else {
            1
        };
        // k ranges: k - 1 of `c` elements, the last the rest.
        let c = n / k;
        let ranges: Vec<(usize, usize)> = (0..k)
            .map(|j| (j * c, if j + 1 == k { n } else { (j + 1) * c }))
            .collect();
        let sizes = |len: usize| HashMap::from([("N".to_string(), len)]);
        for &(lo, hi) in &ranges {
            self.jit.kernel(update, &sizes(hi - lo))?;
        }
        let in_place = ranges.iter().all(|&(lo, hi)| {
            self.jit
                .cached(update, &sizes(hi - lo))
                .is_some_and(|kern| kern.in_place_safe())
        });
        if !in_place {
            self.w_next.resize(n, 0.0);
            self.states_next.resize(self.states.len(), Vec::new());
            self.states_next.iter_mut().for_each(|s| s.resize(n, 0.0));
        }
        if self.pieces.len() < k - 1 {
            self.pieces.resize_with(k - 1, Piece::default);
        }
        let (lr, step) = ([lr as f32], [step as f32]);
        let mut scratches: Vec<*mut Vec<f32>> = vec![&mut self.scratch as *mut Vec<f32>];
        scratches.extend(
            self.pieces
                .iter_mut()
                .map(|p| &mut p.scratch as *mut Vec<f32>),
        );
        let (w, g) = (self.w.as_mut_ptr(), self.g.as_ptr());
        let states: Vec<*mut f32> = self.states.iter_mut().map(|s| s.as_mut_ptr()).collect();
        let w_next = self.w_next.as_mut_ptr();
        let states_next: Vec<*mut f32> = self
            .states_next
            .iter_mut()
            .map(|s| s.as_mut_ptr())
            .collect();
        let mut jobs = Vec::with_capacity(k);
        for (&(lo, hi), &scratch) in ranges.iter().zip(&scratches) {
            let kernel = self
                .jit
                .cached(update, &sizes(hi - lo))
                .expect("compiled above");
            // The range's elements of every arena; lr and the step are scalars.
            let at = |p: *mut f32| unsafe { p.add(lo) };
            let ins = vec![
                at(w).cast_const(),
                unsafe { g.add(lo) },
                lr.as_ptr(),
                step.as_ptr(),
            ];
            let params = states.iter().map(|&s| at(s).cast_const()).collect();
            // In place: one pass reads w, g and the states at an index before writing w'
            // and the states' there (4 arrays in the cache instead of 7).
            let outs = if in_place {
                std::iter::once(at(w))
                    .chain(states.iter().map(|&s| at(s)))
                    .collect()
            } else {
                std::iter::once(at(w_next))
                    .chain(states_next.iter().map(|&s| at(s)))
                    .collect()
            };
            jobs.push((
                Job {
                    ins,
                    params,
                    outs,
                    scratch,
                },
                kernel,
            ));
        }
        run_jobs(jobs)?;
        if !in_place {
            std::mem::swap(&mut self.w, &mut self.w_next);
            std::mem::swap(&mut self.states, &mut self.states_next);
        }
        Ok(())
    }

    /// Copies the parameters out (into tensors of their shapes).
    pub fn write_params(&self, params: &mut [Tensor]) {
        for (t, &(trained, s, len)) in params.iter_mut().zip(&self.slots) {
            let arena = if trained { &self.w } else { &self.buf };
            t.data.clear();
            t.data
                .extend(arena[s..s + len].iter().map(|&v| f64::from(v)));
        }
    }

    /// The optimizer states, per parameter (flat tensors, as the rule sees them; none for
    /// buffers).
    pub fn states(&self) -> Vec<Vec<Tensor>> {
        self.slots
            .iter()
            .map(|&(trained, s, len)| {
                if !trained {
                    return Vec::new();
                }
                self.states
                    .iter()
                    .map(|st| {
                        Tensor::new(
                            nnc_ir::DType::F32,
                            vec![len],
                            st[s..s + len].iter().map(|&v| f64::from(v)).collect(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The parameters' shapes.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
}

/// The spans of the trained parameters in `w` (and in `g` and the state arenas).
fn trained(slots: &[(bool, usize, usize)]) -> impl Iterator<Item = (usize, usize)> + '_ {
    slots.iter().filter(|s| s.0).map(|&(_, s, len)| (s, len))
}

/// Checks the inputs, binds the symbolic sizes, and converts the inputs to f32 into reused
/// buffers.
fn load_inputs(
    bufs: &mut Vec<Vec<f32>>,
    args: &[nnc_ir::Arg],
    inputs: &[Tensor],
) -> Result<HashMap<String, usize>, nnc_jit::Error> {
    if args.len() != inputs.len() {
        return Err(nnc_jit::Error::Input(format!(
            "expected {} inputs, got {}",
            args.len(),
            inputs.len()
        )));
    }
    let declared = args.iter().map(|a| (a.name.as_str(), &a.ty));
    let dims = nnc_jit::bind_dims(declared, inputs.iter())?;
    bufs.resize(inputs.len(), Vec::new());
    for (buf, t) in bufs.iter_mut().zip(inputs) {
        buf.clear();
        buf.extend(t.data.iter().map(|&v| v as f32));
    }
    Ok(dims)
}
