//! The structs `model!` and `include_model!` generate: the same training as the CLI, bit
//! for bit; checkpoints shared both ways; typed inputs checked with clear errors.

mod common;

use common::scratch;

use std::process::Command;

use nnc::runtime::Checkpoint;
use nnc::{Tensor, ir::DType};

nnc::include_model!("examples/digits_mlp.nn");

nnc::model! {
    // Two inputs and no train block: forward only.
    model Blend(a: f32[B, 3], b: f32[B, 3]) -> f32[B, 2] {
        return dense(a * b + a, 2)
    }
}

nnc::model! {
    // The research-layer syntax in Rust tokens: a loop, a static branch with comparisons,
    // a buffer, training mode and noise.
    layer stack(x: f32[B, D], depth: int, gate = true) {
        h = x
        for i in depth {
            h = h + relu(dense(h, D))
        }
        if gate {
            if depth >= 2 {
                h = h * sigmoid(h)
            }
        }
        return h
    }

    layer running_max(x: f32[B, D]) {
        buffer peak: f32[D] = zeros
        if training {
            peak = max(peak, reduce_max(x, axis = 0))
        }
        return x
    }

    model Seq(x: f32[B, 8, 4]) -> f32[B, 3] {
        h = gru(x, 6)
        h = dropout(running_max(stack(h, 2)), 0.1)
        return dense(h, 3)
    }

    train Seq(y: i32[B]) {
        loss = cross_entropy(output, y)
        optimizer = adam
    }
}

#[test]
fn the_macro_takes_loops_branches_buffers_and_noise() {
    let mut m = Seq::new(1);
    let x = Tensor::new(
        DType::F32,
        vec![5, 8, 4],
        (0..160).map(|i| (i % 7) as f64 / 7.0).collect(),
    );
    let y = Tensor::new(DType::I32, vec![5], vec![0.0, 1.0, 2.0, 1.0, 0.0]);
    let before = m.forward(&x).unwrap();
    // Inference mode: dropout is off, so the forward pass is deterministic.
    assert!(before == m.forward(&x).unwrap());
    m.train_step(&x, &y).unwrap();
    let peak = m
        .params()
        .into_iter()
        .find(|(n, _)| n.ends_with("peak"))
        .unwrap()
        .1
        .clone();
    assert!(
        peak.data.iter().any(|&v| v > 0.0),
        "the buffer was updated: {peak:?}"
    );
    assert!(before != m.forward(&x).unwrap());
}

#[test]
fn the_macro_and_the_cli_train_to_the_same_parameters() {
    let dir = scratch("same");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args([
            "train",
            "examples/digits_mlp.nn",
            "--epochs",
            "2",
            "--seed",
            "5",
            "-q",
            "--out",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck_path = dir.join("checkpoint.safetensors");
    let ck = Checkpoint::load(&ck_path).unwrap();

    let mut m = DigitsMlp::new(5);
    let (train, test) = m.data().unwrap();
    let metrics = m.fit(&train, 2).unwrap();
    assert_eq!(metrics.len(), 2);
    assert_eq!(m.params().len(), 4);
    for (name, t) in m.params() {
        assert!(
            ck.get(name) == Some(t),
            "`{name}` differs between the macro and the CLI"
        );
    }
    assert_eq!(m.h1_w().shape, vec![64, 128]);

    // A checkpoint from `nnc train` loads into the struct and predicts the same.
    let test = test.unwrap();
    let mut loaded = DigitsMlp::new(0);
    loaded.load(&ck_path).unwrap();
    assert!(loaded.forward(&test.x).unwrap() == m.forward(&test.x).unwrap());
    assert_eq!(loaded.evaluate(&test).unwrap(), m.evaluate(&test).unwrap());

    // And one saved by the struct is read by `nnc eval`.
    let saved = dir.join("from_macro.safetensors");
    m.save(&saved).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["eval", "examples/digits_mlp.nn", "--checkpoint"])
        .arg(&saved)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acc = m.evaluate(&test).unwrap().accuracy.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("acc {:.2}%", acc * 100.0)),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_step_returns_the_loss_and_learns() {
    let mut m = DigitsMlp::new(1);
    let (train, _) = m.data().unwrap();
    let batch = train.rows(&(0..64).collect::<Vec<_>>());
    let y = batch.y.clone().unwrap();
    let first = m.train_step(&batch.x, &y).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = m.train_step(&batch.x, &y).unwrap();
    }
    assert!(first > 2.0 && last < 0.75 * first, "loss {first} -> {last}");
}

#[test]
fn inputs_are_checked_against_the_declared_shapes() {
    let mut m = DigitsMlp::new(0);
    let bad = Tensor::new(DType::F32, vec![3, 32], vec![0.0; 96]);
    let e = m.forward(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DigitsMlp::forward: input `x` must be f32[B, 64], got f32[3, 32]"
    );
    let x = Tensor::new(DType::F32, vec![3, 64], vec![0.0; 192]);
    let y = Tensor::new(DType::I32, vec![4], vec![0.0; 4]);
    let e = m.train_step(&x, &y).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DigitsMlp::train_step: input `y` has B = 4, but an earlier input has B = 3"
    );

    let mut b = Blend::new(0);
    let a = Tensor::new(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = b.forward(&a, &a).unwrap();
    assert_eq!(out.shape, vec![2, 2]);
    let wrong = Tensor::new(DType::F64, vec![2, 3], vec![0.0; 6]);
    assert_eq!(
        b.forward(&a, &wrong).unwrap_err().to_string(),
        "Blend::forward: input `b` must be f32[B, 3], got f64[2, 3]"
    );
    assert!(Blend::SOURCE.contains("model Blend"));
}
