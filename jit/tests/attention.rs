//! The attention kernel (`nnc_rt::attention`) against the interpreter's definition: the
//! forward and the adjoint, causal and not, queries and keys of lengths that are not whole
//! chunks of 16 (and fewer keys than queries), head widths 1, 5, 16 and 24, batches of 1
//! and 3; on LLVM too with the feature.

use nnc_compiler::interp::eval;
use nnc_ir::{DType, parse_module};
use nnc_runtime::{Rng, Tensor};

const ATT: &str = "\
func @att(%q: f32[B, 2, TQ, D], %k: f32[B, 2, TK, D], %v: f32[B, 2, TK, D], %dy: f32[B, 2, TQ, D]) -> (f32[B, 2, TQ, D], f32[B, 2, G, D]) {
  %0 = attention %q, %k, %v, causal=C : f32[B, 2, TQ, D]
  %1 = attention_grad %q, %k, %v, %0, %dy, causal=C : f32[B, 2, G, D]
  return %0, %1
}
";

fn draw(rng: &mut Rng, shape: &[usize], amp: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        DType::F32,
        shape.to_vec(),
        (0..n).map(|_| amp * (2.0 * rng.uniform() - 1.0)).collect(),
    )
}

fn check(codegen: nnc_jit::Codegen) {
    let cases = [
        (1, 1, 1, 0, 1),
        (17, 17, 5, 1, 3),
        (40, 40, 16, 1, 1),
        (33, 19, 24, 0, 3),
        (33, 19, 16, 1, 1),
        (5, 48, 5, 0, 1),
    ];
    for (tq, tk, d, causal, b) in cases {
        let text = ATT
            .replace("TQ", &tq.to_string())
            .replace("TK", &tk.to_string())
            .replace(", D]", &format!(", {d}]"))
            .replace('G', &(tq + 2 * tk).to_string())
            .replace('C', &causal.to_string());
        let f = &parse_module(&text).unwrap().funcs[0];
        let mut jit = nnc_jit::Jit::with_codegen(codegen);
        let mut rng = Rng::new((tq * 100 + d) as u64);
        // Scores of a few units, so the softmax is neither flat nor one-hot.
        let ins = vec![
            draw(&mut rng, &[b, 2, tq, d], 2.0),
            draw(&mut rng, &[b, 2, tk, d], 2.0),
            draw(&mut rng, &[b, 2, tk, d], 1.0),
            draw(&mut rng, &[b, 2, tq, d], 1.0),
        ];
        let want = eval(f, &ins, &[]).unwrap();
        let got = jit.eval(f, &ins, &[]).unwrap();
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape, w.shape);
            for (i, (p, q)) in g.data.iter().zip(&w.data).enumerate() {
                assert!(
                    (p - q).abs() <= 2e-5 + 2e-5 * q.abs(),
                    "tq {tq}, tk {tk}, d {d}, causal {causal}: output {k}[{i}]: {p} vs {q}"
                );
            }
        }
    }
}

#[test]
fn attention_matches_the_interpreter() {
    check(nnc_jit::Codegen::Cranelift);
}

#[cfg(feature = "llvm")]
#[test]
fn attention_matches_the_interpreter_on_llvm() {
    check(nnc_jit::Codegen::Llvm);
}
