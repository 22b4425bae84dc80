//! `nnc fmt`: on every example, corpus file and the prelude, formatting keeps the program
//! (the same canonical syntax tree), keeps every comment, and is idempotent; `--check`
//! exits 1 on a file that would change and leaves it alone.

mod common;

use common::{nnc, s, scratch};

fn sources() -> Vec<(String, String)> {
    let mut out = vec![("prelude".to_string(), nnc::lang::PRELUDE_SRC.to_string())];
    for dir in ["examples", "tests/errors"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "nn"))
            .collect();
        paths.sort();
        for p in paths {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn fmt_keeps_the_program_and_its_comments_and_is_idempotent() {
    let mut formatted = 0;
    for (name, src) in sources() {
        // Corpus files with syntax errors cannot be formatted.
        let Ok(p) = nnc::lang::parse(&src) else {
            continue;
        };
        let once = nnc::lang::print::format(&src, &p);
        let p1 = nnc::lang::parse(&once).unwrap_or_else(|e| panic!("{name}: {e:?}\n{once}"));
        assert_eq!(
            nnc::lang::print::program(&p1),
            nnc::lang::print::program(&p),
            "{name}: formatting changed the program"
        );
        let comments = |t: &str| {
            t.lines()
                .filter_map(|l| l.find('#').map(|i| l[i..].trim().to_string()))
                .filter(|c| !c.contains('"'))
                .collect::<Vec<_>>()
        };
        assert_eq!(comments(&once), comments(&src), "{name}: comments changed");
        let twice = nnc::lang::print::format(&once, &p1);
        assert_eq!(twice, once, "{name}: not idempotent");
        formatted += 1;
    }
    assert!(formatted > 60, "{formatted}");
}

#[test]
fn fmt_check_and_write() {
    let dir = scratch("fmt");
    let f = dir.join("m.nn");
    let src = "# A model.\nmodel M(x: f32[B, 4]) -> f32[B, 2] {   # the input\n    h = relu(dense(x,8))  # hidden\n\n\n    # out\n    return dense(h, 2)\n}\n";
    std::fs::write(&f, src).unwrap();
    let (code, out, _) = nnc(&["fmt", "--check", s(&f)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not formatted"), "{out}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), src);
    let (code, _, err) = nnc(&["fmt", s(&f)]);
    assert_eq!(code, 0, "{err}");
    let want = "# A model.\nmodel M(x: f32[B, 4]) -> f32[B, 2] {  # the input\n    h = relu(dense(x, 8))  # hidden\n\n    # out\n    return dense(h, 2)\n}\n";
    assert_eq!(std::fs::read_to_string(&f).unwrap(), want);
    let (code, _, _) = nnc(&["fmt", "--check", s(&f)]);
    assert_eq!(code, 0);
    // A file that does not parse is reported and left as it was.
    let bad = dir.join("bad.nn");
    std::fs::write(&bad, "model M( {").unwrap();
    let (code, _, err) = nnc(&["fmt", s(&bad)]);
    assert_eq!(code, 1);
    assert!(err.contains("E0001"), "{err}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), "model M( {");
}
