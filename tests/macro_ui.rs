//! `model!` reports the front end's errors at `cargo build`, on the offending tokens, with
//! the CLI's code, message and help (trybuild; one file per error kind in `tests/ui/`).

#[test]
fn model_macro_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
