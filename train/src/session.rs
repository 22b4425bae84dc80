//! A model's compiled functions and one training session over them: parameters, optimizer
//! states, the step counter, and the operations of a run (a training epoch, evaluation,
//! prediction, checkpoints).
//!
//! Everything random is drawn from a named stream of the seed (`shuffle/{epoch}`,
//! `grad_noise/{step}/{param}`, one per parameter for initialization), so a run is a pure
//! function of its seed, and a run resumed from a checkpoint continues exactly as if it
//! had not stopped.

use nnc_ir::{DType, Func, Module, Outputs, ParamKind, Role, TensorType};
use nnc_lang::{NOISE_KEY, TrainSpec};
use nnc_runtime::data::Dataset;
use nnc_runtime::{Checkpoint, Rng, Tensor, init_param};

use std::sync::Arc;

use crate::config::TrainConfig;
use crate::dist::{self, Comm, Solo};
use crate::engine::{Engine, StepCtx, engine};

fn optimize(f: &Func) -> Result<Func, nnc_compiler::Error> {
    nnc_compiler::passes::optimize(f, &mut |_, _| {})
}

/// The checkpoint format written in the `format` metadata.
pub const FORMAT: &str = "nnc-checkpoint-1";

/// A model's functions, as the training loop calls them.
#[derive(Clone, Debug)]
pub struct Model {
    /// The model's name.
    pub name: String,
    /// `@M`: inputs to output.
    pub forward: Func,
    /// `@M.loss`: (inputs, labels) to (loss, output), in training mode; absent without a
    /// train block.
    pub loss: Option<Func>,
    /// `@M.eval`, the loss in inference mode, for models that read `training`
    /// (evaluation runs `eval_func`).
    pub eval: Option<Func>,
    /// Whether the training graphs draw noise (`random`): they then take the step's
    /// noise key as their last input.
    pub noise: bool,
    /// `@M.grad`: (inputs, labels) to (loss, output, gradients...).
    pub grad: Option<Func>,
    /// `@M.update`: the optimizer rule over one flat parameter.
    pub update: Option<Func>,
    /// The first input (the features that data files feed).
    pub x: (String, TensorType),
    /// The labels input of the train block.
    pub y: Option<(String, TensorType)>,
    /// The number of classes, when the labels are class numbers and the output is
    /// `[B, classes]`.
    pub classes: Option<usize>,
    /// `@M.loss` as checked, before the passes: where a diverged step's first non-finite
    /// value is looked for.
    pub source_loss: Option<Func>,
    /// The user's source line of each node of `source_loss` (`Checked::lines`; empty
    /// when not known).
    pub loss_lines: Vec<usize>,
}

impl Model {
    /// Picks model `name` out of a checked module. With a train spec, its loss, gradient
    /// and update functions come along.
    pub fn new(module: &Module, name: &str, spec: Option<&TrainSpec>) -> Result<Model, TrainError> {
        let funcs =
            nnc_compiler::pipeline::model_funcs(module, name, spec.is_some(), &mut optimize)?;
        let forward = funcs.forward;
        let x = forward
            .inputs
            .first()
            .map(|a| (a.name.clone(), a.ty.clone()))
            .ok_or_else(|| TrainError::Failed(format!("`{name}` has no inputs")))?;
        let (y, noise) = match &funcs.source_loss {
            Some(l) => (
                l.inputs
                    .get(forward.inputs.len())
                    .filter(|a| a.name != NOISE_KEY)
                    .map(|a| (a.name.clone(), a.ty.clone())),
                l.inputs.last().is_some_and(|a| a.name == NOISE_KEY),
            ),
            None => (None, false),
        };
        let (loss, eval, grad, update, source_loss) = (
            funcs.loss,
            funcs.eval,
            funcs.grad,
            funcs.update,
            funcs.source_loss,
        );
        let out_ty = forward.output_types()[0].clone();
        let classes = match (&y, out_ty.rank()) {
            (Some((_, yt)), 2) if yt.dtype == DType::I32 => {
                out_ty.shape.dims()[1].known().map(|c| c as usize)
            }
            _ => None,
        };
        Ok(Model {
            name: name.to_string(),
            forward,
            loss,
            eval,
            noise,
            grad,
            update,
            x,
            y,
            classes,
            source_loss,
            loss_lines: Vec::new(),
        })
    }

