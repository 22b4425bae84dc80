//! Fused loops on wide vectors (machine code, `wide.rs`: sixteen lanes with AVX-512, eight
//! with AVX2, both run here where the host has them) against Cranelift's f32x4 loops: the
//! same bits, on the random graphs, on one loop of every elementwise op over rows of 1 to
//! 67 elements (whole vectors and masked tails) with NaN, infinities and signed zeros
//! among the inputs, and on a 14-stream loop over rows; and against the interpreter. On a
//! host without the width both sides are Cranelift's loops and the tests check only that.

use nnc_compiler::interp::eval;
use nnc_compiler::random_graph::{random_func, random_values};
use nnc_ir::{DType, parse_module};
use nnc_runtime::{Rng, Tensor};

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The widths this host runs: sixteen lanes (the default where AVX-512 exists) and eight
/// (forced; AVX2).
const WIDTHS: [bool; 2] = [false, true];

/// The outputs of `f` with wide loops (eight lanes when `eight`, else the host's widest)
/// and with f32x4 loops, and how many loops took the wide path.
fn both(
    f: &nnc_ir::Func,
    ins: &[Tensor],
    ps: &[Tensor],
    eight: bool,
) -> (Vec<Tensor>, Vec<Tensor>, usize) {
    let before = nnc_jit::wide_loops_assembled();
    let run = || nnc_jit::Jit::new().eval(f, ins, ps).unwrap();
    let wide = if eight {
        nnc_jit::with_eight_lane_loops(run)
    } else {
        nnc_jit::with_wide_loops(true, run)
    };
    let wide_loops = nnc_jit::wide_loops_assembled() - before;
    let narrow = nnc_jit::with_wide_loops(false, run);
    assert_eq!(nnc_jit::wide_loops_assembled() - before, wide_loops);
    (wide, narrow, wide_loops)
}

/// Whether this host has the width `eight` asks for (its loops must then be wide).
fn has(eight: bool) -> bool {
    if eight { avx2() } else { avx512() || avx2() }
}

fn same_bits(a: &[Tensor], b: &[Tensor]) -> Result<(), String> {
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        for (i, (p, q)) in x.data.iter().zip(&y.data).enumerate() {
            if p.to_bits() != q.to_bits() && !(p.is_nan() && q.is_nan()) {
                return Err(format!("output {k}[{i}]: {p} vs {q}"));
            }
        }
    }
    Ok(())
}

#[test]
fn wide_loops_give_the_f32x4_loops_bits_on_the_random_graphs() {
    for eight in WIDTHS {
        let mut failures = Vec::new();
        let mut wide_loops = 0;
        for seed in 0..1000u64 {
            let f = random_func(seed, 3 + (seed % 12) as usize);
            let (inputs, params) = random_values(&f, seed);
            let (wide, narrow, n) = both(&f, &inputs, &params, eight);
            wide_loops += n;
            if let Err(e) = same_bits(&wide, &narrow) {
                failures.push(format!("seed {seed}: {e}\n{f}"));
            }
        }
        assert!(
            failures.is_empty(),
            "eight lanes {eight}: {} mismatches; first:\n{}",
            failures.len(),
            failures[0]
        );
        if has(eight) {
            assert!(
                wide_loops > 500,
                "eight lanes {eight}: {wide_loops} wide loops"
            );
        }
    }
}

/// Every elementwise op in one loop over rows of `D`, with a bias row, a scalar, a
/// contracted product on both sides of a sum and a difference, a division by a
/// loop-invariant value (a reciprocal), comparisons and selects.
const EVERY_OP: &str = "\
func @every(%x: f32[B, D], %y: f32[B, D], %c: f32[D], %s: f32[]) -> (f32[B, D], f32[B, D], f32[B, D]) {
  %0 = broadcast %c, dims=[1] : f32[B, D]
  %1 = broadcast %s, dims=[] : f32[B, D]
  %2 = mul %x, %1 : f32[B, D]
  %3 = add %2, %0 : f32[B, D]
  %4 = abs %y : f32[B, D]
  %5 = sqrt %4 : f32[B, D]
  %6 = div %3, %5 : f32[B, D]
  %7 = div %x, %1 : f32[B, D]
  %8 = tanh %7 : f32[B, D]
  %9 = exp %y : f32[B, D]
  %10 = sub %9, %2 : f32[B, D]
  %11 = sub %2, %9 : f32[B, D]
  %12 = gt %x, %y : f32[B, D]
  %13 = select %12, %8, %10 : f32[B, D]
  %14 = max %13, %6 : f32[B, D]
  %15 = min %14, %11 : f32[B, D]
  %16 = sign %y : f32[B, D]
  %17 = mul %16, %15 : f32[B, D]
  %18 = log %4 : f32[B, D]
  %19 = sigmoid %x : f32[B, D]
  %20 = erf %y : f32[B, D]
  %21 = sin %x : f32[B, D]
  %22 = cos %y : f32[B, D]
  %23 = neg %18 : f32[B, D]
  %24 = add %23, %19 : f32[B, D]
  %25 = mul %20, %21 : f32[B, D]
  %26 = add %25, %22 : f32[B, D]
  %27 = add %24, %26 : f32[B, D]
  %28 = le %x, %0 : f32[B, D]
  %29 = ge %y, %0 : f32[B, D]
  %30 = eq %x, %y : f32[B, D]
  %31 = ne %4, %y : f32[B, D]
  %32 = lt %28, %29 : f32[B, D]
  %33 = add %30, %31 : f32[B, D]
  %34 = add %32, %33 : f32[B, D]
  return %17, %27, %34
}
";

