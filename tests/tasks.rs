//! The real-data tasks in `examples/tasks/`: their data is what its script makes from the
//! shipped word list (so it can be checked and remade), and the models check. Training
//! them takes minutes, so it is not a test: README has the figures.

mod common;

use common::nnc;

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
