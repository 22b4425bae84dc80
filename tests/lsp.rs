//! `nnc lsp` spoken to as an editor does: JSON-RPC messages piped into the process, the
//! answers read back. Diagnostics must be `nnc check`'s (every corpus file), hover gives
//! types and layer signatures, definition finds locals and the prelude's layers,
//! completion offers arguments, settings and layers.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<Value>,
    next_id: i64,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, out) = channel();
        // A reader thread, so a server that stops answering fails the test, not hangs it.
        std::thread::spawn(move || {
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        len = n.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; len.expect("a Content-Length header")];
                stdout.read_exact(&mut body).unwrap();
                if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut s = Server {
            child,
            stdin,
            out,
            next_id: 0,
        };
        let init = s.request("initialize", json!({ "capabilities": {} }));
        assert_eq!(init["capabilities"]["hoverProvider"], true, "{init}");
        assert_eq!(init["serverInfo"]["name"], "nnc");
        s.notify("initialized", json!({}));
        s
    }

    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn recv(&self) -> Value {
        self.out
            .recv_timeout(Duration::from_secs(60))
            .expect("the server answers within a minute")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let m = self.recv();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{m}");
                return m["result"].clone();
            }
        }
    }

    /// Opens (or replaces) a document and returns the diagnostics published for it.
    fn open(&mut self, uri: &str, text: &str) -> Vec<Value> {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "nnc", "version": 1, "text": text } }),
        );
        self.diagnostics(uri)
    }

    fn diagnostics(&self, uri: &str) -> Vec<Value> {
        loop {
            let m = self.recv();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }

    fn at(&mut self, method: &str, uri: &str, line: u32, character: u32) -> Value {
        let params = json!({
            "textDocument": { "uri": uri },
            "position": { "line": line, "character": character },
        });
        self.request(method, params)
    }

    fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// The LSP position (line, UTF-16 column) of a byte offset.
fn position(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line as u64, before[start..].encode_utf16().count() as u64)
}

/// The position of the `nth` occurrence of `needle`, plus `plus` bytes.
fn find(text: &str, needle: &str, nth: usize, plus: usize) -> (u32, u32) {
    let at = text.match_indices(needle).nth(nth).unwrap().0 + plus;
    let (l, c) = position(text, at);
    (l as u32, c as u32)
}

fn hover_text(v: &Value) -> String {
    v["contents"]["value"].as_str().unwrap_or("").to_string()
}

#[test]
fn diagnostics_are_nnc_checks_for_every_corpus_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    let mut server = Server::start();
    let mut checked = 0;
    for path in &files {
        // A file that is not UTF-8 cannot be an editor's text.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let want = match nnc::lang::check(&text) {
            Ok(_) => Vec::new(),
            Err(d) => d,
        };
        let uri = format!(
            "file:///corpus/{}",
            path.file_name().unwrap().to_str().unwrap()
        );
        let got = server.open(&uri, &text);
        assert_eq!(got.len(), want.len(), "{}: {got:?}", path.display());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g["code"], w.code, "{}", path.display());
            assert_eq!(g["source"], "nnc");
            let mut message = w.message.clone();
            if let Some(h) = &w.help {
                message.push_str(&format!("\nhelp: {h}"));
            }
            assert_eq!(g["message"], message, "{}", path.display());
            let (span, label) = &w.primary;
            if span.src == nnc::lang::diagnostics::USER {
                let (l, c) = position(&text, span.start);
                assert_eq!(g["range"]["start"], json!({ "line": l, "character": c }));
                let (l, c) = position(&text, span.end);
                assert_eq!(g["range"]["end"], json!({ "line": l, "character": c }));
            }
            // Every labelled span is there, with its label, where it points into the file.
            let related = g["relatedInformation"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let labels: Vec<&str> = related
                .iter()
                .map(|r| r["message"].as_str().unwrap())
                .collect();
            for (s, l) in std::iter::once(&(*span, label.clone())).chain(&w.labels) {
                if s.src == nnc::lang::diagnostics::USER {
                    assert!(
                        labels.contains(&l.as_str()),
                        "{}: {l} in {labels:?}",
                        path.display()
                    );
                }
            }
        }
        checked += usize::from(!want.is_empty());
    }
    assert!(checked >= 60, "only {checked} corpus files had errors");
    server.stop();
}

const MODEL: &str = "\
layer block(x, units: int) {
    h = relu(dense(x, units))
    return h
}

model Net(x: f32[B, 4]) -> f32[B, 3] {
    a = block(x, 8)
    b = block(a, 16)
    return dense(b, 3)
}

train Net(y: i32[B]) {
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
}
";

