//! The training commands: `train`, `eval`, `predict` and `gradcheck`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nnc_ir::DType;
use nnc_runtime::data::{self, DataSpec, Source, Split};
use nnc_runtime::{Checkpoint, Rng, Tensor};
use std::sync::Arc;

use nnc_train::dist::{self, Comm};
use nnc_train::run::{EpochRow, Observer, RunOptions};
use nnc_train::session::StepReport;
use nnc_train::{Model, Overrides, Session, TrainConfig};

use crate::{Failed, load_checked};

/// Where the data comes from, overriding the train block.
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// A data file: CSV with a header, or .npy features (labels from --labels).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// A .npy file of labels, one per row of --data.
    #[arg(long, value_name = "FILE.npy")]
    labels: Option<PathBuf>,
    /// The CSV column holding the label (default: as declared, else `label`).
    #[arg(long, value_name = "COLUMN")]
    label: Option<String>,
    /// Multiply every feature by this (as `scale` in the train block).
    #[arg(long)]
    scale: Option<f64>,
    /// Hold out the last N rows for testing.
    #[arg(long, value_name = "N")]
    test_tail: Option<usize>,
    /// Hold out the last fraction of rows for testing.
    #[arg(long, value_name = "F")]
    test_fraction: Option<f64>,
}

/// What runs the model.
#[derive(Args, Clone, Copy, Debug)]
pub(crate) struct BackendArg {
    /// What runs the model: jit (Cranelift native code, the default), llvm (LLVM native code;
    /// builds with --features llvm) or interp (the reference interpreter).
    #[arg(long = "backend", default_value = "jit", value_parser = parse_backend)]
    pub(crate) backend: nnc_train::Backend,
}

fn parse_backend(name: &str) -> Result<nnc_train::Backend, String> {
    match name {
        "jit" => Ok(nnc_train::Backend::Jit),
        "interp" => Ok(nnc_train::Backend::Interp),
        "llvm" if nnc_jit::HAS_LLVM => Ok(nnc_train::Backend::Llvm),
        "llvm" => Err(nnc_jit::NO_LLVM.into()),
        other => Err(format!(
            "`{other}` is not a backend; use jit, llvm or interp"
        )),
    }
}

/// `nnc train` options.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    backend: BackendArg,
    /// The .nn file.
    file: PathBuf,
    /// The model to train (default: the one with a train block).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs of the whole run (a resumed run continues up to this many).
    #[arg(long)]
    epochs: Option<usize>,
    /// Rows per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Seed for initialization, shuffling and gradient noise.
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder (default: runs/<file>-<n> next to the .nn file, a new one each run;
    /// with --resume, the checkpoint's folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from a checkpoint: parameters, optimizer state, step and epoch.
    #[arg(long, value_name = "CKPT", conflicts_with = "init")]
    resume: Option<PathBuf>,
    /// Start from a checkpoint's parameters (fine-tuning, e.g. a model from `nnc
    /// import`): fresh optimizer state, step and epoch 0.
    #[arg(long, value_name = "CKPT")]
    init: Option<PathBuf>,
    /// Write into an output folder that already holds a run.
    #[arg(long)]
    force: bool,
    /// No progress bar or per-epoch lines; only the summary.
    #[arg(long, short)]
    quiet: bool,
    /// Threads a training step splits its batch over, where the loss allows it and the
    /// step is large enough to pay (default: the cores available; a resumed run, the
    /// checkpoint's). Results are bitwise reproducible for a given count and differ by
    /// float rounding between counts.
    #[arg(long)]
    threads: Option<usize>,
}

/// `--threads`' default: the cores this process may use.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `nnc eval` options.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    backend: BackendArg,
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block).
    #[arg(long)]
    model: Option<String>,
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

/// `nnc predict` options.
#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    backend: BackendArg,
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block, else the first).
    #[arg(long)]
    model: Option<String>,
    /// The trained parameters.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// Rows to predict: CSV with a header (a label column, if present, is ignored) or .npy.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write predictions as CSV (default: standard output).
    #[arg(long, value_name = "CSV")]
    output: Option<PathBuf>,
    /// Replace --output if it exists.
    #[arg(long)]
    force: bool,
}

