//! `--threads 2` splits a training step's batch over two threads where the loss allows it
//! (a mean over rows computed row by row) and the step is large enough to pay: the
//! parameters after an epoch match one thread's to float rounding, and two runs with two
//! threads give the same bits. Where the loss does not allow it (batch norm's statistics
//! over the whole batch), nothing is split and the bits are one thread's. Each run is its
//! own process: the thread count is process-wide.

mod common;

use common::{nnc, s, scratch};
use nnc::runtime::Checkpoint;

fn train(dir: &std::path::Path, file: &std::path::Path, threads: &str, name: &str) -> Checkpoint {
    let out = dir.join(name);
    let (code, stdout, err) = nnc(&[
        "train",
        s(file),
        "--epochs",
        "1",
        "--quiet",
        "--threads",
        threads,
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap()
}

/// The largest difference between two checkpoints' parameters, relative to the largest
/// magnitude of each tensor.
fn max_rel(a: &Checkpoint, b: &Checkpoint) -> f64 {
    let mut most: f64 = 0.0;
    for (name, t) in a
        .tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("optimizer."))
    {
        let u = b.get(name).unwrap();
        let scale = t.data.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        for (x, y) in t.data.iter().zip(&u.data) {
            most = most.max((x - y).abs() / scale);
        }
    }
    most
}

#[test]
fn two_threads_split_the_batch_where_the_loss_allows_it() {
    let dir = scratch("threads");
    // Wide enough that a step's products (about 30 MFLOP at batch 64) pass the threshold.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv");
    let wide = dir.join("wide.nn");
    std::fs::write(
        &wide,
        format!(
            "model Wide(x: f32[B, 64]) -> f32[B, 10] {{\n    h = relu(dense(x, 1024))\n    return dense(h, 10)\n}}\n\ntrain Wide(y: i32[B]) {{\n    loss = cross_entropy(output, y)\n    optimizer = adam(lr = 1e-3)\n    batch = 64\n    data = csv(\"{data}\", label = \"label\", scale = 0.0625, test_tail = 360)\n}}\n"
        ),
    )
    .unwrap();
    let one = train(&dir, &wide, "1", "wide-1");
    let two = train(&dir, &wide, "2", "wide-2");
    let again = train(&dir, &wide, "2", "wide-2-again");
    assert_eq!(
        two.tensors, again.tensors,
        "two threads are not reproducible"
    );
    let d = max_rel(&one, &two);
    assert!(
        d > 0.0,
        "two threads gave one thread's bits: the batch was not split"
    );
    assert!(d < 1e-4, "two threads differ from one by {d}");
    // Batch norm averages over the whole batch: not split, the same bits as one thread.
    let cnn = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits_cnn.nn");
    let one = train(&dir, &cnn, "1", "cnn-1");
    let two = train(&dir, &cnn, "2", "cnn-2");
    assert_eq!(one.tensors, two.tensors);
    let _ = std::fs::remove_dir_all(dir);
}

/// An nnc without MPI that a launcher starts as one of several processes refuses: each
/// would train its own copy. (The launcher is imitated by its variables.)
#[cfg(not(feature = "mpi"))]
#[test]
fn without_mpi_a_job_of_several_processes_is_refused() {
    let dir = scratch("no-mpi");
    let out = dir.join("run");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "examples/digits_mlp.nn", "--out", s(&out)])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("built without MPI"), "{err}");
    assert!(err.contains("--features mpi"), "{err}");
    assert!(!out.exists());
}
