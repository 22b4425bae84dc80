//! Every optimization pass computes what the unoptimized graph computes, on the reference
//! interpreter: for every example, its forward pass, its gradient function and its update
//! rule, on random inputs and parameters. The passes only drop, merge or fold work whose
//! values are exact, so the outputs must be bitwise equal.

mod common;

use common::random_values;

use nnc::compiler::interp::eval;

use nnc::runtime::{Rng, Tensor};

#[test]
fn optimized_graphs_compute_the_same_values() {
    let mut compared = 0;
    for path in common::examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = nnc::lang::check(&src).unwrap();
        let training = nnc::training_module(&checked.module).unwrap();
        let optimized = nnc::optimized_module(&checked.module, None).unwrap();
        for opt in &optimized.funcs {
            let orig = checked
                .module
                .func(&opt.name)
                .or_else(|| training.func(&opt.name))
                .unwrap();
            assert!(opt.nodes.len() <= orig.nodes.len(), "{} grew", opt.name);
            for seed in 0..3 {
                let mut rng = Rng::stream(seed, &opt.name);
                let (inputs, params) = random_values(orig, &mut rng, 5);
                let a = eval(orig, &inputs, &params).unwrap();
                let b = eval(opt, &inputs, &params).unwrap();
                let bits = |ts: &[Tensor]| -> Vec<(Vec<usize>, Vec<u64>)> {
                    ts.iter()
                        .map(|t| {
                            (
                                t.shape.clone(),
                                t.data.iter().map(|v| v.to_bits()).collect(),
                            )
                        })
                        .collect()
                };
                assert!(
                    bits(&a) == bits(&b),
                    "{}: `@{}` changed its results",
                    path.display(),
                    opt.name
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 30, "{compared}");
}

#[test]
fn the_pipeline_shrinks_the_training_graph() {
    let src = std::fs::read_to_string("examples/digits_mlp.nn").unwrap();
    let checked = nnc::lang::check(&src).unwrap();
    let before = nnc::training_module(&checked.module).unwrap();
    let after = nnc::optimized_module(&checked.module, None).unwrap();
    let count = |m: &nnc::ir::Module, name: &str| m.func(name).unwrap().nodes.len();
    // Adam's `0.0 * w` weight-decay term and the keepdims reshapes disappear.
    assert!(count(&after, "DigitsMlp.update") < count(&before, "DigitsMlp.update"));
    assert!(count(&after, "DigitsMlp.grad") < count(&before, "DigitsMlp.grad"));
    let text = after.func("DigitsMlp.update").unwrap().to_string();
    assert!(!text.contains("const 0.0 :"), "{text}");
}

#[test]
fn print_after_names_a_pass() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["ir", "examples/digits_mlp.nn", "--print-after", "cse"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["ir", "examples/digits_mlp.nn", "--print-after", "fuse"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no pass `fuse`; the pipeline is: simplify, cse, dce")
    );
}
