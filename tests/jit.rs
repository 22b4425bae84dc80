//! The Cranelift JIT against the reference interpreter: every example's forward pass,
//! gradient function and update rule (optimized, as the backends compile them), on random
//! inputs at several batch sizes. f32 results agree within a stated tolerance: the JIT
//! rounds once per f32 operation and sums matrix products in another order, where the
//! interpreter computes in f64 and rounds after each op.

use nnc::compiler::interp::eval;
use nnc::ir::{DType, Dim, Func};
use nnc::runtime::{Rng, Tensor};

/// |jit - interp| <= ATOL + RTOL * |interp|.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn random_values(f: &Func, rng: &mut Rng, batch: usize) -> (Vec<Tensor>, Vec<Tensor>) {
    let make = |ty: &nnc::ir::TensorType, positive: bool, rng: &mut Rng| {
        let shape: Vec<usize> = ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Known(n) => *n as usize,
                Dim::Sym(s) if s == "N" => 37,
                Dim::Sym(_) => batch,
            })
            .collect();
        let n = shape.iter().product();
        let data = if ty.dtype == DType::I32 {
            (0..n).map(|_| rng.below(3) as f64).collect()
        } else if positive {
            // Optimizer states: a rule takes square roots of them.
            (0..n).map(|_| rng.uniform() * 1.5 + 0.05).collect()
        } else {
            // Well-conditioned values: logits stay small, so f32 rounding (which the JIT
            // and the interpreter do in different orders) stays at the 1e-6 level.
            (0..n).map(|_| rng.uniform() - 0.5).collect()
        };
        Tensor::new(ty.dtype, shape, data)
    };
    (
        f.inputs.iter().map(|a| make(&a.ty, false, rng)).collect(),
        f.params
            .iter()
            .map(|p| make(&p.ty, p.kind == nnc::ir::ParamKind::State, rng))
            .collect(),
    )
}

pub fn assert_close(what: &str, jit: &[Tensor], interp: &[Tensor]) {
    assert_eq!(jit.len(), interp.len(), "{what}");
    for (k, (a, b)) in jit.iter().zip(interp).enumerate() {
        assert_eq!(a.shape, b.shape, "{what} output {k}");
        for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
            let ok = (x - y).abs() <= ATOL + RTOL * y.abs() || (x.is_nan() && y.is_nan());
            assert!(ok, "{what} output {k}[{i}]: jit {x}, interpreter {y}");
        }
    }
}

#[test]
fn every_example_matches_the_interpreter() {
    let mut jit = nnc_jit::Jit::new();
    let mut compared = 0;
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "nn") {
            continue;
        }
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