    /// The same model, with the source lines of its loss's nodes (`Checked::lines`), so
    /// a diverged step names the line that made the first non-finite value.
    pub fn with_lines(mut self, lines: &std::collections::HashMap<String, Vec<usize>>) -> Model {
        if let Some(l) = lines.get(&Role::Loss.name(&self.name)) {
            self.loss_lines = l.clone();
        }
        self
    }

    /// The names of the trained parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.forward
            .params
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }

    /// What evaluation runs: the loss in inference mode.
    pub fn eval_func(&self) -> Option<&Func> {
        self.eval.as_ref().or(self.loss.as_ref())
    }

    /// Where the loss and gradient functions' values are.
    pub fn outputs(&self) -> Outputs {
        Outputs {
            buffers: self.buffer_indices().len(),
        }
    }

    /// Which of the parameters are buffers (not trained; the training loss returns their
    /// new values).
    pub fn buffer_indices(&self) -> Vec<usize> {
        (self.forward.params.iter().enumerate())
            .filter(|(_, p)| p.kind == ParamKind::Buffer)
            .map(|(i, _)| i)
            .collect()
    }

    /// The names of the optimizer's per-parameter states.
    pub fn state_names(&self) -> Vec<&str> {
        self.update
            .iter()
            .flat_map(|u| u.params.iter())
            .filter(|p| p.kind == ParamKind::State)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Fits a data set to this model's inputs (features shape, label type and range).
    /// Data files feed one features input and at most one labels input.
    pub fn fit(&self, ds: Dataset) -> Result<Dataset, nnc_runtime::Error> {
        let extra = self
            .loss
            .as_ref()
            .map_or(0, |l| l.inputs.len())
            .saturating_sub(self.forward.inputs.len() + usize::from(self.noise));
        if self.forward.inputs.len() != 1 || extra > 1 {
            return Err(nnc_runtime::Error::Data(format!(
                "`{}` takes {} inputs and its train block {}; data files feed one features input and one labels input",
                self.name,
                self.forward.inputs.len(),
                extra
            )));
        }
        let y = self.y.as_ref().map(|(n, t)| (n.as_str(), t));
        ds.fit(&self.x.0, &self.x.1, y, self.classes)
    }
}

/// Why training stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainError {
    /// The model, its settings or a checkpoint cannot be used as asked (no train block, a
    /// checkpoint of another model, an output folder that holds a run): the message says
    /// what to fix.
    Failed(String),
    /// A file, the data or a checkpoint's bytes (`nnc_runtime::Error`).
    Runtime(nnc_runtime::Error),
    /// Building the model's functions: autodiff, the passes, the interpreter
    /// (`nnc_compiler::Error`).
    Compiler(nnc_compiler::Error),
    /// The JIT refused or failed to compile or run a function (`nnc_jit::Error`).
    Jit(nnc_jit::Error),
    /// The loss stopped being finite. Parameters are those before this step.
    Diverged {
        /// The step (1-based over the run) whose loss was not finite.
        step: u64,
        /// Its epoch (1-based).
        epoch: u64,
        /// Its batch within the epoch (1-based).
        batch: usize,
        /// The loss.
        loss: f64,
        /// Where the first non-finite value came from (`` `log` on line 5 gave -inf ``),
        /// when it could be found.
        origin: Option<String>,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Failed(m) => f.write_str(m),
            TrainError::Runtime(e) => write!(f, "{e}"),
            TrainError::Compiler(e) => write!(f, "{e}"),
            TrainError::Jit(e) => write!(f, "{e}"),
            TrainError::Diverged {
                step,
                epoch,
                batch,
                loss,
                origin,
            } => {
                write!(
                    f,
                    "the loss is {loss} at step {step} (epoch {epoch}, batch {batch})"
                )?;
                if let Some(o) = origin {
                    write!(f, "; the first non-finite value: {o}")?;
                }
                write!(f, "; training stopped")
            }
        }
    }
}

impl From<nnc_runtime::Error> for TrainError {
    fn from(e: nnc_runtime::Error) -> TrainError {
        TrainError::Runtime(e)
    }
}

