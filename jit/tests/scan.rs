//! Loops compiled as native loops (a body function the `nnc_scan` kernel calls once per
//! step) against the interpreter: an Elman RNN forward, its gradient function (the
//! reverse scan autodiff makes) optimized, and a nested scan; on LLVM too with the
//! feature.

use nnc_compiler::interp::eval;
use nnc_ir::{DType, Func, parse_module};
use nnc_runtime::{Rng, Tensor};

const ELMAN: &str = "\
func @Elman.loss(%xs: f32[7, B, 3]) -> (f32[], f32[7, B, 4]) {
  param %w: f32[3, 4] = uniform(-0.5, 0.5)
  param %u: f32[4, 4] = uniform(-0.5, 0.5)
  %0 = const 0.0 : f32[B, 4]
  %1 = scan %0, %xs, %w, %u, carries=1, sequences=1, reverse=0 : f32[]
    func @step(%h: f32[B, 4], %x: f32[B, 3], %w: f32[3, 4], %u: f32[4, 4]) -> (f32[B, 4], f32[B, 4]) {
      %0 = matmul %x, %w : f32[B, 4]
      %1 = matmul %h, %u : f32[B, 4]
      %2 = add %0, %1 : f32[B, 4]
      %3 = tanh %2 : f32[B, 4]
      return %3, %3
    }
  %2 = scan_out %1, output=0 : f32[B, 4]
  %3 = scan_out %1, output=1 : f32[7, B, 4]
  %4 = mul %3, %3 : f32[7, B, 4]
  %5 = sum %4, axes=[0, 1, 2] : f32[]
  %6 = mul %2, %2 : f32[B, 4]
  %7 = sum %6, axes=[0, 1] : f32[]
  %8 = add %5, %7 : f32[]
  return %8, %3
}
";

fn draw(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        DType::F32,
        shape.to_vec(),
        (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect(),
    )
}

fn close(got: &[Tensor], want: &[Tensor]) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape, w.shape, "output {k}");
        for (i, (p, q)) in g.data.iter().zip(&w.data).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 + 1e-4 * q.abs(),
                "output {k}[{i}]: {p} vs {q}"
            );
        }
    }
}

fn values(f: &Func, b: usize, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut rng = Rng::new(seed);
    let shape = |t: &nnc_ir::TensorType| -> Vec<usize> {
        t.shape
            .dims()
            .iter()
            .map(|d| d.known().map_or(b, |n| n as usize))
            .collect()
    };
    let ins = f
        .inputs
        .iter()
        .map(|a| draw(&mut rng, &shape(&a.ty)))
        .collect();
    let ps = f
        .params
        .iter()
        .map(|p| draw(&mut rng, &shape(&p.ty)))
        .collect();
    (ins, ps)
}

fn check(codegen: nnc_jit::Codegen) {
    let loss = &parse_module(ELMAN).unwrap().funcs[0];
    let grad = nnc_compiler::autodiff::grad(loss).unwrap();
    let opt = nnc_compiler::passes::optimize(&grad, &mut |_, _| {}).unwrap();
    let mut jit = nnc_jit::Jit::with_codegen(codegen);
    for (b, f) in [(2, loss), (5, &grad), (3, &opt)] {
        let (ins, ps) = values(f, b, b as u64);
        let want = eval(f, &ins, &ps).unwrap();
        let got = jit.eval(f, &ins, &ps).unwrap();
        close(&got, &want);
    }
}

#[test]
fn a_scan_and_its_gradient_run_natively() {
    check(nnc_jit::Codegen::Cranelift);
}

