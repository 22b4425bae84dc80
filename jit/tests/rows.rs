//! Broadcasts read in place by loops over rows (`plan::strided_broadcasts`) against the
//! interpreter: a bias (leading axes added) and a row statistic (trailing axes added) in
//! one loop, rows whose length is not a multiple of the vector width (the tails), two
//! broadcasts that want different rows in one loop (one of them stored), and a row
//! broadcast of a rank-3 value; and slices read in place (an LSTM's gate blocks, a slice
//! along a middle axis, a slice of a value the same step computes); on LLVM too with the
//! feature.

use nnc_compiler::interp::eval;
use nnc_ir::{DType, parse_module};
use nnc_runtime::{Rng, Tensor};

/// `(x - mean(x)) * gamma + beta` over rows of `D`, with a per-row scale `s` as well, and
/// a conflict: `%9` reads `broadcast(r)` over rows of `R * D` next to `broadcast(g)` over
/// rows of `D`.
const ROWS: &str = "\
func @rows(%x: f32[B, R, D], %r: f32[R, D], %s: f32[B, R]) -> (f32[B, R, D], f32[B, R, D], f32[B, R, D]) {
  param %g: f32[D] = uniform(-1.0, 1.0)
  param %b: f32[D] = uniform(-1.0, 1.0)
  %0 = mean %x, axes=[2] : f32[B, R]
  %1 = broadcast %0, dims=[0, 1] : f32[B, R, D]
  %2 = sub %x, %1 : f32[B, R, D]
  %3 = broadcast %g, dims=[2] : f32[B, R, D]
  %4 = mul %2, %3 : f32[B, R, D]
  %5 = broadcast %b, dims=[2] : f32[B, R, D]
  %6 = add %4, %5 : f32[B, R, D]
  %7 = broadcast %s, dims=[0, 1] : f32[B, R, D]
  %8 = mul %6, %7 : f32[B, R, D]
  %9 = broadcast %r, dims=[1, 2] : f32[B, R, D]
  %10 = add %9, %3 : f32[B, R, D]
  %11 = exp %10 : f32[B, R, D]
  return %8, %11, %6
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

/// The JIT's outputs of `f` equal the interpreter's (within f32 rounding).
fn agree(jit: &mut nnc_jit::Jit, f: &nnc_ir::Func, ins: &[Tensor], ps: &[Tensor], case: &str) {
    let want = eval(f, ins, ps).unwrap();
    let got = jit.eval(f, ins, ps).unwrap();
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape, w.shape);
        for (i, (p, q)) in g.data.iter().zip(&w.data).enumerate() {
            assert!(
                (p - q).abs() <= 1e-6 + 1e-5 * q.abs(),
                "{case}: output {k}[{i}]: {p} vs {q}"
            );
        }
    }
}

fn check(codegen: nnc_jit::Codegen) {
    let src = |d: usize| {
        ROWS.replace('D', &d.to_string())
            .replace("R,", "3,")
            .replace("R]", "3]")
    };
    // Rows of 8 (whole vectors), 13 (a tail of five) and 64; batches of 1 and 5.
    for (d, b) in [(8, 5), (13, 5), (64, 1), (13, 2)] {
        // A fresh JIT for each width: its cache knows a function by name and batch.
        let mut jit = nnc_jit::Jit::with_codegen(codegen);
        let text = src(d);
        let f = &parse_module(&text).unwrap().funcs[0];
        let dims = std::collections::HashMap::from([("B".to_string(), b)]);
        let plan = nnc_jit::plan_text(f, &dims).unwrap();
        // Both kinds are read in place; of the two broadcasts `%10` reads, which want
        // rows of 3 * d and of d, one is stored.
        let line = |k: &str| plan.lines().find(|l| l.contains(k)).unwrap_or_default();
        assert!(
            line("%1 = broadcast").contains("one of its elements per row"),
            "{plan}"
        );
        assert!(
            line("%5 = broadcast").contains("all of it in every row"),
            "{plan}"
        );
        let stored = ["%3 = broadcast", "%9 = broadcast"]
            .iter()
            .filter(|k| line(k).contains("kernel gather"))
            .count();
        assert_eq!(stored, 1, "{plan}");
        let mut rng = Rng::new(d as u64);
        let ins = vec![
            draw(&mut rng, &[b, 3, d]),
            draw(&mut rng, &[3, d]),
            draw(&mut rng, &[b, 3]),
        ];
        let ps = vec![draw(&mut rng, &[d]), draw(&mut rng, &[d])];
        agree(&mut jit, f, &ins, &ps, &format!("d = {d}, b = {b}"));
    }
}

