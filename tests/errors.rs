//! The error corpus: every `tests/errors/*.nn` must fail to check, report the codes its
//! `# error: E....` lines name, and render as snapshotted (plain text, no colors).

use std::collections::BTreeSet;

fn expected_codes(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.strip_prefix("# error: "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn error_corpus() {
    // The limit the size errors name, the same on every machine (by default it is this
    // machine's memory; the snapshot then says "as set").
    nnc::ir::limits::set_memory_limit(24 << 30);
    insta::glob!("errors", "*.nn", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let name = format!(
            "tests/errors/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let diags = match nnc::lang::check(&src) {
            Ok(_) => panic!("{name} checked without errors"),
            Err(d) => d,
        };
        let got: BTreeSet<&str> = diags.iter().map(|d| d.code).collect();
        for code in expected_codes(&src) {
            assert!(
                got.contains(code.as_str()),
                "{name}: expected {code}, got {got:?}"
            );
        }
        insta::assert_snapshot!(nnc::render_plain(&name, &src, &diags));
    });
}

#[test]
fn corpus_covers_at_least_25_error_kinds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/errors");
    let mut codes = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let src = std::fs::read_to_string(e.unwrap().path()).unwrap();
        codes.extend(expected_codes(&src));
    }
    assert!(codes.len() >= 25, "only {} kinds: {codes:?}", codes.len());
}

#[test]
fn examples_have_no_errors_and_corpus_has_no_successes() {
    // The ok/err split: examples check clean (tested in examples.rs); here, that every
    // error file names at least one expected code, so none is silently a success case.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/errors");
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        assert!(
            !expected_codes(&src).is_empty(),
            "{} names no `# error:` code",
            path.display()
        );
    }
}
