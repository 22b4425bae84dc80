//! Every example is a test of every stage: its text is snapshotted, it parses back to the
//! same text, and the IR passes the verifier.

mod common;

use common::examples;
use nnc::Stage;

#[test]
fn there_are_at_least_five_examples() {
    assert!(examples().len() >= 5, "{:?}", examples());
}

/// Examples whose CLIF text is too long to review as a snapshot (0.1 MB and more: a
/// recurrence's training step with its forward and backward loop bodies, attention).
const LONG: &[&str] = &[
    "digits_elman",
    "digits_gru",
    "digits_lstm",
    "digits_transformer",
];

#[test]
fn pipeline_snapshots() {
    insta::glob!("../examples", "*.nn", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        for stage in Stage::ALL {
            // Their `fused` plan is snapshotted instead.
            if stage == Stage::Clif && LONG.contains(&name.as_str()) {
                continue;
            }
            let text = match nnc::stage_text(&src, stage) {
                Ok(t) => t,
                Err(d) => panic!(
                    "{} fails at {}:\n{}",
                    path.display(),
                    stage.name(),
                    nnc::render_plain("example", &src, &d)
                ),
            };
            insta::assert_snapshot!(stage.name(), text);
        }
    });
}

#[test]
fn ast_text_round_trips() {
    for path in examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let once = nnc::stage_text(&src, Stage::Ast).unwrap();
        let twice = nnc::stage_text(&once, Stage::Ast).unwrap();
        assert_eq!(once, twice, "{}", path.display());
        // The printed source also checks to the same IR as the original, but for the
        // source lines gathers carry for their run-time errors (the printer drops comments
        // and blank lines, so lines move).
        let no_lines = |ir: String| -> String {
            ir.lines()
                .map(|l| match l.find(", line=") {
                    Some(at) => {
                        let rest = &l[at + 7..];
                        let end = rest
                            .find(|c: char| !c.is_ascii_digit())
                            .unwrap_or(rest.len());
                        format!("{}{}", &l[..at], &rest[end..])
                    }
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            no_lines(nnc::stage_text(&once, Stage::Ir).unwrap()),
            no_lines(nnc::stage_text(&src, Stage::Ir).unwrap()),
            "{}",
            path.display()
        );
    }
}

#[test]
fn ir_text_round_trips_and_verifies() {
    for path in examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = nnc::lang::check(&src).unwrap();
        nnc::ir::verify_module(&checked.module)
            .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        let text = checked.module.to_string();
        let parsed = nnc::ir::parse_module(&text)
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(
            parsed,
            checked.module,
            "{}: parse(print(m)) != m",
            path.display()
        );
        assert_eq!(
            parsed.to_string(),
            text,
            "{}: print(parse(text)) != text",
            path.display()
        );
        // The training graphs (autodiff's output) verify and round-trip too.
        let training = nnc::training_module(&checked.module).unwrap();
        nnc::ir::verify_module(&training)
            .unwrap_or_else(|e| panic!("{} (grad):\n{e}", path.display()));
        let text = training.to_string();
        let parsed = nnc::ir::parse_module(&text).unwrap();
        assert_eq!(
            parsed,
            training,
            "{}: grad stage round trip",
            path.display()
        );
        // And the optimized graphs (`--stage opt`): parse(print) is the same text.
        let opt = nnc::stage_text(&src, Stage::Opt).unwrap();
        let parsed = nnc::ir::parse_module(&opt)
            .unwrap_or_else(|e| panic!("{} (opt): {e}\n{opt}", path.display()));
        nnc::ir::verify_module(&parsed)
            .unwrap_or_else(|e| panic!("{} (opt):\n{e}", path.display()));
        assert_eq!(
            parsed.to_string(),
            opt,
            "{}: opt stage round trip",
            path.display()
        );
    }
}

/// `nnc gradcheck` passes on every example with a train block (each parameter's
/// gradient against f64 finite differences), but for the learning-rule examples: there
/// the hidden layers' gradients differ from the loss's derivative, reported as the rule's
/// (and for feedback alignment and sign symmetry the output layer's agree: x^T dy).
#[test]
fn every_trained_example_passes_gradcheck() {
    let mut checked = 0;
    for path in examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        if nnc::lang::check(&src).unwrap().trains.is_empty() {
            continue;
        }
        for seed in ["0", "1"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
                .args([
                    "gradcheck",
                    path.to_str().unwrap(),
                    "--seed",
                    seed,
                    "--elems",
                    "16",
                ])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let name = path.file_stem().unwrap().to_string_lossy();
            if ["digits_fa", "digits_sign", "digits_dfa", "digits_binary"].contains(&name.as_ref())
            {
                // The loss's derivative (rules taken out) passes; the rule's own
                // gradients are reported beside it, labelled.
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{name}: {stdout}{err}");
                assert!(!stdout.contains("FAILED"), "{stdout}");
                assert!(stdout.contains("learns by a rule of its own"), "{stdout}");
                let row = |p: &str| stdout.lines().find(|l| l.starts_with(p)).unwrap_or("");
                assert!(row("h1.w").contains("differs by"), "{stdout}");
                // FA and sign symmetry give the output layer's weights x^T dy; the
                // binarized net's straight-through weights differ everywhere.
                let out_w = if name == "digits_dfa" { "o.w" } else { "out.w" };
                if name != "digits_binary" {
                    assert!(row(out_w).contains("equal"), "{stdout}");
                }
                continue;
            }
            assert!(
                out.status.success(),
                "{} seed {seed}:\n{stdout}{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("ok: "), "{stdout}");
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} trained examples");
}

#[test]
fn examples_run_forward_on_the_interpreter() {
    use nnc::runtime::Tensor;
    for path in examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = nnc::lang::check(&src).unwrap();
        for func in checked
            .module
            .funcs
            .iter()
            .filter(|f| !f.name.contains('.'))
        {
            let inputs: Vec<Tensor> = func
                .inputs
                .iter()
                .map(|a| {
                    let shape: Vec<usize> =
                        a.ty.shape
                            .dims()
                            .iter()
                            .map(|d| d.known().unwrap_or(3) as usize)
                            .collect();
                    let n = shape.iter().product();
                    Tensor::new(
                        a.ty.dtype,
                        shape,
                        (0..n).map(|i| ((i * 7) % 5) as f64 / 5.0).collect(),
                    )
                })
                .collect();
            let params: Vec<Tensor> = func
                .params
                .iter()
                .map(|p| nnc::runtime::init_param(p, 1).unwrap())
                .collect();
            let out = nnc::compiler::interp::eval(func, &inputs, &params).unwrap();
            assert!(
                out[0].data.iter().all(|v| v.is_finite()),
                "{}: {:?}",
                path.display(),
                out[0]
            );
        }
    }
}
