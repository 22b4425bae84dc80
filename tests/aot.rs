//! Ahead-of-time code: `nnc build` writes an object file and a C header; a C program
//! compiled against them with the system's C compiler must predict what `nnc predict`
//! predicts on the digits test rows, and the same object must link into a Rust program
//! that has no nnc in it but the run-time kernels.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{nnc, s, scratch};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `nnc-rt` static library, built with the profile this test was built with (its
/// folder is the `nnc` binary's).
fn runtime_library() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_nnc")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "nnc-rt", "--lib"])
        .current_dir(ROOT);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = dir.join("libnnc_rt.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

/// The digits rows `nnc predict` and the C program both read: the header and the test
/// tail (the last 360 rows).
fn test_rows(dir: &Path) -> PathBuf {
    let all = std::fs::read_to_string(Path::new(ROOT).join("examples/data/digits.csv")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let rows = dir.join("test.csv");
    let mut text = String::from(lines[0]) + "\n";
    for l in &lines[lines.len() - 360..] {
        text += l;
        text += "\n";
    }
    std::fs::write(&rows, text).unwrap();
    rows
}

fn table(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| !l.starts_with("prediction"))
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// Trains `example` briefly and builds it: (scratch folder, checkpoint, build folder).
fn trained_build(example: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    trained_build_with(example, name, &["--backend", "jit"])
}

fn trained_build_with(example: &str, name: &str, options: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let file = format!("examples/{example}.nn");
    let run = dir.join("run");
    let (code, _, err) = nnc(&["train", &file, "--epochs", "3", "--out", s(&run)]);
    assert_eq!(code, 0, "{err}");
    let ckpt = run.join("checkpoint.safetensors");
    let out = dir.join("out");
    let (code, stdout, err) = nnc(&["build", &file, "--checkpoint", s(&ckpt), "-o", s(&out)]
        .into_iter()
        .chain(options.iter().copied())
        .collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("link: cc"), "{stdout}");
    (dir, ckpt, out)
}

/// Every row's class and outputs against `nnc predict`'s.
fn same_predictions(example: &str, ckpt: &Path, rows: &Path, got: &[u8]) {
    let file = format!("examples/{example}.nn");
    let (code, want, err) = nnc(&[
        "predict",
        &file,
        "--checkpoint",
        s(ckpt),
        "--input",
        s(rows),
    ]);
    assert_eq!(code, 0, "{err}");
    let (got, want) = (table(&String::from_utf8_lossy(got)), table(&want));
    assert_eq!(got.len(), 360);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g[0], w[0],
            "row {i}: class {} vs nnc predict's {}",
            g[0], w[0]
        );
        let scale = w[1..].iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (a, b) in g[1..].iter().zip(&w[1..]) {
            assert!((a - b).abs() <= 1e-5 * scale, "row {i}: {g:?} vs {w:?}");
        }
    }
}

/// Trains `example` briefly, builds it, compiles `tests/aot/predict.c` against it and
/// compares every row's class and outputs with `nnc predict`.
fn c_program_matches_predict(example: &str, backend: &str) {
    c_program_matches_predict_with(example, &["--backend", backend]);
}

/// The C program, built against the object `nnc build` made with `options`; with
/// `--weights file` it first checks `_load`'s error codes, then loads the checkpoint.
/// Returns the program and the checkpoint for more runs.
fn c_program_matches_predict_with(example: &str, options: &[&str]) -> (PathBuf, PathBuf) {
    c_program_matches_predict_scaled(example, options, "0.0625", &[])
}

/// The same with the features' scale (the train block's) and more C definitions.
fn c_program_matches_predict_scaled(
    example: &str,
    options: &[&str],
    scale: &str,
    defines: &[String],
) -> (PathBuf, PathBuf) {
    let name = format!("aot-{example}-{}", options.join("-").replace("--", ""));
    let (dir, ckpt, out) = trained_build_with(example, &name, options);
    let load = options.contains(&"file");
    let prefix = example.to_string();
    let upper = prefix.to_uppercase();
    let exe = dir.join("predict");
    let cc = Command::new("cc")
        .args(["-O2", "-std=c99", "-Wall", "-Werror", "-I", s(&out)])
        .arg(format!("-DPREFIX={prefix}"))
        .arg(format!("-DUPPER={upper}"))
        .args(load.then_some("-DLOAD"))
        .args(defines)
        .arg(Path::new(ROOT).join("tests/aot/predict.c"))
        .arg(out.join(format!("{prefix}.o")))
        .arg(runtime_library())
        .args(["-lpthread", "-ldl", "-lm", "-o", s(&exe)])
        .output()
        .expect("a C compiler `cc` (gcc or clang) on the PATH");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let rows = test_rows(&dir);
    let c = Command::new(&exe)
        .args([s(&rows), scale])
        .args(load.then_some(s(&ckpt)))
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "exit {:?}: {}",
        c.status,
        String::from_utf8_lossy(&c.stderr)
    );
    same_predictions(example, &ckpt, &rows, &c.stdout);
    (exe, ckpt)
}

