//! The command line's contract: exit 0 clean, 1 errors in the input, 2 bad command line,
//! never a panic; `run` evaluates a model on CSV input.

mod common;

use common::nnc;

fn tmp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("nnc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn check_exit_codes() {
    let (code, out, _) = nnc(&["check", "examples/digits_mlp.nn", "examples/residual.nn"]);
    assert_eq!(code, 0);
    assert!(out.contains("examples/digits_mlp.nn: ok"), "{out}");
    let (code, _, err) = nnc(&["check", "tests/errors/matmul_inner.nn"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot multiply f32[B, 784] by f32[128, 10]"),
        "{err}"
    );
    assert!(
        err.contains("error: 1 error in tests/errors/matmul_inner.nn"),
        "{err}"
    );
    let (code, _, err) = nnc(&["check", "no/such/file.nn"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read no/such/file.nn"), "{err}");
    let (code, _, _) = nnc(&["check"]);
    assert_eq!(code, 2);
    let (code, _, _) = nnc(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, _) = nnc(&["ir", "examples/digits_mlp.nn", "--stage", "nonsense"]);
    assert_eq!(code, 2);
}

#[test]
fn bad_files_exit_1_without_panicking() {
    let f = tmp("garbage.nn", &[0xff, 0xfe, 0x00, 0x80, b'm']);
    let (code, _, err) = nnc(&["check", &f]);
    assert_eq!(code, 1);
    assert!(err.contains("not valid UTF-8"), "{err}");
    let deep = format!(
        "model M(x: f32[B, 1]) -> f32[B, 1] {{ return {}x{} }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let f = tmp("deep.nn", deep.as_bytes());
    let (code, _, err) = nnc(&["check", &f]);
    assert_eq!(code, 1);
    assert!(err.contains("E0003"), "{err}");
    let f = tmp("empty.nn", b"");
    assert_eq!(nnc(&["check", &f]).0, 0);
}

#[test]
fn ir_prints_each_stage() {
    let (code, out, _) = nnc(&["ir", "examples/digits_mlp.nn", "--stage", "ir"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("func @DigitsMlp(%x: f32[B, 64]) -> f32[B, 10] {"),
        "{out}"
    );
    let (code, out, _) = nnc(&["ir", "examples/digits_mlp.nn", "--stage", "ast"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("model DigitsMlp(x: f32[B, 64]) -> f32[B, 10] {"),
        "{out}"
    );
}

#[test]
fn run_evaluates_the_forward_pass() {
    let rows: String = (0..3)
        .map(|r| {
            (0..16)
                .map(|c| format!("{}", (r * 16 + c) % 5))
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        })
        .collect();
    let f = tmp("x.csv", rows.as_bytes());
    let (code, out, err) = nnc(&[
        "run",
        "examples/residual.nn",
        "--input",
        &format!("x={f}"),
        "--seed",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l.split(',').count() == 3 && l.split(',').all(|v| v.parse::<f64>().is_ok())),
        "{out}"
    );
    // The same seed gives the same output; another seed another.
    assert_eq!(
        nnc(&[
            "run",
            "examples/residual.nn",
            "--input",
            &format!("x={f}"),
            "--seed",
            "3"
        ])
        .1,
        out
    );
    assert_ne!(
        nnc(&[
            "run",
            "examples/residual.nn",
            "--input",
            &format!("x={f}"),
            "--seed",
            "4"
        ])
        .1,
        out
    );
    // A wrong width is an error naming the input and both types.
    let (code, _, err) = nnc(&[
        "run",
        "examples/digits_mlp.nn",
        "--input",
        &format!("x={f}"),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("input `x` expects f32[B, 64], the file holds f32[3, 16]"),
        "{err}"
    );
    let bad = tmp("bad.csv", b"1,2\n3,oops\n");
    let (code, _, err) = nnc(&[
        "run",
        "examples/digits_mlp.nn",
        "--input",
        &format!("x={bad}"),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2, column 2"), "{err}");
}
