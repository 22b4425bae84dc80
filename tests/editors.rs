//! The editor files under `editors/` know the language's keywords: the VS Code grammar
//! and the vim syntax list every keyword of `lang/src/grammar.pest` (and `grad`), and the
//! extension's JSON files parse.

fn read(p: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap()
}

/// The keywords the grammar reserves, plus `grad` (a grad block's opening word).
fn keywords() -> Vec<String> {
    let g = read("lang/src/grammar.pest");
    let line = g.lines().find(|l| l.starts_with("keyword")).unwrap();
    let mut k: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_string)
        .collect();
    assert!(k.len() >= 10, "{k:?}");
    k.push("grad".into());
    k
}

#[test]
fn editor_files_know_every_keyword() {
    let vim = read("editors/vim/syntax/nn.vim");
    let vim_kw: Vec<&str> = vim
        .lines()
        .find(|l| l.starts_with("syn keyword nnKeyword"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .collect();
    let grammar: serde_json::Value =
        serde_json::from_str(&read("editors/vscode/syntaxes/nn.tmLanguage.json")).unwrap();
    let control = grammar["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keyword.control.nn")
        .unwrap()["match"]
        .as_str()
        .unwrap()
        .to_string();
    for k in keywords() {
        assert!(vim_kw.contains(&k.as_str()), "vim lacks `{k}`");
        assert!(
            control.contains(&format!("|{k}|"))
                || control.contains(&format!("({k}|"))
                || control.contains(&format!("|{k})")),
            "VS Code lacks `{k}`"
        );
    }
    for f in [
        "editors/vscode/package.json",
        "editors/vscode/language-configuration.json",
    ] {
        serde_json::from_str::<serde_json::Value>(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

/// The VS Code extension starts `nnc lsp` for the language its grammar is for, and its
/// script is valid JavaScript (checked with node where the machine has it).
#[test]
fn vscode_extension_starts_the_language_server() {
    let pkg: serde_json::Value =
        serde_json::from_str(&read("editors/vscode/package.json")).unwrap();
    let lang = pkg["contributes"]["languages"][0]["id"].as_str().unwrap();
    assert_eq!(pkg["activationEvents"][0], format!("onLanguage:{lang}"));
    assert!(pkg["dependencies"]["vscode-languageclient"].is_string());
    let main = pkg["main"].as_str().unwrap().trim_start_matches("./");
    let js = read(&format!("editors/vscode/{main}"));
    assert!(js.contains(r#"args: ["lsp"]"#), "{js}");
    assert!(js.contains(&format!(r#"language: "{lang}""#)), "{js}");
    let setting = pkg["contributes"]["configuration"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(js.contains(&format!(
        r#"getConfiguration("{}")"#,
        setting.split('.').next().unwrap()
    )));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("editors/vscode")
        .join(main);
    if let Ok(out) = std::process::Command::new("node")
        .arg("--check")
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
