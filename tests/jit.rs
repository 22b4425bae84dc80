//! The Cranelift JIT against the reference interpreter: every example's forward pass,
//! gradient function and update rule (optimized, as the backends compile them), on random
//! inputs at several batch sizes. f32 results agree within a stated tolerance: the JIT
//! rounds once per f32 operation and sums matrix products in another order, where the
//! interpreter computes in f64 and rounds after each op.

mod common;

use common::random_values;

use nnc::compiler::interp::eval;

use nnc::runtime::{Rng, Tensor};

/// |jit - interp| <= ATOL + RTOL * (|interp| + the largest |interp| of the tensor): a
/// value that is the small difference of large f32 sums (a deep convolution's output) is
/// as exact as the sums' scale, not its own.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

pub fn assert_close(what: &str, jit: &[Tensor], interp: &[Tensor]) {
    assert_eq!(jit.len(), interp.len(), "{what}");
    for (k, (a, b)) in jit.iter().zip(interp).enumerate() {
        assert_eq!(a.shape, b.shape, "{what} output {k}");
        let scale = b.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
            let ok = (x - y).abs() <= ATOL + RTOL * (y.abs() + scale) || (x.is_nan() && y.is_nan());
            assert!(ok, "{what} output {k}[{i}]: jit {x}, interpreter {y}");
        }
    }
}

#[test]
fn every_example_matches_the_interpreter() {
    every_example_on(nnc_jit::Codegen::Cranelift);
}

/// The LLVM backend takes the same programs: every example, forward, backward and update.
#[cfg(feature = "llvm")]
#[test]
fn every_example_matches_the_interpreter_on_llvm() {
    every_example_on(nnc_jit::Codegen::Llvm);
}

fn every_example_on(codegen: nnc_jit::Codegen) {
    let mut jit = nnc_jit::Jit::with_codegen(codegen);
    let mut compared = 0;
    for path in common::examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = nnc::lang::check(&src).unwrap();
        let optimized = nnc::optimized_module(&checked.module, None).unwrap();
        for f in &optimized.funcs {
            for (seed, batch) in [(0, 1), (1, 7), (2, 32)] {
                let mut rng = Rng::stream(seed, &f.name);
                let (inputs, params) = random_values(f, &mut rng, batch);
                let want = eval(f, &inputs, &params).unwrap();
                let got = jit.eval(f, &inputs, &params).unwrap();
                assert_close(
                    &format!("{} @{} B={batch}", path.display(), f.name),
                    &got,
                    &want,
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 36, "{compared}");
    // One kernel per function and batch size; a second call hits the cache.
    let before = jit.compiled;
    let src = std::fs::read_to_string("examples/digits_mlp.nn").unwrap();
    let checked = nnc::lang::check(&src).unwrap();
    let f = nnc::optimized_module(&checked.module, None).unwrap().funcs[0].clone();
    let (inputs, params) = random_values(&f, &mut Rng::new(9), 32);
    jit.eval(&f, &inputs, &params).unwrap();
    assert_eq!(jit.compiled, before);
}

/// An embedding of 50,000 rows is a gather, and its gradient a scatter-add into the rows
/// used: the training graph on the JIT matches the interpreter (repeated ids summed), and
/// an id outside the table is an error naming the source line on both, never a read.
#[test]
fn a_large_embedding_trains_by_gather_and_refuses_bad_ids() {
    let src = "model Bag(ids: i32[B, 32]) -> f32[B, 4] {
    e = embedding(ids, 50000, 16)
    return dense(mean(e, axis = 1), 4)
}

train Bag(y: i32[B]) {
    loss = cross_entropy(output, y)
    optimizer = sgd(lr = 0.1)
}
";
    let checked = nnc::lang::check(src).unwrap();
    let optimized = nnc::optimized_module(&checked.module, None).unwrap();
    let f = optimized.func("Bag.grad").unwrap();
    // Nothing of the vocabulary's size but its gradient, one scatter-add: no one-hot
    // [B, 32, 50000], the work is O(ids x dim).
    let big: Vec<_> = f
        .nodes
        .iter()
        .filter(|n| n.ty.to_string().contains("50000"))
        .map(|n| n.op)
        .collect();
    assert_eq!(big, [nnc::ir::Op::ScatterAdd], "{f}");
    let mut rng = Rng::stream(3, "embedding");
    let (mut inputs, params) = random_values(f, &mut rng, 8);
    let ids: Vec<f64> = (0..8 * 32)
        .map(|i| {
            if i % 5 == 0 {
                7.0
            } else {
                rng.below(50_000) as f64
            }
        })
        .collect();
    inputs[0] = Tensor::new(nnc::ir::DType::I32, vec![8, 32], ids.clone());
    let mut jit = nnc_jit::Jit::new();
    let want = eval(f, &inputs, &params).unwrap();
    let got = jit.eval(f, &inputs, &params).unwrap();
    assert_close("Bag.grad", &got, &want);
    let mut bad = ids;
    bad[100] = 50_000.0;
    inputs[0] = Tensor::new(nnc::ir::DType::I32, vec![8, 32], bad);
    let expected = "`gather` on line 2: id 50000 is outside the table's rows 0..50000";
    assert_eq!(eval(f, &inputs, &params).unwrap_err().0, expected);
    assert_eq!(
        jit.eval(f, &inputs, &params).unwrap_err(),
        nnc_jit::Error::Index(expected.into())
    );
}

/// Recurrences at the lengths users train: the LSTM's and GRU's training graphs are the
/// same size at T = 8 and T = 1024 (one loop each, forward and backward), and at T = 1024
/// the JIT's gradients match the interpreter's (small widths keep the interpreter quick).
#[test]
fn a_recurrence_over_1024_steps_is_one_loop_and_matches_the_interpreter() {
    let src = |t: usize, layer: &str| {
        format!(
            "model Seq(x: f32[B, {t}, 3]) -> f32[B, 2] {{
    h = {layer}(x, 5, sequences = true)
    return dense(mean(h, axis = 1), 2)
}}

train Seq(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = sgd(lr = 0.1)
}}
"
        )
    };
    for layer in ["lstm", "gru"] {
        let grad = |t: usize| {
            let checked = nnc::lang::check(&src(t, layer)).unwrap();
            let m = nnc::optimized_module(&checked.module, None).unwrap();
            m.func("Seq.grad").unwrap().clone()
        };
        let (short, long) = (grad(8), grad(1024));
        let size = |f: &nnc::ir::Func| {
            let body = |n: &nnc::ir::Node| match &n.attr {
                nnc::ir::Attr::Loop(l) => l.body.nodes.len(),
                _ => 0,
            };
            f.nodes.len() + f.nodes.iter().map(body).sum::<usize>()
        };
        assert_eq!(size(&short), size(&long), "{layer}");
        let loops = long
            .nodes
            .iter()
            .filter(|n| n.op == nnc::ir::Op::Scan)
            .count();
        assert_eq!(loops, 2, "{layer}: {long}");
        let (inputs, params) = random_values(&long, &mut Rng::new(5), 2);
        let want = eval(&long, &inputs, &params).unwrap();
        let got = nnc_jit::Jit::new().eval(&long, &inputs, &params).unwrap();
        assert_close(&format!("{layer} T = 1024"), &got, &want);
    }
}

