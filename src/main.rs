//! The `nnc` command line: check, print IR, run, train, evaluate and predict with models.
//!
//! Exit status: 0 success, 1 errors in the input (source, data), 2 bad command line.

mod bench;
mod deploy;
mod draw;
mod import;
mod lsp;
mod onnx;
mod train_cmds;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nnc::Stage;
use nnc_ir::DType;
use nnc_runtime::Tensor;

#[derive(Parser)]
#[command(name = "nnc", version, about = "A compiler for neural networks")]
struct Cli {
    /// The most memory one tensor may take, in bytes (`64G`, `512M` and the like too);
    /// default: the machine's physical memory. Larger shapes are refused at checking.
    #[arg(long, global = true, value_name = "BYTES", value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// `123`, `64K`, `512M`, `24G`, `1T` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    n.checked_mul(mul)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{s}` is not a positive number of bytes below 2^64"))
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check .nn files: names, arity, element types, shapes.
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a program at one stage of the pipeline.
    Ir {
        /// The .nn file.
        file: PathBuf,
        /// The stage: ast, ir, grad, opt, fused, clif or llvm (LLVM IR; builds with --features llvm).
        #[arg(long, default_value = "ir", value_parser = ["ast", "ir", "grad", "opt", "fused", "clif", "llvm"])]
        stage: String,
        /// Print the optimized IR as it is right after this pass (simplify, cse, dce).
        #[arg(long, value_name = "PASS")]
        print_after: Option<String>,
    },
    /// Evaluate a model's forward pass with freshly initialized parameters (reference interpreter).
    Run {
        /// The .nn file.
        file: PathBuf,
        /// The model to run (default: the file's first model).
        #[arg(long)]
        model: Option<String>,
        /// An input as NAME=FILE.csv (one row per example); repeat for several inputs.
        #[arg(long = "input", value_name = "NAME=CSV")]
        inputs: Vec<String>,
        /// Seed for parameter initialization.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Evaluate in f64 instead of the declared f32.
        #[arg(long)]
        f64: bool,
    },
    /// Train a model on data: checkpoint, metrics and curves go to a run folder.
    Train(train_cmds::TrainArgs),
    /// Loss and accuracy of a checkpoint on data.
    Eval(train_cmds::EvalArgs),
    /// Write a checkpoint's predictions for rows of input.
    Predict(train_cmds::PredictArgs),
    /// Check a model's parameter gradients against finite differences (in f64).
    Gradcheck(train_cmds::GradcheckArgs),
    /// Time forward and training steps on random data; one JSON line each.
    Bench(bench::BenchArgs),
    /// Compile a checkpoint's forward pass into an object file and a C header.
    Build(deploy::BuildArgs),
    /// Format .nn files in place: the canonical layout, comments and blank lines kept.
    Fmt {
        /// The .nn files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Draw a model as an SVG picture: a box per statement (or per primitive op).
    Draw(draw::DrawArgs),
    /// Export a checkpoint's inference pass as an ONNX model (onnxruntime, Netron, ...).
    Export(onnx::ExportArgs),
    /// Import an ONNX model (an MLP or CNN) as a .nn file and a checkpoint.
    Import(import::ImportArgs),
    /// List the primitive ops: mnemonic, arity, attribute, doc.
    Ops,
    /// A language server on stdin/stdout for editors: diagnostics, hover, go to
    /// definition, completion.
    Lsp,
}

/// An error already reported to the user, carrying the exit status.
struct Failed(u8);

fn main() -> ExitCode {
    let start = std::time::Instant::now();
    // Checking recurses over the program's nesting, which the parser bounds; a large
    // stack keeps even the bounded worst case far from overflowing.
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(cli, start));
    match worker.map(|h| h.join()) {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(Failed(code)))) => ExitCode::from(code),
        _ => {
            eprintln!("error: internal error (this is a bug in nnc)");
            ExitCode::from(101)
        }
    }
}

