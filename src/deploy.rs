//! `nnc build`: a checkpoint's forward pass as an object file and a C header
//! (`nnc_jit::object`), for programs that run the model without nnc.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use nnc_ir::Dim;
use nnc_jit::object::{Batch, ObjectSpec};
use nnc_train::TrainConfig;

use crate::train_cmds::{base_dir, fail, pick, session_from};
use crate::{Failed, load_checked};

#[derive(Args)]
pub struct BuildArgs {
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block, else the first).
    #[arg(long)]
    model: Option<String>,
    /// The trained parameters to embed.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// The folder to write `<model>.o` and `<model>.h` into (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Compile for exactly this many rows per call (needed when rows depend on each other).
    #[arg(long)]
    batch: Option<usize>,
    /// Rows per call of the chunked kernel when any batch size is allowed.
    #[arg(long, default_value_t = 32)]
    chunk: usize,
    /// The code generator: jit (Cranelift, the default) or llvm (builds with --features llvm).
    #[arg(long, default_value = "jit", value_parser = ["jit", "llvm"])]
    backend: String,
    /// Where the weights live: embed (inside the object, the default) or file (read at run
    /// time from a safetensors file by `<model>_load`).
    #[arg(long, default_value = "embed", value_parser = ["embed", "file"])]
    weights: String,
    /// Sizes of other symbolic dimensions, as NAME=N.
    #[arg(long = "dim", value_name = "NAME=N", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=N"))?;
    let n: usize = v.parse().map_err(|_| format!("`{v}` is not a size"))?;
    if n == 0 {
        return Err("a dimension must be at least 1".into());
    }
    Ok((k.to_string(), n))
}

/// Where `libnnc_rt.a` is, if it was built beside this executable.
fn runtime_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libnnc_rt.a");
    lib.exists().then_some(lib)
}

pub fn build(a: BuildArgs) -> Result<(), Failed> {
    if a.backend == "llvm" && !nnc_jit::HAS_LLVM {
        eprintln!("error: {}", nnc_jit::NO_LLVM);
        return Err(Failed(2));
    }
    let checked = load_checked(&a.file)?;
    let (model, spec) = pick(&checked, &a.file, a.model.clone(), false)?;
    if a.chunk == 0 {
        return Err(fail("--chunk must be at least 1"));
    }
    let symbol = nnc_jit::object::snake_case(&model.name);
    let scale = spec
        .as_ref()
        .and_then(|s| TrainConfig::from_spec(s, &base_dir(&a.file)).data)
        .map_or(1.0, |d| d.scale);
    // The batch is decided (and rows proven independent) before the checkpoint is read.
    let f = &model.forward;
    let batch_dim = f
        .inputs
        .first()
        .and_then(|x| x.ty.shape.dims().first().cloned());
    let dims: HashMap<String, usize> = a.dims.iter().cloned().collect();
    let batch = match (batch_dim, a.batch) {
        (Some(Dim::Sym(d)), Some(n)) => Batch::Fixed { dim: Some(d), n },
        (Some(Dim::Sym(d)), None) => {
            if let Err(why) = nnc_compiler::rows::independent(f, &d) {
                return Err(fail(format!(
                    "`{}` cannot run on any batch size in pieces: {why}; compile it for one batch size with --batch N",
                    f.name
                )));
            }
            Batch::Any {
                dim: d,
                chunk: a.chunk,
            }
        }
        (Some(Dim::Known(n)), b) if b.is_none_or(|b| b as u64 == n) => Batch::Fixed {
            dim: None,
            n: n as usize,
        },
        (Some(Dim::Known(n)), _) => {
            return Err(fail(format!(
                "`{}` takes exactly {n} rows (its first input's shape is fixed)",
                f.name
            )));
        }
        (None, _) => return Err(fail(format!("`{}` has no input with rows", f.name))),
    };
    let mut notes = Vec::new();
    if scale != 1.0 {
        notes.push(format!(
            "The train block scales every feature by {scale} before the model sees it (nnc predict"
        ));
        notes.push("does too): pass features scaled the same way.".into());
    }
    let (session, _) = session_from(
        model.clone(),
        spec.as_ref(),
        &a.file,
        &a.checkpoint,
        nnc_train::Backend::Interp,
    )?;
    let (normalized, params) = deployed(&session, f).map_err(fail)?;
    let f = &normalized;
    let built = nnc_jit::object::build(&ObjectSpec {
        func: f,
        params: &params,
        symbol: symbol.clone(),
        batch,
        dims,
        notes,
        weights: if a.weights == "file" {
            nnc_jit::object::Weights::File
        } else {
            nnc_jit::object::Weights::Embedded
        },
        codegen: if a.backend == "llvm" {
            nnc_jit::Codegen::Llvm
        } else {
            nnc_jit::Codegen::Cranelift
        },
    })
    .map_err(fail)?;
    std::fs::create_dir_all(&a.output)
        .map_err(|e| fail(format!("cannot create `{}`: {e}", a.output.display())))?;
    let object = a.output.join(format!("{symbol}.o"));
    let header = a.output.join(format!("{symbol}.h"));
    nnc_runtime::checkpoint::write_atomic(&object, &built.object).map_err(fail)?;
    nnc_runtime::checkpoint::write_atomic(&header, built.header.as_bytes()).map_err(fail)?;
    println!(
        "wrote {} ({} bytes: {} of weights; {} bytes of scratch per call) and {}",
        object.display(),
        built.object.len(),
        built.weight_bytes,
        built.scratch_bytes,
        header.display()
    );
    let lib =
        runtime_library().map_or_else(|| "libnnc_rt.a".to_string(), |p| p.display().to_string());
    println!(
        "link: cc -O2 main.c {} {lib} -lpthread -ldl -lm",
        object.display()
    );
    if runtime_library().is_none() {
        println!("(libnnc_rt.a is built by `cargo build --release -p nnc-rt`, in target/release/)");
    }
    Ok(())
}