/// At width 40 and 9 rows the forward's `h @ u` and the backward's `dh @ u^T` take nnc's
/// packed kernel, which packs the loop constant `u` once per loop: against the interpreter.
#[test]
fn a_wide_scan_packs_its_constant_weight_once_and_agrees() {
    let text = ELMAN.replace(", 4]", ", 40]").replace("[4, ", "[40, ");
    let loss = &parse_module(&text).unwrap().funcs[0];
    let grad = nnc_compiler::autodiff::grad(loss).unwrap();
    let opt = nnc_compiler::passes::optimize(&grad, &mut |_, _| {}).unwrap();
    let mut jit = nnc_jit::Jit::with_codegen(nnc_jit::Codegen::Cranelift);
    for f in [&grad, &opt] {
        let (ins, mut ps) = values(f, 9, 9);
        // Weights of a 40-wide layer's scale (uniform in +-1 saturates every tanh, and the
        // gradient is then a difference of nearly equal terms).
        for p in &mut ps {
            p.data.iter_mut().for_each(|v| *v *= 0.15);
        }
        let want = eval(f, &ins, &ps).unwrap();
        let got = jit.eval(f, &ins, &ps).unwrap();
        close(&got, &want);
    }
}

#[cfg(feature = "llvm")]
#[test]
fn a_scan_and_its_gradient_run_natively_on_llvm() {
    check(nnc_jit::Codegen::Llvm);
}

/// A batched product summed over its batch (a recurrence's weight gradient over all its
/// steps) runs as one product of the steps joined, against the interpreter.
#[test]
fn a_product_summed_over_the_steps_is_one_product() {
    let ir = "\
func @f(%p: f32[6, B, 3], %q: f32[6, B, 5]) -> f32[3, 5] {
  %0 = transpose %p, perm=[0, 2, 1] : f32[6, 3, B]
  %1 = matmul %0, %q : f32[6, 3, 5]
  %2 = sum %1, axes=[0] : f32[3, 5]
  return %2
}
";
    let f = &parse_module(ir).unwrap().funcs[0];
    let dims = std::collections::HashMap::from([("B".to_string(), 4)]);
    let plan = nnc_jit::plan_text(f, &dims).unwrap();
    assert!(
        plan.contains("one product with its sum over the batch"),
        "{plan}"
    );
    let (ins, ps) = values(f, 4, 7);
    let want = eval(f, &ins, &ps).unwrap();
    let got = nnc_jit::Jit::new().eval(f, &ins, &ps).unwrap();
    close(&got, &want);
}

/// Carries returned as outputs (their incoming values stacked, as a recurrence keeps its
/// previous state for the backward pass) live in those outputs' steps (`nnc_scan` does not
/// copy them): one carry's new value is the other's old, in both directions.
const PASSTHROUGH: &str = "\
func @pass(%xs: f32[5, B, 3]) -> (f32[B, 3], f32[5, B, 3], f32[5, B, 3], f32[B, 3]) {
  %0 = const 0.5 : f32[B, 3]
  %1 = const -0.25 : f32[B, 3]
  %2 = scan %0, %1, %xs, carries=2, sequences=1, reverse=R : f32[]
    func @step(%a: f32[B, 3], %c: f32[B, 3], %x: f32[B, 3]) -> (f32[B, 3], f32[B, 3], f32[B, 3], f32[B, 3]) {
      %0 = mul %a, %x : f32[B, 3]
      %1 = add %0, %c : f32[B, 3]
      return %1, %a, %a, %c
    }
  %3 = scan_out %2, output=0 : f32[B, 3]
  %4 = scan_out %2, output=1 : f32[B, 3]
  %5 = scan_out %2, output=2 : f32[5, B, 3]
  %6 = scan_out %2, output=3 : f32[5, B, 3]
  return %3, %5, %6, %4
}
";

#[test]
fn carries_returned_as_outputs_agree_in_both_directions() {
    for reverse in ["0", "1"] {
        let text = PASSTHROUGH.replace("reverse=R", &format!("reverse={reverse}"));
        let f = &parse_module(&text).unwrap().funcs[0];
        let (ins, ps) = values(f, 2, 11);
        let want = eval(f, &ins, &ps).unwrap();
        let got = nnc_jit::Jit::new().eval(f, &ins, &ps).unwrap();
        close(&got, &want);
    }
}