/// `nnc gradcheck` options.
#[derive(Args, Debug)]
pub struct GradcheckArgs {
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block).
    #[arg(long)]
    model: Option<String>,
    /// Rows of random input.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Seed for parameters, inputs and the elements checked.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Elements checked per parameter (0 = all).
    #[arg(long, default_value_t = 32)]
    elems: usize,
    /// The largest error accepted.
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> Failed {
    if !FOLLOWER.load(std::sync::atomic::Ordering::Relaxed) {
        match dist::launched() {
            Some((rank, size)) if rank > 0 => eprintln!("error: rank {rank} of {size}: {msg}"),
            _ => eprintln!("error: {msg}"),
        }
    }
    Failed(1)
}

/// Set on the ranks of a data-parallel job other than rank 0 once training starts: from
/// there the ranks agree on every error, and rank 0 alone reports it (naming the rank it
/// came from).
static FOLLOWER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The job `nnc train` runs in: alone, or under a launcher (mpirun) one rank of a
/// data-parallel job over MPI. An nnc without MPI refuses to run as one of several
/// processes, which would each train their own copy.
pub(crate) fn job() -> Result<Arc<dyn Comm>, Failed> {
    let Some((rank, size)) = dist::launched() else {
        return Ok(Arc::new(dist::Solo));
    };
    #[cfg(feature = "mpi")]
    {
        let _ = (rank, size);
        let mpi = dist::Mpi::init().ok_or_else(|| fail("MPI could not be initialized"))?;
        if mpi.rank() == 0 && mpi.size() > 1 {
            dist::report_stops();
        }
        Ok(Arc::new(mpi))
    }
    #[cfg(not(feature = "mpi"))]
    {
        if rank != 0 {
            FOLLOWER.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if size > 1 {
            return Err(fail(dist::without_mpi(size)));
        }
        Ok(Arc::new(dist::Solo))
    }
}

/// The model to use: `--model`, else the one a train block trains, else (if allowed)
/// the first model.
pub(crate) fn pick(
    checked: &nnc_lang::Checked,
    file: &Path,
    model: Option<String>,
    need_train: bool,
) -> Result<(Model, Option<nnc_lang::TrainSpec>), Failed> {
    let models: Vec<&str> = checked
        .module
        .funcs
        .iter()
        .filter(|f| !f.name.contains('.'))
        .map(|f| f.name.as_str())
        .collect();
    let name = match model {
        Some(m) => {
            if !models.contains(&m.as_str()) {
                return Err(fail(format!(
                    "no model `{m}` in {}; it defines: {}",
                    file.display(),
                    models.join(", ")
                )));
            }
            m
        }
        None => match (checked.trains.as_slice(), models.first()) {
            ([t], _) => t.model.clone(),
            ([], Some(first)) if !need_train => first.to_string(),
            ([], _) => {
                return Err(fail(format!(
                    "{} has no train block: add `train Model(y: ...) {{ loss = ..., optimizer = ... }}`",
                    file.display()
                )));
            }
            _ => {
                return Err(fail(format!(
                    "{} trains several models; choose one with --model",
                    file.display()
                )));
            }
        },
    };
    let spec = checked.trains.iter().find(|t| t.model == name).cloned();
    if need_train && spec.is_none() {
        return Err(fail(format!("`{name}` has no train block")));
    }
    let model = Model::new(&checked.module, &name, spec.as_ref())
        .map_err(fail)?
        .with_lines(&checked.lines);
    Ok((model, spec))
}

pub(crate) fn base_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn overrides(d: &DataArgs) -> Overrides {
    Overrides {
        data: d.data.clone(),
        labels: d.labels.clone(),
        label: d.label.clone(),
        scale: d.scale,
        test_tail: d.test_tail,
        test_fraction: d.test_fraction,
        ..Overrides::default()
    }
}

/// The first `runs/<stem>-<n>` folder next to the model file that does not exist.
fn fresh_run_dir(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    let runs = base_dir(file).join("runs");
    (1..)
        .map(|n| runs.join(format!("{stem}-{n}")))
        .find(|p| !p.exists())
        .expect("some run number is free")
}

struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: u64,
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: u64, epochs: u64, steps: u64) {
        self.epochs = epochs;
        if let Some(bar) = &self.bar {
            if bar.length() != Some(steps * epochs) {
                bar.set_length(steps * epochs);
                bar.set_position(steps * (epoch - 1));
            }
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        }
    }

    fn step(&mut self, r: &StepReport) {
        if let Some(bar) = &self.bar {
            bar.set_position(r.step);
            bar.set_message(format!("loss {:.4}{}", r.loss, pct(r.accuracy)));
        }
    }

    fn epoch_end(&mut self, row: &EpochRow) {
        let line = epoch_line(row, self.epochs);
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }
}