/// Noise drawn inside a `steps` body is drawn for every step (the loop takes all steps'
/// draws as one more sequence), not once for the whole loop: with the same input at every
/// step, the steps' outputs differ. The JIT draws what the interpreter draws, forward and
/// backward.
#[test]
fn noise_inside_a_loop_differs_from_step_to_step() {
    let src = "model Noisy(xs: f32[B, 6, 4]) -> f32[B, 6, 3] {
    for x in steps(xs, axis = 1) {
        y = x
        if training {
            y = x * (random(shape(x)) >= 0.5)
        }
        yield y = y
    }
    return dense(y, 3)
}

train Noisy(t: f32[B, 6, 3]) {
    loss = mean((output - t) * (output - t))
    optimizer = sgd(lr = 0.1)
}
";
    let checked = nnc::lang::check(src).unwrap();
    let m = nnc::optimized_module(&checked.module, None).unwrap();
    let loss = m
        .func("Noisy.loss")
        .unwrap_or_else(|| checked.module.func("Noisy.loss").unwrap());
    let grad = m.func("Noisy.grad").unwrap().clone();
    let mut rng = nnc::runtime::Rng::new(5);
    let xs = Tensor::new(nnc::ir::DType::F32, vec![2, 6, 4], vec![1.0; 48]);
    let t = Tensor::new(
        nnc::ir::DType::F32,
        vec![2, 6, 3],
        (0..36).map(|_| rng.uniform()).collect(),
    );
    let key = Tensor::new(nnc::ir::DType::I32, vec![], vec![11.0]);
    let params: Vec<Tensor> = loss
        .params
        .iter()
        .map(|p| {
            let n = p.ty.shape.volume().0 as usize;
            let dims =
                p.ty.shape
                    .dims()
                    .iter()
                    .map(|d| d.known().unwrap() as usize)
                    .collect();
            Tensor::new(
                nnc::ir::DType::F32,
                dims,
                (0..n).map(|_| rng.uniform() - 0.5).collect(),
            )
        })
        .collect();
    let inputs = vec![xs, t, key];
    let outs = eval(loss, &inputs, &params).unwrap();
    let out = &outs[1].data;
    let step = |b: usize, s: usize| out[(b * 6 + s) * 3..(b * 6 + s) * 3 + 3].to_vec();
    let distinct: std::collections::HashSet<String> =
        (0..6).map(|s| format!("{:?}", step(0, s))).collect();
    assert!(
        distinct.len() >= 4,
        "the steps drew the same noise: {out:?}"
    );
    let mut jit = nnc_jit::Jit::new();
    let want = eval(&grad, &inputs, &params).unwrap();
    let got = jit.eval(&grad, &inputs, &params).unwrap();
    assert_close("noisy loop gradient", &got, &want);
}
