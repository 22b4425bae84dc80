//! Data preparation in the train block: `standardize` and `min_max` statistics are fitted
//! on the training rows only, kept in the checkpoint, survive `--resume`, and are applied
//! by `eval`, `predict` and `export` (`tests/onnx.rs` runs an exported standardized model).

mod common;

use common::{nnc, s, scratch};

fn source(norm: &str) -> String {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv");
    format!(
        "model M(x: f32[B, 64]) -> f32[B, 10] {{
    return dense(relu(dense(x, 32)), 10)
}}

train M(y: i32[B]) {{
    loss      = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    batch     = 32
    epochs    = 3
    data      = csv(\"{data}\", label = \"label\", scale = 0.0625, test_tail = 360{norm})
}}
"
    )
}

/// Column `j` of the digits' features (scaled by 1/16), over rows `rows`.
fn column(j: usize, rows: std::ops::Range<usize>) -> Vec<f64> {
    let text = std::fs::read_to_string("examples/data/digits.csv").unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let features: Vec<usize> = (0..head.len()).filter(|&i| head[i] != "label").collect();
    let all: Vec<&str> = lines.collect();
    all[rows]
        .iter()
        .map(|l| {
            l.split(',')
                .nth(features[j])
                .unwrap()
                .parse::<f64>()
                .unwrap()
                / 16.0
        })
        .collect()
}

fn stats(ckpt: &std::path::Path) -> (String, Vec<f64>, Vec<f64>) {
    let ck = nnc::runtime::Checkpoint::load(ckpt).unwrap();
    let s = nnc::runtime::data::FeatureStats::from_meta(&ck.meta)
        .unwrap()
        .expect("the checkpoint keeps its statistics");
    (format!("{:?}", s.kind), s.shift, s.mult)
}

#[test]
fn standardize_fits_the_training_rows_only_and_survives_resume() {
    let dir = scratch("standardize");
    let file = dir.join("m.nn");
    std::fs::write(&file, source(", standardize = true")).unwrap();
    let run = dir.join("run");
    let (code, out, err) = nnc(&["train", s(&file), "--epochs", "2", "--out", s(&run)]);
    assert_eq!(code, 0, "{out}{err}");
    let ckpt = run.join("checkpoint.safetensors");
    let (kind, shift, mult) = stats(&ckpt);
    assert_eq!(kind, "Standardize");
    assert_eq!(shift.len(), 64);
    // The training rows are the first 1797 - 360; the statistics are theirs, not all rows'.
    for j in [10, 21, 36] {
        let c = column(j, 0..1437);
        let mean = c.iter().sum::<f64>() / c.len() as f64;
        let sd = (c.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c.len() as f64).sqrt();
        assert!(
            (shift[j] - mean).abs() < 1e-12,
            "{j}: {} vs {mean}",
            shift[j]
        );
        assert!((mult[j] - 1.0 / sd).abs() < 1e-9 * mult[j], "{j}");
        let all = column(j, 0..1797);
        let all_mean = all.iter().sum::<f64>() / all.len() as f64;
        assert!(
            (all_mean - mean).abs() > 1e-6,
            "{j}: the test rows would not change it"
        );
    }
    // A constant feature (column 0 is always 0) is only centered.
    assert_eq!((shift[0], mult[0]), (0.0, 1.0));
    // Resumed: the same statistics, not refitted.
    let (code, out, err) = nnc(&["train", s(&file), "--resume", s(&ckpt), "--epochs", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(stats(&ckpt), (kind, shift, mult));
    // eval reports what training reported for the test split (its statistics applied).
    let (code, out, err) = nnc(&["eval", s(&file), "--checkpoint", s(&ckpt)]);
    assert_eq!(code, 0, "{out}{err}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let last = metrics.lines().last().unwrap().to_string();
    let acc = last.split(',').nth(6).unwrap().to_string();
    let pct = format!("{:.2}%", acc.parse::<f64>().unwrap() * 100.0);
    assert!(out.contains(&pct), "eval says {out}, training {last}");
}

#[test]
fn min_max_and_refusals() {
    let dir = scratch("min-max");
    let file = dir.join("m.nn");
    std::fs::write(&file, source(", min_max = true")).unwrap();
    let run = dir.join("run");
    let (code, _, err) = nnc(&["train", s(&file), "--epochs", "1", "--out", s(&run)]);
    assert_eq!(code, 0, "{err}");
    let (kind, shift, mult) = stats(&run.join("checkpoint.safetensors"));
    assert_eq!(kind, "MinMax");
    let c = column(20, 0..1437);
    let (lo, hi) = c
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!(shift[20], lo);
    assert!((mult[20] - 1.0 / (hi - lo)).abs() < 1e-12);
    let both = dir.join("both.nn");
    std::fs::write(&both, source(", min_max = true, standardize = true")).unwrap();
    let (code, _, err) = nnc(&["check", s(&both)]);
    assert_eq!(code, 1);
    assert!(err.contains("one normalization, not both"), "{err}");
    let bad = dir.join("bad.nn");
    std::fs::write(&bad, source(", standardize = 1")).unwrap();
    let (code, _, err) = nnc(&["check", s(&bad)]);
    assert_eq!(code, 1);
    assert!(err.contains("true or false"), "{err}");
}