impl From<nnc_compiler::Error> for TrainError {
    fn from(e: nnc_compiler::Error) -> TrainError {
        TrainError::Compiler(e)
    }
}

impl From<nnc_compiler::interp::EvalError> for TrainError {
    fn from(e: nnc_compiler::interp::EvalError) -> TrainError {
        TrainError::Compiler(e.into())
    }
}

impl From<nnc_jit::Error> for TrainError {
    fn from(e: nnc_jit::Error) -> TrainError {
        TrainError::Jit(e)
    }
}

impl std::error::Error for TrainError {}

/// For callers that report errors as text.
impl From<TrainError> for String {
    fn from(e: TrainError) -> String {
        e.to_string()
    }
}

impl From<String> for TrainError {
    fn from(s: String) -> TrainError {
        TrainError::Failed(s)
    }
}

/// One training step, as reported to observers.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step (1-based over the run).
    pub step: u64,
    /// The batch's loss.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Training accuracy over the epoch so far (classifiers only).
    pub accuracy: Option<f64>,
}

/// Loss and accuracy over a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean loss per row.
    pub loss: f64,
    /// Fraction of rows whose arg-max output is the label (classification only).
    pub accuracy: Option<f64>,
}

/// A training session: the model, its settings, and the state that training changes.
#[derive(Debug)]
pub struct Session {
    /// The model.
    pub model: Model,
    /// The settings.
    pub config: TrainConfig,
    /// Trained parameters, in the model's order.
    pub params: Vec<Tensor>,
    /// Per parameter, the optimizer's states (flat).
    /// (Stale while the fused step holds them: read them with `current_states`.)
    states: Vec<Vec<Tensor>>,
    /// Steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// The learning rate of the last step.
    pub last_lr: f64,
    /// What runs the functions, and holds the trained values between steps on the JIT.
    engine: Box<dyn Engine>,
    /// The feature statistics the data is normalized with (fitted on the training rows;
    /// kept in checkpoints).
    pub stats: Option<nnc_runtime::data::FeatureStats>,
    /// The job this session trains in: alone, or one rank of a data-parallel job, which
    /// takes its shard of every batch and sums gradients with the others.
    comm: Arc<dyn Comm>,
}

impl Clone for Session {
    /// A copy with its own state: the arenas are rebuilt from the copied values on the
    /// copy's first step.
    fn clone(&self) -> Session {
        Session {
            model: self.model.clone(),
            config: self.config.clone(),
            params: self.current_params().into_owned(),
            states: self.current_states(),
            step: self.step,
            epoch: self.epoch,
            last_lr: self.last_lr,
            engine: engine(self.config.backend),
            stats: self.stats.clone(),
            comm: Arc::clone(&self.comm),
        }
    }
}

const EVAL_CHUNK: usize = 512;

impl Session {
    /// A fresh session: parameters initialized as declared from the config's seed,
    /// optimizer states as the rule declares them.
    pub fn new(model: Model, config: TrainConfig) -> Result<Session, TrainError> {
        let config_backend = config.backend;
        let params = model
            .forward
            .params
            .iter()
            .map(|p| init_param(p, config.seed))
            .collect::<Result<Vec<_>, _>>()?;
        let mut states = Vec::new();
        if let Some(u) = &model.update {
            for (p, w) in model.forward.params.iter().zip(&params) {
                let mut s = Vec::new();
                // Buffers are not trained: no optimizer state.
                let rule_states = u.params.iter().filter(|q| q.kind == ParamKind::State);
                for sp in rule_states.filter(|_| p.kind == ParamKind::Param) {
                    let mut flat = sp.clone();
                    flat.ty = TensorType::new(sp.ty.dtype, nnc_ir::Shape::known(&[w.len() as u64]));
                    flat.name = format!("{}/{}", p.name, sp.name);
                    s.push(init_param(&flat, config.seed)?);
                }
                states.push(s);
            }
        }
        Ok(Session {
            model,
            config,
            params,
            states,
            step: 0,
            epoch: 0,
            last_lr: 0.0,
            engine: engine(config_backend),
            stats: None,
            comm: Arc::new(Solo),
        })
    }

    /// Steps in an epoch over `rows` rows.
    pub fn steps_per_epoch(&self, rows: usize) -> usize {
        rows.div_ceil(self.config.batch.max(1))
    }

