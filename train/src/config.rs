//! A train block resolved into settings the training loop uses, with command-line
//! overrides applied on top.

use std::path::{Path, PathBuf};

use nnc_lang::{CallSpec, Static, TrainSpec};
use nnc_runtime::data::{DataSpec, Normalize, Source, Split};

use crate::schedule::Schedule;

/// What runs the compiled functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// Native code from the Cranelift JIT (the default).
    #[default]
    Jit,
    /// The reference interpreter, the oracle.
    Interp,
    /// Native code from LLVM (nnc built with the `llvm` feature).
    Llvm,
}

/// Everything a training run needs besides the model.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The model's name.
    pub model: String,
    /// The optimizer rule's name.
    pub optimizer: String,
    /// The base learning rate (the rule's `lr`; 1 if it has none).
    pub lr: f64,
    /// The schedule.
    pub schedule: Schedule,
    /// Rows per step.
    pub batch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
    /// Seed for initialization, shuffling and gradient noise.
    pub seed: u64,
    /// Global gradient-norm bound.
    pub clip: Option<f64>,
    /// Gradient noise scale `eta`: noise with variance `eta / (1 + t)^0.55` at step `t`.
    pub grad_noise: Option<f64>,
    /// The data, if declared or given.
    pub data: Option<DataSpec>,
    /// What runs the functions.
    pub backend: Backend,
}

/// Command-line overrides of a train block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// A data file (`.csv`, or `.npy` features) replacing the declared one.
    pub data: Option<PathBuf>,
    /// A `.npy` labels file.
    pub labels: Option<PathBuf>,
    /// The CSV label column.
    pub label: Option<String>,
    /// Feature scale.
    pub scale: Option<f64>,
    /// Hold out the last N rows.
    pub test_tail: Option<usize>,
    /// Hold out the last fraction of rows.
    pub test_fraction: Option<f64>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Batch size.
    pub batch: Option<usize>,
    /// Seed.
    pub seed: Option<u64>,
}

fn num(s: &Static) -> Option<f64> {
    match s {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        _ => None,
    }
}

fn arg<'a>(c: &'a CallSpec, key: &str) -> Option<&'a Static> {
    c.args.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn arg_num(c: &CallSpec, key: &str, default: f64) -> f64 {
    arg(c, key).and_then(num).unwrap_or(default)
}

