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
    states: Vec<Vec<f32>>,
    w_next: Vec<f32>,
    states_next: Vec<Vec<f32>>,
    scratch: Vec<f32>,
    inputs: Vec<Vec<f32>>,
}

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
            // Allocated on the first update that cannot run in place.
            w_next: Vec::new(),
            states_next: Vec::new(),
            states: st,
            w,
            scratch: Vec::new(),
            inputs: Vec::new(),
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

    /// Applies the update rule to every parameter at once.
    pub fn apply(&mut self, lr: f64, step: f64) -> Result<(), nnc_jit::Error> {
        let dims = HashMap::from([("N".to_string(), self.w.len())]);
        let update = self
            .update
            .as_ref()
            .ok_or_else(|| nnc_jit::Error::Input("the model has no update rule".into()))?;
        let kernel = self.jit.kernel(update, &dims)?;
        let (lr, step) = ([lr as f32], [step as f32]);
        let ins = [self.w.as_ptr(), self.g.as_ptr(), lr.as_ptr(), step.as_ptr()];
        let ps: Vec<*const f32> = self.states.iter().map(|s| s.as_ptr()).collect();
        if kernel.in_place_safe() {
            // One pass that reads w, g and the states at an index before writing w' and
            // the states' there: update in place (4 arrays in the cache instead of 7).
            let mut outs = vec![self.w.as_mut_ptr()];
            outs.extend(self.states.iter_mut().map(|s| s.as_mut_ptr()));
            unsafe { kernel.run_raw(&ins, &ps, &outs, &mut self.scratch) }?;
            return Ok(());
        }
        let n = self.w.len();
        self.w_next.resize(n, 0.0);
        self.states_next.resize(self.states.len(), Vec::new());
        self.states_next.iter_mut().for_each(|s| s.resize(n, 0.0));
        let mut outs = vec![self.w_next.as_mut_ptr()];
        outs.extend(self.states_next.iter_mut().map(|s| s.as_mut_ptr()));
        unsafe { kernel.run_raw(&ins, &ps, &outs, &mut self.scratch) }?;
        std::mem::swap(&mut self.w, &mut self.w_next);
        std::mem::swap(&mut self.states, &mut self.states_next);
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