    /// Trains one epoch over `train` (shuffled with the seed and the epoch number).
    /// Returns the epoch's mean training loss and accuracy. On a non-finite loss the
    /// parameters are left as they were before that step.
    pub fn train_epoch(
        &mut self,
        train: &Dataset,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<Metrics, TrainError> {
        let n = train.len();
        let mut order: Vec<usize> = (0..n).collect();
        Rng::stream(self.config.seed, &format!("shuffle/{}", self.epoch)).shuffle(&mut order);
        let total = (self.steps_per_epoch(n) * self.config.epochs) as u64;
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let comm = Arc::clone(&self.comm);
        for (bi, chunk) in order.chunks(self.config.batch.max(1)).enumerate() {
            // This rank's shard of the batch (all of it in a job of one).
            let mine = &chunk[dist::shard(chunk.len(), comm.rank(), comm.size())];
            let batch = train.rows(mine);
            let mut inputs = vec![batch.x];
            inputs.extend(batch.y.clone());
            let stepped = if comm.size() == 1 {
                self.step_with(&inputs, total).map(|(loss, output)| {
                    let correct = match (self.model.classes, &batch.y) {
                        (Some(_), Some(y)) => count_correct(&output, y),
                        _ => 0,
                    };
                    (loss, correct)
                })
            } else {
                (self.step_shared(&inputs, mine.len(), chunk.len(), total))
                    .map(|(loss, correct, _)| (loss, correct))
            };
            let (loss, step_correct) = match stepped {
                Err(TrainError::Diverged {
                    step, epoch, loss, ..
                }) => {
                    self.sync_params();
                    let origin = self.non_finite_origin(&inputs);
                    return Err(TrainError::Diverged {
                        step,
                        epoch,
                        batch: bi + 1,
                        loss,
                        origin,
                    });
                }
                r => match r {
                    Ok(v) => v,
                    Err(e) => {
                        self.sync_params();
                        return Err(e);
                    }
                },
            };
            loss_sum += loss * chunk.len() as f64;
            seen += chunk.len();
            correct += step_correct;
            on_step(&StepReport {
                step: self.step,
                loss,
                lr: self.last_lr,
                accuracy: self.model.classes.map(|_| correct as f64 / seen as f64),
            });
        }
        self.epoch += 1;
        self.sync_params();
        Ok(Metrics {
            loss: loss_sum / n.max(1) as f64,
            accuracy: self.model.classes.map(|_| correct as f64 / n.max(1) as f64),
        })
    }

    /// One training step on one batch: `inputs` are the model's inputs followed by the
    /// train block's (the labels). Returns the batch's loss and the model's output. The
    /// learning rate follows the schedule over a run of `config.epochs` epochs of
    /// `steps_per_epoch` steps each.
    pub fn train_step(
        &mut self,
        inputs: &[Tensor],
        steps_per_epoch: usize,
    ) -> Result<(f64, Tensor), TrainError> {
        let r = self.train_step_deferred(inputs, steps_per_epoch);
        self.sync_params();
        r
    }

    /// `train_step` without bringing `params` up to date afterwards (on the JIT the
    /// parameters live in the arena, and copying them out every step costs about 8% of a
    /// step); call `sync_params` before reading `params`.
    pub fn train_step_deferred(
        &mut self,
        inputs: &[Tensor],
        steps_per_epoch: usize,
    ) -> Result<(f64, Tensor), TrainError> {
        let total = (steps_per_epoch * self.config.epochs) as u64;
        let (rank, size) = (self.comm.rank(), self.comm.size());
        if size > 1 {
            // One rank of a job: its shard of the batch's rows; the output is the shard's.
            let rows = inputs
                .first()
                .and_then(|x| x.shape.first())
                .copied()
                .unwrap_or(0);
            let mine = dist::shard(rows, rank, size);
            let local: Vec<Tensor> = inputs.iter().map(|t| rows_of(t, &mine)).collect();
            let (loss, _, output) = self.step_shared(&local, mine.len(), rows, total)?;
            return Ok((loss, output));
        }
        self.step_with(inputs, total)
    }

    /// The parameters as they are now, even after deferred steps.
    pub fn current_params(&self) -> std::borrow::Cow<'_, [Tensor]> {
        self.engine.current_params(&self.params)
    }

