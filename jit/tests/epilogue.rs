//! Matrix products that compute their one user's loop in their epilogue (a dense layer's
//! bias and ReLU, a bias alone, a ReLU's derivative as a mask) against the interpreter:
//! shapes the packed kernel takes and shapes it leaves to gemm and a pass after it (few
//! rows, a short depth, ten columns), a NaN row (the ReLU keeps it, as `max` does), and
//! the plan naming each epilogue.

use nnc_compiler::interp::eval;
use nnc_ir::{DType, parse_module};
use nnc_runtime::{Rng, Tensor};

const DENSE: &str = "\
func @dense(%x: f32[M, K], %h: f32[M, N], %w: f32[K, N], %b: f32[N]) -> (f32[M, N], f32[M, N], f32[M, N]) {
  %0 = matmul %x, %w : f32[M, N]
  %1 = broadcast %b, dims=[1] : f32[M, N]
  %2 = add %0, %1 : f32[M, N]
  %3 = const 0.0 : f32[M, N]
  %4 = max %2, %3 : f32[M, N]
  %5 = matmul %x, %w : f32[M, N]
  %6 = add %1, %5 : f32[M, N]
  %7 = matmul %4, %w2 : f32[M, N]
  %8 = gt %h, %3 : f32[M, N]
  %9 = select %8, %7, %3 : f32[M, N]
  return %4, %6, %9
}
";

#[test]
fn products_with_epilogues_match_the_interpreter() {
    for (m, k, n) in [
        (9, 40, 33),
        (67, 64, 64),
        (3, 40, 33),
        (16, 5, 64),
        (12, 40, 10),
    ] {
        // `%7` multiplies by a square weight of its own when K == N, else by `w`'s
        // transpose would not fit: use an [N, N] parameter.
        let text = DENSE
            .replace("%7 = matmul %4, %w2", "%7 = matmul %4, %v")
            .replace("%b: f32[N])", "%b: f32[N], %v: f32[N, N])")
            .replace('M', &m.to_string())
            .replace('K', &k.to_string())
            .replace('N', &n.to_string());
        let f = &parse_module(&text).unwrap().funcs[0];
        let plan = nnc_jit::plan_text(f, &Default::default()).unwrap();
        let line = |k: &str| plan.lines().find(|l| l.contains(k)).unwrap_or_default();
        assert!(
            line("%0 = matmul").contains("epilogue (+ bias, relu)"),
            "{plan}"
        );
        assert!(line("%5 = matmul").contains("epilogue (+ bias)"), "{plan}");
        assert!(line("%7 = matmul").contains("epilogue (mask)"), "{plan}");
        let mut rng = Rng::new((m * k * n) as u64);
        let mut draw = |shape: &[usize]| {
            let len = shape.iter().product();
            let data = (0..len).map(|_| 2.0 * rng.uniform() - 1.0).collect();
            Tensor::new(DType::F32, shape.to_vec(), data)
        };
        let mut x = draw(&[m, k]);
        // A row of NaN: its ReLU is NaN, as `max(NaN, 0)` is.
        x.data[..k].iter_mut().for_each(|v| *v = f64::NAN);
        let ins = vec![x, draw(&[m, n]), draw(&[k, n]), draw(&[n]), draw(&[n, n])];
        let want = eval(f, &ins, &[]).unwrap();
        let got = nnc_jit::Jit::new().eval(f, &ins, &[]).unwrap();
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            for (i, (p, q)) in g.data.iter().zip(&w.data).enumerate() {
                let same = (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-5 * (1.0 + q.abs());
                assert!(same, "[{m}x{k}x{n}] output {o}[{i}]: {p} vs {q}");
            }
        }
    }
}