fn draw(rng: &mut Rng, shape: &[usize], specials: bool) -> Tensor {
    let n = shape.iter().product();
    let odd = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        88.0,
        -104.0,
    ];
    Tensor::new(
        DType::F32,
        shape.to_vec(),
        (0..n)
            .map(|i| {
                if specials && i % 5 == 3 {
                    odd[(i / 5) % odd.len()]
                } else {
                    4.0 * rng.uniform() - 2.0
                }
            })
            .collect(),
    )
}

#[test]
fn every_elementwise_op_on_wide_lanes_gives_the_f32x4_loops_bits() {
    for eight in WIDTHS {
        every_op(eight);
    }
}

fn every_op(eight: bool) {
    let mut wide_loops = 0;
    for d in [1, 7, 8, 9, 15, 16, 17, 33, 48, 67] {
        for b in [1, 3] {
            let text = EVERY_OP.replace('D', &d.to_string());
            let f = &parse_module(&text).unwrap().funcs[0];
            let mut rng = Rng::new((d * 10 + b) as u64);
            for specials in [false, true] {
                let ins = vec![
                    draw(&mut rng, &[b, d], specials),
                    draw(&mut rng, &[b, d], specials),
                    draw(&mut rng, &[d], false),
                    Tensor::new(DType::F32, vec![], vec![0.75]),
                ];
                let (wide, narrow, n) = both(f, &ins, &[], eight);
                wide_loops += n;
                if let Err(e) = same_bits(&wide, &narrow) {
                    panic!("eight lanes {eight}, d = {d}, b = {b}, specials {specials}: {e}");
                }
                // And the interpreter, on ordinary inputs (the polynomials' error).
                if !specials {
                    let want = eval(f, &ins, &[]).unwrap();
                    for (k, (g, w)) in wide.iter().zip(&want).enumerate() {
                        for (i, (p, q)) in g.data.iter().zip(&w.data).enumerate() {
                            assert!(
                                (p - q).abs() <= 1e-4 + 1e-4 * q.abs(),
                                "d = {d}, b = {b}: output {k}[{i}]: {p} vs {q}"
                            );
                        }
                    }
                }
            }
        }
    }
    if has(eight) {
        assert!(
            wide_loops >= 40,
            "eight lanes {eight}: {wide_loops} wide loops"
        );
    }
}

/// Fourteen streams (ten leaves, four stores), the most one loop keeps in registers, over
/// rows: each stream steps by its own row, a bias row steps by none.
#[test]
fn a_loop_of_fourteen_streams_over_rows_gives_the_f32x4_loops_bits() {
    for eight in WIDTHS {
        fourteen_streams(eight);
    }
}

fn fourteen_streams(eight: bool) {
    let args: Vec<String> = (0..9).map(|i| format!("%x{i}: f32[B, D]")).collect();
    let mut text = format!(
        "func @many({}, %c: f32[D]) -> (f32[B, D], f32[B, D], f32[B, D], f32[B, D]) {{\n",
        args.join(", ")
    );
    // Partial sums, each returned: one loop stores all four.
    text += "\
  %0 = broadcast %c, dims=[1] : f32[B, D]
  %1 = mul %x0, %x1 : f32[B, D]
  %2 = add %1, %0 : f32[B, D]
  %3 = mul %x2, %x3 : f32[B, D]
  %4 = add %2, %3 : f32[B, D]
  %5 = mul %x4, %x5 : f32[B, D]
  %6 = sub %4, %5 : f32[B, D]
  %7 = mul %x6, %x7 : f32[B, D]
  %8 = sub %7, %6 : f32[B, D]
  %9 = div %8, %x8 : f32[B, D]
  return %2, %4, %6, %9
}
";
    let mut wide_loops = 0;
    for (b, d) in [(5, 37), (2, 64), (1, 3)] {
        let src = text.replace('D', &d.to_string());
        let f = &parse_module(&src).unwrap().funcs[0];
        let mut rng = Rng::new(d as u64);
        let mut ins: Vec<Tensor> = (0..9).map(|_| draw(&mut rng, &[b, d], false)).collect();
        ins.push(draw(&mut rng, &[d], false));
        let (wide, narrow, n) = both(f, &ins, &[], eight);
        wide_loops += n;
        same_bits(&wide, &narrow).unwrap();
        let want = eval(f, &ins, &[]).unwrap();
        for (g, w) in wide.iter().zip(&want) {
            for (p, q) in g.data.iter().zip(&w.data) {
                assert!((p - q).abs() <= 1e-5 + 1e-5 * q.abs(), "{p} vs {q}");
            }
        }
    }
    if has(eight) {
        assert!(
            wide_loops >= 3,
            "eight lanes {eight}: {wide_loops} wide loops"
        );
    }
}