fn pct(a: Option<f64>) -> String {
    a.map_or(String::new(), |a| format!(" acc {:.2}%", a * 100.0))
}

fn epoch_line(r: &EpochRow, epochs: u64) -> String {
    let test = match r.test_loss {
        Some(l) => format!(" | test loss {l:.4}{}", pct(r.test_accuracy)),
        None => String::new(),
    };
    format!(
        "epoch {:>3}/{epochs}  train loss {:.4}{}{test}  ({:.1} s)",
        r.epoch,
        r.train_loss,
        pct(r.train_accuracy),
        r.seconds
    )
}

pub fn train(a: TrainArgs) -> Result<(), Failed> {
    let comm = job()?;
    let lead = comm.rank() == 0;
    let checked = load_checked(&a.file)?;
    let (model, spec) = pick(&checked, &a.file, a.model.clone(), true)?;
    let spec = spec.expect("pick checked the train block");
    let mut config = TrainConfig::from_spec(&spec, &base_dir(&a.file));
    let mut o = overrides(&a.data);
    o.epochs = a.epochs;
    o.batch = a.batch;
    o.seed = a.seed;
    config.apply(&o).map_err(fail)?;
    config.backend = a.backend.backend;
    // A resumed run continues with the thread count it was trained with, so its bits are
    // those of an uninterrupted run.
    let resumed_threads = a
        .resume
        .as_ref()
        .and_then(|ck| Checkpoint::load(ck).ok())
        .and_then(|c| c.meta.get("threads").and_then(|t| t.parse().ok()));
    // The ranks of a job on one machine share its cores.
    let threads = a
        .threads
        .or(resumed_threads)
        .unwrap_or_else(|| (default_threads() / dist::local_ranks()).max(1));
    nnc_jit::kernels::set_threads(threads);
    if a.resume.is_some() && a.seed.is_none() {
        // The seed names the random streams the resumed run continues.
        if let Some(ck) = &a.resume
            && let Ok(c) = Checkpoint::load(ck)
            && let Some(s) = c.meta.get("seed").and_then(|s| s.parse().ok())
        {
            config.seed = s;
        }
    }
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(ck)) => base_dir(ck),
        (None, None) => fresh_run_dir(&a.file),
    };
    let opts = RunOptions {
        out,
        force: a.force,
        resume: a.resume.clone(),
        init: a.init.clone(),
    };
    let show_bar = lead && !a.quiet && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:32}] {pos}/{len} steps {msg} ({elapsed}, eta {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let name = model.name.clone();
    let mut progress = Progress {
        bar,
        quiet: a.quiet || !lead,
        epochs: 0,
    };
    // Every error of a job's training is every rank's (`dist::settle`); rank 0 reports it
    // before the others leave, since the launcher stops the job when the first one does.
    if !lead {
        FOLLOWER.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let result = nnc_train::run::train_on(model, config, &opts, &mut progress, Arc::clone(&comm));
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let summary = result.map_err(fail);
    comm.barrier();
    let summary = summary?;
    if !lead {
        return Ok(());
    }
    if let Some(w) = &summary.warning {
        eprintln!("warning: {w}");
    }
    let r = &summary.last;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "trained {name} for {} epochs ({} steps) in {:.1} s",
        summary.epochs, r.step, r.seconds
    );
    match r.test_loss {
        Some(l) => {
            let _ = writeln!(out, "test loss {l:.4}{}", pct(r.test_accuracy));
        }
        None => {
            let _ = writeln!(
                out,
                "train loss {:.4}{} (no held-out rows)",
                r.train_loss,
                pct(r.train_accuracy)
            );
        }
    }
    let _ = writeln!(
        out,
        "wrote {}/{{checkpoint.safetensors, metrics.json, metrics.csv, curve.svg}}",
        summary.out.display()
    );
    Ok(())
}

pub(crate) fn session_from(
    model: Model,
    spec: Option<&nnc_lang::TrainSpec>,
    file: &Path,
    checkpoint: &Path,
    backend: nnc_train::Backend,
) -> Result<(Session, TrainConfig), Failed> {
    let mut config = match spec {
        Some(s) => TrainConfig::from_spec(s, &base_dir(file)),
        None => TrainConfig::inference(&model.name),
    };
    config.backend = backend;
    let ck = Checkpoint::load(checkpoint).map_err(fail)?;
    let mut session = Session::new(model, config.clone()).map_err(fail)?;
    session.restore(&ck, false).map_err(fail)?;
    Ok((session, config))
}

pub fn eval(a: EvalArgs) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let (model, spec) = pick(&checked, &a.file, a.model.clone(), true)?;
    let (session, mut config) = session_from(
        model,
        spec.as_ref(),
        &a.file,
        &a.checkpoint,
        a.backend.backend,
    )?;
    let given = a.data.data.is_some();
    config.apply(&overrides(&a.data)).map_err(fail)?;
    if given && a.data.test_tail.is_none() && a.data.test_fraction.is_none() {
        // A file given for evaluation is evaluated whole.
        if let Some(d) = &mut config.data {
            d.split = Split::None;
        }
    }
    let (train, test, _) =
        nnc_train::run::load_data(&session.model, &config, session.stats.as_ref(), false)
            .map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let mut show = |what: &str, ds: &data::Dataset| -> Result<(), Failed> {
        let m = session.evaluate(ds).map_err(fail)?;
        let _ = writeln!(
            out,
            "{what}: {} rows, loss {:.4}{}",
            ds.len(),
            m.loss,
            pct(m.accuracy)
        );
        Ok(())
    };
    match test {
        Some(t) => {
            show("train", &train)?;
            show("test", &t)?;
        }
        None => show(if given { "data" } else { "train" }, &train)?,
    }
    Ok(())
}