    /// Copies the parameters out of the JIT's arena into `params` if steps have changed them.
    pub fn sync_params(&mut self) {
        self.engine.sync(&mut self.params);
    }

    /// The key of this step's noise: a function of the seed and the step number, below
    /// 2^24 so that it is exact in f32.
    fn noise_key(&self) -> Tensor {
        let base = Rng::stream(self.config.seed, "noise").next_u64();
        // Each rank of a job draws its own noise for its shard (the same key would give
        // every shard the same masks).
        let rank = (self.comm.rank() as u64).wrapping_mul(0x9E37_79B9);
        let key = base.wrapping_add(self.step).wrapping_add(rank) % (1 << 24);
        Tensor::new(DType::I32, vec![], vec![key as f64])
    }

    /// Re-runs the failed step's loss on the interpreter, as checked, and names the first
    /// op that made a non-finite value from finite operands, with its source line. Costs
    /// nothing in a run that does not diverge.
    fn non_finite_origin(&self, inputs: &[Tensor]) -> Option<String> {
        let f = self.model.source_loss.as_ref()?;
        let mut ins = inputs.to_vec();
        if self.model.noise {
            ins.push(self.noise_key());
        }
        let (i, v) = nnc_compiler::interp::first_non_finite(f, &ins, &self.params).ok()??;
        let op = f.nodes[i].op.mnemonic();
        Some(match self.model.loss_lines.get(i) {
            Some(&line) if line > 0 => format!("`{op}` on line {line} gave {v}"),
            _ => format!("`{op}` (%{i} of `@{}`) gave {v}", f.name),
        })
    }

    fn step_with(&mut self, inputs: &[Tensor], total: u64) -> Result<(f64, Tensor), TrainError> {
        if self.model.noise {
            let mut with_key = inputs.to_vec();
            with_key.push(self.noise_key());
            return self.step_keyed(&with_key, total);
        }
        self.step_keyed(inputs, total)
    }

    fn step_keyed(&mut self, inputs: &[Tensor], total: u64) -> Result<(f64, Tensor), TrainError> {
        let cx = StepCtx {
            model: &self.model,
            config: &self.config,
            step: self.step,
            epoch: self.epoch,
            total,
        };
        let (loss, output, lr) =
            self.engine
                .step(&cx, &mut self.params, &mut self.states, inputs)?;
        self.step += 1;
        self.last_lr = lr;
        Ok((loss, output))
    }