/// An embedding (a gather) in a deployed object: the same predictions as `nnc predict`,
/// and an id outside the table returns `_EINDEX` (never a read outside it); the next call
/// is clean.
#[test]
fn a_c_program_predicts_what_nnc_predicts_tokens() {
    let defines = ["-DEINDEX=DIGITS_TOKENS_EINDEX".to_string()];
    c_program_matches_predict_scaled("digits_tokens", &["--backend", "jit"], "1", &defines);
}

/// The same from the LLVM backend's wrapper.
#[cfg(feature = "llvm")]
#[test]
fn a_c_program_predicts_what_nnc_predicts_tokens_llvm() {
    let defines = ["-DEINDEX=DIGITS_TOKENS_EINDEX".to_string()];
    c_program_matches_predict_scaled("digits_tokens", &["--backend", "llvm"], "1", &defines);
}

/// `--weights file`: the object holds no weights; `_load` reads them from the checkpoint
/// by name (after refusing a missing file and a CSV), and refuses a damaged checkpoint
/// with the checksum's reason, and a truncated one.
fn weights_from_a_file(backend: &str) {
    let (exe, ckpt) =
        c_program_matches_predict_with("digits_mlp", &["--backend", backend, "--weights", "file"]);
    let dir = exe.parent().unwrap().to_path_buf();
    let rows = dir.join("test.csv");
    // The program exits with 10 and prints `_load`'s code and nnc_rt_error() when the
    // load fails.
    let load_fails = |weights: &Path, code: i32, why: &str| {
        let c = Command::new(&exe)
            .args([s(&rows), "0.0625", s(weights)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&c.stderr);
        assert_eq!(c.status.code(), Some(10), "{err}");
        assert!(err.contains(&format!("load returned {code}")), "{err}");
        assert!(err.contains(why), "{err}");
    };
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    let damaged = dir.join("damaged.safetensors");
    std::fs::write(&damaged, &bytes).unwrap();
    load_fails(&damaged, 4, "checksum");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..n / 2]).unwrap();
    load_fails(&truncated, 3, "truncated or corrupt");
}

#[test]
fn weights_can_come_from_a_checkpoint_at_run_time() {
    weights_from_a_file("jit");
}

#[test]
fn a_c_program_predicts_what_nnc_predicts_mlp() {
    c_program_matches_predict("digits_mlp", "jit");
}

/// The same objects from the LLVM backend.
#[cfg(feature = "llvm")]
#[test]
fn a_c_program_predicts_what_nnc_predicts_llvm() {
    c_program_matches_predict("digits_mlp", "llvm");
    c_program_matches_predict("digits_cnn", "llvm");
    weights_from_a_file("llvm");
}

#[test]
fn a_rust_program_links_the_object_with_only_the_kernels_crate() {
    let (dir, ckpt, out) = trained_build("digits_mlp", "aot-rust");
    let object = out.join("digits_mlp.o");
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_nnc")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "rustc",
        "-p",
        "nnc-rt",
        "--example",
        "deploy",
        "--features",
        "example-model",
    ])
    .current_dir(ROOT);
    if exe_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let build = cmd
        .args(["--", "-C"])
        .arg(format!("link-arg={}", s(&object)))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let rows = test_rows(&dir);
    let run = Command::new(exe_dir.join("examples/deploy"))
        .arg(&rows)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    same_predictions("digits_mlp", &ckpt, &rows, &run.stdout);
}

#[test]
fn a_c_program_predicts_what_nnc_predicts_cnn() {
    // Convolutions, batch norm on running statistics, pooling, dropout off.
    c_program_matches_predict("digits_cnn", "jit");
}