pub fn predict(a: PredictArgs) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let (model, spec) = pick(&checked, &a.file, a.model.clone(), false)?;
    if let Some(o) = &a.output
        && o.exists()
        && !a.force
    {
        return Err(fail(format!(
            "`{}` exists; pass --force to replace it",
            o.display()
        )));
    }
    // The declared data says which column is the label and how features are scaled.
    let declared = spec
        .as_ref()
        .and_then(|s| TrainConfig::from_spec(s, &base_dir(&a.file)).data);
    let scale = declared.as_ref().map_or(1.0, |d| d.scale);
    let label = declared
        .and_then(|d| match d.source {
            Source::Csv { label, .. } => label,
            Source::Npy { .. } | Source::Text { .. } => None,
        })
        .unwrap_or_else(|| "label".into());
    let (session, _) = session_from(
        model,
        spec.as_ref(),
        &a.file,
        &a.checkpoint,
        a.backend.backend,
    )?;
    let is_npy = a
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let source = if is_npy {
        Source::Npy {
            x: a.input.clone(),
            y: None,
        }
    } else {
        // Drop the label column if the file has one.
        let text = std::fs::read_to_string(&a.input)
            .map_err(|e| fail(format!("cannot read `{}`: {e}", a.input.display())))?;
        let has_label = text
            .lines()
            .next()
            .is_some_and(|h| h.split(',').any(|c| c.trim() == label));
        Source::Csv {
            path: a.input.clone(),
            label: has_label.then_some(label),
        }
    };
    let ds = data::load(&DataSpec {
        source,
        scale,
        split: Split::None,
        normalize: data::Normalize::None,
    })
    .map_err(fail)?;
    let x = &session.model.x;
    let mut ds = ds.fit(&x.0, &x.1, None, None).map_err(fail)?;
    // With the statistics training fitted (kept in the checkpoint).
    if let Some(s) = &session.stats {
        s.apply(&mut ds.x).map_err(fail)?;
    }
    let y = session.predict(&ds.x).map_err(fail)?;
    let cols = y.shape[1..].iter().product::<usize>().max(1);
    let mut text = String::new();
    let classifier = session.model.classes.is_some();
    let mut header: Vec<String> = Vec::new();
    if classifier {
        header.push("prediction".into());
    }
    header.extend((0..cols).map(|i| format!("out{i}")));
    text.push_str(&header.join(","));
    text.push('\n');
    for row in y.data.chunks(cols) {
        let mut cells: Vec<String> = Vec::new();
        if classifier {
            cells.push(nnc_train::session::argmax(row).to_string());
        }
        cells.extend(row.iter().map(|v| format!("{}", *v as f32)));
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    match &a.output {
        Some(o) => {
            nnc_runtime::checkpoint::write_atomic(o, text.as_bytes()).map_err(fail)?;
            eprintln!("wrote {} predictions to {}", ds.len(), o.display());
        }
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    Ok(())
}

pub fn gradcheck(a: GradcheckArgs) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let name = match (&a.model, checked.trains.as_slice()) {
        (Some(m), _) => m.clone(),
        (None, [t]) => t.model.clone(),
        (None, []) => {
            return Err(fail(format!(
                "{} has no train block, so no loss to check",
                a.file.display()
            )));
        }
        (None, _) => {
            return Err(fail(format!(
                "{} trains several models; choose one with --model",
                a.file.display()
            )));
        }
    };
    let Some(loss) = checked
        .module
        .func(&nnc_ir::Role::Loss.name(&name))
        .cloned()
    else {
        return Err(fail(format!(
            "`{name}` has no train block, so no loss to check"
        )));
    };
    let classes = loss.outputs.get(1).and_then(|&o| {
        let t = loss.ty(o);
        (t.rank() == 2).then(|| t.shape.dims()[1].known()).flatten()
    });
    let mut rng = Rng::stream(a.seed, "gradcheck/inputs");
    let batch = a.batch.max(1);
    let mut inputs = Vec::new();
    for arg in &loss.inputs {
        let mut shape = Vec::new();
        for (i, d) in arg.ty.shape.dims().iter().enumerate() {
            shape.push(match d.known() {
                Some(n) => n as usize,
                None if i == 0 => batch,
                None => {
                    return Err(fail(format!(
                        "input `{}: {}` has a symbolic size besides the batch; gradcheck cannot invent it",
                        arg.name, arg.ty
                    )));
                }
            });
        }
        let n: usize = shape.iter().product();
        let data: Vec<f64> = if arg.ty.dtype == DType::I32 {
            let k = classes.unwrap_or(2);
            (0..n).map(|_| rng.below(k) as f64).collect()
        } else {
            (0..n).map(|_| rng.uniform()).collect()
        };
        inputs.push(Tensor::new(arg.ty.dtype, shape, data));
    }
    let params: Vec<Tensor> = loss
        .params
        .iter()
        .map(|p| nnc_runtime::init_param(p, a.seed))
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    let opts = nnc_compiler::gradcheck::Options {
        max_elems: (a.elems > 0).then_some(a.elems),
        seed: a.seed,
        ..Default::default()
    };
    let reports = nnc_compiler::gradcheck::check(&loss, &inputs, &params, &opts).map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let rules = nnc_compiler::gradcheck::has_rules(&loss);
    let _ = write!(
        out,
        "{:<24} {:>8} {:>12}  {:>14} {:>14}",
        "parameter", "checked", "worst error", "autodiff", "finite diff"
    );
    let _ = writeln!(
        out,
        "{}",
        if rules {
            "   rule's gradient vs derivative"
        } else {
            ""
        }
    );
    let mut bad = 0;
    let mut differ = Vec::new();
    for r in &reports {
        let ok = r.worst <= a.tolerance;
        bad += usize::from(!ok);
        let _ = write!(
            out,
            "{:<24} {:>8} {:>12.3e}  {:>14.6e} {:>14.6e}{}",
            r.name,
            r.checked,
            r.worst,
            r.analytic,
            r.numeric,
            if ok { "" } else { "  FAILED" }
        );
        if let Some(d) = &r.rule {
            if d.worst <= a.tolerance {
                let _ = write!(out, "   equal ({:.1e})", d.worst);
            } else {
                differ.push(r.name.as_str());
                let _ = write!(
                    out,
                    "   differs by {:.3e} ({:.6e} vs {:.6e})",
                    d.worst, d.rule, d.derivative
                );
            }
        }
        let _ = writeln!(out);
    }
    if rules {
        // The model learns by a rule of its own (a grad block, stop_gradient): the check
        // above is of autodiff's derivative with the rules taken out, and the last column
        // says where the rule's gradient is not that derivative (by design).
        let _ = writeln!(
            out,
            "note: `{name}` learns by a rule of its own (grad blocks or stop_gradient): the columns \
             before the last check the loss's derivative with the rules taken out; {}",
            if differ.is_empty() {
                "the rule's gradients equal it".to_string()
            } else {
                format!(
                    "the rule's gradients differ from it for {} (expected of a rule other than backprop)",
                    differ.join(", ")
                )
            }
        );
    }
    if bad > 0 {
        return Err(fail(format!(
            "{bad} parameter{} of `{name}` failed the gradient check (tolerance {:e})",
            if bad == 1 { "" } else { "s" },
            a.tolerance
        )));
    }
    let _ = writeln!(
        out,
        "ok: {} parameters of `{name}` match finite differences within {:e}",
        reports.len(),
        a.tolerance
    );
    Ok(())
}
