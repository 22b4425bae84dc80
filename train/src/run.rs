//! A training run end to end: data loaded and checked, the output folder claimed, epochs
//! trained and evaluated, and after each epoch the checkpoint, `metrics.csv`,
//! `metrics.json` and the curve picture written (each atomically).
//!
//! Nothing is written before the model and the data have been checked, and an output
//! folder that already holds a run is refused unless the caller forces it or resumes from
//! a checkpoint inside it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nnc_runtime::Checkpoint;
use nnc_runtime::checkpoint::write_atomic;
use nnc_runtime::data::{self, DataSpec, Dataset, FeatureStats, Normalize, Source};

use std::sync::Arc;

use crate::config::TrainConfig;
use crate::dist::{self, Comm, Fingerprint, Solo, settle};
use crate::session::{Metrics, Model, Session, StepReport, TrainError};

/// File names inside a run folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Per-epoch metrics.
pub const METRICS_CSV: &str = "metrics.csv";
/// Final metrics.
pub const METRICS_JSON: &str = "metrics.json";
/// The loss and accuracy curves.
pub const CURVE: &str = "curve.svg";

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    /// The epoch (1-based).
    pub epoch: u64,
    /// Steps taken by its end.
    pub step: u64,
    /// The learning rate of its last step.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: Option<f64>,
    /// Held-out loss after the epoch.
    pub test_loss: Option<f64>,
    /// Held-out accuracy after the epoch.
    pub test_accuracy: Option<f64>,
    /// Seconds of training so far (a resumed run continues the count).
    pub seconds: f64,
}

/// Hears about progress (the CLI draws a progress bar; tests stay silent).
pub trait Observer {
    /// An epoch of `steps` steps begins.
    fn epoch_start(&mut self, _epoch: u64, _epochs: u64, _steps: u64) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// An epoch finished and its files were written.
    fn epoch_end(&mut self, _row: &EpochRow) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// Where a run writes and what it starts from.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The output folder.
    pub out: PathBuf,
    /// Write into a folder that already holds a run.
    pub force: bool,
    /// Continue from this checkpoint (parameters, optimizer state, counters).
    pub resume: Option<PathBuf>,
    /// Start from this checkpoint's parameters and buffers, with fresh optimizer states
    /// and counters (fine-tuning).
    pub init: Option<PathBuf>,
}

/// What a finished run reports (also written as `metrics.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The last epoch's row.
    pub last: EpochRow,
    /// Epochs completed.
    pub epochs: u64,
    /// The output folder.
    pub out: PathBuf,
    /// Said when the run ended worse than it began (the loss diverged without becoming
    /// infinite: a learning rate far too large).
    pub warning: Option<String>,
}

/// `spec` with a text source's window, where it has none, the model's input width.
fn text_window(spec: &DataSpec, model: &Model) -> DataSpec {
    let mut spec = spec.clone();
    if let Source::Text { window, .. } = &mut spec.source
        && *window == 0
    {
        let dims = model.x.1.shape.dims();
        *window = dims.get(1).and_then(|d| d.known()).unwrap_or(0) as usize;
    }
    spec
}

/// Loads the configured data, split and fitted to the model: `(train, test)`, both
/// normalized as configured by `stats` (a checkpoint's), or by statistics fitted here on
/// the training rows only when `stats` is `None` and `fit` allows it. Returns the
/// statistics used.
pub fn load_data(
    model: &Model,
    config: &TrainConfig,
    stats: Option<&FeatureStats>,
    fit: bool,
) -> Result<(Dataset, Option<Dataset>, Option<FeatureStats>), String> {
    let Some(spec) = &config.data else {
        return Err(format!(
            "no data for `{}`: declare `data = csv(\"file.csv\", label = \"label\")` in its train block, or pass --data",
            model.name
        ));
    };
    let all = model.fit(data::load(&text_window(spec, model))?)?;
    let (mut train, mut test) = all.split(spec.split)?;
    let stats = match (stats, spec.normalize) {
        (Some(s), _) => Some(s.clone()),
        (None, Normalize::None) => None,
        (None, kind) if fit => Some(FeatureStats::fit(kind, &train.x)?),
        (None, _) => {
            return Err(
                "the train block normalizes the features, but the checkpoint holds no statistics (it was trained without them)"
                    .into(),
            );
        }
    };
    if let Some(s) = &stats {
        s.apply(&mut train.x)?;
        if let Some(t) = &mut test {
            s.apply(&mut t.x)?;
        }
    }
    Ok((train, test, stats))
}

