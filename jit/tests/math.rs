//! The JIT's polynomial exp, ln, tanh, sin, cos and erf against f64 over their ranges: the maximum errors
//! measured here are the ones README.md states.

use nnc_ir::{Attr, DType, Func, Op, Shape, TensorType};
use nnc_runtime::Tensor;

fn run(op: Op, xs: &[f64]) -> Vec<f64> {
    run_on(nnc_jit::Codegen::Cranelift, op, xs)
}

fn run_on(codegen: nnc_jit::Codegen, op: Op, xs: &[f64]) -> Vec<f64> {
    let ty = TensorType::new(DType::F32, Shape::known(&[xs.len() as u64]));
    let mut f = Func::new(format!("t_{}", op.mnemonic()));
    let x = f.add_input("x", ty);
    let y = f.build(op, vec![x], Attr::None, None).unwrap();
    f.outputs.push(y);
    let t = Tensor::new(DType::F32, vec![xs.len()], xs.to_vec());
    nnc_jit::Jit::with_codegen(codegen)
        .eval(&f, &[t], &[])
        .unwrap()
        .remove(0)
        .data
}

/// Worst `|got - want| / max(|want|, floor)` over the points (inputs rounded to f32).
fn worst(op: Op, xs: &[f64], want: impl Fn(f64) -> f64, floor: f64) -> (f64, f64) {
    let xs: Vec<f64> = xs.iter().map(|&x| x as f32 as f64).collect();
    let got = run(op, &xs);
    let mut w = (0.0, 0.0);
    for (x, g) in xs.iter().zip(got) {
        let e = (g - want(*x)).abs() / want(*x).abs().max(floor);
        if e > w.0 {
            w = (e, *x);
        }
    }
    w
}

fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect()
}

#[test]
fn exp_is_accurate_to_a_few_ulp() {
    let (e, at) = worst(Op::Exp, &grid(-87.0, 88.0, 1 << 20), f64::exp, 0.0);
    eprintln!("exp: max relative error {e:e} at {at}");
    assert!(e < 3e-7, "exp: {e:e} at {at}");
    let special = run(
        Op::Exp,
        &[f64::NEG_INFINITY, -200.0, 0.0, 100.0, f64::INFINITY],
    );
    assert_eq!(special, vec![0.0, 0.0, 1.0, f64::INFINITY, f64::INFINITY]);
    assert!(run(Op::Exp, &[f64::NAN])[0].is_nan());
}

#[test]
fn log_is_accurate_to_a_few_ulp() {
    // Relative error, with an absolute floor where ln x crosses 0 (x near 1).
    let mut xs = grid(1e-3, 10.0, 1 << 19);
    xs.extend(grid(10.0, 1e30, 1 << 16));
    xs.extend((0..2000).map(|i| 2f64.powi(i % 250 - 125) * 1.37));
    let (e, at) = worst(Op::Log, &xs, f64::ln, 1.0);
    eprintln!("ln: max error {e:e} at {at}");
    assert!(e < 3e-7, "ln: {e:e} at {at}");
    let special = run(Op::Log, &[0.0, 1.0, f64::INFINITY]);
    assert_eq!(special, vec![f64::NEG_INFINITY, 0.0, f64::INFINITY]);
    assert!(run(Op::Log, &[-1.0])[0].is_nan());
}

#[test]
fn tanh_is_accurate_near_zero_and_far_from_it() {
    let (e, at) = worst(Op::Tanh, &grid(-10.0, 10.0, 1 << 20), f64::tanh, 1e-3);
    eprintln!("tanh: max error {e:e} at {at}");
    assert!(e < 3e-7, "tanh: {e:e} at {at}");
    // Relative accuracy near 0, where 1 - 2/(e^2x + 1) would cancel.
    let (e, at) = worst(Op::Tanh, &grid(-0.01, 0.01, 10_001), f64::tanh, 1e-30);
    assert!(e < 3e-7, "tanh near 0: {e:e} at {at}");
    assert_eq!(
        run(Op::Tanh, &[f64::INFINITY, f64::NEG_INFINITY, 50.0]),
        vec![1.0, -1.0, 1.0]
    );
}

#[test]
fn sigmoid_is_accurate_in_both_tails() {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    // Relative error down to the normal range of its left tail (e^-x overflows past 88.7).
    let (e, at) = worst(Op::Sigmoid, &grid(-87.0, 30.0, 1 << 20), sig, 1e-30);
    eprintln!("sigmoid: max error {e:e} at {at}");
    assert!(e < 5e-7, "sigmoid: {e:e} at {at}");
    assert_eq!(
        run(
            Op::Sigmoid,
            &[f64::INFINITY, f64::NEG_INFINITY, 0.0, -200.0, 200.0]
        ),
        vec![1.0, 0.0, 0.5, 0.0, 1.0]
    );
    assert!(run(Op::Sigmoid, &[f64::NAN])[0].is_nan());
}