fn arg_str(c: &CallSpec, key: &str) -> Option<String> {
    match arg(c, key) {
        Some(Static::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

impl TrainConfig {
    /// Settings for a model used without training (no train block): forward passes only.
    pub fn inference(model: &str) -> TrainConfig {
        TrainConfig {
            model: model.to_string(),
            optimizer: String::new(),
            lr: 0.0,
            schedule: Schedule::Constant,
            batch: 1,
            epochs: 0,
            seed: 0,
            clip: None,
            grad_noise: None,
            data: None,
            backend: Backend::default(),
        }
    }

    /// Resolves a checked train block; relative data paths are taken from `base_dir` (the
    /// `.nn` file's folder). The checker has already validated every value's kind.
    pub fn from_spec(spec: &TrainSpec, base_dir: &Path) -> TrainConfig {
        let setting = |k: &str| spec.settings.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let s = &spec.schedule;
        let schedule = match s.name.as_str() {
            "step" => Schedule::Step {
                every: arg_num(s, "every", 10.0) as usize,
                gamma: arg_num(s, "gamma", 0.1),
            },
            "exponential" => Schedule::Exponential {
                gamma: arg_num(s, "gamma", 0.95),
            },
            "cosine" => Schedule::Cosine {
                warmup: arg_num(s, "warmup", 0.0) as usize,
                min_lr: arg_num(s, "min_lr", 0.0),
            },
            "one_cycle" => Schedule::OneCycle {
                pct_start: arg_num(s, "pct_start", 0.3),
                div: arg_num(s, "div", 25.0),
                final_div: arg_num(s, "final_div", 1e4),
            },
            _ => Schedule::Constant,
        };
        let data = spec.data.as_ref().map(|d| {
            let path = |k: &str| arg_str(d, k).map(|p| base_dir.join(p));
            let source = if d.name == "npy" {
                Source::Npy {
                    x: path("x").unwrap_or_default(),
                    y: path("y"),
                }
            } else if d.name == "text" {
                // Without `window`, the model's input width (0 until the model is known).
                Source::Text {
                    path: path("path").unwrap_or_default(),
                    window: arg(d, "window").and_then(num).map_or(0, |n| n as usize),
                }
            } else {
                Source::Csv {
                    path: path("path").unwrap_or_default(),
                    label: Some(arg_str(d, "label").unwrap_or_else(|| "label".into())),
                }
            };
            let on = |k: &str| matches!(arg(d, k), Some(Static::Bool(true)));
            DataSpec {
                source,
                // Both at once was refused by the checker.
                normalize: if on("standardize") {
                    Normalize::Standardize
                } else if on("min_max") {
                    Normalize::MinMax
                } else {
                    Normalize::None
                },
                scale: arg_num(d, "scale", 1.0),
                split: split_of(
                    arg(d, "test_tail").and_then(num).map(|n| n as usize),
                    arg(d, "test_fraction").and_then(num),
                ),
            }
        });
        TrainConfig {
            model: spec.model.clone(),
            optimizer: spec.optimizer.name.clone(),
            lr: arg(&spec.optimizer, "lr").and_then(num).unwrap_or(1.0),
            schedule,
            batch: spec.batch as usize,
            epochs: spec.epochs as usize,
            seed: setting("seed").and_then(num).unwrap_or(0.0) as u64,
            clip: setting("clip").and_then(num).filter(|&c| c > 0.0),
            grad_noise: setting("grad_noise").and_then(num).filter(|&c| c > 0.0),
            data,
            backend: Backend::default(),
        }
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), crate::TrainError> {
        if let Some(e) = o.epochs {
            self.epochs = e;
        }
        if let Some(b) = o.batch {
            if b == 0 {
                return Err(crate::TrainError::Failed(
                    "--batch must be at least 1".into(),
                ));
            }
            self.batch = b;
        }
        if let Some(s) = o.seed {
            self.seed = s;
        }
        if let Some(path) = &o.data {
            let ext = |x: &str| path.extension().is_some_and(|e| e.eq_ignore_ascii_case(x));
            let is_npy = ext("npy");
            let old = self.data.take();
            // A text set stays one (with its window); a `.txt` file becomes one.
            let text_window = match &old {
                Some(DataSpec {
                    source: Source::Text { window, .. },
                    ..
                }) => Some(*window),
                _ => ext("txt").then_some(0),
            };
            let (old_scale, old_split, old_label, old_norm) = match &old {
                Some(d) => (
                    d.scale,
                    d.split,
                    match &d.source {
                        Source::Csv { label, .. } => label.clone(),
                        Source::Npy { .. } | Source::Text { .. } => None,
                    },
                    d.normalize,
                ),
                None => (1.0, Split::None, None, Normalize::None),
            };
            let source = if let Some(window) = text_window {
                Source::Text {
                    path: path.clone(),
                    window,
                }
            } else if is_npy {
                Source::Npy {
                    x: path.clone(),
                    y: o.labels.clone(),
                }
            } else {
                Source::Csv {
                    path: path.clone(),
                    label: old_label.or_else(|| Some("label".into())),
                }
            };
            self.data = Some(DataSpec {
                source,
                scale: old_scale,
                split: old_split,
                normalize: old_norm,
            });
        } else if o.labels.is_some() {
            match &mut self.data {
                Some(DataSpec {
                    source: Source::Npy { y, .. },
                    ..
                }) => *y = o.labels.clone(),
                _ => {
                    return Err(crate::TrainError::Failed(
                        "--labels goes with .npy features (--data x.npy)".into(),
                    ));
                }
            }
        }
        let Some(d) = &mut self.data else {
            if o.label.is_some()
                || o.scale.is_some()
                || o.test_tail.is_some()
                || o.test_fraction.is_some()
            {
                return Err(crate::TrainError::Failed(
                    "no data is declared in the train block; give it with --data".into(),
                ));
            }
            return Ok(());
        };
        if let Some(l) = &o.label {
            match &mut d.source {
                Source::Csv { label, .. } => *label = Some(l.clone()),
                Source::Npy { .. } => {
                    return Err(crate::TrainError::Failed(
                        "--label names a CSV column; .npy labels come from --labels".into(),
                    ));
                }
                Source::Text { .. } => {
                    return Err(crate::TrainError::Failed(
                        "--label names a CSV column; a text's labels are its next bytes".into(),
                    ));
                }
            }
        }
        if let Some(s) = o.scale {
            if !(s > 0.0 && s.is_finite()) {
                return Err(crate::TrainError::Failed(format!(
                    "--scale must be a positive number, found {s}"
                )));
            }
            d.scale = s;
        }
        if o.test_tail.is_some() || o.test_fraction.is_some() {
            if let Some(f) = o.test_fraction
                && !(0.0..1.0).contains(&f)
            {
                return Err(crate::TrainError::Failed(format!(
                    "--test-fraction must be at least 0 and below 1, found {f}"
                )));
            }
            d.split = split_of(o.test_tail, o.test_fraction);
        }
        Ok(())
    }
}

fn split_of(tail: Option<usize>, fraction: Option<f64>) -> Split {
    match (tail, fraction) {
        (Some(n), _) => Split::Tail(n),
        (None, Some(f)) => Split::Fraction(f),
        (None, None) => Split::None,
    }
}
