//! Hostile input never crashes the front end: deep nesting, huge files, binary garbage,
//! empty and non-UTF-8 files, random token soups. Random valid programs check cleanly.

use proptest::prelude::*;

fn codes(src: &str) -> Vec<&'static str> {
    match nnc::lang::check(src) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(|d| d.code).collect(),
    }
}

#[test]
fn nesting_100_000_deep_is_an_error_not_a_stack_overflow() {
    for (open, close) in [("(", ")"), ("[", "]"), ("{", "}")] {
        let src = format!(
            "model M(x: f32[B, 4]) -> f32[B, 4] {{ return {}x{} }}",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        assert_eq!(codes(&src), ["E0003"], "{open}");
    }
    let src = format!(
        "model M(x: f32[B, 4]) -> f32[B, 4] {{ return {}x }}",
        "-".repeat(100_000)
    );
    assert_eq!(codes(&src), ["E0004"]);
    let src = format!(
        "model M(x: f32[B, 4]) -> f32[B, 4] {{ return x{} }}",
        " ^ x".repeat(100_000)
    );
    assert_eq!(codes(&src), ["E0004"]);
}

#[test]
fn ten_megabyte_files() {
    // A long sum in one expression is refused with a clear limit...
    let src = format!(
        "model M(x: f32[B, 4]) -> f32[B, 4] {{ return x{} }}",
        " + x".repeat(2_600_000)
    );
    assert!(src.len() > 10_000_000);
    assert_eq!(codes(&src), ["E0004"]);
    // ...while a 10 MB file of ordinary definitions checks.
    let mut src = String::from("model M(x: f32[B, 4]) -> f32[B, 4] {\n    h = x\n");
    for _ in 0..2_000 {
        src.push_str("    h = relu(h) + 0.5 * h\n");
    }
    src.push_str("    return h\n}\n");
    let mut i = 0;
    while src.len() < 10_000_000 {
        src.push_str(&format!(
            "# padding line {i} of a very large file, which the lexer skips as a comment\n"
        ));
        i += 1;
    }
    assert_eq!(codes(&src), Vec::<&str>::new());
}

#[test]
fn empty_and_whitespace_files_check() {
    for src in ["", "\n\n", "   # only a comment\n"] {
        let checked = nnc::lang::check(src).unwrap();
        assert!(checked.module.funcs.is_empty());
    }
}

#[test]
fn binary_garbage_and_invalid_utf8() {
    let mut rng = nnc::runtime::Rng::new(42);
    let bytes: Vec<u8> = (0..100_000).map(|_| rng.next_u64() as u8).collect();
    let err = nnc::source_from_bytes(&bytes).unwrap_err();
    assert_eq!(err.code, "E0005");
    // Garbage that is valid UTF-8 still gets a syntax error.
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(codes(&text), ["E0001"]);
    let nul = "model M(x: f32[B, 4]) -> f32[B, 4] { return x }\0\0\u{1}";
    assert_eq!(codes(nul), ["E0001"]);
    assert_eq!(
        nnc::source_from_bytes(b"model \xff").unwrap_err().code,
        "E0005"
    );
}

const TOKENS: &[&str] = &[
    "model",
    "layer",
    "train",
    "rule",
    "for",
    "param",
    "state",
    "return",
    "x",
    "y",
    "h",
    "B",
    "D",
    "M",
    "dense",
    "relu",
    "sum",
    "reshape",
    "one_hot",
    "adam",
    "cross_entropy",
    "output",
    "f32",
    "i32",
    "int",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "->",
    "+",
    "-",
    "*",
    "/",
    "@",
    "^",
    "0",
    "1",
    "64",
    "1e-3",
    "0.5",
    "1.2.3",
    "\"s\"",
    "#c\n",
    "\n",
    "axis",
    "keepdims",
    "true",
    "zeros",
    "sgd",
    "loss",
    "optimizer",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(idx in proptest::collection::vec(0..TOKENS.len(), 0..80)) {
        let src: Vec<&str> = idx.iter().map(|&i| TOKENS[i]).collect();
        let src = src.join(" ");
        let _ = nnc::lang::check(&src);
        let _ = nnc::stage_text(&src, nnc::Stage::Ast);
    }

    #[test]
    fn mutated_examples_never_panic(cut in 0usize..2000, insert in 0..TOKENS.len()) {
        let src = include_str!("../examples/residual.nn");
        let at = src.char_indices().map(|(i, _)| i).nth(cut % src.chars().count()).unwrap_or(0);
        let mutated = format!("{}{}{}", &src[..at], TOKENS[insert], &src[at..]);
        let _ = nnc::lang::check(&mutated);
    }

    #[test]
    fn mutated_ir_text_never_panics_the_ir_parser(cut in 0usize..4000, len in 0usize..12, insert in 0..TOKENS.len()) {
        let src = include_str!("../examples/digits_mlp.nn");
        let text = nnc::lang::check(src).unwrap().module.to_string();
        let chars: Vec<char> = text.chars().collect();
        let at = cut % chars.len();
        let end = (at + len).min(chars.len());
        let mutated: String = chars[..at].iter().chain(TOKENS[insert].chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        if let Ok(m) = nnc::ir::parse_module(&mutated) {
            // Whatever parses is well typed and prints back to something that parses to it.
            nnc::ir::verify_module(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(nnc::ir::parse_module(&m.to_string()).unwrap(), m);
        }
    }

    #[test]
    fn random_valid_programs_check_and_round_trip(
        width in 1u64..40,
        layers in proptest::collection::vec((0usize..7, 1u64..24), 1..8),
        classes in 2u64..12,
    ) {
        let mut body = String::new();
        let mut cur = width;
        for (i, (kind, n)) in layers.iter().enumerate() {
            let prev = if i == 0 { "x".to_string() } else { format!("h{}", i - 1) };
            let (expr, w) = match kind {
                0 => (format!("dense({prev}, {n})"), *n),
                1 => (format!("relu({prev})"), cur),
                2 => (format!("tanh({prev}) * 0.5"), cur),
                3 => (format!("{prev} + sigmoid({prev})"), cur),
                4 => (format!("gelu(dense({prev}, {n}, init = xavier_normal))"), *n),
                5 => (format!("softmax({prev}, axis = -1)"), cur),
                _ => (format!("{prev} - mean({prev}, axis = 1, keepdims = true)"), cur),
            };
            body.push_str(&format!("    h{i} = {expr}\n"));
            cur = w;
        }
        let last = format!("h{}", layers.len() - 1);
        let src = format!(
            "model R(x: f32[B, {width}]) -> f32[B, {classes}] {{\n{body}    return dense({last}, {classes})\n}}\n\
             train R(y: i32[B]) {{\n    loss = cross_entropy(output, y)\n    optimizer = adam\n}}\n"
        );
        let checked = nnc::lang::check(&src).map_err(|d| TestCaseError::fail(nnc::render_plain("gen", &src, &d)))?;
        let text = checked.module.to_string();
        let parsed = nnc::ir::parse_module(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.to_string(), text);
    }
}

/// Errors far along a line and huge names quoted in messages render, clipped: miette
/// panicked past column 65,535 and spent seconds on a megabyte name.
#[test]
fn errors_on_huge_lines_and_names_render_clipped() {
    let render = |src: &str| {
        let diags = nnc::lang::check(src).unwrap_err();
        nnc::render_plain("big.nn", src, &diags)
    };
    // An unknown name after 65,530 spaces, and a label spanning the long line.
    let src = format!(
        "model M(x: f32[B, 4]) -> f32[B, 4] {{\n    return{}zz\n}}\n",
        " ".repeat(65_530)
    );
    let out = render(&src);
    assert!(out.contains("zz"), "{out}");
    assert!(out.contains('…'), "{out}");
    assert!(out.len() < 4_000, "{} bytes", out.len());
    // A one-megabyte identifier: quoted in the message and underlined in the source.
    let name = "a".repeat(1 << 20);
    let src = format!("model M(x: f32[B, 4]) -> f32[B, 4] {{\n    return {name}\n}}\n");
    let out = render(&src);
    assert!(out.contains("E01"), "{}", &out[..out.len().min(500)]);
    assert!(out.len() < 8_000, "{} bytes", out.len());
    // Long lines elsewhere in the file do not move the error's line number.
    let src = format!(
        "# {}\nmodel M(x: f32[B, 4]) -> f32[B, 4] {{\n    return yy\n}}\n",
        "c".repeat(100_000)
    );
    let out = render(&src);
    assert!(out.contains("big.nn:3:"), "{out}");
}