#[test]
fn broadcasts_read_in_place_by_rows_match_the_interpreter() {
    check(nnc_jit::Codegen::Cranelift);
}

#[cfg(feature = "llvm")]
#[test]
fn broadcasts_read_in_place_by_rows_match_the_interpreter_on_llvm() {
    check(nnc_jit::Codegen::Llvm);
}

/// Gate blocks: `%1` is `[B, 4D]`, its four column blocks read in place by the loops
/// after it (rows of D, step 4D), beside a bias read in place; `%13` slices the middle
/// axis of a rank-3 value (rows of 2D, step 3D); `%16` slices `%15` (whole: as many
/// elements), which would join the loop `%17` is in, so `%15` must be stored before that
/// loop runs (it read stale memory before the fix).
const SLICES: &str = "\
func @gates(%x: f32[B, Q], %c: f32[B, D], %y: f32[B, 3, D]) -> (f32[B, D], f32[B, D], f32[B, 2, D], f32[B, D]) {
  param %b: f32[Q] = uniform(-1.0, 1.0)
  param %g: f32[D] = uniform(-1.0, 1.0)
  %0 = broadcast %b, dims=[1] : f32[B, Q]
  %1 = add %x, %0 : f32[B, Q]
  %2 = slice %1, axis=1, start=0 : f32[B, D]
  %3 = sigmoid %2 : f32[B, D]
  %4 = slice %1, axis=1, start=D : f32[B, D]
  %5 = sigmoid %4 : f32[B, D]
  %6 = slice %1, axis=1, start=E : f32[B, D]
  %7 = tanh %6 : f32[B, D]
  %8 = mul %5, %c : f32[B, D]
  %9 = mul %3, %7 : f32[B, D]
  %10 = add %8, %9 : f32[B, D]
  %11 = broadcast %g, dims=[1] : f32[B, D]
  %12 = mul %10, %11 : f32[B, D]
  %13 = slice %y, axis=1, start=1 : f32[B, 2, D]
  %14 = exp %13 : f32[B, 2, D]
  %15 = neg %c : f32[B, D]
  %16 = slice %15, axis=1, start=0 : f32[B, D]
  %17 = add %16, %c : f32[B, D]
  return %12, %10, %14, %17
}
";

fn check_slices(codegen: nnc_jit::Codegen) {
    // Blocks of 8 (whole vectors), 13 (a tail) and 64; batches of 1 and 5.
    for (d, b) in [(8, 5), (13, 5), (64, 1), (13, 2)] {
        let mut jit = nnc_jit::Jit::with_codegen(codegen);
        let text = SLICES
            .replace("Q", &(4 * d).to_string())
            .replace("start=D", &format!("start={d}"))
            .replace("start=E", &format!("start={}", 2 * d))
            .replace('D', &d.to_string());
        let f = &parse_module(&text).unwrap().funcs[0];
        let dims = std::collections::HashMap::from([("B".to_string(), b)]);
        let plan = nnc_jit::plan_text(f, &dims).unwrap();
        let slices: Vec<&str> = plan.lines().filter(|l| l.contains(" = slice")).collect();
        assert_eq!(slices.len(), 5, "{plan}");
        assert!(slices.iter().all(|l| l.contains("its rows of")), "{plan}");
        let mut rng = Rng::new(d as u64 + 100);
        let ins = vec![
            draw(&mut rng, &[b, 4 * d]),
            draw(&mut rng, &[b, d]),
            draw(&mut rng, &[b, 3, d]),
        ];
        let ps = vec![draw(&mut rng, &[4 * d]), draw(&mut rng, &[d])];
        agree(&mut jit, f, &ins, &ps, &format!("d = {d}, b = {b}"));
    }
}