#[test]
fn hover_definition_and_completion() {
    let mut s = Server::start();
    let uri = "file:///work/net.nn";

    // An error first, then the fix: the diagnostics come and go as the user types.
    let broken = MODEL.replace("dense(b, 3)", "dense(b, 3) + a");
    let d = s.open(uri, &broken);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "E0202");
    assert!(
        d[0]["message"]
            .as_str()
            .unwrap()
            .contains("f32[B, 3] and f32[B, 8]"),
        "{d:?}"
    );
    s.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 2 }, "contentChanges": [{ "text": MODEL }] }),
    );
    assert_eq!(s.diagnostics(uri), Vec::<Value>::new());

    // A name's type, where it is assigned and where it is read.
    let (l, c) = find(MODEL, "a = block", 0, 0);
    let h = s.at("textDocument/hover", uri, l, c);
    assert_eq!(hover_text(&h), "```nnc\na: f32[B, 8]\n```", "{h}");
    assert_eq!(h["range"]["start"], json!({ "line": l, "character": c }));
    let (l, c) = find(MODEL, "dense(b", 0, 6);
    assert!(hover_text(&s.at("textDocument/hover", uri, l, c)).contains("b: f32[B, 16]"));
    // A layer called twice with different shapes shows each type of its names.
    let (l, c) = find(MODEL, "h = relu", 0, 0);
    let h = hover_text(&s.at("textDocument/hover", uri, l, c));
    assert!(
        h.contains("h: f32[B, 8]") && h.contains("h: f32[B, 16]"),
        "{h}"
    );
    // A call: the layer's header and the parameters this call made (8 x 16 weights, 16 biases).
    let (l, c) = find(MODEL, "block(a, 16)", 0, 1);
    let h = hover_text(&s.at("textDocument/hover", uri, l, c));
    assert!(h.contains("layer block(x, units: int)"), "{h}");
    assert!(h.contains("144 trainable parameters in this call"), "{h}");
    // The train block's names.
    let (l, c) = find(MODEL, "output, y", 0, 0);
    let h = hover_text(&s.at("textDocument/hover", uri, l, c));
    assert_eq!(h, "```nnc\noutput: f32[B, 3]\n```");

    // Definition: a local name, a user layer, a prelude layer (its file holds its text).
    let (l, c) = find(MODEL, "dense(b", 0, 6);
    let loc = s.at("textDocument/definition", uri, l, c);
    let (dl, dc) = find(MODEL, "b = block", 0, 0);
    assert_eq!(loc["uri"], uri);
    assert_eq!(
        loc["range"]["start"],
        json!({ "line": dl, "character": dc })
    );
    let (l, c) = find(MODEL, "block(x, 8)", 0, 2);
    let loc = s.at("textDocument/definition", uri, l, c);
    assert_eq!(loc["range"]["start"], json!({ "line": 0, "character": 6 }));
    let (l, c) = find(MODEL, "dense(x", 0, 1);
    let loc = s.at("textDocument/definition", uri, l, c);
    let prelude_uri = loc["uri"].as_str().unwrap();
    let path = prelude_uri.strip_prefix("file://").unwrap();
    let prelude = std::fs::read_to_string(path).unwrap();
    assert_eq!(prelude, nnc::lang::PRELUDE_SRC);
    let line = prelude
        .lines()
        .nth(loc["range"]["start"]["line"].as_u64().unwrap() as usize);
    assert!(line.unwrap().starts_with("layer dense("), "{line:?}");
    // The prelude opened in the editor is not reported on.
    assert_eq!(s.open(prelude_uri, &prelude), Vec::<Value>::new());

    // Completion: keyword arguments inside a call, settings in a train block, layers.
    let labels = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect()
    };
    let (l, c) = find(MODEL, "lr = 1e-3", 0, 0);
    let got = labels(s.at("textDocument/completion", uri, l, c));
    for want in ["lr", "beta1", "beta2", "eps", "wd"] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
    let (l, _) = find(MODEL, "optimizer", 0, 0);
    let got = labels(s.at("textDocument/completion", uri, l, 4));
    for want in ["loss", "optimizer", "batch", "epochs", "schedule", "data"] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
    // Half-typed text that does not parse: layers by prefix, and the last tree's names.
    let typing = MODEL.replace("return dense(b, 3)", "c = lay\n    return dense(b, 3)");
    let d = s.open(uri, &typing.replace("c = lay", "c = lay("));
    assert!(!d.is_empty());
    let (l, c) = find(&typing, "c = lay", 0, 7);
    s.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 3 }, "contentChanges": [{ "text": typing }] }),
    );
    s.diagnostics(uri);
    let got = labels(s.at("textDocument/completion", uri, l, c));
    assert!(got.contains(&"layer_norm".to_string()), "{got:?}");
    assert!(got.iter().all(|g| g.starts_with("lay")), "{got:?}");
    s.stop();
}

/// Hover, definition and completion answer at every offset of every example and corpus
/// file, parsed or not, without panicking (the server would die with the editor's state).
#[test]
fn every_offset_of_every_file_is_answered() {
    use nnc::lang::ide;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "examples/tasks", "tests/errors"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "nn") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 80, "{}", files.len());
    let mut answered = 0;
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let a = ide::analyze(&text);
        for offset in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            answered += usize::from(a.hover(&text, offset).is_some());
            let _ = a.definition(&text, offset);
            if offset % 7 == 0 {
                let _ = ide::completions(&text, offset, a.program.as_ref());
                let _ = ide::completions(&text, offset, None);
            }
        }
    }
    assert!(answered > 1000, "{answered}");
}
