//! What runs a session's functions, behind one trait: the reference interpreter, which
//! applies the optimizer rule per parameter with that parameter's states, and the JIT,
//! which keeps parameters, gradients and states in arenas (`FusedStep`) and applies the
//! rule once over all of them. The session owns the counters, the settings and the host
//! copies of the parameters; an engine may hold newer values (the JIT's arenas) until
//! `sync`.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nnc_ir::{DType, Func, ParamKind};
use nnc_runtime::{Rng, Tensor};

use crate::config::{Backend, TrainConfig};
use crate::fused::FusedStep;
use crate::session::{Model, TrainError};

/// What a step knows besides its inputs.
pub(crate) struct StepCtx<'a> {
    pub model: &'a Model,
    pub config: &'a TrainConfig,
    /// Steps taken before this one, and epochs completed.
    pub step: u64,
    pub epoch: u64,
    /// Steps in the whole run, for the schedule.
    pub total: u64,
}

impl StepCtx<'_> {
    fn lr(&self) -> f64 {
        let c = self.config;
        c.schedule.lr(c.lr, self.step, self.epoch, self.total)
    }

    pub(crate) fn diverged(&self, loss: f64) -> TrainError {
        TrainError::Diverged {
            step: self.step + 1,
            epoch: self.epoch + 1,
            batch: 0,
            loss,
            origin: None,
        }
    }
}

