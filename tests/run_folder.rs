//! The run folder is consistent at every instant: a training process killed at any moment
//! leaves a checkpoint and a `metrics.csv` that a resume continues without a hole, no
//! temporary files after the resume, and no empty folder when no epoch finished. Damaged
//! checkpoints with a valid checksum (non-finite weights, impossible counters) are refused.

mod common;

use common::{nnc, s, scratch};

use nnc::runtime::Checkpoint;
use std::process::{Command, Stdio};
use std::time::Duration;

fn epochs_in_metrics(dir: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn a_killed_run_resumes_without_a_hole() {
    let dir = scratch("killed");
    let mut resumed = 0;
    for (trial, wait_ms) in [40u64, 90, 150, 230, 320].into_iter().enumerate() {
        let out = dir.join(format!("run{trial}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["train", "examples/digits_mlp.nn", "--epochs", "400", "-q"])
            .args(["--out", s(&out)])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let ck_path = out.join("checkpoint.safetensors");
        let Ok(ck) = Checkpoint::load(&ck_path) else {
            // Killed before the first epoch ended: nothing to resume.
            continue;
        };
        let at: u64 = ck.meta["epoch"].parse().unwrap();
        // Every epoch up to the checkpoint's has its row, at most one more is ahead.
        let rows = epochs_in_metrics(&out);
        assert!(
            rows.len() as u64 == at || rows.len() as u64 == at + 1,
            "trial {trial}: checkpoint at epoch {at}, metrics rows {rows:?}"
        );
        assert!(
            rows.iter().enumerate().all(|(i, &e)| e == i as u64 + 1),
            "{rows:?}"
        );
        let target = (at + 2).to_string();
        let (code, _, err) = nnc(&[
            "train",
            "examples/digits_mlp.nn",
            "--epochs",
            &target,
            "--resume",
            s(&ck_path),
            "--out",
            s(&out),
            "-q",
        ]);
        assert_eq!(code, 0, "{err}");
        let rows = epochs_in_metrics(&out);
        let want: Vec<u64> = (1..=at + 2).collect();
        assert_eq!(rows, want, "trial {trial}");
        let stale: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(stale.is_empty(), "{stale:?}");
        resumed += 1;
    }
    // Most kills land after the first epoch (a few milliseconds each): the test checked
    // real interrupted runs.
    assert!(
        resumed >= 3,
        "only {resumed} of 5 runs had finished an epoch"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_run_that_fails_before_its_first_epoch_leaves_no_folder() {
    let dir = scratch("no-epoch");
    let model = dir.join("diverge.nn");
    let src = std::fs::read_to_string("examples/digits_mlp.nn")
        .unwrap()
        .replace("optimizer = adam(lr = 1e-3)", "optimizer = sgd(lr = 1e30)")
        .replace(
            "data/digits.csv",
            &format!("{}/examples/data/digits.csv", env!("CARGO_MANIFEST_DIR")),
        );
    std::fs::write(&model, src).unwrap();
    let out = dir.join("run");
    let (code, _, err) = nnc(&["train", s(&model), "--out", s(&out), "-q"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no checkpoint had been written yet"), "{err}");
    assert!(!out.exists(), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checkpoints_with_non_finite_weights_or_impossible_counters_are_refused() {
    let dir = scratch("bad-values");
    let out = dir.join("run");
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--epochs",
        "1",
        "--out",
        s(&out),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let good = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    // A NaN weight, under a valid checksum.
    let mut nan = good.clone();
    nan.tensors[0].1.data[3] = f64::NAN;
    let nan_path = dir.join("nan.safetensors");
    nan.save(&nan_path).unwrap();
    let name = nan.tensors[0].0.clone();
    let (code, _, err) = nnc(&[
        "eval",
        "examples/digits_mlp.nn",
        "--checkpoint",
        s(&nan_path),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("the checkpoint's `{name}` holds NaN at element 3")),
        "{err}"
    );
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--epochs",
        "3",
        "--resume",
        s(&nan_path),
        "--out",
        s(&dir.join("resumed-nan")),
        "-q",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds NaN"), "{err}");
    // A step counter of 2^64 - 1.
    let mut wrapped = good;
    wrapped.meta.insert("step".into(), u64::MAX.to_string());
    let path = dir.join("wrapped.safetensors");
    wrapped.save(&path).unwrap();
    let (code, _, err) = nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--epochs",
        "3",
        "--resume",
        s(&path),
        "--out",
        s(&dir.join("resumed")),
        "-q",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("counters are not a run's"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