#[test]
fn sin_and_cos_are_accurate_over_their_reduced_range() {
    // Absolute error (sin and cos cross zero), over many periods.
    let xs = grid(-8192.0, 8192.0, 1 << 20);
    let (e, at) = worst(Op::Sin, &xs, f64::sin, 1.0);
    eprintln!("sin: max error {e:e} at {at}");
    assert!(e < 1e-6, "sin: {e:e} at {at}");
    let (e, at) = worst(Op::Cos, &xs, f64::cos, 1.0);
    eprintln!("cos: max error {e:e} at {at}");
    assert!(e < 1e-6, "cos: {e:e} at {at}");
    // Relative accuracy near 0 for sin, and within a period.
    let (e, at) = worst(Op::Sin, &grid(-0.01, 0.01, 10_001), f64::sin, 1e-30);
    assert!(e < 3e-7, "sin near 0: {e:e} at {at}");
    let (e, at) = worst(Op::Cos, &grid(-3.0, 3.0, 1 << 18), f64::cos, 1e-3);
    assert!(e < 1e-6, "cos: {e:e} at {at}");
    assert!(
        run(Op::Sin, &[f64::INFINITY, f64::NAN])
            .iter()
            .all(|v| v.is_nan())
    );
    assert_eq!(run(Op::Cos, &[0.0]), vec![1.0]);
}

#[test]
fn erf_is_accurate_near_zero_and_in_its_tails() {
    let (e, at) = worst(Op::Erf, &grid(-6.0, 6.0, 1 << 20), libm::erf, 1e-3);
    eprintln!("erf: max error {e:e} at {at}");
    assert!(e < 5e-7, "erf: {e:e} at {at}");
    let (e, at) = worst(Op::Erf, &grid(-0.01, 0.01, 10_001), libm::erf, 1e-30);
    assert!(e < 3e-7, "erf near 0: {e:e} at {at}");
    assert_eq!(
        run(Op::Erf, &[f64::INFINITY, f64::NEG_INFINITY, 0.0]),
        vec![1.0, -1.0, 0.0]
    );
    assert!(run(Op::Erf, &[f64::NAN])[0].is_nan());
}

/// `a * b + c` becomes one fused multiply-add exactly when the CPU has FMA, and computes
/// `a * b + c` rounded once.
#[test]
fn multiply_add_fuses_where_the_isa_has_fma() {
    let ty = TensorType::new(DType::F32, Shape::known(&[6]));
    let mut f = Func::new("muladd");
    let (a, b, c) = (
        f.add_input("a", ty.clone()),
        f.add_input("b", ty.clone()),
        f.add_input("c", ty),
    );
    let p = f.build(Op::Mul, vec![a, b], Attr::None, None).unwrap();
    let s = f.build(Op::Add, vec![p, c], Attr::None, None).unwrap();
    f.outputs.push(s);
    let dims = std::collections::HashMap::new();
    let clif = nnc_jit::clif_text(&f, &dims).unwrap();
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        clif.contains("fma"),
        std::arch::is_x86_feature_detected!("fma"),
        "{clif}"
    );
    let t = |v: [f64; 6]| Tensor::new(DType::F32, vec![6], v.to_vec());
    // 1 + 2^-12 squared is 1 + 2^-11 + 2^-24: the last term survives only when rounded once.
    let x = 1.0 + 2f64.powi(-12);
    let got = nnc_jit::Jit::new()
        .eval(&f, &[t([x; 6]), t([x; 6]), t([-1.0; 6])], &[])
        .unwrap()
        .remove(0)
        .data;
    let once = x * x - 1.0;
    let twice = f64::from((x * x) as f32) - 1.0;
    let want = if clif.contains("fma") { once } else { twice };
    assert!(got.iter().all(|&v| v == want), "{got:?}, want {want}");
}

/// The LLVM backend emits the same polynomials (emit.rs) operation for operation, without FMA
/// contraction: its results equal Cranelift's bit for bit, in vector lanes and the tail.
#[cfg(feature = "llvm")]
#[test]
fn elementwise_functions_on_llvm_equal_cranelift_bit_for_bit() {
    use nnc_jit::Codegen;
    // More points than nnc_unary's bound, so both backends run their own loops.
    let mut xs: Vec<f64> = (0..=80_000).map(|i| -100.0 + 0.0025 * i as f64).collect();
    xs.extend([
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-40,
        3e38,
    ]);
    for op in [
        Op::Exp,
        Op::Log,
        Op::Tanh,
        Op::Sigmoid,
        Op::Sin,
        Op::Cos,
        Op::Erf,
        Op::Sqrt,
        Op::Abs,
        Op::Sign,
    ] {
        let (a, b) = (
            run_on(Codegen::Llvm, op, &xs),
            run_on(Codegen::Cranelift, op, &xs),
        );
        for ((x, p), q) in xs.iter().zip(&a).zip(&b) {
            assert!(
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                "{op:?}({x}): llvm {p}, cranelift {q}"
            );
        }
    }
}

