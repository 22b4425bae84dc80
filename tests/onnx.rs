//! `nnc export` against an independent runtime: every digits example, trained for one
//! epoch, exported to ONNX, passes onnx's full checker and gives on onnxruntime what
//! `nnc predict` gives on the 360 test rows (the same class, outputs within 1e-5 relative;
//! `tests/onnx/check.py`). The first run makes a Python virtual environment with onnx and
//! onnxruntime under the target folder (from PyPI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{nnc, s, scratch};

/// The pinned oracle.
const PACKAGES: &[&str] = &["onnx==1.23.2", "onnxruntime==1.32.0", "numpy==2.4.6"];

/// The virtual environment's Python, made on first use (once, however many tests ask).
fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(make_python).clone()
}

fn make_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("onnx-venv");
    let py = dir.join("bin/python");
    let ready = dir.join("ready");
    if !ready.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", s(&dir)])
            .status()
            .is_ok_and(|st| st.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PACKAGES)
                .status()
                .is_ok_and(|st| st.success());
        assert!(
            ok,
            "could not make the onnxruntime environment in {} (python3 -m venv, then pip install {})",
            dir.display(),
            PACKAGES.join(" ")
        );
        std::fs::write(&ready, PACKAGES.join("\n")).unwrap();
    }
    py
}

