//! `nnc bench`: forward-only and training-step loops on random data of a model's shape,
//! one JSON line per measurement, with the reference interpreter measured in the same run
//! as the baseline the ratios are taken against.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use nnc_ir::{DType, Dim};
use nnc_runtime::{Rng, Tensor};
use nnc_train::{Backend, Model, Session, TrainConfig};

use crate::{Failed, load_checked};

/// `nnc bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The .nn file.
    file: PathBuf,
    /// The model (default: the one with a train block).
    #[arg(long)]
    model: Option<String>,
    /// Rows per step (default: the train block's batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Threads a step splits its batch over where that pays (default: the cores
    /// available).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed steps per measurement (after one warm-up step).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Measure only this: train, forward, update (the fused update kernel against memcpy)
    /// or gemm (every matrix product of a training step, against a square gemm).
    #[arg(long, value_parser = ["train", "forward", "update", "gemm"])]
    only: Option<String>,
    /// The native backend to time: jit (Cranelift) or llvm (builds with --features llvm).
    #[arg(long, default_value = "jit", value_parser = ["jit", "llvm"])]
    backend: String,
    /// Timed steps of the interpreter baseline (0 skips it).
    #[arg(long, default_value_t = 3)]
    baseline_steps: usize,
    /// Which matrix-product kernels single-threaded products take, to compare them in one
    /// run: auto (what measured best for each shape and layout), gemm (nnc's own AVX-512
    /// kernels off: gemm and the older loops), or packed (nnc's packed kernel wherever it
    /// can take the product).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gemm", "packed"])]
    matmul: String,
    /// Lanes of the fused loops: auto (the host's widest: 16 with AVX-512F, 8 with AVX2),
    /// 8, 16, or 4 (Cranelift's own f32x4 loops), to compare them in one run.
    #[arg(long, default_value = "auto", value_parser = ["auto", "4", "8", "16"])]
    lanes: String,
}

fn fail(msg: impl std::fmt::Display) -> Failed {
    eprintln!("error: {msg}");
    Failed(1)
}

/// Peak resident memory of this process, from /proc (0 where unavailable).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn random_batch(model: &Model, batch: usize, rng: &mut Rng) -> Result<Vec<Tensor>, String> {
    let f = model.loss.as_ref().unwrap_or(&model.forward);
    let mut out = Vec::new();
    // The session supplies the noise key itself.
    // Ids that a gather reads (an embedding's) range over its table's rows; other
    // integer inputs are labels.
    let rows_read_by = |i: usize| {
        f.nodes.iter().find_map(|n| match (n.op, &n.attr) {
            (nnc::ir::Op::Gather, nnc::ir::Attr::Index { axis, .. })
                if n.args[1] == nnc::ir::Value::Input(i as u32) =>
            {
                f.ty(n.args[0]).shape.dims()[*axis].known()
            }
            _ => None,
        })
    };
    for (i, a) in f.inputs.iter().enumerate() {
        if a.name == nnc::lang::NOISE_KEY {
            continue;
        }
        let shape: Vec<usize> =
            a.ty.shape
                .dims()
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n as usize,
                    Dim::Sym(_) => batch,
                })
                .collect();
        // Host tensors hold f64: refuse what cannot fit before allocating it.
        let n = shape
            .iter()
            .try_fold(1usize, |n, &k| n.checked_mul(k))
            .filter(|&n| (n as u128) * 8 <= nnc::ir::limits::memory_limit() as u128)
            .ok_or_else(|| {
                format!(
                    "a batch of {batch} rows of `{}: {}` does not fit the memory limit of {} (`--memory-limit` sets another)",
                    a.name,
                    a.ty,
                    nnc::ir::limits::bytes_text(nnc::ir::limits::memory_limit() as u128)
                )
            })?;
        let data = if a.ty.dtype == DType::I32 {
            let k = rows_read_by(i).unwrap_or(model.classes.unwrap_or(2) as u64);
            (0..n).map(|_| rng.below(k) as f64).collect()
        } else {
            (0..n).map(|_| rng.uniform()).collect()
        };
        out.push(Tensor::new(a.ty.dtype, shape, data));
    }
    Ok(out)
}