    /// One step of a data-parallel job: the gradients of this rank's shard (`rows` of the
    /// batch's `global`), weighted by its share of the batch, summed with the other
    /// ranks' in one reduction that also carries the loss, the correct count and whether
    /// each rank failed; then every rank applies the same update. Returns the batch's loss
    /// and correct count, and this rank's output. A rank that failed makes every rank
    /// fail with its error.
    fn step_shared(
        &mut self,
        inputs: &[Tensor],
        rows: usize,
        global: usize,
        total: u64,
    ) -> Result<(f64, usize, Tensor), TrainError> {
        let comm = Arc::clone(&self.comm);
        let (rank, size) = (comm.rank(), comm.size());
        let mut ins = inputs.to_vec();
        if self.model.noise {
            ins.push(self.noise_key());
        }
        let cx = StepCtx {
            model: &self.model,
            config: &self.config,
            step: self.step,
            epoch: self.epoch,
            total,
        };
        let mut output = Tensor::new(DType::F32, vec![0], Vec::new());
        let local = if rows == 0 {
            (self.engine)
                .zero_gradients(&cx, &mut self.params, &mut self.states)
                .map(|()| (0.0, 0))
        } else {
            (self.engine)
                .gradients(&cx, &mut self.params, &mut self.states, &ins)
                .map(|(loss, out)| {
                    let correct = match (self.model.classes, inputs.get(1)) {
                        (Some(_), Some(y)) => count_correct(&out, y),
                        _ => 0,
                    };
                    output = out;
                    (loss, correct)
                })
        };
        // The tail: the weighted loss, the correct count, one failure flag per rank.
        let tail = 2 + size;
        let w = rows as f64 / global.max(1) as f64;
        let (loss, correct) = *local.as_ref().unwrap_or(&(0.0, 0));
        let fill = |send: &mut [f32]| {
            let k = send.len() - tail;
            if local.is_err() {
                send.fill(0.0);
            } else if w != 1.0 {
                send[..k]
                    .iter_mut()
                    .for_each(|v| *v = (f64::from(*v) * w) as f32);
            }
            send[k] = (loss * w) as f32;
            send[k + 1] = correct as f32;
            send[k + 2..].fill(0.0);
            send[k + 2 + rank] = if local.is_err() { 1.0 } else { 0.0 };
        };
        let sums = if local.is_ok() {
            self.engine
                .exchange(&self.model, &mut self.params, tail, &mut |send, recv| {
                    fill(send);
                    comm.sum_f32(send, recv);
                })
        } else {
            // The engine may hold nothing; the buffer's length is the same everywhere.
            let n: usize = self.params.iter().map(Tensor::len).sum::<usize>() + tail;
            let (mut send, mut recv) = (vec![0.0f32; n], vec![0.0f32; n]);
            fill(&mut send);
            comm.sum_f32(&send, &mut recv);
            recv[n - tail..].to_vec()
        };
        if sums[2..].iter().any(|&f| f > 0.0) {
            let status = local.as_ref().map(|_| 0).map_err(|e| e.to_string());
            dist::agree(&*comm, status, "").map_err(TrainError::Failed)?;
            return Err(TrainError::Failed(
                "a rank failed, but said nothing".to_string(),
            ));
        }
        let loss = f64::from(sums[0]);
        if !loss.is_finite() {
            return Err(cx.diverged(loss));
        }
        let lr = self
            .engine
            .update(&cx, &mut self.params, &mut self.states)?;
        self.step += 1;
        self.last_lr = lr;
        Ok((loss, sums[1].round() as usize, output))
    }

    /// The job this session trains in.
    pub fn comm(&self) -> &dyn Comm {
        &*self.comm
    }

    /// Makes the session one rank of a data-parallel job (before it trains).
    pub fn set_comm(&mut self, comm: Arc<dyn Comm>) {
        self.comm = comm;
    }

    /// The forward pass on one batch of the model's inputs. On the JIT the parameters are
    /// read from the arenas, so nothing is converted but the inputs and the output.
    pub fn forward(&mut self, inputs: &[Tensor]) -> Result<Tensor, TrainError> {
        self.engine
            .forward(&self.model, &self.params, &self.states, inputs)
    }

    /// Bytes the compiled training step holds (arenas, scratch, the batch), once a step
    /// ran on the JIT; and the host's f64 copies of the parameters and optimizer states.
    pub fn held_bytes(&self) -> (Option<usize>, usize) {
        let host = self.params.iter().map(|t| t.data.len()).sum::<usize>()
            + self
                .states
                .iter()
                .flatten()
                .map(|t| t.data.len())
                .sum::<usize>();
        (self.engine.held_bytes(), 8 * host)
    }

    /// Time the JIT has spent compiling for this session (zero on the interpreter).
    pub fn compile_time(&self) -> std::time::Duration {
        self.engine.compile_time()
    }

    /// The optimizer states as they are now (the fused step holds them while it trains).
    pub fn current_states(&self) -> Vec<Vec<Tensor>> {
        self.engine.current_states(&self.states)
    }

    /// Mean loss (and accuracy for classifiers) over a data set. In a data-parallel job
    /// each rank evaluates its shard of the rows and the sums are reduced.
    pub fn evaluate(&self, data: &Dataset) -> Result<Metrics, TrainError> {
        let comm = &*self.comm;
        let n = data.len();
        let mine = dist::shard(n, comm.rank(), comm.size());
        let local = self.evaluate_rows(data, mine);
        let (sum, correct) = if comm.size() == 1 {
            local?
        } else {
            let status = local.as_ref().map(|_| 0).map_err(|e| e.to_string());
            dist::agree(comm, status, "").map_err(TrainError::Failed)?;
            let (s, c) = local?;
            let mut total = [0.0; 2];
            comm.sum_f64(&[s, c as f64], &mut total);
            (total[0], total[1] as usize)
        };
        Ok(Metrics {
            loss: sum / n.max(1) as f64,
            accuracy: self.model.classes.map(|_| correct as f64 / n.max(1) as f64),
        })
    }

