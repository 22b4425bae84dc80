//! Helpers the integration tests share: running the `nnc` binary, scratch folders, and
//! random values for a function's inputs and parameters.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::path::{Path, PathBuf};
use std::process::Command;

use nnc::ir::{DType, Dim, Func, ParamKind, TensorType};
use nnc::runtime::{Rng, Tensor};

/// Runs the `nnc` binary in the repository root: (exit status, stdout, stderr).
pub fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh, empty folder for one test (named by the test binary's process and `name`).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `examples/*.nn` files, sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    v.sort();
    v
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Random values for `f`'s inputs and parameters: symbolic dimensions of size `batch`
/// (`N`, a rule's parameter length, 37), labels in 0..3, floats in (-0.5, 0.5) — well
/// conditioned, so f32 rounding stays small — and optimizer states in (0.05, 1.55), since
/// rules take their square roots.
pub fn random_values(f: &Func, rng: &mut Rng, batch: usize) -> (Vec<Tensor>, Vec<Tensor>) {
    // Optimizer states and buffers (running variances) are positive.
    let make = |ty: &TensorType, positive: bool, rng: &mut Rng| {
        let shape: Vec<usize> = ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Known(n) => *n as usize,
                Dim::Sym(s) if s == "N" => 37,
                Dim::Sym(_) => batch,
            })
            .collect();
        let n = shape.iter().product();
        let data = if ty.dtype == DType::I32 {
            (0..n).map(|_| rng.below(3) as f64).collect()
        } else if positive {
            (0..n).map(|_| rng.uniform() * 1.5 + 0.05).collect()
        } else {
            (0..n).map(|_| rng.uniform() - 0.5).collect()
        };
        Tensor::new(ty.dtype, shape, data)
    };
    (
        f.inputs.iter().map(|a| make(&a.ty, false, rng)).collect(),
        f.params
            .iter()
            .map(|p| make(&p.ty, p.kind != ParamKind::Param, rng))
            .collect(),
    )
}
