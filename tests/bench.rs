//! `nnc bench` prints one JSON object per line with the fields the README and
//! `bench/peers.py` read. Only the shape of the output is tested: speed is never a test.

use serde_json::Value;

fn bench(args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_and_forward_lines_carry_the_issue_fields() {
    let lines = bench(&[
        "examples/mlp784.nn",
        "--batch",
        "4",
        "--steps",
        "2",
        "--baseline-steps",
        "1",
        "--only",
        "train",
    ]);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["bench"], "train_step");
    for key in [
        "samples_per_s",
        "ms_per_step",
        "compile_ms",
        "first_step_done_ms_from_start",
        "peak_rss_mb",
        "speedup_vs_interp",
    ] {
        assert!(l[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {l}");
    }
}

#[test]
fn the_gemm_profile_names_every_product_of_a_training_step() {
    let lines = bench(&[
        "examples/mlp784.nn",
        "--batch",
        "8",
        "--steps",
        "3",
        "--only",
        "gemm",
    ]);
    let shapes: Vec<&str> = lines
        .iter()
        .filter(|l| l["bench"] == "gemm")
        .map(|l| l["shape"].as_str().unwrap())
        .collect();
    // Three layers: three forward products, the three weight gradients and the input
    // gradients of the two upper layers (the data needs none).
    assert_eq!(shapes.len(), 8, "{shapes:?}");
    for want in [
        "1x[8x784]@[784x256]",
        "1x[784x8]@[8x256]",
        "1x[8x10]@[10x256]",
    ] {
        assert!(shapes.contains(&want), "{want} not in {shapes:?}");
    }
    for l in lines.iter().filter(|l| l["bench"] == "gemm") {
        assert_eq!(l["calls_per_step"], 1.0, "{l}");
    }
    let total = lines.last().unwrap();
    assert_eq!(total["bench"], "gemm_total");
    let share = total["gemm_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{total}");
}
