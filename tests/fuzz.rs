//! A bounded fuzz run (seconds, deterministic): mutated examples through `check`, `ir
//! --stage grad` and a one-epoch `train`, and mutated data files through `train`. Every
//! run must exit with status 0 or 1 — never a panic (101), a signal or a hang — and an
//! existing run folder must not change.

mod common;

use common::{s, scratch};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// SplitMix64: the same mutations on every machine.
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "100000000",
    "9223372036854775807",
    "-1",
    "0",
    "1e39",
    "nan",
    "10^15",
    "[",
    "]",
    "(",
    ")",
    ",",
    "=",
    "x",
    "B",
    "f32[B, 0]",
    "i32",
    "for t in 4096 {",
    "}",
    "return",
    "param w: f32[4000000, 4000000] = zeros\n",
    "training",
    "random(shape(x))",
    "\n",
];

fn mutate(src: &[u8], r: &mut Rand) -> Vec<u8> {
    let mut out = src.to_vec();
    for _ in 0..1 + r.below(3) {
        let at = r.below(out.len() + 1);
        match r.below(5) {
            0 => {
                let end = (at + r.below(40)).min(out.len());
                out.drain(at..end);
            }
            1 => {
                let t = TOKENS[r.below(TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            2 if at < out.len() => out[at] ^= 1 << r.below(8),
            3 => {
                // Replace a number with a hostile one.
                if let Some(p) = out[at..].iter().position(|c| c.is_ascii_digit()) {
                    let start = at + p;
                    let end = start
                        + out[start..]
                            .iter()
                            .take_while(|c| c.is_ascii_digit() || **c == b'.')
                            .count();
                    let t = TOKENS[r.below(7)].as_bytes();
                    out.splice(start..end, t.iter().copied());
                }
            }
            _ => {
                let end = (at + r.below(60)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

/// Runs nnc with a deadline; the exit status (None: killed by a signal or the deadline).
fn run(args: &[&str], deadline: Duration) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mutated_programs_and_data_exit_0_or_1() {
    let dir = scratch("fuzz");
    // A finished run that no fuzz case may touch.
    let kept = dir.join("kept");
    let (code, _, err) = common::nnc(&[
        "train",
        "examples/digits_mlp.nn",
        "--epochs",
        "1",
        "--out",
        s(&kept),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let before = snapshot(&kept);
    let mut r = Rand(20_261_201);
    let examples = common::examples();
    let data = std::fs::read("examples/data/digits.csv").unwrap();
    let mut failures = Vec::new();
    let deadline = Duration::from_secs(20);
    for case in 0..400 {
        let path = &examples[r.below(examples.len())];
        let src = mutate(&std::fs::read(path).unwrap(), &mut r);
        let file = dir.join(format!("case{case}.nn"));
        std::fs::write(&file, &src).unwrap();
        let mut runs: Vec<Vec<String>> = vec![
            vec!["check".into(), s(&file).into()],
            vec![
                "ir".into(),
                s(&file).into(),
                "--stage".into(),
                "grad".into(),
            ],
        ];
        if case % 8 == 0 {
            runs.push(vec![
                "train".into(),
                s(&file).into(),
                "--epochs".into(),
                "1".into(),
                "--out".into(),
                s(&kept).into(),
                "-q".into(),
            ]);
        }
        for args in runs {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            match run(&a, deadline) {
                Some(0 | 1) => {}
                other => failures.push(format!("{other:?}: nnc {}", a.join(" "))),
            }
        }
    }
    // Data: a mutated CSV for the MLP (cut to 200 rows: a mutation is rarely in 1797).
    let head: Vec<u8> = data
        .split(|&c| c == b'\n')
        .take(200)
        .collect::<Vec<_>>()
        .join(&b'\n');
    for case in 0..60 {
        let csv = mutate(&head, &mut r);
        let file = dir.join(format!("data{case}.csv"));
        std::fs::write(&file, &csv).unwrap();
        let out = dir.join(format!("run{case}"));
        let args = [
            "train",
            "examples/digits_mlp.nn",
            "--data",
            s(&file),
            "--test-tail",
            "20",
            "--epochs",
            "1",
            "--out",
            s(&out),
            "-q",
        ];
        match run(&args, deadline) {
            Some(0 | 1) => {}
            other => failures.push(format!("{other:?}: nnc {}", args.join(" "))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        snapshot(&kept),
        before,
        "a fuzz case changed an existing run folder"
    );
    let _ = std::fs::remove_dir_all(dir);
}