/// Whether a folder already holds (part of) a run.
pub fn holds_run(dir: &Path) -> bool {
    [CHECKPOINT, METRICS_CSV, METRICS_JSON]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Trains as configured, writing into `opts.out`.
pub fn train(
    model: Model,
    config: TrainConfig,
    opts: &RunOptions,
    obs: &mut dyn Observer,
) -> Result<Summary, TrainError> {
    train_on(model, config, opts, obs, Arc::new(Solo))
}

/// Trains as one rank of a data-parallel job (`comm`; `train` is the job of one): every
/// rank builds the model, reads the data and takes its shard of each batch; rank 0 alone
/// reads the checkpoint it starts from (the others get its bytes) and writes the run
/// folder. Each phase ends with the ranks agreeing (`dist::settle`): an error on any rank,
/// or data that differ between ranks, fails every rank with that error.
pub fn train_on(
    model: Model,
    config: TrainConfig,
    opts: &RunOptions,
    obs: &mut dyn Observer,
    comm: Arc<dyn Comm>,
) -> Result<Summary, TrainError> {
    let c = &*comm;
    let lead = c.rank() == 0;
    // What every rank must have the same of: the model and the settings, then the data.
    let mut same = Fingerprint::default();
    same.bytes(model.forward.to_string().as_bytes())
        .bytes(format!("{config:?}").as_bytes());
    let mut session = settle(
        c,
        Session::new(model, config),
        "its .nn file or settings",
        |_| same.0,
    )?;
    session.set_comm(Arc::clone(&comm));
    // The checkpoint a resumed or fine-tuned run starts from.
    let start = match opts.resume.as_ref().or(opts.init.as_ref()) {
        None => None,
        Some(p) if c.size() == 1 => Some(Checkpoint::load(p)?),
        Some(p) => {
            let read = if lead {
                Checkpoint::load(p)
                    .and_then(|ck| ck.to_bytes())
                    .map_err(TrainError::from)
            } else {
                Ok(Vec::new())
            };
            let bytes = settle(c, read, "", |_| 0)?;
            let bytes = dist::share_bytes(c, lead.then_some(bytes));
            Some(Checkpoint::from_bytes(&bytes)?)
        }
    };
    // A resumed or fine-tuned run normalizes with the checkpoint's statistics, not
    // refitted ones.
    let resumed_stats = match &start {
        Some(ck) => FeatureStats::from_meta(&ck.meta)?,
        None => None,
    };
    let loaded = load_data(
        &session.model,
        &session.config,
        resumed_stats.as_ref(),
        true,
    )
    .map_err(TrainError::from);
    let (train, test, stats) = settle(c, loaded, "its data", |(train, test, _)| {
        let mut fp = same;
        for d in std::iter::once(train).chain(test) {
            fp.values(&d.x.data);
            if let Some(y) = &d.y {
                fp.values(&y.data);
            }
        }
        fp.0
    })?;
    session.stats = stats;
    let mut rows: Vec<EpochRow> = Vec::new();
    let out = &opts.out;
    if let (Some(ck), Some(_)) = (&start, &opts.init) {
        session.restore(ck, false)?;
    }
    if let (Some(ck), Some(ck_path)) = (&start, &opts.resume) {
        session.restore(ck, true)?;
        if session.epoch >= session.config.epochs as u64 {
            return Err(TrainError::Failed(format!(
                "`{}` is already at epoch {} of {}; pass a larger --epochs to train further",
                ck_path.display(),
                session.epoch,
                session.config.epochs
            )));
        }
        // Keep the history of the run being continued, up to the checkpoint.
        if let Ok(text) = std::fs::read_to_string(out.join(METRICS_CSV)) {
            rows = parse_rows(&text)
                .into_iter()
                .filter(|r| r.epoch <= session.epoch)
                .collect();
        }
    }
    let claimed = if lead { claim(out, opts) } else { Ok(false) };
    let created = settle(c, claimed, "", |_| 0)?;
    let result = train_epochs(&mut session, &train, test.as_ref(), rows, out, obs);
    // A run that failed before writing anything leaves no empty folder behind.
    if result.is_err() && created {
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// Makes `out` the run's folder (rank 0's part of a start): refuses one that holds
/// another run unless forced or resumed there. Returns whether it was created.
fn claim(out: &Path, opts: &RunOptions) -> Result<bool, TrainError> {
    let resuming_here = opts
        .resume
        .as_ref()
        .and_then(|p| p.parent())
        .is_some_and(|d| same_dir(d, out));
    if holds_run(out) && !opts.force && !resuming_here {
        return Err(TrainError::Failed(format!(
            "`{}` already holds a run; choose another --out, or pass --force to replace it",
            out.display()
        )));
    }
    let created = !out.exists();
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create output folder `{}`: {e}", out.display()))?;
    remove_stale_temporaries(out);
    Ok(created)
}

/// Temporary files of `write_atomic` (`.metrics.csv.tmp-PID`) that a killed process left.
fn remove_stale_temporaries(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = [CHECKPOINT, METRICS_CSV, METRICS_JSON, CURVE]
            .iter()
            .any(|f| name.starts_with(&format!(".{f}.tmp-")));
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn train_epochs(
    session: &mut Session,
    train: &Dataset,
    test: Option<&Dataset>,
    mut rows: Vec<EpochRow>,
    out: &Path,
    obs: &mut dyn Observer,
) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let mut first_loss: Option<f64> = None;
    let earlier = rows.last().map_or(0.0, |r| r.seconds);
    let epochs = session.config.epochs as u64;
    let steps = session.steps_per_epoch(train.len()) as u64;
    while session.epoch < epochs {
        obs.epoch_start(session.epoch + 1, epochs, steps);
        let mut last_lr = 0.0;
        let trained = session.train_epoch(train, &mut |r| {
            last_lr = r.lr;
            first_loss.get_or_insert(r.loss);
            obs.step(r)
        });
        let fit = match trained {
            Ok(m) => m,
            Err(e @ TrainError::Diverged { step, .. }) => {
                let kept = if out.join(CHECKPOINT).exists() {
                    format!(
                        "the last good checkpoint (epoch {}) is `{}`",
                        session.epoch,
                        out.join(CHECKPOINT).display()
                    )
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                // At the first step no update has happened: the model itself is not finite.
                let hint = if step == 1 {
                    ""
                } else {
                    " (try a smaller learning rate, or `clip = 1.0` in the train block)"
                };
                return Err(TrainError::Failed(format!("{e}; {kept}{hint}")));
            }
            Err(e) => return Err(e),
        };
        let held: Option<Metrics> = match test {
            Some(t) => Some(session.evaluate(t)?),
            None => None,
        };
        let row = EpochRow {
            epoch: session.epoch,
            step: session.step,
            lr: last_lr,
            train_loss: fit.loss,
            train_accuracy: fit.accuracy,
            test_loss: held.map(|m| m.loss),
            test_accuracy: held.and_then(|m| m.accuracy),
            seconds: earlier + start.elapsed().as_secs_f64(),
        };
        rows.push(row.clone());
        // Rank 0 writes the run's files; the others wait to hear that it did.
        let written = if session.comm().rank() == 0 {
            write_epoch(session, &rows, &row, out)
        } else {
            Ok(())
        };
        settle(session.comm(), written, "", |_| 0)?;
        if session.comm().size() > 1 && session.comm().rank() == 0 {
            dist::on_stop(&format!(
                "the last complete checkpoint is `{}` (epoch {}); continue with --resume {}",
                out.join(CHECKPOINT).display(),
                session.epoch,
                out.join(CHECKPOINT).display()
            ));
        }
        obs.epoch_end(&row);
    }
    let last = rows
        .last()
        .cloned()
        .ok_or_else(|| "no epoch was trained".to_string())?;
    // Ten times the loss of the run's first step, at its end: training made it worse.
    let warning = first_loss
        .filter(|&f| f.is_finite() && last.train_loss > 10.0 * f.abs().max(1e-12))
        .map(|f| {
            format!(
                "the training loss grew from {f:.4} (first step) to {:.4} (last epoch): the run diverged; try a smaller learning rate",
                last.train_loss
            )
        });
    Ok(Summary {
        last,
        epochs: session.epoch,
        out: out.to_path_buf(),
        warning,
    })
}

/// An epoch's files: the metrics first, then the checkpoint (killed between the two, the
/// folder holds a row for an epoch the checkpoint does not have yet, which a resume drops
/// and trains again; the other order lost the row for good), then the summary and curve.
fn write_epoch(
    session: &Session,
    rows: &[EpochRow],
    row: &EpochRow,
    out: &Path,
) -> Result<(), TrainError> {
    write_atomic(&out.join(METRICS_CSV), csv_text(rows).as_bytes())?;
    session.to_checkpoint().save(&out.join(CHECKPOINT))?;
    write_atomic(&out.join(METRICS_JSON), json_text(session, row).as_bytes())?;
    write_atomic(
        &out.join(CURVE),
        crate::plot::svg(&session.model.name, rows).as_bytes(),
    )?;
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let a = if a.as_os_str().is_empty() {
        Path::new(".")
    } else {
        a
    };
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

const CSV_HEADER: &str = "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds";

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

/// `metrics.csv`: a header and one row per epoch.
pub fn csv_text(rows: &[EpochRow]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{:.3}\n",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            opt(r.train_accuracy),
            opt(r.test_loss),
            opt(r.test_accuracy),
            r.seconds
        ));
    }
    s
}

/// Reads back `metrics.csv` rows (skipping any it cannot read).
pub fn parse_rows(text: &str) -> Vec<EpochRow> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            if c.len() != 8 {
                return None;
            }
            let f = |s: &str| s.parse::<f64>().ok();
            Some(EpochRow {
                epoch: c[0].parse().ok()?,
                step: c[1].parse().ok()?,
                lr: f(c[2])?,
                train_loss: f(c[3])?,
                train_accuracy: f(c[4]),
                test_loss: f(c[5]),
                test_accuracy: f(c[6]),
                seconds: f(c[7])?,
            })
        })
        .collect()
}

fn json_text(s: &Session, last: &EpochRow) -> String {
    let v = serde_json::json!({
        "model": s.model.name,
        "optimizer": s.config.optimizer,
        "seed": s.config.seed,
        "batch": s.config.batch,
        "epochs": s.epoch,
        "steps": s.step,
        "train_loss": last.train_loss,
        "train_accuracy": last.train_accuracy,
        "test_loss": last.test_loss,
        "test_accuracy": last.test_accuracy,
        "seconds": last.seconds,
    });
    let mut text = serde_json::to_string_pretty(&v).expect("plain JSON values serialize");
    text.push('\n');
    text
}