/// LLVM IR carries the host CPU (or MCJIT emits SSE2) and vectors as wide as its registers.
#[cfg(feature = "llvm")]
#[test]
fn llvm_ir_names_the_host_cpu_and_uses_its_vector_width() {
    // Above nnc_unary's bound, so exp is LLVM's own loop.
    let ty = TensorType::new(DType::F32, Shape::known(&[1 << 17]));
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

/// nnc-rt's `nnc_unary` (the functions on sixteen lanes, for tensors of at most
/// `1 << 16` elements) computes the fused loops' numbers bit for bit: the same polynomials,
/// the same operations in the same order. Here the loop runs over more elements than that
/// (so it stays fused), the kernel over the same points, row by row with a stride.
#[test]
fn the_unary_kernel_equals_the_fused_loop_bit_for_bit() {
    use nnc_jit::kernels::unary::{UnaryKind, nnc_unary};
    let mut xs: Vec<f64> = grid(-100.0, 100.0, (1 << 16) + 1000);
    xs.extend([
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-40,
        3e38,
        -3e38,
    ]);
    xs.truncate(xs.len() / 8 * 8);
    let xf: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    for (op, kind) in [
        (Op::Exp, UnaryKind::Exp),
        (Op::Log, UnaryKind::Log),
        (Op::Tanh, UnaryKind::Tanh),
        (Op::Sigmoid, UnaryKind::Sigmoid),
        (Op::Erf, UnaryKind::Erf),
        (Op::Sin, UnaryKind::Sin),
        (Op::Cos, UnaryKind::Cos),
    ] {
        let fused = run(op, &xs);
        // Rows of 5 read with a step of 8 from offset 3 (columns 3..8 of rows of 8), then
        // rows of 3 from offset 0 (columns 0..3): every point once.
        let rows = xf.len() / 8;
        let mut a = vec![0f32; rows * 5];
        let mut b = vec![0f32; rows * 3];
        // In the mode kernels run in (subnormals flushed), as the loop ran.
        let _flush = nnc_jit::kernels::FlushDenormals::new();
        unsafe {
            nnc_unary(
                kind as i64,
                xf.as_ptr(),
                a.as_mut_ptr(),
                [rows as i64, 5, 8, 3].as_ptr(),
            );
            nnc_unary(
                kind as i64,
                xf.as_ptr(),
                b.as_mut_ptr(),
                [rows as i64, 3, 8, 0].as_ptr(),
            );
        }
        for (i, &x) in xf.iter().enumerate() {
            let (r, c) = (i / 8, i % 8);
            let k = if c >= 3 {
                a[r * 5 + c - 3]
            } else {
                b[r * 3 + c]
            };
            let p = fused[i] as f32;
            assert!(
                p.to_bits() == k.to_bits() || (p.is_nan() && k.is_nan()),
                "{op:?}({x}): fused {p}, kernel {k}"
            );
        }
    }
}

/// Kernels run with subnormals flushed to zero (a decaying Adam moment would otherwise slow
/// the update several times over), and the caller's floating-point mode is left as found.
#[test]
fn kernels_flush_subnormals_and_restore_the_callers_mode() {
    // 1e-20 squared is 1e-40, a subnormal f32; 1e-40 read as an operand is zero.
    let ty = TensorType::new(DType::F32, Shape::known(&[2]));
    let mut f = Func::new("square".to_string());
    let x = f.add_input("x", ty);
    let y = f.build(Op::Mul, vec![x, x], Attr::None, None).unwrap();
    f.outputs.push(y);
    let t = Tensor::new(DType::F32, vec![2], vec![1e-20, -1e-20]);
    let got = nnc_jit::Jit::new()
        .eval(&f, &[t], &[])
        .unwrap()
        .remove(0)
        .data;
    assert_eq!(got, vec![0.0, 0.0]);
    // The square root of 1e-40 is 1e-20, but the operand reads as zero.
    let got = run(Op::Sqrt, &[1e-40, 1e-39]);
    assert_eq!(got, vec![0.0, 0.0]);
    // Here, outside a kernel, subnormals are numbers.
    let tiny = std::hint::black_box(1e-20f32);
    assert!(tiny * tiny > 0.0);
}
