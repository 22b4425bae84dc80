//! The real-data tasks in `examples/tasks/`: their data is what its script makes from the
//! shipped word list (so it can be checked and remade), and the models check. Training
//! them takes minutes, so it is not a test: README has the figures. A small language
//! model on the text's first 16 KB does train here.

mod common;

use common::{nnc, scratch};

#[test]
fn the_typos_are_what_their_script_makes() {
    let out = std::env::temp_dir().join(format!("nnc-typos-{}.csv", std::process::id()));
    let status = std::process::Command::new("python3")
        .args(["examples/data/make_typos.py", "--out"])
        .arg(&out)
        .status()
        .expect("python3 runs the data script");
    assert!(status.success());
    let made = std::fs::read(&out).unwrap();
    let shipped = std::fs::read("examples/data/typos.csv").unwrap();
    assert!(
        made == shipped,
        "examples/data/typos.csv is not what make_typos.py makes"
    );
    let _ = std::fs::remove_file(out);
    let text = String::from_utf8(shipped).unwrap();
    assert_eq!(text.lines().count(), 1 + 6 * 5000);
}

#[test]
fn the_keyboard_model_checks() {
    let (code, out, err) = nnc(&["check", "examples/tasks/keyboard.nn"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_language_models_check() {
    for f in ["examples/tasks/charlm.nn", "examples/tasks/charlm_gpt.nn"] {
        let (code, out, err) = nnc(&["check", f]);
        assert_eq!(code, 0, "{f}: {out}{err}");
    }
}

/// make_jargon.py's output: the lexicon from its first entry to its last, printable ASCII
/// and newlines only, one paragraph per line.
#[test]
fn the_jargon_text_is_the_lexicon_in_ascii() {
    let text = std::fs::read("examples/data/jargon.txt").unwrap();
    assert_eq!(text.len(), 1_288_123);
    assert!(text.starts_with(b":(TM): //\n"));
    assert!(text.ends_with(b"referred to in several other games.\n"));
    assert!(
        text.iter()
            .all(|&b| b == b'\n' || (b' '..=b'~').contains(&b))
    );
}

/// A small LSTM language model (windows of 32 bytes: the model's width, as the text source
/// has no `window`) trained 3 epochs on the text's first 16 KB: its held-out loss falls,
/// and ends below 3.3 nats (ln 256 = 5.5 is a uniform guess).
#[test]
fn a_small_language_model_learns_the_text() {
    let dir = scratch("charlm");
    let text = std::fs::read("examples/data/jargon.txt").unwrap();
    let data = dir.join("head.txt");
    std::fs::write(&data, &text[..16 * 1024]).unwrap();
    let src = format!(
        "model Lm(x: f32[B, 32]) -> f32[B, 32, 256] {{
    hs = lstm(embedding(cast(x, i32), 256, 16), 32, sequences = true)
    return dense(hs, 256)
}}
train Lm(y: i32[B, 32]) {{
    loss      = sequence_cross_entropy(output, y)
    optimizer = adam(lr = 1e-2)
    batch     = 16
    epochs    = 3
    data      = text(\"{}\", test_fraction = 0.1)
}}
",
        data.display()
    );
    let file = dir.join("lm.nn");
    std::fs::write(&file, src).unwrap();
    let run = dir.join("run");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (code, out, err) = nnc(&["train", &s(&file), "--out", &s(&run)]);
    assert_eq!(code, 0, "{out}{err}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let col = metrics
        .lines()
        .next()
        .and_then(|h| h.split(',').position(|c| c == "test_loss"))
        .expect("a test_loss column");
    let test: Vec<f64> = metrics
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(col)?.parse().ok())
        .collect();
    eprintln!("{metrics}");
    assert_eq!(test.len(), 3, "{metrics}");
    assert!(test[2] < 3.3 && test[2] < test[0], "{metrics}");
    let _ = std::fs::remove_dir_all(dir);
}