#[test]
fn slices_read_in_place_by_rows_match_the_interpreter() {
    check_slices(nnc_jit::Codegen::Cranelift);
}

#[cfg(feature = "llvm")]
#[test]
fn slices_read_in_place_by_rows_match_the_interpreter_on_llvm() {
    check_slices(nnc_jit::Codegen::Llvm);
}

/// Concats written in place by the loop computing their operands (each operand stored
/// into its columns of the concat's buffer): along the last axis into an output, beside a
/// bias read in place; along the first axis into scratch that a later loop reads; along a
/// middle axis; two sharing their operands (each stored into both, and one also to its
/// own buffer for a sum that reads it later); and one that is not (an operand is an
/// input: copied).
const CONCATS: &str = "\
func @cat(%x: f32[B, D], %y: f32[B, D], %z: f32[B, 2, D]) -> (f32[B, E], f32[C, D], f32[B, E], f32[B, 4, D], f32[B, E], f32[B, E], f32[B]) {
  param %g: f32[D] = uniform(-1.0, 1.0)
  %0 = broadcast %g, dims=[1] : f32[B, D]
  %1 = mul %x, %0 : f32[B, D]
  %2 = sub %y, %x : f32[B, D]
  %3 = concat %1, %2, axis=1 : f32[B, E]
  %4 = add %x, %y : f32[B, D]
  %5 = mul %x, %x : f32[B, D]
  %6 = concat %4, %5, axis=0 : f32[C, D]
  %7 = mul %6, %6 : f32[C, D]
  %8 = neg %y : f32[B, D]
  %9 = concat %8, %x, axis=1 : f32[B, E]
  %10 = mul %z, %z : f32[B, 2, D]
  %11 = add %z, %z : f32[B, 2, D]
  %12 = concat %10, %11, axis=1 : f32[B, 4, D]
  %13 = mul %y, %y : f32[B, D]
  %14 = sub %y, %x : f32[B, D]
  %15 = concat %13, %14, axis=1 : f32[B, E]
  %16 = concat %14, %13, axis=1 : f32[B, E]
  %17 = sum %13, axes=[1] : f32[B]
  return %3, %7, %9, %12, %15, %16, %17
}
";

fn check_concats(codegen: nnc_jit::Codegen) {
    for (d, b) in [(8, 5), (13, 5), (64, 1), (13, 2)] {
        let mut jit = nnc_jit::Jit::with_codegen(codegen);
        let text = CONCATS
            .replace("C,", &format!("{},", 2 * b))
            .replace("E]", &format!("{}]", 2 * d))
            .replace('B', &b.to_string())
            .replace('D', &d.to_string());
        let f = &parse_module(&text).unwrap().funcs[0];
        let plan = nnc_jit::plan_text(f, &Default::default()).unwrap();
        let line = |k: &str| plan.lines().find(|l| l.contains(k)).unwrap_or_default();
        for k in [
            "%3 = concat",
            "%6 = concat",
            "%12 = concat",
            "%15 = concat",
            "%16 = concat",
        ] {
            assert!(line(k).contains("written in place"), "{k}:\n{plan}");
        }
        assert!(!line("%9 = concat").contains("written in place"), "{plan}");
        // Read by a later sum too: its own buffer and both concats.
        let l13 = line("%13 = mul");
        assert!(
            l13.contains("scratch") && l13.matches("in place in").count() == 2,
            "{plan}"
        );
        let mut rng = Rng::new(d as u64 + 200);
        let ins = vec![
            draw(&mut rng, &[b, d]),
            draw(&mut rng, &[b, d]),
            draw(&mut rng, &[b, 2, d]),
        ];
        let ps = vec![draw(&mut rng, &[d])];
        agree(&mut jit, f, &ins, &ps, &format!("d = {d}, b = {b}"));
    }
}

#[test]
fn concats_written_in_place_match_the_interpreter() {
    check_concats(nnc_jit::Codegen::Cranelift);
}

#[cfg(feature = "llvm")]
#[test]
fn concats_written_in_place_match_the_interpreter_on_llvm() {
    check_concats(nnc_jit::Codegen::Llvm);
}
