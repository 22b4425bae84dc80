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

/// `nnc gradcheck` on a grad block: one that writes the true derivative passes with its
/// rule column "equal"; feedback alignment's passes the derivative check too, and says,
/// labelled, where and by how much its gradients differ from the derivative.
#[test]
fn gradcheck_reports_a_grad_blocks_difference() {
    let layer = |dx: &str| {
        format!(
            "layer lin(x: f32[B, I], units: int) {{
    param w: f32[I, units] = fan_in_uniform
    buffer feedback: f32[units, I] = uniform(-0.5, 0.5)
    grad (dy) {{
        x.grad = {dx}
        w.grad = transpose(x) @ dy
    }}
    return x @ w
}}

model M(x: f32[B, 4]) -> f32[B, 3] {{
    return lin(tanh(lin(x, 5)), 3)
}}

train M(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = sgd(lr = 0.1)
}}
"
        )
    };
    let exact = tmp("grad_exact.nn", layer("dy @ transpose(w)").as_bytes());
    let (code, out, err) = nnc(&["gradcheck", &exact]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("equal (").count(), 2, "{out}");
    assert!(out.contains("the rule's gradients equal it"), "{out}");
    let fa = tmp("grad_fa.nn", layer("dy @ feedback").as_bytes());
    let (code, out, err) = nnc(&["gradcheck", &fa]);
    assert_eq!(code, 0, "{out}{err}");
    let row = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or("")
            .to_string()
    };
    // The outer layer's weights learn from x^T dy either way; the inner one's error came
    // through the feedback matrix.
    assert!(row("out_2.w").contains("equal ("), "{out}");
    assert!(row("out.w ").contains("differs by"), "{out}");
    assert!(
        out.contains("expected of a rule other than backprop"),
        "{out}"
    );
}