fn run(cli: Cli, start: std::time::Instant) -> Result<(), Failed> {
    if let Some(b) = cli.memory_limit {
        nnc_ir::limits::set_memory_limit(b);
    }
    match cli.command {
        Command::Check { files } => {
            let mut failed = false;
            for f in &files {
                match load_checked(f) {
                    Ok(c) => {
                        let models = c
                            .module
                            .funcs
                            .iter()
                            .filter(|f| !f.name.contains('.'))
                            .count();
                        println!(
                            "{}: ok ({models} model{}, {} train block{})",
                            f.display(),
                            plural(models),
                            c.trains.len(),
                            plural(c.trains.len())
                        );
                    }
                    Err(_) => failed = true,
                }
            }
            if failed { Err(Failed(1)) } else { Ok(()) }
        }
        Command::Fmt { files, check } => {
            let mut status = Ok(());
            for f in &files {
                let (name, bytes) = read(f)?;
                let src = text(&name, &bytes)?;
                let program = match nnc_lang::parse(src) {
                    Ok(p) => p,
                    Err(d) => {
                        status = Err(report(&name, src, &d));
                        continue;
                    }
                };
                let formatted = nnc_lang::print::format(src, &program);
                if formatted == src {
                    continue;
                }
                if check {
                    println!("{name}: not formatted");
                    status = Err(Failed(1));
                } else if let Err(e) =
                    nnc_runtime::checkpoint::write_atomic(f, formatted.as_bytes())
                {
                    eprintln!("error: {e}");
                    status = Err(Failed(1));
                } else {
                    println!("{name}: formatted");
                }
            }
            status
        }
        Command::Ir {
            file,
            stage,
            print_after,
        } => {
            let stage = Stage::from_name(&stage).expect("clap checked the stage name");
            if stage == Stage::Llvm && !nnc_jit::HAS_LLVM {
                eprintln!("error: {}", nnc_jit::NO_LLVM);
                return Err(Failed(2));
            }
            let (name, bytes) = read(&file)?;
            let src = text(&name, &bytes)?;
            if let Some(pass) = print_after {
                let checked = nnc_lang::check(src).map_err(|d| report(&name, src, &d))?;
                return match nnc::optimized_module(&checked.module, Some(&pass)) {
                    Ok(m) => {
                        print!("{m}");
                        Ok(())
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        Err(Failed(1))
                    }
                };
            }
            match nnc::stage_text(src, stage) {
                Ok(t) => {
                    print!("{t}");
                    Ok(())
                }
                Err(diags) => Err(report(&name, src, &diags)),
            }
        }
        Command::Run {
            file,
            model,
            inputs,
            seed,
            f64,
        } => run_model(&file, model, &inputs, seed, f64),
        Command::Train(a) => train_cmds::train(a),
        Command::Eval(a) => train_cmds::eval(a),
        Command::Predict(a) => train_cmds::predict(a),
        Command::Gradcheck(a) => train_cmds::gradcheck(a),
        Command::Bench(a) => bench::bench(a, start),
        Command::Build(a) => deploy::build(a),
        Command::Export(a) => onnx::export(a),
        Command::Import(a) => import::import(a),
        Command::Draw(a) => draw::draw(a),
        Command::Lsp => lsp::run().map_err(|e| {
            eprintln!("error: nnc lsp: {e}");
            Failed(1)
        }),
        Command::Ops => {
            for row in nnc_ir::TABLE {
                println!(
                    "{:<11} {} {:<6} {}",
                    row.mnemonic,
                    row.arity,
                    format!("{:?}", row.attr).to_lowercase(),
                    row.doc
                );
            }
            Ok(())
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn read(path: &Path) -> Result<(String, Vec<u8>), Failed> {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(b) => Ok((name, b)),
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            Err(Failed(1))
        }
    }
}

fn text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, Failed> {
    nnc::source_from_bytes(bytes).map_err(|d| {
        let lossy = String::from_utf8_lossy(bytes);
        report(name, &lossy, &[d])
    })
}

fn report(name: &str, src: &str, diags: &[nnc_lang::Diagnostic]) -> Failed {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let sources = nnc_lang::Sources {
        user: (name, src),
        prelude: nnc_lang::PRELUDE_SRC,
    };
    let out = nnc_lang::render(diags, &sources, color);
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{out}");
    let _ = writeln!(
        err,
        "error: {} error{} in {name}",
        diags.len(),
        plural(diags.len())
    );
    Failed(1)
}

fn load_checked(path: &Path) -> Result<nnc_lang::Checked, Failed> {
    let (name, bytes) = read(path)?;
    let src = text(&name, &bytes)?;
    nnc_lang::check(src).map_err(|d| report(&name, src, &d))
}

fn run_model(
    file: &Path,
    model: Option<String>,
    inputs: &[String],
    seed: u64,
    f64: bool,
) -> Result<(), Failed> {
    let checked = load_checked(file)?;
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        Failed(1)
    };
    let models: Vec<&str> = checked
        .program
        .items
        .iter()
        .filter_map(|i| match i {
            nnc_lang::ast::Item::Model(m) => Some(m.name.name.as_str()),
            _ => None,
        })
        .collect();
    let name = match model {
        Some(m) => m,
        None => models
            .first()
            .map(|s| s.to_string())
            .ok_or_else(|| fail(format!("{} defines no model", file.display())))?,
    };
    let Some(func) = checked.module.func(&name) else {
        return Err(fail(format!(
            "no model `{name}`; the file defines: {}",
            models.join(", ")
        )));
    };
    let mut func = func.clone();
    if f64 {
        func = func.with_float_type(DType::F64);
    }
    let mut values = Vec::new();
    for arg in &func.inputs {
        let Some(spec) = inputs
            .iter()
            .find_map(|s| s.strip_prefix(&format!("{}=", arg.name)))
        else {
            return Err(fail(format!(
                "missing input `{}` ({}): pass --input {}=FILE.csv",
                arg.name, arg.ty, arg.name
            )));
        };
        let text =
            std::fs::read_to_string(spec).map_err(|e| fail(format!("cannot read {spec}: {e}")))?;
        let table = nnc_runtime::csv::parse(&text).map_err(|e| fail(format!("{spec}: {e}")))?;
        let mut t: Tensor = table.to_tensor(arg.ty.dtype);
        if arg.ty.rank() == 1 && t.shape[1] == 1 {
            t.shape = vec![t.shape[0]];
        }
        if !t.matches(&arg.ty) {
            return Err(fail(format!(
                "{spec}: input `{}` expects {}, the file holds {}",
                arg.name,
                arg.ty,
                t.ty()
            )));
        }
        values.push(t);
    }
    for s in inputs {
        let n = s.split('=').next().unwrap_or_default();
        if !func.inputs.iter().any(|a| a.name == n) {
            return Err(fail(format!("`{name}` has no input `{n}`")));
        }
    }
    let params: Result<Vec<Tensor>, nnc_runtime::Error> = func
        .params
        .iter()
        .map(|p| nnc_runtime::init_param(p, seed))
        .collect();
    let params = params.map_err(|e| fail(e.to_string()))?;
    let outs = nnc_compiler::interp::eval(&func, &values, &params).map_err(|e| fail(e.0))?;
    let mut stdout = std::io::stdout().lock();
    for t in outs {
        let row = t.shape.last().copied().unwrap_or(1).max(1);
        for chunk in t.data.chunks(row) {
            let items: Vec<String> = chunk.iter().map(|v| format!("{v}")).collect();
            let _ = writeln!(stdout, "{}", items.join(","));
        }
    }
    Ok(())
}