    /// The summed loss and the correct count over some of a data set's rows.
    fn evaluate_rows(
        &self,
        data: &Dataset,
        rows: std::ops::Range<usize>,
    ) -> Result<(f64, usize), TrainError> {
        let params = self.current_params();
        let Some(loss) = self.model.eval_func() else {
            return Err(TrainError::Failed(format!(
                "`{}` has no train block, so no loss",
                self.model.name
            )));
        };
        let (mut sum, mut correct) = (0.0, 0usize);
        let all: Vec<usize> = rows.collect();
        for chunk in all.chunks(EVAL_CHUNK) {
            let b = data.rows(chunk);
            let mut inputs = vec![b.x];
            inputs.extend(b.y.clone());
            let outs = self.engine.eval(loss, &inputs, &params)?;
            sum += outs[0].data[0] * chunk.len() as f64;
            if let (Some(_), Some(y)) = (self.model.classes, &b.y) {
                correct += count_correct(&outs[Outputs::OUTPUT], y);
            }
        }
        Ok((sum, correct))
    }

    /// The model's outputs for the rows of `x` (features `[N, ...]`).
    pub fn predict(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        let params = self.current_params();
        let n = x.shape[0];
        let per: usize = x.shape[1..].iter().product();
        let mut out: Option<Tensor> = None;
        for start in (0..n).step_by(EVAL_CHUNK) {
            let end = (start + EVAL_CHUNK).min(n);
            let mut shape = x.shape.clone();
            shape[0] = end - start;
            let xb = Tensor {
                dtype: x.dtype,
                shape,
                data: x.data[start * per..end * per].to_vec(),
            };
            let y = self
                .engine
                .eval(&self.model.forward, &[xb], &params)?
                .remove(0);
            match &mut out {
                None => out = Some(y),
                Some(o) => {
                    o.shape[0] += y.shape[0];
                    o.data.extend(y.data);
                }
            }
        }
        out.ok_or_else(|| TrainError::Failed("there are no rows to predict".to_string()))
    }

