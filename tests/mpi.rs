//! Data-parallel training under `mpirun` (an nnc built with `--features mpi`): N ranks
//! train what one process trains with the same global batch (bitwise with one rank, and
//! with two ranks against two threads, which split the batch the same way; within float
//! rounding otherwise); `--resume` continues a job bitwise; a rank without the data, with
//! other data, or that dies mid-run ends the job with rank 0's error and the last complete
//! checkpoint intact.
//!
//! The jobs run on this machine (`--oversubscribe`: 3 ranks on 2 cores).

#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{nnc, s, scratch};
use nnc::runtime::Checkpoint;

/// `mpirun` with app contexts (`:`-separated, each `-n K [--wdir D] PROGRAM ARGS...`); the
/// program `nnc` is this build's. Returns (status, stdout, stderr).
fn mpirun(contexts: &[Vec<String>]) -> (i32, String, String) {
    let mut cmd = Command::new("mpirun");
    cmd.arg("--oversubscribe")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // As root (CI's containers), OpenMPI refuses to start without these.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Containers often forbid the cross-memory attach the shared-memory transport
        // tries first.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    for (i, c) in contexts.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(c.iter().map(|a| {
            if a == "nnc" {
                env!("CARGO_BIN_EXE_nnc")
            } else {
                a
            }
        }));
    }
    let out = cmd
        .output()
        .expect("mpirun runs (apt-get install openmpi-bin)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `mpirun -n N nnc train ARGS`.
fn train_ranks(n: usize, args: &[&str]) -> (i32, String, String) {
    let mut c = strings(&["-n", &n.to_string(), "nnc", "train"]);
    c.extend(strings(args));
    mpirun(&[c])
}

fn checkpoint(out: &Path) -> Checkpoint {
    Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap()
}

/// Every tensor (parameters and optimizer states) has the same bits.
fn assert_bitwise(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        let u = b.get(name).unwrap();
        assert!(
            t.data
                .iter()
                .zip(&u.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs"
        );
    }
}

/// The largest `|a - b| / |a|` (Euclidean norms) over the parameters.
fn norm_rel(a: &Checkpoint, b: &Checkpoint) -> f64 {
    let mut most: f64 = 0.0;
    for (name, t) in a
        .tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("optimizer."))
    {
        let u = b.get(name).unwrap();
        let diff: f64 = t
            .data
            .iter()
            .zip(&u.data)
            .map(|(x, y)| (x - y).powi(2))
            .sum();
        let norm: f64 = t.data.iter().map(|x| x * x).sum();
        most = most.max((diff / norm.max(1e-30)).sqrt());
    }
    most
}

