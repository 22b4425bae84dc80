//! Bad input to train, eval and predict: each case exits with status 1, says what is wrong
//! (with the row and column where there is one), and loses or overwrites nothing.

mod common;

use common::{nnc, s, scratch};

use std::path::{Path, PathBuf};

/// The first `n` rows of the digits CSV (with its header), each line passed through `edit`.
fn digits_rows(n: usize, edit: impl Fn(usize, &str) -> String) -> String {
    let text = std::fs::read_to_string("examples/data/digits.csv").unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().take(n + 1).enumerate() {
        out.push_str(&edit(i, line));
        out.push('\n');
    }
    out
}

/// Runs `nnc train` on a data file into a fresh folder; expects failure and no output.
fn train_fails_on(name: &str, csv: &str, expect: &[&str]) {
    let dir = scratch(name);
    let data = dir.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let out = dir.join("run");
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--test-tail",
        "10",
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 1, "{name}: {err}");
    for e in expect {
        assert!(err.contains(e), "{name}: expected `{e}` in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !out.exists(),
        "{name}: a failed run created its output folder"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_data_file() {
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        "/nonexistent/d.csv",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read data file `/nonexistent/d.csv`"),
        "{err}"
    );
}

#[test]
fn missing_model_file() {
    let (code, _, err) = nnc(&["train", "/nonexistent/m.nn"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/m.nn"), "{err}");
}

#[test]
fn wrong_column_count() {
    let csv = digits_rows(50, |i, l| {
        if i == 7 {
            l.rsplit_once(',').unwrap().0.to_string()
        } else {
            l.to_string()
        }
    });
    train_fails_on("columns", &csv, &["line 8: 64 columns, expected 65"]);
}

#[test]
fn non_numeric_cell() {
    let csv = digits_rows(50, |i, l| {
        if i == 4 {
            let mut c: Vec<&str> = l.split(',').collect();
            c[2] = "abc";
            c.join(",")
        } else {
            l.to_string()
        }
    });
    train_fails_on(
        "cell",
        &csv,
        &["line 5, column 3 (`pixel2`): `abc` is not a number"],
    );
}

#[test]
fn label_out_of_range() {
    let csv = digits_rows(50, |i, l| {
        if i == 12 {
            format!("{},10", l.rsplit_once(',').unwrap().0)
        } else {
            l.to_string()
        }
    });
    train_fails_on(
        "label",
        &csv,
        &[
            "line 13 of",
            "label 10 is outside 0..9 (the model has 10 classes)",
        ],
    );
    let csv = digits_rows(50, |i, l| {
        if i == 3 {
            format!("{},2.5", l.rsplit_once(',').unwrap().0)
        } else {
            l.to_string()
        }
    });
    train_fails_on(
        "fraction",
        &csv,
        &["line 4 of", "label 2.5 is not a class number"],
    );
}

#[test]
fn data_width_does_not_match_the_model() {
    // Keep 32 of the 64 pixels and the label.
    let csv = digits_rows(50, |_, l| {
        let c: Vec<&str> = l.split(',').collect();
        let mut kept: Vec<&str> = c[..32].to_vec();
        kept.push(c[64]);
        kept.join(",")
    });
    train_fails_on(
        "width",
        &csv,
        &["the data has 32 features per row, but the model's input `x: f32[B, 64]` takes 64"],
    );
}

#[test]
fn missing_label_column() {
    let csv = digits_rows(50, |_, l| l.to_string());
    let dir = scratch("nolabel");
    let data = dir.join("d.csv");
    std::fs::write(&data, csv).unwrap();
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--label",
        "digit",
        "--out",
        s(&dir.join("run")),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("has no column `digit` (its columns: pixel0, pixel1"),
        "{err}"
    );
}

/// Trains one epoch on a small slice of the digits into `dir/run`; returns the checkpoint.
fn small_run(dir: &Path) -> PathBuf {
    let data = dir.join("small.csv");
    std::fs::write(&data, digits_rows(100, |_, l| l.to_string())).unwrap();
    let out = dir.join("run");
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--test-tail",
        "20",
        "--epochs",
        "1",
        "--out",
        s(&out),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    out.join("checkpoint.safetensors")
}

#[test]
fn truncated_and_bit_flipped_checkpoints() {
    let dir = scratch("ckpt");
    let ck = small_run(&dir);
    let bytes = std::fs::read(&ck).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated or corrupt",
        ),
        ("empty", Vec::new(), "truncated or corrupt"),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let at = b.len() - 100; // inside the tensor data
                b[at] ^= 0x10;
                b
            },
            "do not match its checksum",
        ),
    ];
    for (name, b, expect) in cases {
        let bad = dir.join(format!("{name}.safetensors"));
        std::fs::write(&bad, b).unwrap();
        for cmd in ["eval", "predict"] {
            let mut args = vec![cmd, "examples/digits_mlp.nn", "--checkpoint", s(&bad)];
            if cmd == "predict" {
                args.extend(["--input", "examples/data/digits.csv"]);
            }
            let (code, out, err) = nnc(&args);
            assert_eq!(code, 1, "{cmd} {name}: {err}");
            assert!(err.contains(expect), "{cmd} {name}: {err}");
            assert!(out.is_empty(), "{cmd} {name} printed results: {out}");
        }
        let (code, _, err) = nnc(&[
            "train",
            "examples/digits_mlp.nn",
            "--resume",
            s(&bad),
            "--epochs",
            "2",
        ]);
        assert_eq!(code, 1, "resume {name}: {err}");
        assert!(err.contains(expect), "resume {name}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checkpoint_from_another_model() {
    let dir = scratch("other");
    let ck = small_run(&dir);
    let other = dir.join("other.nn");
    std::fs::write(
        &other,
        "model Wide(x: f32[B, 64]) -> f32[B, 10] {\n    h1 = relu(dense(x, 32))\n    return dense(h1, 10)\n}\n",
    )
    .unwrap();
    let input = dir.join("small.csv");
    let (code, _, err) = nnc(&[
        "predict",
        s(&other),
        "--checkpoint",
        s(&ck),
        "--input",
        s(&input),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "the checkpoint does not fit model `Wide` (it was saved from model `DigitsMlp`)"
        ) && err.contains("`h1.w` is f32[64, 128] in the checkpoint but f32[64, 32] in the model"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_output_folder_holding_a_run_is_not_overwritten() {
    let dir = scratch("exists");
    let ck = small_run(&dir);
    let before = std::fs::read(&ck).unwrap();
    let metrics = std::fs::read(dir.join("run/metrics.csv")).unwrap();
    let data = dir.join("small.csv");
    let run = dir.join("run");
    let args = [
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--test-tail",
        "20",
        "--epochs",
        "2",
        "--seed",
        "9",
        "--out",
        s(&run),
        "-q",
    ];
    let (code, _, err) = nnc(&args);
    assert_eq!(code, 1);
    assert!(
        err.contains("already holds a run; choose another --out, or pass --force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("run/metrics.csv")).unwrap(), metrics);
    // With --force it is replaced.
    let forced: Vec<&str> = args.iter().copied().chain(["--force"]).collect();
    let (code, _, err) = nnc(&forced);
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read(&ck).unwrap(), before);
    // predict never overwrites an existing output file either.
    let pred = dir.join("run/metrics.csv");
    let (code, _, err) = nnc(&[
        "predict",
        "examples/digits_mlp.nn",
        "--checkpoint",
        s(&ck),
        "--input",
        s(&data),
        "--output",
        s(&pred),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("exists; pass --force"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("nan");
    let model = dir.join("diverge.nn");
    // The learning rate jumps by 1e30 after the first epoch.
    let src = std::fs::read_to_string("examples/digits_mlp.nn")
        .unwrap()
        .replace(
            "optimizer = adam(lr = 1e-3)",
            "optimizer = sgd(lr = 0.01)\n    schedule = step(every = 1, gamma = 1e30)",
        )
        .replace(
            "data/digits.csv",
            &format!("{}/examples/data/digits.csv", env!("CARGO_MANIFEST_DIR")),
        );
    std::fs::write(&model, src).unwrap();
    let out = dir.join("run");
    let (code, _, err) = nnc(&["train", s(&model), "--epochs", "3", "--out", s(&out), "-q"]);
    assert_eq!(code, 1, "{err}");
    // 45 good steps in epoch 1; step 46 uses the 1e30-times rate, so step 47's loss
    // is not finite.
    assert!(
        err.contains("the loss is NaN at step 47 (epoch 2, batch 2)"),
        "{err}"
    );
    assert!(err.contains("the last good checkpoint (epoch 1)"), "{err}");
    let ck = nnc::runtime::Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.meta["epoch"], "1");
    assert!(
        ck.tensors
            .iter()
            .all(|(_, t)| t.data.iter().all(|v| v.is_finite()))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_overrides_and_settings() {
    let (code, _, err) = nnc(&["train", "examples/digits_mlp.nn", "--batch", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--batch must be at least 1"), "{err}");
    let (code, _, err) = nnc(&["train", "examples/digits_mlp.nn", "--test-fraction", "1.5"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--test-fraction must be at least 0 and below 1"),
        "{err}"
    );
    let (code, _, err) = nnc(&["train", "examples/digits_mlp.nn", "--test-tail", "5000"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("leaves none of the 1797 rows to train on"),
        "{err}"
    );
    let (code, _, err) = nnc(&["train", "examples/user_layer.nn"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no train block"), "{err}");
}

/// Two columns named `label`: `label = "label"` would silently train on the first (an
/// all-zero pixel column, 100% accuracy); refused, naming both columns.
#[test]
fn duplicate_column_names() {
    let csv = digits_rows(50, |i, l| {
        if i == 0 {
            l.replacen("pixel0", "label", 1)
        } else {
            l.to_string()
        }
    });
    train_fails_on(
        "duplicate_columns",
        &csv,
        &[
            "data.csv",
            "line 1: columns 1 and 65 are both named `label`",
        ],
    );
}

/// A cell that overflows f32 (read, or once scaled) is refused where `inf` is.
#[test]
fn values_that_overflow_f32() {
    let csv = digits_rows(50, |i, l| {
        if i == 9 {
            l.replacen("0,", "1e39,", 1)
        } else {
            l.to_string()
        }
    });
    train_fails_on(
        "overflow_f32",
        &csv,
        &["line 10, column 1 (`pixel0`): `1e39` does not fit in f32"],
    );
    // 3e38 fits f32, but not once scaled by 16.
    let csv = digits_rows(50, |i, l| {
        if i == 4 {
            l.replacen("0,", "3e38,", 1)
        } else {
            l.to_string()
        }
    });
    let dir = scratch("overflow_scaled");
    let data = dir.join("data.csv");
    std::fs::write(&data, &csv).unwrap();
    let src = std::fs::read_to_string("examples/digits_mlp.nn")
        .unwrap()
        .replace("scale = 0.0625", "scale = 16.0");
    let model = dir.join("m.nn");
    std::fs::write(&model, src).unwrap();
    let (code, _, err) = nnc(&[
        "train",
        s(&model),
        "--data",
        s(&data),
        "--test-tail",
        "10",
        "--epochs",
        "1",
        "--out",
        s(&dir.join("run")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("line 5 of `")
            && err.contains("(after scale = 16), which does not fit in f32"),
        "{err}"
    );
    assert!(!dir.join("run").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Old Mac line ends (a lone CR) read as lines, not as "a header but no rows".
#[test]
fn cr_only_line_ends_read() {
    let csv = digits_rows(60, |_, l| l.to_string()).replace('\n', "\r");
    let dir = scratch("cr_only");
    let data = dir.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--test-tail",
        "10",
        "--epochs",
        "1",
        "--out",
        s(&dir.join("run")),
    ]);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Data errors about the whole set name the file: a model input of another width.
#[test]
fn data_errors_name_the_file() {
    let csv = digits_rows(50, |_, l| {
        l.rsplit_once(',').map_or(l, |(a, _)| a).to_string()
    });
    // Every row lost its last cell: the label column is gone in the header too.
    train_fails_on("width_names_file", &csv, &["data.csv"]);
}

/// Sizes: shapes that overflow or exceed the memory limit are refused when checked, with
/// the span (E0225); a batch that cannot fit is refused before anything is allocated.
#[test]
fn tensors_larger_than_the_memory_limit() {
    let (code, _, err) = nnc(&["check", "tests/errors/tensor_too_large.nn"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("E0225") && err.contains("tensor too large"),
        "{err}"
    );
    let (code, _, err) = nnc(&["check", "tests/errors/tensor_elements_overflow.nn"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("more than 2^64 elements"), "{err}");
    // The limit is an option: mlp784's 784 x 256 weights (784 KiB) exceed 100 KiB.
    let (code, _, err) = nnc(&["check", "examples/mlp784.nn", "--memory-limit", "100K"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`f32[784, 256]` needs 784.0 KiB"), "{err}");
    let (code, _, _) = nnc(&["check", "examples/mlp784.nn", "--memory-limit", "1G"]);
    assert_eq!(code, 0);
    // Every tensor fits 5 MiB, but training holds the parameters, their gradients and
    // Adam's two states: refused at the optimizer.
    let (code, _, err) = nnc(&["check", "examples/mlp784.nn", "--memory-limit", "5M"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "training needs too much memory: `Mlp784` with `adam` holds its 269322 parameters"
        ),
        "{err}"
    );
    let (code, _, err) = nnc(&["check", "examples/mlp784.nn", "--memory-limit", "lots"]);
    assert_eq!(code, 2, "{err}");
    // A batch of ten million rows: refused, not an abort.
    let (code, _, err) = nnc(&[
        "bench",
        "examples/mlp784.nn",
        "--batch",
        "10000000",
        "--steps",
        "1",
        "--baseline-steps",
        "0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not fit the memory limit"), "{err}");
}

/// A loss that is not finite names where the first non-finite value came from: the op and
/// the user's line (the step is re-run on the interpreter only when it failed).
#[test]
fn nan_loss_names_the_op_and_line_that_made_it() {
    let dir = scratch("nan-origin");
    let model = dir.join("log.nn");
    let src = format!(
        "model M(x: f32[B, 64]) -> f32[B, 10] {{
    h = relu(dense(x, 32))
    # Pixels are in [0, 1]: x - 1 <= 0, so the log is -inf or NaN.
    bad = log(x - 1.0)
    return dense(h + mean(bad, axis = 1, keepdims = true), 10)
}}

train M(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    data = csv(\"{}/examples/data/digits.csv\", label = \"label\", scale = 0.0625, test_tail = 360)
}}
",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&model, src).unwrap();
    let (code, _, err) = nnc(&["train", s(&model), "--out", s(&dir.join("run")), "-q"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at step 1 (epoch 1, batch 1)"), "{err}");
    assert!(
        err.contains("the first non-finite value: `log` on line 4 gave"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A loss that diverges without becoming infinite (a learning rate of 1e6) trains to
/// chance accuracy: the run still finishes, but says so.
#[test]
fn a_diverging_loss_is_warned_about() {
    let dir = scratch("diverges");
    let model = dir.join("big_lr.nn");
    let src = std::fs::read_to_string("examples/digits_mlp.nn")
        .unwrap()
        .replace("adam(lr = 1e-3)", "adam(lr = 1e6)")
        .replace(
            "data/digits.csv",
            &format!("{}/examples/data/digits.csv", env!("CARGO_MANIFEST_DIR")),
        );
    std::fs::write(&model, src).unwrap();
    let (code, _, err) = nnc(&[
        "train",
        s(&model),
        "--epochs",
        "2",
        "--out",
        s(&dir.join("run")),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: the training loss grew from"),
        "{err}"
    );
    assert!(err.contains("the run diverged"), "{err}");
    // An ordinary run says nothing of the kind.
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--epochs",
        "2",
        "--out",
        s(&dir.join("ok")),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A 50 MB cell (a line of a broken export): refused with a clipped quote, not repeated
/// back whole (a 1 GB line aborted the process).
#[test]
fn a_huge_cell_is_refused_with_a_clipped_quote() {
    let header = digits_rows(0, |_, l| l.to_string());
    let mut csv = header;
    csv.push_str(&"7".repeat(50_000_000));
    csv.push_str(&",0".repeat(64));
    csv.push('\n');
    let dir = scratch("huge_cell");
    let data = dir.join("data.csv");
    std::fs::write(&data, &csv).unwrap();
    drop(csv);
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--data",
        s(&data),
        "--out",
        s(&dir.join("run")),
    ]);
    assert_eq!(code, 1, "{}", &err[..err.len().min(500)]);
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    assert!(
        err.contains("line 2, column 1 (`pixel0`)") && err.contains("does not fit in f32"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