struct Measured {
    per_step: Duration,
    first: Duration,
    compile: Duration,
}

fn measure(
    session: &mut Session,
    inputs: &[Tensor],
    steps: usize,
    train: bool,
) -> Result<Measured, String> {
    let n_model = session.model.forward.inputs.len();
    let step = |s: &mut Session| -> Result<(), String> {
        if train {
            s.train_step_deferred(inputs, 1)
                .map_err(|e| e.to_string())?;
        } else {
            s.forward(&inputs[..n_model])?;
        }
        Ok(())
    };
    let t = Instant::now();
    step(session)?;
    let first = t.elapsed();
    let t = Instant::now();
    for _ in 0..steps {
        step(session)?;
    }
    let compile = session.compile_time();
    Ok(Measured {
        per_step: t.elapsed() / steps.max(1) as u32,
        first,
        compile,
    })
}

pub fn bench(a: BenchArgs, process_start: Instant) -> Result<(), Failed> {
    let checked = load_checked(&a.file)?;
    let name = match (&a.model, checked.trains.as_slice()) {
        (Some(m), _) => m.clone(),
        (None, [t]) => t.model.clone(),
        _ => return Err(fail("choose the model to benchmark with --model")),
    };
    let spec = checked.trains.iter().find(|t| t.model == name).cloned();
    let model = Model::new(&checked.module, &name, spec.as_ref()).map_err(fail)?;
    let mut config = match &spec {
        Some(s) => TrainConfig::from_spec(s, std::path::Path::new(".")),
        None => TrainConfig::inference(&name),
    };
    let batch = a.batch.unwrap_or(config.batch).max(1);
    config.batch = batch;
    // Under mpirun, one rank of a data-parallel job: each step takes its shard of the
    // batch and sums gradients with the others; rank 0 reports.
    let comm = crate::train_cmds::job()?;
    let threads = a.threads.unwrap_or_else(|| {
        (crate::train_cmds::default_threads() / nnc_train::dist::local_ranks()).max(1)
    });
    nnc_jit::kernels::set_threads(threads);
    nnc_jit::kernels::force_packed(match a.matmul.as_str() {
        "gemm" => Some(false),
        "packed" => Some(true),
        _ => None,
    });
    nnc_jit::set_loop_lanes(a.lanes.parse().ok());
    let (backend, codegen) = match a.backend.as_str() {
        "llvm" if nnc_jit::HAS_LLVM => (Backend::Llvm, nnc_jit::Codegen::Llvm),
        "llvm" => {
            return Err(fail(nnc_jit::NO_LLVM));
        }
        _ => (Backend::Jit, nnc_jit::Codegen::Cranelift),
    };
    let inputs = random_batch(&model, batch, &mut Rng::new(0)).map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let kinds: &[(&str, bool)] = if model.grad.is_some() {
        &[("train_step", true), ("forward", false)]
    } else {
        &[("forward", false)]
    };
    for &(kind, train) in kinds {
        if a.only
            .as_deref()
            .is_some_and(|o| o != if train { "train" } else { "forward" })
        {
            continue;
        }
        let mut jit_cfg = config.clone();
        jit_cfg.backend = backend;
        let mut s = Session::new(model.clone(), jit_cfg).map_err(fail)?;
        s.set_comm(std::sync::Arc::clone(&comm));
        let started = process_start.elapsed();
        let m = measure(&mut s, &inputs, a.steps, train).map_err(fail)?;
        let baseline = if a.baseline_steps > 0 {
            let mut cfg = config.clone();
            cfg.backend = Backend::Interp;
            let mut s = Session::new(model.clone(), cfg).map_err(fail)?;
            Some(measure(&mut s, &inputs, a.baseline_steps, train).map_err(fail)?)
        } else {
            None
        };
        let secs = m.per_step.as_secs_f64();
        let (step_bytes, host_bytes) = s.held_bytes();
        let mb = |b: usize| b as f64 / (1 << 20) as f64;
        let line = serde_json::json!({
            "bench": kind,
            "model": name,
            "backend": a.backend,
            "matmul": a.matmul,
            "lanes": a.lanes,
            "batch": batch,
            "threads": threads,
            "ranks": comm.size(),
            "steps": a.steps,
            "samples_per_s": (batch as f64 / secs).round(),
            "ms_per_step": secs * 1e3,
            "us_per_step": secs * 1e6,
            "compile_ms": m.compile.as_secs_f64() * 1e3,
            "first_step_done_ms_from_start": (started + m.first).as_secs_f64() * 1e3,
            "peak_rss_mb": peak_rss_mb(),
            "step_mb": step_bytes.map(mb),
            "host_params_mb": mb(host_bytes),
            "interp_ms_per_step": baseline.as_ref().map(|b| b.per_step.as_secs_f64() * 1e3),
            "speedup_vs_interp": baseline.as_ref().map(|b| b.per_step.as_secs_f64() / secs),
            "weights_read_us": (!train).then(|| weights_read_us(&s.params)),
        });
        if comm.rank() == 0 {
            let _ = writeln!(out, "{line}");
        }
    }
    if comm.size() > 1 {
        // The rest measures this process alone.
        return Ok(());
    }
    if a.only.as_deref() == Some("gemm") {
        let mut cfg = config.clone();
        cfg.backend = backend;
        let mut s = Session::new(model.clone(), cfg).map_err(fail)?;
        for line in gemm_profile(&mut s, &inputs, a.steps, model.grad.is_some()).map_err(fail)? {
            let _ = writeln!(out, "{line}");
        }
    }
    if let (Some(update), None | Some("update")) = (&model.update, a.only.as_deref()) {
        // At the model's own size (its parameters), then at one that does not fit in cache.
        let own: usize = model
            .forward
            .params
            .iter()
            .filter(|p| p.kind == nnc::ir::ParamKind::Param)
            .map(|p| p.ty.shape.volume().0 as usize)
            .sum();
        for n in [own, 1 << 22] {
            let line = update_bandwidth(update, codegen, n.max(1)).map_err(fail)?;
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(())
}

/// Every matrix product of a step (a training step when the model trains), grouped by
/// shape and operand layout: microseconds per step, GFLOP/s, and that rate against a
/// 1024-cubed gemm measured in the same run; then one line with gemm's share of the step.
fn gemm_profile(
    session: &mut Session,
    inputs: &[Tensor],
    steps: usize,
    train: bool,
) -> Result<Vec<serde_json::Value>, String> {
    let steps = steps.max(1);
    measure(session, inputs, 1, train)?;
    nnc_jit::kernels::take_matmul_profile();
    nnc_jit::kernels::profile_matmuls(true);
    let m = measure(session, inputs, steps, train);
    nnc_jit::kernels::profile_matmuls(false);
    let m = m?;
    let calls = nnc_jit::kernels::take_matmul_profile();
    // The warm-up step of `measure` ran with the profile on too.
    let per = (steps + 1) as f64;
    let reference = nnc_jit::kernels::reference_gflops(1024);
    let peak = nnc_jit::kernels::mm::peak_gflops();
    let mut groups: Vec<(nnc_jit::kernels::MatmulCall, usize)> = Vec::new();
    for c in calls {
        let same = |g: &nnc_jit::kernels::MatmulCall| {
            (g.batch, g.m, g.k, g.n, g.a_transposed, g.b_transposed)
                == (c.batch, c.m, c.k, c.n, c.a_transposed, c.b_transposed)
        };
        match groups.iter_mut().find(|(g, _)| same(g)) {
            Some((g, count)) => {
                g.seconds += c.seconds;
                *count += 1;
            }
            None => groups.push((c, 1)),
        }
    }
    let mut lines = Vec::new();
    let mut total = 0.0;
    for (g, count) in &groups {
        let secs = g.seconds / per;
        total += secs;
        let flops = 2.0 * (g.batch * g.m * g.k * g.n) as f64 * (*count as f64 / per);
        let gflops = flops / secs / 1e9;
        lines.push(serde_json::json!({
            "bench": "gemm",
            "shape": format!("{}x[{}x{}]@[{}x{}]", g.batch, g.m, g.k, g.k, g.n),
            "a_transposed": g.a_transposed,
            "b_transposed": g.b_transposed,
            "calls_per_step": *count as f64 / per,
            "us_per_step": secs * 1e6,
            "gflops": gflops,
            "vs_square_1024": gflops / reference,
            "vs_peak": gflops / peak,
        }));
    }
    let step = m.per_step.as_secs_f64();
    lines.push(serde_json::json!({
        "bench": "gemm_total",
        "us_per_step": step * 1e6,
        "gemm_us_per_step": total * 1e6,
        "gemm_share": total / step,
        "square_1024_gflops": reference,
        "peak_gflops": peak,
    }));
    Ok(lines)
}

/// The floor of a forward pass that must read every weight once: microseconds to sum all
/// parameters as f32, repeatedly (so from whatever cache level they fit in), in this run.
fn weights_read_us(params: &[nnc::Tensor]) -> f64 {
    let flat: Vec<f32> = params
        .iter()
        .flat_map(|t| t.data.iter().map(|&v| v as f32))
        .collect();
    let sum = |xs: &[f32]| {
        let mut acc = [0.0f32; 16];
        for c in xs.chunks_exact(16) {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>()
    };
    std::hint::black_box(sum(&flat));
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(sum(std::hint::black_box(&flat)));
    }
    t.elapsed().as_secs_f64() / reps as f64 * 1e6
}

/// The fused update kernel on `n` parameters against memcpy of as many bytes in the same
/// run: bytes moved per second by each, and their ratio.
fn update_bandwidth(
    update: &nnc_ir::Func,
    codegen: nnc_jit::Codegen,
    n: usize,
) -> Result<serde_json::Value, String> {
    #[allow(non_snake_case)]
    let N = n;
    let dims = std::collections::HashMap::from([("N".to_string(), N)]);
    let kernel = nnc_jit::compile_with(codegen, update, &dims)?;
    let states = update.params.len();
    let ins: Vec<Vec<f32>> = vec![vec![0.5; N], vec![0.01; N], vec![1e-3], vec![3.0]];
    let params: Vec<Vec<f32>> = vec![vec![0.25; N]; states];
    let mut ins = ins;
    let mut params = params;
    let mut outs: Vec<Vec<f32>> = kernel.output_lens().iter().map(|&n| vec![0.0; n]).collect();
    let mut scratch = vec![0.0f32; kernel.scratch_bytes() / 4];
    // As training runs it: in place when the kernel allows (w and the states overwritten),
    // else into separate outputs.
    let in_place = kernel.in_place_safe();
    let mut step = || {
        let ins_p: Vec<*const f32> = ins.iter().map(|v| v.as_ptr()).collect();
        let ps: Vec<*const f32> = params.iter().map(|v| v.as_ptr()).collect();
        let outs_p: Vec<*mut f32> = if in_place {
            std::iter::once(ins[0].as_mut_ptr())
                .chain(params.iter_mut().map(|v| v.as_mut_ptr()))
                .collect()
        } else {
            outs.iter_mut().map(|v| v.as_mut_ptr()).collect()
        };
        // The buffers have the sizes the kernel was compiled for; in place is what
        // `in_place_safe` allows.
        // Random data of the model's shapes: ids are in range, so this cannot fail.
        let _ = unsafe { kernel.run_raw(&ins_p, &ps, &outs_p, &mut scratch) };
    };
    step();
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        step();
    }
    let kernel_s = t.elapsed().as_secs_f64() / reps as f64;
    // Every array the kernel reads (w, g, the states) and writes (w', the states').
    let bytes = (4 * N) * (2 + states + 1 + states);
    let src = vec![1.0f32; bytes / 8];
    let mut dst = vec![0.0f32; bytes / 8];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let copy_s = t.elapsed().as_secs_f64() / reps as f64;
    let (kernel_gbs, copy_gbs) = (bytes as f64 / kernel_s / 1e9, bytes as f64 / copy_s / 1e9);
    Ok(serde_json::json!({
        "bench": "update_kernel",
        "backend": format!("{codegen:?}").to_lowercase(),
        "n": N,
        "bytes_moved": bytes,
        "ms": kernel_s * 1e3,
        "gb_per_s": kernel_gbs,
        "memcpy_gb_per_s": copy_gbs,
        "ratio_to_memcpy": kernel_gbs / copy_gbs,
        "in_place": in_place,
    }))
}
