//! The LLVM backend (feature `llvm`) against the interpreter on the random graphs, and
//! against the Cranelift backend on the transcendental functions: both emit the same
//! polynomials operation for operation, so their results are identical bit for bit.
#![cfg(feature = "llvm")]

use nnc_compiler::interp::eval;
use nnc_compiler::random_graph::{random_func, random_values};
use nnc_ir::{Attr, DType, Func, Op, Shape, TensorType};
use nnc_jit::{Codegen, Jit};
use nnc_runtime::Tensor;

fn close(a: &[Tensor], b: &[Tensor]) -> Result<(), String> {
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        if x.shape != y.shape {
            return Err(format!("output {k}: shape {:?} vs {:?}", x.shape, y.shape));
        }
        for (i, (p, q)) in x.data.iter().zip(&y.data).enumerate() {
            let ok = p == q || (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-5 + 1e-4 * q.abs();
            if !ok {
                return Err(format!("output {k}[{i}]: {p} vs {q}"));
            }
        }
    }
    Ok(())
}

#[test]
fn a_thousand_random_graphs_match_the_interpreter() {
    let mut jit = Jit::with_codegen(Codegen::Llvm);
    let mut failures = Vec::new();
    for seed in 0..1000u64 {
        let f = random_func(seed, 3 + (seed % 12) as usize);
        let (inputs, params) = random_values(&f, seed);
        let want = eval(&f, &inputs, &params).unwrap();
        let got = jit.eval(&f, &inputs, &params).unwrap();
        if let Err(e) = close(&got, &want) {
            failures.push(format!("seed {seed}: {e}\n{f}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches; first:\n{}",
        failures.len(),
        failures[0]
    );
}

fn run(codegen: Codegen, op: Op, xs: &[f64]) -> Vec<f64> {
    let ty = TensorType::new(DType::F32, Shape::known(&[xs.len() as u64]));
    let mut f = Func::new(format!("t_{}", op.mnemonic()));
    let x = f.add_input("x", ty);
    let y = f.build(op, vec![x], Attr::None, None).unwrap();
    f.outputs.push(y);
    let t = Tensor::new(DType::F32, vec![xs.len()], xs.to_vec());
    Jit::with_codegen(codegen)
        .eval(&f, &[t], &[])
        .unwrap()
        .remove(0)
        .data
}

#[test]
fn exp_log_and_tanh_equal_the_cranelift_backend_bit_for_bit() {
    // 10,001 points (vector lanes and the one-lane tail), specials included.
    let mut xs: Vec<f64> = (0..=10_000).map(|i| -100.0 + 0.02 * i as f64).collect();
    xs.extend([
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-40,
        3e38,
    ]);
    for op in [Op::Exp, Op::Log, Op::Tanh, Op::Sqrt, Op::Abs, Op::Sign] {
        let (a, b) = (
            run(Codegen::Llvm, op, &xs),
            run(Codegen::Cranelift, op, &xs),
        );
        for ((x, p), q) in xs.iter().zip(&a).zip(&b) {
            assert!(
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                "{op:?}({x}): llvm {p}, cranelift {q}"
            );
        }
    }
}

#[test]
fn the_ir_carries_the_host_cpu_and_vectors_as_wide_as_its_registers() {
    let ty = TensorType::new(DType::F32, Shape::known(&[100]));
    let mut f = Func::new("t".to_string());
    let x = f.add_input("x", ty);
    let y = f.build(Op::Exp, vec![x], Attr::None, None).unwrap();
    f.outputs.push(y);
    let text = nnc_jit::llvm_text(&f, &Default::default()).unwrap();
    assert!(text.contains("\"target-cpu\""), "{text}");
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert!(text.contains("<16 x float>"), "{text}");
    }
}