    /// The session as a checkpoint: parameters by name, optimizer states as
    /// `optimizer.{state}.{param}`, and the counters and settings as metadata.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut ck = Checkpoint::default();
        let params = self.current_params();
        for (p, t) in self.model.forward.params.iter().zip(params.iter()) {
            ck.tensors.push((p.name.clone(), t.clone()));
        }
        let state_names = self.model.state_names();
        let current = self.current_states();
        for ((p, w), states) in self
            .model
            .forward
            .params
            .iter()
            .zip(&self.params)
            .zip(&current)
        {
            for (s, t) in state_names.iter().zip(states) {
                let mut t = t.clone();
                t.shape = w.shape.clone();
                ck.tensors.push((format!("optimizer.{s}.{}", p.name), t));
            }
        }
        let meta = [
            ("format", FORMAT.to_string()),
            ("model", self.model.name.clone()),
            ("optimizer", self.config.optimizer.clone()),
            ("epoch", self.epoch.to_string()),
            ("step", self.step.to_string()),
            ("seed", self.config.seed.to_string()),
            ("batch", self.config.batch.to_string()),
            // The step's results depend on how many threads split its batch.
            ("threads", nnc_jit::kernels::threads().to_string()),
            // A data-parallel run's ranks (shards change the rounding, not the math).
            ("ranks", self.comm.size().to_string()),
        ];
        for (k, v) in meta {
            ck.meta.insert(k.into(), v);
        }
        for (k, v) in self.stats.iter().flat_map(|s| s.to_meta()) {
            ck.meta.insert(k, v);
        }
        ck
    }

    /// Loads parameters (and with `resume`, optimizer states and counters) from a
    /// checkpoint, which must hold exactly this model's parameters with their shapes.
    pub fn restore(&mut self, ck: &Checkpoint, resume: bool) -> Result<(), TrainError> {
        if ck.meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(TrainError::Failed(format!(
                "not an nnc checkpoint (format `{}`, expected `{FORMAT}`)",
                ck.meta.get("format").map_or("none", String::as_str)
            )));
        }
        let theirs = ck.meta.get("model").cloned().unwrap_or_default();
        self.stats = nnc_runtime::data::FeatureStats::from_meta(&ck.meta)?;
        let mut problems = Vec::new();
        for (p, t) in self.model.forward.params.iter().zip(&self.params) {
            match ck.get(&p.name) {
                None => problems.push(format!("it has no `{}`", p.name)),
                Some(c) if c.shape != t.shape || c.dtype != t.dtype => problems.push(format!(
                    "`{}` is {} in the checkpoint but {} in the model",
                    p.name,
                    c.ty(),
                    t.ty()
                )),
                Some(_) => {}
            }
        }
        let ours = self.model.param_names();
        for (n, _) in &ck.tensors {
            if !n.starts_with("optimizer.") && !ours.contains(&n.as_str()) {
                problems.push(format!("it has `{n}`, which the model does not"));
            }
        }
        if !problems.is_empty() {
            let from = if theirs != self.model.name {
                format!(" (it was saved from model `{theirs}`)")
            } else {
                String::new()
            };
            return Err(TrainError::Failed(format!(
                "the checkpoint does not fit model `{}`{from}: {}",
                self.model.name,
                problems.join("; ")
            )));
        }
        // A valid checksum over NaN weights is still not a model: refuse non-finite
        // parameters, buffers and optimizer states by name.
        for (n, t) in &ck.tensors {
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(TrainError::Failed(format!(
                    "the checkpoint's `{n}` holds {} at element {i}: it cannot be used \
                     (a run that diverged? resume from an earlier checkpoint)",
                    t.data[i]
                )));
            }
        }
        let mut states = self.current_states();
        if resume {
            let opt = ck.meta.get("optimizer").cloned().unwrap_or_default();
            if opt != self.config.optimizer {
                return Err(TrainError::Failed(format!(
                    "the checkpoint was trained with optimizer `{opt}`, this run uses `{}`; \
                     resuming needs the same optimizer",
                    self.config.optimizer
                )));
            }
            let names = self.model.state_names();
            for ((p, w), st) in self
                .model
                .forward
                .params
                .iter()
                .zip(&self.params)
                .zip(&mut states)
            {
                for (s, slot) in names.iter().zip(st.iter_mut()) {
                    let key = format!("optimizer.{s}.{}", p.name);
                    match ck.get(&key) {
                        Some(c) if c.shape == w.shape => slot.data = c.data.clone(),
                        _ => {
                            return Err(TrainError::Failed(format!(
                                "the checkpoint lacks optimizer state `{key}`"
                            )));
                        }
                    }
                }
            }
            let num = |k: &str| -> Result<u64, TrainError> {
                ck.meta.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                    TrainError::Failed(format!("the checkpoint's `{k}` is missing or not a number"))
                })
            };
            let (step, epoch) = (num("step")?, num("epoch")?);
            // Counters past 2^53 are not exact in the f64 the schedules compute with, and
            // a run cannot have more epochs than steps.
            if step > 1 << 53 || epoch > step {
                return Err(TrainError::Failed(format!(
                    "the checkpoint's counters are not a run's (step {step}, epoch {epoch})"
                )));
            }
            self.step = step;
            self.epoch = epoch;
        }
        for (p, t) in self.model.forward.params.iter().zip(self.params.iter_mut()) {
            t.data = ck.get(&p.name).expect("checked above").data.clone();
        }
        self.states = states;
        self.engine.reset();
        Ok(())
    }
}

/// How many rows' arg-max output equals the label.
/// The rows `r` of a batched tensor (a scalar is everyone's).
fn rows_of(t: &Tensor, r: &std::ops::Range<usize>) -> Tensor {
    let Some(&n) = t.shape.first() else {
        return t.clone();
    };
    let per = t.len() / n.max(1);
    let mut shape = t.shape.clone();
    shape[0] = r.len();
    Tensor::new(t.dtype, shape, t.data[r.start * per..r.end * per].to_vec())
}

fn count_correct(out: &Tensor, labels: &Tensor) -> usize {
    let c = *out.shape.last().unwrap_or(&1);
    out.data
        .chunks(c.max(1))
        .zip(&labels.data)
        .filter(|(row, y)| argmax(row) as f64 == **y)
        .count()
}

/// The index of the first largest value.
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
