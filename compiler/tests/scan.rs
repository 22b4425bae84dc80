//! The structured loop (`scan`): its text round-trips, the interpreter runs it as the
//! unrolled recurrence it stands for, and autodiff's reverse loop matches finite
//! differences.

use nnc_compiler::gradcheck::{Options, check};
use nnc_compiler::interp::eval;
use nnc_ir::{DType, parse_module};
use nnc_runtime::{Rng, Tensor};

/// An Elman RNN over T = 5 steps, batch 2, 3 features, 4 units, summed squares of every
/// state plus the last: h' = tanh(x_t @ w + h @ u), stacked and carried.
const ELMAN: &str = "\
func @Elman.loss(%xs: f32[5, 2, 3]) -> f32[] {
  param %w: f32[3, 4] = uniform(-0.5, 0.5)
  param %u: f32[4, 4] = uniform(-0.5, 0.5)
  %0 = const 0.0 : f32[2, 4]
  %1 = scan %0, %xs, %w, %u, carries=1, sequences=1, reverse=0 : f32[]
    func @step(%h: f32[2, 4], %x: f32[2, 3], %w: f32[3, 4], %u: f32[4, 4]) -> (f32[2, 4], f32[2, 4]) {
      %0 = matmul %x, %w : f32[2, 4]
      %1 = matmul %h, %u : f32[2, 4]
      %2 = add %0, %1 : f32[2, 4]
      %3 = tanh %2 : f32[2, 4]
      return %3, %3
    }
  %2 = scan_out %1, output=0 : f32[2, 4]
  %3 = scan_out %1, output=1 : f32[5, 2, 4]
  %4 = mul %3, %3 : f32[5, 2, 4]
  %5 = sum %4, axes=[0, 1, 2] : f32[]
  %6 = mul %2, %2 : f32[2, 4]
  %7 = sum %6, axes=[0, 1] : f32[]
  %8 = add %5, %7 : f32[]
  return %8
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

#[test]
fn scan_text_round_trips_and_verifies() {
    let m = parse_module(ELMAN).unwrap();
    nnc_ir::verify_module(&m).unwrap();
    assert_eq!(m.to_string(), ELMAN);
}

#[test]
fn scan_runs_the_recurrence() {
    let f = &parse_module(ELMAN).unwrap().funcs[0];
    let mut rng = Rng::new(1);
    let xs = draw(&mut rng, &[5, 2, 3]);
    let w = draw(&mut rng, &[3, 4]);
    let u = draw(&mut rng, &[4, 4]);
    let got = eval(f, std::slice::from_ref(&xs), &[w.clone(), u.clone()]).unwrap()[0].data[0];
    // The same recurrence written out in f64.
    let mut h = vec![0.0f64; 8];
    let mut want = 0.0;
    for t in 0..5 {
        let mut next = vec![0.0; 8];
        for b in 0..2 {
            for j in 0..4 {
                let mut a = 0.0;
                for k in 0..3 {
                    a += xs.data[t * 6 + b * 3 + k] * w.data[k * 4 + j];
                }
                for k in 0..4 {
                    a += h[b * 4 + k] * u.data[k * 4 + j];
                }
                next[b * 4 + j] = a.tanh();
            }
        }
        h = next;
        want += h.iter().map(|v| v * v).sum::<f64>();
    }
    want += h.iter().map(|v| v * v).sum::<f64>();
    assert!((got - want).abs() < 1e-5 * want.abs(), "{got} vs {want}");
}

#[test]
fn scan_gradient_matches_finite_differences() {
    let f = &parse_module(ELMAN).unwrap().funcs[0];
    let mut rng = Rng::new(2);
    let xs = draw(&mut rng, &[5, 2, 3]);
    let params = [draw(&mut rng, &[3, 4]), draw(&mut rng, &[4, 4])];
    let reports = check(f, &[xs], &params, &Options::default()).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.checked > 0 && r.worst < 1e-6, "{r:?}");
    }
}

/// Random graphs with loops (reversed ones among them, reading carries, sequences and
/// constants from outside): the gradient of the sum of squares of an output against
/// finite differences.
#[test]
fn random_loops_have_gradients_that_match_finite_differences() {
    use nnc_compiler::random_graph::{random_func, random_values};
    use nnc_ir::{Attr, Op, Value};
    let mut checked = 0;
    for seed in 0..400u64 {
        let mut f = random_func(seed, 4 + (seed % 8) as usize);
        // attention_grad has no derivative of its own (no second derivative of attention).
        if !f.nodes.iter().any(|n| n.op == Op::Scan) || f.to_string().contains("attention_grad") {
            continue;
        }
        let out = f.outputs[0];
        if !matches!(out, Value::Node(_)) || !f.ty(out).dtype.is_float() {
            continue;
        }
        let sq = f.build(Op::Mul, vec![out, out], Attr::None, None).unwrap();
        let axes = (0..f.ty(sq).rank()).collect();
        let loss = f.build(Op::Sum, vec![sq], Attr::Axes(axes), None).unwrap();
        f.outputs = vec![loss];
        let (ins, ps) = random_values(&f, seed);
        let reports = check(&f, &ins, &ps, &Options::default())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{f}"));
        for r in reports {
            assert!(r.worst < 1e-4, "seed {seed}: {r:?}\n{f}");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} random graphs had a loop");
}