/// Trains `file` for an epoch (on `data` if given), exports it, and checks the ONNX model
/// on `rows` against `nnc predict`, requiring the operators `ops` (comma-separated). A
/// spiking net may differ on a few rows (`flips`), where a membrane within rounding of the
/// threshold fires in one runtime only; the class must still agree.
#[allow(clippy::too_many_arguments)]
fn export_and_check(
    py: &Path,
    dir: &Path,
    name: &str,
    file: &str,
    data: Option<&Path>,
    rows: &Path,
    ops: &str,
    flips: usize,
) -> PathBuf {
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/check.py");
    let run = dir.join(name);
    let mut args = vec!["train", file, "--epochs", "1", "--out", s(&run)];
    if let Some(d) = data {
        args.extend(["--data", s(d)]);
    }
    let (code, _, err) = nnc(&args);
    assert_eq!(code, 0, "{name}: {err}");
    let ckpt = run.join("checkpoint.safetensors");
    let model = dir.join(format!("{name}.onnx"));
    let (code, out, err) = nnc(&["export", file, "--checkpoint", s(&ckpt), "-o", s(&model)]);
    assert_eq!(code, 0, "{name}: {out}{err}");
    let pred = dir.join(format!("{name}.csv"));
    let (code, _, err) = nnc(&[
        "predict",
        file,
        "--checkpoint",
        s(&ckpt),
        "--input",
        s(rows),
        "--output",
        s(&pred),
    ]);
    assert_eq!(code, 0, "{name}: {err}");
    let o = Command::new(py)
        .args([check, s(&model), s(rows), s(&pred), ops, &flips.to_string()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprint!("{text}");
    assert!(o.status.success(), "{name}: {text}");
    model
}

/// `nnc import` of `model` (an ONNX file), then `nnc predict` with the imported `.nn` and
/// checkpoint on `rows`, checked against onnxruntime on the same file as above.
fn import_and_check(py: &Path, dir: &Path, name: &str, model: &Path, rows: &Path, ops: &str) {
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/check.py");
    let out = dir.join(format!("{name}-imported"));
    let (code, stdout, err) = nnc(&["import", s(model), "-o", s(&out)]);
    assert_eq!(code, 0, "{name}: {stdout}{err}");
    let nn = out.join("model.nn");
    let text = std::fs::read_to_string(&nn).unwrap();
    for layer in ops.split(',').filter(|l| !l.is_empty()) {
        assert!(
            text.contains(&format!("= {layer}(")),
            "{name}: no {layer} in\n{text}"
        );
    }
    let pred = dir.join(format!("{name}-imported.csv"));
    let (code, _, err) = nnc(&[
        "predict",
        s(&nn),
        "--checkpoint",
        s(&out.join("checkpoint.safetensors")),
        "--input",
        s(rows),
        "--output",
        s(&pred),
    ]);
    assert_eq!(code, 0, "{name}: {err}\n{text}");
    let o = Command::new(py)
        .args([check, s(model), s(rows), s(&pred), "", "0"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprint!("imported {report}");
    assert!(o.status.success(), "{name} imported: {report}\n{text}");
}

/// The digits' test rows (the last 360) as their own CSV.
fn test_rows(dir: &std::path::Path) -> PathBuf {
    let all = std::fs::read_to_string("examples/data/digits.csv").unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let mut out = String::from(lines[0]);
    out.push('\n');
    for l in &lines[lines.len() - 360..] {
        out.push_str(l);
        out.push('\n');
    }
    let p = dir.join("test_rows.csv");
    std::fs::write(&p, out).unwrap();
    p
}

/// The prelude's GRU with Keras's update (z keeps the new candidate).
const KERAS_GRU: &str = "
layer kgru(x: f32[B, T, F], units: int) {
    k = 1.0 / sqrt(units)
    param wi: f32[F, 3 * units] = uniform(-k, k)
    param wh: f32[units, 3 * units] = uniform(-k, k)
    param bi: f32[3 * units] = uniform(-k, k)
    param bh: f32[3 * units] = uniform(-k, k)
    xs = x @ wi + bi
    h = full([B, units], 0.0)
    for xt in steps(xs) {
        ht = h @ wh + bh
        r = sigmoid(slice(xt, 0, units, axis = 1) + slice(ht, 0, units, axis = 1))
        z = sigmoid(slice(xt, units, 2 * units, axis = 1) + slice(ht, units, 2 * units, axis = 1))
        n = tanh(slice(xt, 2 * units, 3 * units, axis = 1) + r * slice(ht, 2 * units, 3 * units, axis = 1))
        h = z * n + (1.0 - z) * h
    }
    return h
}

model KerasGru(x: f32[B, 64]) -> f32[B, 10] {
    return dense(kgru(reshape(x, [B, 8, 8]), 32), 10)
}

train KerasGru(y: i32[B]) {
    loss      = cross_entropy(output, y)
    optimizer = adam(lr = 3e-3)
    batch     = 32
    epochs    = 30
    data      = csv(\"data/digits.csv\", label = \"label\", scale = 0.0625, test_tail = 360)
}
";

#[test]
fn every_digits_example_exports_and_runs_on_onnxruntime() {
    let py = python();
    let dir = scratch("onnx");
    let rows = test_rows(&dir);
    // With the ONNX operators their layers must become.
    for (name, ops) in [
        ("digits_mlp", "Gemm,Relu"),
        ("digits_cnn", "Conv,BatchNormalization,Relu,MaxPool,Gemm"),
        ("digits_gru", "GRU"),
        ("digits_lstm", "LSTM"),
        ("digits_transformer", "LayerNormalization,Softmax"),
        ("digits_moe", "Softmax"),
        ("digits_glu", "Gemm"),
        ("digits_fa", "Gemm"),
        ("digits_sign", "Gemm"),
        ("digits_dfa", "Gemm"),
        ("digits_binary", ""),
        ("digits_tokens", "Gather"),
        ("digits_ff", ""),
        ("digits_spiking", "Scan"),
        // A user's loop stays a Scan, and so does a GRU cell that is not ONNX's.
        ("digits_elman", "Scan"),
        ("keras_gru", "Scan"),
        // The MLP on standardized features: the statistics become the graph's first nodes.
        ("standardized", "Gemm,Relu"),
    ] {
        let file = if name == "standardized" {
            let src = std::fs::read_to_string("examples/digits_mlp.nn")
                .unwrap()
                .replace(
                    "data/digits.csv",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv"),
                )
                .replace("test_tail = 360", "test_tail = 360, standardize = true");
            assert!(src.contains("standardize = true"));
            let p = dir.join("standardized.nn");
            std::fs::write(&p, src).unwrap();
            s(&p).to_string()
        } else if name == "keras_gru" {
            // Every node of ONNX's cell but one.
            let src = KERAS_GRU.replace(
                "data/digits.csv",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv"),
            );
            let p = dir.join("keras_gru.nn");
            std::fs::write(&p, src).unwrap();
            s(&p).to_string()
        } else {
            format!("examples/{name}.nn")
        };
        let flips = if name == "digits_spiking" { 2 } else { 0 };
        let model = export_and_check(&py, &dir, name, &file, None, &rows, ops, flips);
        // The round trip: what nnc exports, nnc imports, and it predicts what onnxruntime
        // does on the export.
        match name {
            "digits_mlp" => import_and_check(&py, &dir, name, &model, &rows, "dense,relu"),
            "digits_cnn" => {
                let layers = "reshape,conv2d,batch_norm2d,max_pool2d,flatten,dense";
                import_and_check(&py, &dir, name, &model, &rows, layers)
            }
            _ => {}
        }
    }
}

/// The keyboard-decoding task (an embedding, a GRU over 12 letters, 5,000 words), trained
/// an epoch on its first 400 rows and checked on them: Gather, GRU, Gemm.
#[test]
fn the_keyboard_task_exports_as_onnx_operators() {
    let py = python();
    let dir = scratch("onnx-keyboard");
    let all = std::fs::read_to_string("examples/data/typos.csv").unwrap();
    let rows = dir.join("rows.csv");
    std::fs::write(
        &rows,
        all.lines().take(401).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let src = std::fs::read_to_string("examples/tasks/keyboard.nn")
        .unwrap()
        .replace("../data/typos.csv", s(&rows))
        .replace("test_tail = 5000", "test_tail = 100");
    assert!(src.contains("test_tail = 100"));
    let file = dir.join("keyboard.nn");
    std::fs::write(&file, src).unwrap();
    export_and_check(
        &py,
        &dir,
        "keyboard",
        s(&file),
        None,
        &rows,
        "Gather,GRU,Gemm",
        0,
    );
}

/// The character-level language models (an LSTM and a causal transformer over windows of
/// 256 bytes, logits at every position), trained an epoch on the text's first 24 KB and
/// checked on its first 8 windows.
#[test]
fn the_language_models_export_as_onnx_operators() {
    let py = python();
    let dir = scratch("onnx-charlm");
    let text = std::fs::read("examples/data/jargon.txt").unwrap();
    let head = dir.join("head.txt");
    std::fs::write(&head, &text[..24 * 1024]).unwrap();
    let header: Vec<String> = (0..256).map(|i| format!("x{i}")).collect();
    let mut csv = vec![header.join(",")];
    for w in text.chunks(256).take(8) {
        csv.push(
            w.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let rows = dir.join("rows.csv");
    std::fs::write(&rows, csv.join("\n") + "\n").unwrap();
    for (name, ops) in [
        ("charlm", "Gather,LSTM,MatMul"),
        ("charlm_gpt", "Gather,LayerNormalization,Softmax"),
    ] {
        let src = std::fs::read_to_string(format!("examples/tasks/{name}.nn"))
            .unwrap()
            .replace("../data/jargon.txt", s(&head));
        assert!(src.contains("head.txt"));
        let file = dir.join(format!("{name}.nn"));
        std::fs::write(&file, src).unwrap();
        export_and_check(&py, &dir, name, s(&file), None, &rows, ops, 0);
    }
}

/// The two examples without shipped data (MNIST-sized LeNet-5 and the 784-256-256-10
/// MLP), trained an epoch on 40 random rows and checked on them.
#[test]
fn the_mnist_sized_examples_export_too() {
    let py = python();
    let dir = scratch("onnx-mnist");
    let mut csv: Vec<String> = vec![
        (0..784)
            .map(|i| format!("p{i}"))
            .chain(["label".to_string()])
            .collect::<Vec<_>>()
            .join(","),
    ];
    let mut rng = nnc::runtime::Rng::new(3);
    for _ in 0..40 {
        let mut row: Vec<String> = (0..784).map(|_| format!("{:.3}", rng.uniform())).collect();
        row.push(rng.below(10).to_string());
        csv.push(row.join(","));
    }
    let rows = dir.join("rows.csv");
    std::fs::write(&rows, csv.join("\n") + "\n").unwrap();
    for (name, ops) in [
        ("lenet5", "Conv,MaxPool,Relu,Gemm"),
        ("mlp784", "Gemm,Relu"),
    ] {
        let file = format!("examples/{name}.nn");
        let model = export_and_check(&py, &dir, name, &file, Some(&rows), &rows, ops, 0);
        let layers = if name == "lenet5" {
            "conv2d,dense"
        } else {
            "dense,relu"
        };
        import_and_check(&py, &dir, name, &model, &rows, layers);
    }
}

/// ONNX files as PyTorch's exporter writes them (`tests/onnx/torch_style.py`: Conv with
/// bias, MaxPool, Flatten, Gemm with transB = 1; MatMul then Add) import, predict what
/// onnxruntime predicts, and fine-tune from the imported checkpoint.
#[test]
fn pytorch_style_onnx_imports_and_fine_tunes() {
    let py = python();
    let dir = scratch("onnx-import");
    let rows = test_rows(&dir);
    let (cnn, mlp) = (dir.join("cnn.onnx"), dir.join("mlp.onnx"));
    let make = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx/torch_style.py");
    let o = Command::new(&py)
        .args([make, s(&cnn), s(&mlp)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    import_and_check(
        &py,
        &dir,
        "cnn",
        &cnn,
        &rows,
        "conv2d,relu,max_pool2d,flatten,dense",
    );
    import_and_check(&py, &dir, "mlp", &mlp, &rows, "dense,tanh");
    // Fine-tuning starts from the imported weights: after one epoch (45 Adam steps at the
    // generated lr = 1e-4, each moving a weight by at most about lr) every weight is within
    // 0.01 of the imported one, where a fresh run's are not; the imported checkpoint is not
    // touched.
    let imported = dir.join("mlp-imported");
    let ck = imported.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv");
    let nn = imported.join("model.nn");
    let start = nnc::runtime::Checkpoint::load(&ck).unwrap();
    let moved = |init: bool, out: &str| -> f64 {
        let out = dir.join(out);
        let mut args = vec![
            "train",
            s(&nn),
            "--data",
            data,
            "--label",
            "label",
            "--test-tail",
        ];
        args.extend(["360", "--epochs", "1", "--quiet", "--out", s(&out)]);
        if init {
            args.extend(["--init", s(&ck)]);
        }
        let (code, stdout, err) = nnc(&args);
        assert_eq!(code, 0, "{stdout}{err}");
        let end = nnc::runtime::Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
        let mut most: f64 = 0.0;
        for (name, t) in start
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with("optimizer."))
        {
            let u = end.get(name).unwrap();
            for (a, b) in t.data.iter().zip(&u.data) {
                most = most.max((a - b).abs());
            }
        }
        most
    };
    let (tuned, fresh) = (moved(true, "tuned"), moved(false, "fresh"));
    assert!(
        tuned < 0.01,
        "fine-tuned weights moved {tuned} from the imported ones"
    );
    assert!(
        fresh > 0.05,
        "a fresh run's weights are only {fresh} from the imported ones"
    );
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    // A second import into the same folder replaces nothing without --force.
    let (code, _, err) = nnc(&["import", s(&mlp), "-o", s(&imported)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pass --force"), "{err}");
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    let (code, _, err) = nnc(&["import", s(&mlp), "-o", s(&imported), "--force"]);
    assert_eq!(code, 0, "{err}");
}

/// What `nnc import` cannot map is refused with the operator and the node, and nothing is
/// written; an existing model there is not replaced without --force.
#[test]
fn import_refuses_cleanly() {
    let dir = scratch("onnx-import-refuse");
    let model = dir.join("t.onnx");
    // Attention is outside the subset: take the transformer's export.
    let run = dir.join("run");
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_transformer.nn",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        s(&run),
    ]);
    assert_eq!(code, 0, "{err}");
    let ck = run.join("checkpoint.safetensors");
    let (code, _, err) = nnc(&[
        "export",
        "examples/digits_transformer.nn",
        "--checkpoint",
        s(&ck),
        "-o",
        s(&model),
    ]);
    assert_eq!(code, 0, "{err}");
    let out = dir.join("imported");
    let (code, _, err) = nnc(&["import", s(&model), "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    // The refusal names the operator and its node (here a product of two activations).
    assert!(err.contains("`MatMul` (node `"), "{err}");
    assert!(!out.exists());
    let (code, _, err) = nnc(&["import", "no/such.onnx", "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read"), "{err}");
    // Not ONNX.
    let (code, _, err) = nnc(&["import", "examples/digits_mlp.nn", "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists());
}

/// What cannot be exported is refused, naming the op; nothing is written at `-o`, and an
/// existing file there is left as it was.
#[test]
fn export_refuses_cleanly() {
    let dir = scratch("onnx-refuse");
    let out = dir.join("model.onnx");
    std::fs::write(&out, b"keep").unwrap();
    let (code, _, err) = nnc(&[
        "export",
        "examples/digits_mlp.nn",
        "--checkpoint",
        "no/such.safetensors",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let (code, _, _) = nnc(&["export", "examples/digits_mlp.nn", "-o", s(&out)]);
    assert_eq!(code, 2);
}

/// A model with an op ONNX has no equal of is refused with the op and its line, before
/// the checkpoint is read.
#[test]
fn export_names_the_op_it_cannot_map() {
    let dir = scratch("onnx-unmapped");
    let file = dir.join("div.nn");
    std::fs::write(
        &file,
        "model M(x: f32[B, 4]) -> f32[B, 4] {\n    n = cast(x, i32) / 2\n    return x + cast(n, f32)\n}\n",
    )
    .unwrap();
    let out = dir.join("m.onnx");
    let (code, _, err) = nnc(&[
        "export",
        s(&file),
        "--checkpoint",
        "x.safetensors",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`div` on line 2 divides integers"), "{err}");
    assert!(!out.exists());
}
