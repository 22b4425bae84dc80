//! Filetests, after Cranelift's: each `tests/filetests/*.ir` holds a function in IR text,
//! the transform to run on it and the expected text, inline. A rule that no example
//! exercises is still tested, and its file says in a few lines what it is for.
//!
//! ```text
//! ; run: simplify dce          (pass names of the pipeline, in order; or `opt`, the whole
//! ;                             pipeline; or `fused B=8`, the JIT's plan for those sizes)
//! func @f(%x: f32[4]) -> f32[4] { ... }
//! ; expect:
//! ; func @f(%x: f32[4]) -> f32[4] {
//! ; ...
//! ```
//!
//! Every pass's result is verified and evaluated on the interpreter against the input
//! function (equal values on random inputs). `NNC_BLESS=1 cargo test --test filetests`
//! rewrites the expected text; read the diff.

use std::collections::HashMap;
use std::path::Path;

use nnc::compiler::passes::{PIPELINE, optimize};
use nnc::ir::{DType, Dim, Func, parse_module};
use nnc::runtime::{Rng, Tensor};

const EXPECT: &str = "; expect:";

/// Runs the file's transform and returns its text.
fn run(path: &Path, src: &str) -> String {
    let spec = src
        .lines()
        .find_map(|l| l.strip_prefix("; run:"))
        .unwrap_or_else(|| panic!("{}: no `; run:` line", path.display()))
        .trim();
    let module = parse_module(src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    for f in &module.funcs {
        let mut words = spec.split_whitespace();
        let text = match words.clone().next() {
            Some("fused") => {
                let mut dims = HashMap::new();
                for w in words.skip(1) {
                    let (k, v) = w.split_once('=').expect("fused B=8");
                    dims.insert(k.to_string(), v.parse().expect("a size"));
                }
                let opt = optimize(f, &mut |_, _| {}).expect("valid");
                nnc_jit::plan_text(&opt, &dims).expect("plans")
            }
            Some("opt") => {
                let g = optimize(f, &mut |_, _| {}).expect("valid");
                same_values(f, &g, path);
                g.to_string()
            }
            _ => {
                let mut g = f.clone();
                for name in words.by_ref() {
                    let pass = PIPELINE
                        .iter()
                        .find(|p| p.name == name)
                        .unwrap_or_else(|| panic!("{}: no pass `{name}`", path.display()));
                    g = (pass.run)(&g);
                    nnc::ir::verify_func(&g)
                        .unwrap_or_else(|e| panic!("{}: after {name}: {e}", path.display()));
                }
                same_values(f, &g, path);
                g.to_string()
            }
        };
        out.push_str(&text);
    }
    out
}

/// The transformed function computes what the original does on random inputs and
/// parameters (symbolic dimensions bound to 3): equal values, the sign of zero aside
/// (`x * 0` folds to +0).
fn same_values(f: &Func, g: &Func, path: &Path) {
    let mut rng = Rng::stream(1, "filetests");
    let mut draw = |ty: &nnc::ir::TensorType| {
        let shape: Vec<usize> = ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Known(n) => *n as usize,
                Dim::Sym(_) => 3,
            })
            .collect();
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| match ty.dtype {
                DType::I32 => (rng.uniform() * 4.0).floor(),
                _ => ((rng.uniform() * 4.0 - 2.0) as f32).into(),
            })
            .collect();
        Tensor::new(ty.dtype, shape, data)
    };
    let inputs: Vec<Tensor> = f.inputs.iter().map(|a| draw(&a.ty)).collect();
    let params: Vec<Tensor> = f.params.iter().map(|p| draw(&p.ty)).collect();
    let eval = |h: &Func| nnc::compiler::interp::eval(h, &inputs, &params).expect("runs");
    let (a, b) = (eval(f), eval(g));
    for (x, y) in a.iter().zip(&b) {
        let same = x
            .data
            .iter()
            .zip(&y.data)
            .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()));
        assert!(same, "{}: the transform changed a value", path.display());
    }
}

fn commented(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                ";".to_string()
            } else {
                format!("; {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{} filetests", files.len());
    let bless = std::env::var_os("NNC_BLESS").is_some();
    let mut failed = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let (input, expected) = match src.find(EXPECT) {
            Some(at) => (&src[..at], &src[at + EXPECT.len()..]),
            None => (&src[..], ""),
        };
        let got = commented(&run(path, input));
        let expected = expected.trim_start_matches('\n');
        if got != expected {
            if bless {
                std::fs::write(path, format!("{input}{EXPECT}\n{got}")).unwrap();
            } else {
                failed.push(format!(
                    "{}:\n--- expected\n{expected}--- got\n{got}",
                    path.display()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