fn single(args: &[&str]) {
    let mut a = vec!["train"];
    a.extend(args);
    let (code, out, err) = nnc(&a);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn one_rank_is_the_single_process_and_more_ranks_match_it() {
    let dir = scratch("mpi-ranks");
    let run = |name: &str| dir.join(name);
    let args = |out: &PathBuf| {
        vec![
            "examples/digits_mlp.nn".to_string(),
            "--epochs".into(),
            "3".into(),
            "--threads".into(),
            "1".into(),
            "--quiet".into(),
            "--out".into(),
            s(out).to_string(),
        ]
    };
    let alone = run("alone");
    single(&args(&alone).iter().map(String::as_str).collect::<Vec<_>>());
    let reference = checkpoint(&alone);
    for n in 1..=3 {
        let out = run(&format!("ranks-{n}"));
        let a = args(&out);
        let (code, stdout, err) = train_ranks(n, &a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{stdout}{err}");
        // Rank 0 alone reports.
        assert_eq!(stdout.matches("trained DigitsMlp").count(), 1, "{stdout}");
        let ck = checkpoint(&out);
        assert_eq!(
            ck.meta.get("ranks").map(String::as_str),
            Some(&*n.to_string())
        );
        if n == 1 {
            assert_bitwise(&reference, &ck);
        } else {
            // The shards' gradients are summed in another order than one batch's.
            let d = norm_rel(&reference, &ck);
            assert!(d < 1e-6, "{n} ranks: parameters differ by {d:e}");
        }
    }
}

#[test]
fn two_ranks_are_two_threads_bitwise() {
    let dir = scratch("mpi-threads");
    // Wide enough that a step (about 115 MFLOP at batch 64) splits over two threads, and a
    // training set of 24 whole batches, so every step splits the same way in both.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv");
    let wide = dir.join("wide.nn");
    std::fs::write(
        &wide,
        format!(
            "model Wide(x: f32[B, 64]) -> f32[B, 10] {{\n    h1 = relu(dense(x, 512))\n    h2 = relu(dense(h1, 512))\n    return dense(h2, 10)\n}}\n\ntrain Wide(y: i32[B]) {{\n    loss = cross_entropy(output, y)\n    optimizer = adam(lr = 1e-3)\n    batch = 64\n    epochs = 2\n    data = csv(\"{data}\", label = \"label\", scale = 0.0625, test_tail = 261)\n}}\n"
        ),
    )
    .unwrap();
    let threads = dir.join("threads");
    single(&[s(&wide), "--threads", "2", "--quiet", "--out", s(&threads)]);
    let ranks = dir.join("ranks");
    let (code, stdout, err) = train_ranks(
        2,
        &[s(&wide), "--threads", "1", "--quiet", "--out", s(&ranks)],
    );
    assert_eq!(code, 0, "{stdout}{err}");
    // (g0 + g1) / 2 as the threads sum it, and g0 / 2 + g1 / 2 as the ranks do, are the
    // same float: halving is exact.
    assert_bitwise(&checkpoint(&threads), &checkpoint(&ranks));
}

#[test]
fn a_job_resumes_bitwise() {
    let dir = scratch("mpi-resume");
    let straight = dir.join("straight");
    let base = ["examples/digits_mlp.nn", "--threads", "1", "--quiet"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let go = |args: Vec<String>| {
        let (code, out, err) = train_ranks(2, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{out}{err}");
    };
    go(with(&["--epochs", "3", "--out", s(&straight)]));
    let resumed = dir.join("resumed");
    go(with(&["--epochs", "2", "--out", s(&resumed)]));
    let ck = resumed.join("checkpoint.safetensors");
    go(with(&["--epochs", "3", "--resume", s(&ck)]));
    assert_bitwise(&checkpoint(&straight), &checkpoint(&resumed));
    let rows = std::fs::read_to_string(resumed.join("metrics.csv")).unwrap();
    assert_eq!(rows.lines().count(), 4, "{rows}");
}

/// Two folders, each with `m.nn` (the digits MLP) and, if given, its `data/digits.csv`.
fn two_sites(dir: &Path, second: Option<&str>) -> (PathBuf, PathBuf) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let csv = std::fs::read_to_string(format!("{example}/data/digits.csv")).unwrap();
    let sites = (dir.join("a"), dir.join("b"));
    for (site, data) in [(&sites.0, Some(csv.as_str())), (&sites.1, second)] {
        std::fs::create_dir_all(site.join("data")).unwrap();
        std::fs::copy(format!("{example}/digits_mlp.nn"), site.join("m.nn")).unwrap();
        if let Some(d) = data {
            std::fs::write(site.join("data/digits.csv"), d).unwrap();
        }
    }
    sites
}

/// Rank 0 in folder `a`, rank 1 in `b`: the same command, relative paths.
fn two_site_job(sites: &(PathBuf, PathBuf), out: &Path) -> (i32, String, String) {
    let ctx = |site: &Path| {
        strings(&[
            "-n",
            "1",
            "--wdir",
            s(site),
            "nnc",
            "train",
            "m.nn",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            s(out),
        ])
    };
    mpirun(&[ctx(&sites.0), ctx(&sites.1)])
}

#[test]
fn a_rank_without_the_data_or_with_other_data_fails_the_job() {
    let dir = scratch("mpi-data");
    let out = dir.join("run");
    let (code, stdout, err) = two_site_job(&two_sites(&dir.join("missing"), None), &out);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        err.contains("error: rank 1 of 2: cannot read data file `data/digits.csv`"),
        "{err}"
    );
    // Reported once, by rank 0, and nothing written.
    assert_eq!(err.matches("error: rank 1").count(), 1, "{err}");
    assert!(!out.exists());

    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data/digits.csv"
    ))
    .unwrap();
    let mut other: Vec<&str> = csv.lines().collect();
    other.swap(1, 2);
    let other = other.join("\n") + "\n";
    let (code, stdout, err) = two_site_job(&two_sites(&dir.join("other"), Some(&other)), &out);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        err.contains("error: rank 1 of 2: its data differ from rank 0's"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_rank_that_dies_leaves_the_last_complete_checkpoint() {
    let dir = scratch("mpi-die");
    let out = dir.join("run");
    let ck = out.join("checkpoint.safetensors");
    // Rank 1 trains, and is killed once rank 0 has written its first checkpoint.
    let die = dir.join("die.sh");
    std::fs::write(
        &die,
        format!(
            "#!/bin/sh\n\"$@\" & pid=$!\nwhile [ ! -f '{}' ]; do sleep 0.05; done\nsleep 0.2\nkill -9 $pid\nwait $pid\n",
            ck.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&die, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let job = strings(&[
        "examples/digits_mlp.nn",
        "--epochs",
        "100000",
        "--threads",
        "1",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let mut rank0 = strings(&["-n", "1", "nnc", "train"]);
    rank0.extend(job.clone());
    let mut rank1 = strings(&["-n", "1", s(&die), "nnc", "train"]);
    rank1.extend(job);
    let (code, stdout, err) = mpirun(&[rank0, rank1]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        err.contains("error: the job stopped: another rank ended"),
        "{err}"
    );
    assert!(err.contains("the last complete checkpoint is"), "{err}");
    // The checkpoint is whole, and the job continues from it.
    let epoch: u64 = checkpoint(&out).meta["epoch"].parse().unwrap();
    assert!(epoch >= 1);
    let next = (epoch + 1).to_string();
    let (code, stdout, err) = train_ranks(
        2,
        &[
            "examples/digits_mlp.nn",
            "--epochs",
            &next,
            "--threads",
            "1",
            "--quiet",
            "--resume",
            s(&ck),
        ],
    );
    assert_eq!(code, 0, "{stdout}{err}");
    assert_eq!(checkpoint(&out).meta["epoch"], next);
}

#[test]
fn an_error_in_one_rank_s_shard_is_the_job_s() {
    let dir = scratch("mpi-shard-error");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(format!("{example}/digits_tokens.nn"), dir.join("m.nn")).unwrap();
    // One pixel of 40 in row 500, an id outside the embedding's 17 rows: the rank whose
    // shard holds it fails at that step, and every rank stops there.
    let csv = std::fs::read_to_string(format!("{example}/data/digits.csv")).unwrap();
    let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
    let mut cells: Vec<&str> = lines[501].split(',').collect();
    cells[3] = "40";
    lines[501] = cells.join(",");
    std::fs::write(dir.join("data/digits.csv"), lines.join("\n") + "\n").unwrap();
    let out = dir.join("run");
    let (code, stdout, err) = train_ranks(
        2,
        &[
            s(&dir.join("m.nn")),
            "--epochs",
            "1",
            "--quiet",
            "--out",
            s(&out),
        ],
    );
    assert_ne!(code, 0, "{stdout}");
    let said = "`gather` on line 6: id 40 is outside the table's rows 0..17";
    assert_eq!(err.matches(said).count(), 1, "{err}");
    assert!(!out.join("checkpoint.safetensors").exists());
}
