//! The run-time side of the structs that `model!` and `include_model!` generate: a model
//! checked from its source text, with its parameters, optimizer state and training loop.
//!
//! The generated struct is a thin typed shell over [`Net`]; everything here is the same
//! code the CLI runs (`nnc_train::Session`), so a model trained through the macro and one
//! trained with `nnc train` from the same seed end with the same parameters, bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nnc_ir::Dim;
use nnc_runtime::Checkpoint;
use nnc_runtime::data::Dataset;
use nnc_train::{Metrics, Model, Session, TrainConfig};

pub use nnc_runtime::Tensor;

/// What went wrong in a generated model's method.
#[derive(Clone, Debug, PartialEq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

impl From<nnc_runtime::Error> for Error {
    fn from(e: nnc_runtime::Error) -> Error {
        Error(e.to_string())
    }
}

impl From<nnc_train::TrainError> for Error {
    fn from(e: nnc_train::TrainError) -> Error {
        Error(e.to_string())
    }
}

/// `Result` with nnc's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A checked model with its state; see the module docs.
#[derive(Clone, Debug)]
pub struct Net {
    session: Session,
    base_dir: PathBuf,
}

impl Net {
    /// Checks `source`, picks model `name`, and initializes its parameters from `seed`.
    /// Data paths in its train block are relative to `base_dir`. The macro has checked the
    /// source at compile time, so an error here means the source was not a macro's.
    pub fn new(source: &str, name: &str, base_dir: &str, seed: u64) -> Result<Net> {
        let checked = nnc_lang::check(source).map_err(|d| {
            Error(format!(
                "the model source does not check:\n{}",
                crate::render_plain("model", source, &d)
            ))
        })?;
        let spec = checked.trains.iter().find(|t| t.model == name);
        let model = Model::new(&checked.module, name, spec)?.with_lines(&checked.lines);
        let mut config = match spec {
            Some(s) => TrainConfig::from_spec(s, Path::new(base_dir)),
            None => TrainConfig::inference(name),
        };
        config.seed = seed;
        Ok(Net {
            session: Session::new(model, config)?,
            base_dir: PathBuf::from(base_dir),
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.session.model.name
    }

    /// Checks values against declared input types (element type, rank, fixed sizes, and
    /// one size per symbolic dimension), naming the input and the expected type.
    fn check_inputs(&self, method: &str, args: &[nnc_ir::Arg], values: &[&Tensor]) -> Result<()> {
        let mut bound: HashMap<&str, usize> = HashMap::new();
        for (a, t) in args.iter().zip(values) {
            let dims = a.ty.shape.dims();
            let mut ok = t.dtype == a.ty.dtype && t.shape.len() == dims.len();
            if ok {
                for (d, &n) in dims.iter().zip(&t.shape) {
                    match d {
                        Dim::Known(k) => ok &= *k as usize == n,
                        Dim::Sym(s) => {
                            if let Some(&prev) = bound.get(s.as_str())
                                && prev != n
                            {
                                return Err(Error(format!(
                                    "{}::{method}: input `{}` has {s} = {n}, but an earlier input has {s} = {prev}",
                                    self.name(),
                                    a.name
                                )));
                            }
                            bound.insert(s, n);
                        }
                    }
                }
            }
            if !ok {
                return Err(Error(format!(
                    "{}::{method}: input `{}` must be {}, got {}",
                    self.name(),
                    a.name,
                    a.ty,
                    t.ty()
                )));
            }
        }
        Ok(())
    }

    /// The forward pass on the model's inputs, in declaration order.
    pub fn forward(&mut self, inputs: &[&Tensor]) -> Result<Tensor> {
        let f = &self.session.model.forward;
        self.check_inputs("forward", &f.inputs, inputs)?;
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        Ok(self.session.forward(&owned)?)
    }

    /// One training step on a batch: the model's inputs, then the train block's (labels).
    /// Returns the batch's loss (before the update).
    pub fn train_step(&mut self, inputs: &[&Tensor]) -> Result<f32> {
        let Some(loss) = &self.session.model.loss else {
            return Err(Error(format!("{} has no train block", self.name())));
        };
        // The noise key (models that draw `random`) is the session's to supply.
        let declared = &loss.inputs[..loss.inputs.len() - usize::from(self.session.model.noise)];
        self.check_inputs("train_step", declared, inputs)?;
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let rows = owned
            .first()
            .map_or(1, |t| t.shape.first().copied().unwrap_or(1));
        let (l, _) = self
            .session
            .train_step(&owned, rows.div_ceil(self.session.config.batch))?;
        Ok(l as f32)
    }

    /// Trains `epochs` more epochs over `data` with the train block's optimizer, schedule
    /// and batch size (shuffled with the seed), returning each epoch's training metrics.
    pub fn fit(&mut self, data: &Dataset, epochs: usize) -> Result<Vec<Metrics>> {
        let data = self.session.model.fit(data.clone())?;
        self.session.config.epochs = self.session.epoch as usize + epochs;
        let mut out = Vec::new();
        for _ in 0..epochs {
            out.push(self.session.train_epoch(&data, &mut |_| {})?);
        }
        Ok(out)
    }

    /// Mean loss (and accuracy for classifiers) over a data set.
    pub fn evaluate(&self, data: &Dataset) -> Result<Metrics> {
        let data = self.session.model.fit(data.clone())?;
        Ok(self.session.evaluate(&data)?)
    }

    /// The data the train block declares, split and normalized as declared: `(train,
    /// test)`. Normalization statistics are fitted on the training rows (or kept from a
    /// loaded checkpoint) and saved with the net.
    pub fn data(&mut self) -> Result<(Dataset, Option<Dataset>)> {
        if self.session.config.data.is_none() {
            return Err(Error(format!(
                "{}'s train block declares no data (relative paths start at {})",
                self.name(),
                self.base_dir.display()
            )));
        }
        let (train, test, stats) = nnc_train::run::load_data(
            &self.session.model,
            &self.session.config,
            self.session.stats.as_ref(),
            true,
        )?;
        self.session.stats = stats;
        Ok((train, test))
    }

    /// Writes a checkpoint (the same format as `nnc train`), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.session.to_checkpoint().save(path.as_ref())?)
    }

    /// Loads a checkpoint written by `save` or by `nnc train`: parameters, and the
    /// optimizer state and counters when it has them and the model trains.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let ck = Checkpoint::load(path.as_ref())?;
        let resume = self.session.model.update.is_some()
            && ck.tensors.iter().any(|(n, _)| n.starts_with("optimizer."));
        Ok(self.session.restore(&ck, resume)?)
    }

    /// A parameter by its IR name (`h1.w`).
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        let i = self
            .session
            .model
            .param_names()
            .iter()
            .position(|n| *n == name)?;
        self.session.params.get(i)
    }

    /// The i-th parameter, in declaration order.
    pub fn param_at(&self, i: usize) -> &Tensor {
        &self.session.params[i]
    }

    /// Every parameter with its name, in declaration order.
    pub fn params(&self) -> Vec<(&str, &Tensor)> {
        self.session
            .model
            .param_names()
            .into_iter()
            .zip(&self.session.params)
            .collect()
    }

    /// The training session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }
}