/// What a deployed model runs: `f` with the checkpoint's feature normalization (if it
/// has one) as its first nodes, and its parameter values in f32, in `f.params` order.
pub(crate) fn deployed(
    session: &nnc_train::Session,
    f: &nnc_ir::Func,
) -> Result<(nnc_ir::Func, Vec<Vec<f32>>), String> {
    let mut params: Vec<Vec<f32>> = session
        .current_params()
        .iter()
        .map(|t| t.data.iter().map(|&v| v as f32).collect())
        .collect();
    let f = match &session.stats {
        Some(s) => with_input_stats(f, &mut params, s)?,
        None => f.clone(),
    };
    Ok((f, params))
}

/// `f` with the training data's feature normalization as its first nodes: the first
/// input `[B, F]` becomes `(x - shift) * mult` with the two vectors as buffers
/// `data.shift` and `data.mult`, whose values are appended to `params`.
pub(crate) fn with_input_stats(
    f: &nnc_ir::Func,
    params: &mut Vec<Vec<f32>>,
    stats: &nnc_runtime::data::FeatureStats,
) -> Result<nnc_ir::Func, String> {
    use nnc_ir::{Attr, Init, Op, ParamKind, Shape, TensorType, Value};
    let xt = f
        .inputs
        .first()
        .map(|a| a.ty.clone())
        .ok_or("the model has no input")?;
    let features = xt.shape.dims().get(1).and_then(|d| d.known());
    if xt.rank() != 2 || features != Some(stats.shift.len() as u64) || !xt.dtype.is_float() {
        return Err(format!(
            "the checkpoint normalizes {} features, but the model's input is {xt}",
            stats.shift.len()
        ));
    }
    let mut g = f.clone();
    g.nodes.clear();
    let vt = TensorType::new(xt.dtype, Shape::known(&[stats.shift.len() as u64]));
    let shift = g.add_param(ParamKind::Buffer, "data.shift", vt.clone(), Init::Zeros);
    let mult = g.add_param(ParamKind::Buffer, "data.mult", vt, Init::Zeros);
    let to_x = |g: &mut nnc_ir::Func, v| {
        g.build(
            Op::Broadcast,
            vec![v],
            Attr::Dims(vec![1]),
            Some(xt.clone()),
        )
    };
    let s = to_x(&mut g, shift)?;
    let d = g.build(Op::Sub, vec![Value::Input(0), s], Attr::None, None)?;
    let m = to_x(&mut g, mult)?;
    let x = g.build(Op::Mul, vec![d, m], Attr::None, None)?;
    let offset = g.nodes.len() as u32;
    let map = |v: Value| match v {
        Value::Input(0) => x,
        Value::Node(j) => Value::Node(j + offset),
        other => other,
    };
    for n in &f.nodes {
        let mut n = n.clone();
        n.args = n.args.iter().map(|&a| map(a)).collect();
        g.nodes.push(n);
    }
    g.outputs = f.outputs.iter().map(|&o| map(o)).collect();
    params.push(stats.shift.iter().map(|&v| v as f32).collect());
    params.push(stats.mult.iter().map(|&v| v as f32).collect());
    nnc_ir::verify_func(&g).map_err(|e| format!("{e:?}"))?;
    Ok(g)
}