/// A checkpoint of `example`'s initial parameters, written through the library (the
/// header does not depend on the values; this model has no data to train on).
fn initial_checkpoint(example: &str, path: &Path) {
    let file = Path::new(ROOT).join(format!("examples/{example}.nn"));
    let checked = nnc::lang::check(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let spec = &checked.trains[0];
    let model = nnc::train::Model::new(&checked.module, &spec.model, Some(spec)).unwrap();
    let config = nnc::train::TrainConfig::from_spec(spec, file.parent().unwrap());
    let session = nnc::train::Session::new(model, config).unwrap();
    session.to_checkpoint().save(path).unwrap();
}

#[test]
fn the_header_documents_inputs_shapes_and_error_codes() {
    let dir = scratch("aot-header");
    let ckpt = dir.join("init.safetensors");
    initial_checkpoint("two_inputs", &ckpt);
    let out = dir.join("out");
    let (code, _, err) = nnc(&[
        "build",
        "examples/two_inputs.nn",
        "--checkpoint",
        s(&ckpt),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let header = std::fs::read_to_string(out.join("fusion.h")).unwrap();
    insta::assert_snapshot!("two_inputs_header", header);
}

#[test]
fn a_model_whose_rows_mix_needs_a_fixed_batch() {
    let dir = scratch("aot-rows");
    let file = dir.join("center.nn");
    let data = Path::new(ROOT).join("examples/data/digits.csv");
    std::fs::write(
        &file,
        format!(
            "model Center(x: f32[B, 64]) -> f32[B, 10] {{\n    c = x - mean(x, axis = 0)\n    return dense(c, 10)\n}}\n\n\
             train Center(y: i32[B]) {{\n    loss = cross_entropy(output, y)\n    optimizer = sgd(lr = 0.1)\n    batch = 32\n    epochs = 1\n    \
             data = csv(\"{}\", label = \"label\", scale = 0.0625, test_tail = 360)\n}}\n",
            data.display()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    let (code, _, err) = nnc(&["train", s(&file), "--out", s(&run)]);
    assert_eq!(code, 0, "{err}");
    let ckpt = run.join("checkpoint.safetensors");
    let out = dir.join("out");
    let (code, _, err) = nnc(&["build", s(&file), "--checkpoint", s(&ckpt), "-o", s(&out)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("reduces over the batch axis") && err.contains("--batch N"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written when the build fails");
    let (code, _, err) = nnc(&[
        "build",
        s(&file),
        "--checkpoint",
        s(&ckpt),
        "-o",
        s(&out),
        "--batch",
        "8",
    ]);
    assert_eq!(code, 0, "{err}");
    let header = std::fs::read_to_string(out.join("center.h")).unwrap();
    assert!(header.contains("#define CENTER_BATCH 8"), "{header}");
    assert!(header.contains("or another batch size"), "{header}");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let dir = scratch("aot-bad");
    let out = dir.join("out");
    let missing = dir.join("none.safetensors");
    let (code, _, err) = nnc(&[
        "build",
        "examples/digits_mlp.nn",
        "--checkpoint",
        s(&missing),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("none.safetensors"), "{err}");
    assert!(!out.exists(), "nothing is written when the build fails");
    let (code, _, err) = nnc(&[
        "build",
        "examples/digits_mlp.nn",
        "--checkpoint",
        s(&missing),
        "-o",
        s(&out),
        "--chunk",
        "0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--chunk"), "{err}");
}

/// Every example's inference function keeps rows apart (batch norm uses its running
/// statistics there, dropout is off), so each builds for any batch size. The analysis is
/// checked against the interpreter: five rows at once give what each row gives alone.
#[test]
fn every_example_runs_on_any_batch_in_pieces() {
    for path in common::examples() {
        let checked = nnc::lang::check(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for f in checked
            .module
            .funcs
            .iter()
            .filter(|f| !f.name.contains('.'))
        {
            let batch = match f.inputs[0].ty.shape.dims().first() {
                Some(nnc::ir::Dim::Sym(b)) => b.clone(),
                _ => continue,
            };
            let r = nnc::compiler::rows::independent(f, &batch);
            assert_eq!(r, Ok(()), "{}: @{}", path.display(), f.name);
            let mut rng = nnc::runtime::Rng::new(7);
            let (inputs, params) = common::random_values(f, &mut rng, 5);
            let whole = nnc::compiler::interp::eval(f, &inputs, &params).unwrap();
            for row in 0..5 {
                let one: Vec<nnc::runtime::Tensor> = inputs
                    .iter()
                    .zip(&f.inputs)
                    .map(|(t, a)| match a.ty.shape.dims().first() {
                        Some(nnc::ir::Dim::Sym(b)) if *b == batch => {
                            let per = t.data.len() / 5;
                            let mut shape = t.shape.clone();
                            shape[0] = 1;
                            nnc::runtime::Tensor::new(
                                t.dtype,
                                shape,
                                t.data[row * per..][..per].to_vec(),
                            )
                        }
                        _ => t.clone(),
                    })
                    .collect();
                let alone = nnc::compiler::interp::eval(f, &one, &params).unwrap();
                for (w, a) in whole.iter().zip(&alone) {
                    let per = w.data.len() / 5;
                    for (x, y) in w.data[row * per..][..per].iter().zip(&a.data) {
                        assert!(
                            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                            "{}: row {row}: {x} vs {y}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