/// A session's engine.
pub(crate) trait Engine: std::fmt::Debug + Send {
    /// Evaluates `f` on inputs and parameter values.
    fn eval(
        &self,
        f: &Func,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>, TrainError>;

    /// One training step over `inputs` (the model's, the labels, the noise key): the
    /// gradients, noise and clipping, the update. Returns the loss, the output and the
    /// learning rate used. `params` and `states` are the session's host copies.
    fn step(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<(f64, Tensor, f64), TrainError> {
        let (loss, output) = self.gradients(cx, params, states, inputs)?;
        if !loss.is_finite() {
            return Err(cx.diverged(loss));
        }
        let lr = self.update(cx, params, states)?;
        Ok((loss, output, lr))
    }

    /// A step's first half: the gradients over `inputs`, which the engine holds until
    /// `update`; the buffers (batch norm's running statistics) take their new values.
    /// Returns the loss and the output.
    fn gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<(f64, Tensor), TrainError>;

    /// Zero gradients instead, as a step over no rows gives (a rank's empty shard).
    fn zero_gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
    ) -> Result<(), TrainError>;

    /// Hands the held gradients, then the buffers' values, then `tail` more slots, to `f`
    /// as `send`; `f` writes their sum over the ranks into `recv`, which the gradients and
    /// buffers become. Returns the sum's tail.
    fn exchange(
        &mut self,
        model: &Model,
        params: &mut [Tensor],
        tail: usize,
        f: &mut dyn FnMut(&mut [f32], &mut [f32]),
    ) -> Vec<f32>;

    /// A step's second half: noise and clipping of the held gradients, then the rule.
    /// Returns the learning rate used.
    fn update(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
    ) -> Result<f64, TrainError>;

    /// The forward pass on one batch.
    fn forward(
        &mut self,
        model: &Model,
        params: &[Tensor],
        states: &[Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<Tensor, TrainError>;

    /// The parameters as they are now (`params` unless the engine holds newer ones).
    fn current_params<'p>(&self, params: &'p [Tensor]) -> Cow<'p, [Tensor]>;

    /// Brings `params` up to date.
    fn sync(&mut self, params: &mut [Tensor]);

    /// The optimizer states as they are now.
    fn current_states(&self, states: &[Vec<Tensor>]) -> Vec<Vec<Tensor>>;

    /// Forgets its own copies (the session's values were replaced, by a restore).
    fn reset(&mut self);

    /// Bytes the compiled training step holds, once a step ran compiled.
    fn held_bytes(&self) -> Option<usize>;

    /// Time spent compiling.
    fn compile_time(&self) -> Duration;
}

/// The engine for a backend.
pub(crate) fn engine(backend: Backend) -> Box<dyn Engine> {
    match backend {
        Backend::Interp => Box::new(Interp::default()),
        Backend::Jit => Box::new(Compiled::new(nnc_jit::Codegen::Cranelift)),
        Backend::Llvm => Box::new(Compiled::new(nnc_jit::Codegen::Llvm)),
    }
}

/// The reference interpreter.
#[derive(Debug, Default)]
pub(crate) struct Interp {
    /// The gradients between a step's two halves, one per trained parameter.
    held: Vec<Tensor>,
}

/// Evaluates `f` on the interpreter.
fn interp_eval(f: &Func, inputs: &[Tensor], params: &[Tensor]) -> Result<Vec<Tensor>, TrainError> {
    Ok(nnc_compiler::interp::eval(f, inputs, params)?)
}

impl Engine for Interp {
    fn eval(
        &self,
        f: &Func,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>, TrainError> {
        interp_eval(f, inputs, params)
    }

    fn gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        _: &mut [Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<(f64, Tensor), TrainError> {
        let (loss, output, grads) = per_parameter_gradients(self, cx, params, inputs)?;
        self.held = grads;
        Ok((loss, output))
    }

    fn zero_gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        _: &mut [Vec<Tensor>],
    ) -> Result<(), TrainError> {
        self.held = zero_grads(cx.model, params);
        Ok(())
    }

    fn exchange(
        &mut self,
        model: &Model,
        params: &mut [Tensor],
        tail: usize,
        f: &mut dyn FnMut(&mut [f32], &mut [f32]),
    ) -> Vec<f32> {
        exchange_tensors(&mut self.held, params, &model.buffer_indices(), tail, f)
    }

    fn update(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
    ) -> Result<f64, TrainError> {
        let mut grads = std::mem::take(&mut self.held);
        per_parameter_update(self, cx, params, states, &mut grads)
    }

    fn forward(
        &mut self,
        model: &Model,
        params: &[Tensor],
        _: &[Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<Tensor, TrainError> {
        Ok(self.eval(&model.forward, inputs, params)?.remove(0))
    }

    fn current_params<'p>(&self, params: &'p [Tensor]) -> Cow<'p, [Tensor]> {
        Cow::Borrowed(params)
    }

    fn sync(&mut self, _: &mut [Tensor]) {}

    fn current_states(&self, states: &[Vec<Tensor>]) -> Vec<Vec<Tensor>> {
        states.to_vec()
    }

    fn reset(&mut self) {
        self.held.clear();
    }

    fn held_bytes(&self) -> Option<usize> {
        None
    }

    fn compile_time(&self) -> Duration {
        Duration::ZERO
    }
}

/// The gradients as the interpreter computes them, with `engine` evaluating the gradient
/// function: the loss, the output and one gradient per trained parameter; the buffers
/// take their new values in `params`.
fn per_parameter_gradients(
    engine: &dyn Engine,
    cx: &StepCtx,
    params: &mut [Tensor],
    inputs: &[Tensor],
) -> Result<(f64, Tensor, Vec<Tensor>), TrainError> {
    let Some(grad) = &cx.model.grad else {
        return Err(no_train_block(cx.model));
    };
    let outs = engine.eval(grad, inputs, params)?;
    let loss = outs[0].data[0];
    // Outputs: loss, output, the buffers' new values, the trained parameters' gradients.
    let buffers: Vec<usize> = cx.model.buffer_indices();
    for (k, &i) in buffers.iter().enumerate() {
        params[i].data = outs[cx.model.outputs().buffer(k)].data.clone();
    }
    let grads = outs[cx.model.outputs().gradients()..].to_vec();
    let output = outs
        .into_iter()
        .nth(1)
        .expect("the loss function returns the output");
    Ok((loss, output, grads))
}

/// Zero gradients, one per trained parameter.
fn zero_grads(model: &Model, params: &[Tensor]) -> Vec<Tensor> {
    let buffers = model.buffer_indices();
    (params.iter().enumerate())
        .filter(|(i, _)| !buffers.contains(i))
        .map(|(_, p)| Tensor::new(p.dtype, p.shape.clone(), vec![0.0; p.len()]))
        .collect()
}

/// `Engine::exchange` over gradients and buffers held as tensors: laid out as the fused
/// step lays them out (the gradients in parameter order, then the buffers).
fn exchange_tensors(
    grads: &mut [Tensor],
    params: &mut [Tensor],
    buffers: &[usize],
    tail: usize,
    f: &mut dyn FnMut(&mut [f32], &mut [f32]),
) -> Vec<f32> {
    let mut send: Vec<f32> = grads
        .iter()
        .flat_map(|g| g.data.iter())
        .chain(buffers.iter().flat_map(|&i| params[i].data.iter()))
        .map(|&v| v as f32)
        .collect();
    send.resize(send.len() + tail, 0.0);
    let mut recv = vec![0.0f32; send.len()];
    f(&mut send, &mut recv);
    let mut at = 0;
    let mut take = |t: &mut Tensor| {
        let n = t.data.len();
        t.data = recv[at..at + n].iter().map(|&v| f64::from(v)).collect();
        at += n;
    };
    grads.iter_mut().for_each(&mut take);
    buffers.iter().for_each(|&i| take(&mut params[i]));
    recv[at..].to_vec()
}
/// The update as the interpreter applies it: noise and clipping of `grads` (one per
/// trained parameter), then the rule once per parameter with its own states. Returns the
/// learning rate.
fn per_parameter_update(
    engine: &dyn Engine,
    cx: &StepCtx,
    params: &mut [Tensor],
    states: &mut [Vec<Tensor>],
    grads: &mut [Tensor],
) -> Result<f64, TrainError> {
    let Some(update) = &cx.model.update else {
        return Err(no_train_block(cx.model));
    };
    let buffers: Vec<usize> = cx.model.buffer_indices();
    let trained: Vec<usize> = (0..params.len()).filter(|i| !buffers.contains(i)).collect();
    if cx.config.grad_noise.is_some() || cx.config.clip.is_some() {
        let mut bufs: Vec<Vec<f32>> = grads
            .iter()
            .map(|g| g.data.iter().map(|&v| v as f32).collect())
            .collect();
        let mut views: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        perturb_and_clip(cx, &mut views);
        for (g, b) in grads.iter_mut().zip(&bufs) {
            g.data = b.iter().map(|&v| f64::from(v)).collect();
        }
    }
    let lr = cx.lr();
    let lr_t = Tensor::scalar(DType::F32, lr);
    let step_t = Tensor::scalar(DType::F32, (cx.step + 1) as f64);
    for (&i, g) in trained.iter().zip(grads.iter()) {
        let flat = |t: &Tensor| Tensor {
            dtype: DType::F32,
            shape: vec![t.len()],
            data: t.data.clone(),
        };
        let ins = [flat(&params[i]), flat(g), lr_t.clone(), step_t.clone()];
        let mut outs = engine.eval(update, &ins, &states[i])?.into_iter();
        let new_w = outs.next().expect("the rule returns the parameter");
        params[i].data = new_w.data;
        states[i] = outs.collect();
    }
    Ok(lr)
}

fn no_train_block(model: &Model) -> TrainError {
    TrainError::Failed(format!("`{}` has no train block", model.name))
}

/// The JIT (Cranelift or LLVM): functions compiled on first use per batch size; the
/// training step fused over arenas. f64 graphs, which it does not compile, run on the
/// interpreter.
#[derive(Debug)]
pub(crate) struct Compiled {
    jit: Arc<Mutex<nnc_jit::Jit>>,
    codegen: nnc_jit::Codegen,
    /// The arenas the fused step keeps the parameters and optimizer states in, made on the
    /// first step or forward pass.
    fused: Option<Box<FusedStep>>,
    /// Whether the session's `params` lag the arena (after steps; see `sync`).
    stale: bool,
    /// The gradients between a step's halves when the step runs on the interpreter.
    held: Vec<Tensor>,
    /// Whether the training step compiles (`fuses`), decided on the first step.
    fusable: Option<bool>,
}

impl Compiled {
    fn new(codegen: nnc_jit::Codegen) -> Compiled {
        Compiled {
            jit: Arc::new(Mutex::new(nnc_jit::Jit::with_codegen(codegen))),
            codegen,
            fused: None,
            stale: false,
            held: Vec::new(),
            fusable: None,
        }
    }

    /// Lays the parameters (and optimizer states) out in arenas, once.
    fn arena(
        &mut self,
        model: &Model,
        params: &[Tensor],
        states: &[Vec<Tensor>],
    ) -> Result<&mut FusedStep, TrainError> {
        if self.fused.is_none() {
            let mut f = FusedStep::new(
                model.grad.as_ref(),
                model.update.as_ref(),
                params,
                states,
                self.codegen,
            )?;
            f.split = split_pieces(model);
            self.fused = Some(Box::new(f));
        }
        Ok(self.fused.as_mut().expect("just made"))
    }

    /// Whether the training step compiles (else it runs on the interpreter); the graphs
    /// are walked once, not at each half of every step.
    fn fuses(&mut self, model: &Model) -> Result<bool, TrainError> {
        let (Some(grad), Some(update)) = (&model.grad, &model.update) else {
            return Err(no_train_block(model));
        };
        Ok(*self
            .fusable
            .get_or_insert_with(|| nnc_jit::supports(grad) && nnc_jit::supports(update)))
    }
}

impl Engine for Compiled {
    fn eval(
        &self,
        f: &Func,
        inputs: &[Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>, TrainError> {
        if !nnc_jit::supports(f) {
            return interp_eval(f, inputs, params);
        }
        let mut jit = self.jit.lock().unwrap_or_else(|p| p.into_inner());
        Ok(jit.eval(f, inputs, params)?)
    }

    /// Gradients into the arena; the parameters stay in the arena until `sync`.
    fn gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<(f64, Tensor), TrainError> {
        if !self.fuses(cx.model)? {
            let (loss, output, grads) = per_parameter_gradients(self, cx, params, inputs)?;
            self.held = grads;
            return Ok((loss, output));
        }
        Ok(self.arena(cx.model, params, states)?.gradients(inputs)?)
    }

    fn zero_gradients(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
    ) -> Result<(), TrainError> {
        if !self.fuses(cx.model)? {
            self.held = zero_grads(cx.model, params);
            return Ok(());
        }
        self.arena(cx.model, params, states)?.zero_gradients();
        Ok(())
    }

    fn exchange(
        &mut self,
        model: &Model,
        params: &mut [Tensor],
        tail: usize,
        f: &mut dyn FnMut(&mut [f32], &mut [f32]),
    ) -> Vec<f32> {
        match (&mut self.fused, self.fusable) {
            (Some(fused), Some(true)) => fused.exchange(tail, f),
            _ => exchange_tensors(&mut self.held, params, &model.buffer_indices(), tail, f),
        }
    }

    /// Noise and clipping in place, then one update kernel over every parameter.
    fn update(
        &mut self,
        cx: &StepCtx,
        params: &mut [Tensor],
        states: &mut [Vec<Tensor>],
    ) -> Result<f64, TrainError> {
        if !self.fuses(cx.model)? {
            let mut grads = std::mem::take(&mut self.held);
            return per_parameter_update(self, cx, params, states, &mut grads);
        }
        let fused = self.arena(cx.model, params, states)?;
        perturb_and_clip(cx, &mut fused.grads_mut());
        let lr = cx.lr();
        fused.apply(lr, (cx.step + 1) as f64)?;
        self.stale = true;
        Ok(lr)
    }

    /// Reads the parameters from the arenas, so nothing is converted but the inputs and
    /// the output.
    fn forward(
        &mut self,
        model: &Model,
        params: &[Tensor],
        states: &[Vec<Tensor>],
        inputs: &[Tensor],
    ) -> Result<Tensor, TrainError> {
        if !nnc_jit::supports(&model.forward) {
            return Ok(interp_eval(&model.forward, inputs, params)?.remove(0));
        }
        let arena = self.arena(model, params, states)?;
        Ok(arena.run(&model.forward, inputs)?.remove(0))
    }

    fn current_params<'p>(&self, params: &'p [Tensor]) -> Cow<'p, [Tensor]> {
        match (&self.fused, self.stale) {
            (Some(f), true) => {
                let mut p = params.to_vec();
                f.write_params(&mut p);
                Cow::Owned(p)
            }
            _ => Cow::Borrowed(params),
        }
    }

    fn sync(&mut self, params: &mut [Tensor]) {
        if self.stale {
            if let Some(f) = &self.fused {
                f.write_params(params);
            }
            self.stale = false;
        }
    }

    fn current_states(&self, states: &[Vec<Tensor>]) -> Vec<Vec<Tensor>> {
        match &self.fused {
            Some(f) => f.states(),
            None => states.to_vec(),
        }
    }

    fn reset(&mut self) {
        self.fused = None;
        self.stale = false;
        self.held.clear();
    }

    fn held_bytes(&self) -> Option<usize> {
        self.fused.as_ref().map(|f| f.held_bytes())
    }

    fn compile_time(&self) -> Duration {
        let jit = self.jit.lock().map(|j| j.compile_time).unwrap_or_default();
        jit + self
            .fused
            .as_ref()
            .map_or(Duration::ZERO, |f| f.compile_time())
    }
}

/// Into how many pieces the training step may split its batch: one per thread
/// (`--threads`) when the loss is a mean over rows computed row by row
/// (`nnc_compiler::rows::batch_mean`: no batch norm statistics, no attention across the
/// batch) and the step draws no noise (each piece would draw the same) and updates no
/// buffers; else 1. The step still declines small batches (`fused::SPLIT_MIN_FLOPS`).
fn split_pieces(model: &Model) -> usize {
    let threads = nnc_jit::kernels::threads();
    let splittable = threads > 1
        && !model.noise
        && model.buffer_indices().is_empty()
        && model.loss.as_ref().is_some_and(|loss| {
            matches!(model.x.1.shape.dims().first(), Some(nnc_ir::Dim::Sym(b))
                if nnc_compiler::rows::batch_mean(loss, b).is_ok())
        });
    if splittable { threads } else { 1 }
}

/// Annealed Gaussian gradient noise (Neelakantan et al., 2015), then global-norm clipping
/// as PyTorch's `clip_grad_norm_`. Arithmetic in f64, each result rounded to f32, so both
/// engines compute the same values.
fn perturb_and_clip(cx: &StepCtx, grads: &mut [&mut [f32]]) {
    if let Some(eta) = cx.config.grad_noise {
        let sigma = (eta / (1.0 + cx.step as f64).powf(0.55)).sqrt();
        // One gradient per trained parameter (buffers have none).
        let trained = (cx.model.forward.params.iter())
            .filter(|p| p.kind == ParamKind::Param)
            .map(|p| p.name.as_str());
        for (g, name) in grads.iter_mut().zip(trained) {
            let mut rng = Rng::stream(cx.config.seed, &format!("grad_noise/{}/{name}", cx.step));
            g.iter_mut()
                .for_each(|v| *v = (f64::from(*v) + sigma * rng.normal()) as f32);
        }
    }
    if let Some(max) = cx.config.clip {
        let norm = grads
            .iter()
            .flat_map(|g| g.iter())
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let coef = max / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                g.iter_mut()
                    .for_each(|v| *v = (f64::from(*v) * coef) as f32);
            }
        }
    }
}
