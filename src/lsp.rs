//! `nnc lsp`: a language server over stdio (the Language Server Protocol, via the
//! `lsp-server` and `lsp-types` crates). The answers come from `nnc_lang::ide`; this file
//! is only the protocol: documents by URI, byte offsets to lines and UTF-16 columns, the
//! prelude as a file an editor can open.

use std::collections::HashMap;
use std::str::FromStr;

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{Completion, GotoDefinition, HoverRequest, Request as _};
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionOptions, CompletionParams, CompletionResponse,
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, DidChangeTextDocumentParams,
    DidCloseTextDocumentParams, DidOpenTextDocumentParams, GotoDefinitionParams,
    GotoDefinitionResponse, Hover, HoverContents, HoverParams, HoverProviderCapability, Location,
    MarkupContent, MarkupKind, NumberOrString, OneOf, Position, PublishDiagnosticsParams, Range,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind, Uri,
};
use nnc_lang::ast::Program;
use nnc_lang::diagnostics::{PRELUDE, USER};
use nnc_lang::ide::{self, Analysis, CompletionKind};
use nnc_lang::{PRELUDE_SRC, Span};

/// An open document: its text, its analysis, and the last syntax tree that parsed (for
/// completion while the text does not).
struct Doc {
    text: String,
    lines: Lines,
    analysis: Analysis,
    last_program: Option<Program>,
}

/// Where each line starts, to convert byte offsets to LSP positions (UTF-16 columns) and
/// back.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.0[line];
        let col: usize = text
            .get(start..offset)
            .unwrap_or("")
            .chars()
            .map(char::len_utf16)
            .sum();
        Position::new(line as u32, col as u32)
    }

    fn offset(&self, text: &str, p: Position) -> usize {
        let Some(&start) = self.0.get(p.line as usize) else {
            return text.len();
        };
        let mut units = 0usize;
        for (i, c) in text[start..].char_indices() {
            if units >= p.character as usize || c == '\n' {
                return start + i;
            }
            units += c.len_utf16();
        }
        text.len()
    }

    fn range(&self, text: &str, span: Span) -> Range {
        Range::new(
            self.position(text, span.start),
            self.position(text, span.end),
        )
    }
}

/// The prelude written to a file an editor can open (go to definition of `dense`), once
/// per server; named by its content so versions do not overwrite each other's.
struct PreludeFile {
    uri: Option<Uri>,
    lines: Lines,
}

impl PreludeFile {
    fn new() -> PreludeFile {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        PRELUDE_SRC.hash(&mut h);
        let dir = std::env::temp_dir().join("nnc-lsp");
        let path = dir.join(format!("prelude-{:016x}.nn", h.finish()));
        let written = std::fs::read_to_string(&path).is_ok_and(|t| t == PRELUDE_SRC)
            || (std::fs::create_dir_all(&dir).is_ok()
                && nnc_runtime::checkpoint::write_atomic(&path, PRELUDE_SRC.as_bytes()).is_ok());
        let uri = written
            .then(|| std::fs::canonicalize(&path).ok())
            .flatten()
            .and_then(|p| file_uri(&p));
        PreludeFile {
            uri,
            lines: Lines::new(PRELUDE_SRC),
        }
    }
}

/// `file://` and the path, percent-encoded.
fn file_uri(path: &std::path::Path) -> Option<Uri> {
    let mut s = String::from("file://");
    for b in path.to_str()?.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    Uri::from_str(&s).ok()
}

struct Server {
    conn: Connection,
    docs: HashMap<Uri, Doc>,
    prelude: PreludeFile,
}

/// Runs the server on stdin/stdout until the client says `exit`.
pub fn run() -> Result<(), String> {
    let (conn, io) = Connection::stdio();
    let caps = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            ..CompletionOptions::default()
        }),
        ..ServerCapabilities::default()
    };
    let (id, _params) = conn.initialize_start().map_err(|e| e.to_string())?;
    let init = serde_json::json!({
        "capabilities": caps,
        "serverInfo": { "name": "nnc", "version": env!("CARGO_PKG_VERSION") },
    });
    conn.initialize_finish(id, init)
        .map_err(|e| e.to_string())?;
    let mut server = Server {
        conn,
        docs: HashMap::new(),
        prelude: PreludeFile::new(),
    };
    server.main_loop()?;
    let Server { conn, .. } = server;
    drop(conn);
    io.join().map_err(|e| e.to_string())
}

impl Server {
    fn main_loop(&mut self) -> Result<(), String> {
        while let Ok(msg) = self.conn.receiver.recv() {
            match msg {
                Message::Request(req) => {
                    if self.conn.handle_shutdown(&req).map_err(|e| e.to_string())? {
                        return Ok(());
                    }
                    let resp = self.request(req);
                    self.send(Message::Response(resp))?;
                }
                Message::Notification(n) => self.notification(n)?,
                Message::Response(_) => {}
            }
        }
        Ok(())
    }

    fn send(&self, msg: Message) -> Result<(), String> {
        self.conn.sender.send(msg).map_err(|e| e.to_string())
    }

    fn request(&self, req: Request) -> Response {
        let id = req.id.clone();
        let result = match req.method.as_str() {
            HoverRequest::METHOD => parse(req).map(|p: HoverParams| {
                let at = p.text_document_position_params;
                json(self.hover(&at.text_document.uri, at.position))
            }),
            GotoDefinition::METHOD => parse(req).map(|p: GotoDefinitionParams| {
                let at = p.text_document_position_params;
                json(self.definition(&at.text_document.uri, at.position))
            }),
            Completion::METHOD => parse(req).map(|p: CompletionParams| {
                let at = p.text_document_position;
                json(self.completion(&at.text_document.uri, at.position))
            }),
            other => Err((
                ErrorCode::MethodNotFound,
                format!("nnc lsp does not answer `{other}`"),
            )),
        };
        match result {
            Ok(v) => Response::new_ok(id, v),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        }
    }

    fn notification(&mut self, n: Notification) -> Result<(), String> {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                if let Ok(p) = serde_json::from_value::<DidOpenTextDocumentParams>(n.params) {
                    self.update(p.text_document.uri, p.text_document.text)?;
                }
            }
            DidChangeTextDocument::METHOD => {
                if let Ok(p) = serde_json::from_value::<DidChangeTextDocumentParams>(n.params)
                    && let Some(change) = p.content_changes.into_iter().last()
                {
                    self.update(p.text_document.uri, change.text)?;
                }
            }
            DidCloseTextDocument::METHOD => {
                if let Ok(p) = serde_json::from_value::<DidCloseTextDocumentParams>(n.params) {
                    self.docs.remove(&p.text_document.uri);
                    self.publish(p.text_document.uri, Vec::new())?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A document's new text: analyze it and publish its diagnostics.
    fn update(&mut self, uri: Uri, text: String) -> Result<(), String> {
        // A bug in nnc becomes the internal-error diagnostic, not a dead server.
        let analysis = std::panic::catch_unwind(|| ide::analyze(&text))
            .unwrap_or_else(|_| ide::Analysis::failed(nnc_lang::internal("checking panicked")));
        let lines = Lines::new(&text);
        let last_program = analysis
            .program
            .clone()
            .or_else(|| self.docs.get_mut(&uri).and_then(|d| d.last_program.take()));
        // The prelude opened from a definition: nnc's own text, not the user's to fix.
        let diagnostics = if Some(&uri) == self.prelude.uri.as_ref() {
            Vec::new()
        } else {
            analysis
                .diagnostics
                .iter()
                .map(|d| self.diagnostic(&uri, &text, &lines, d))
                .collect()
        };
        self.docs.insert(
            uri.clone(),
            Doc {
                text,
                lines,
                analysis,
                last_program,
            },
        );
        self.publish(uri, diagnostics)
    }

    fn publish(&self, uri: Uri, diagnostics: Vec<Diagnostic>) -> Result<(), String> {
        let params = PublishDiagnosticsParams::new(uri, diagnostics, None);
        self.send(Message::Notification(Notification::new(
            PublishDiagnostics::METHOD.into(),
            params,
        )))
    }

    /// A location in the document or in the prelude's file.
    fn location(&self, uri: &Uri, text: &str, lines: &Lines, span: Span) -> Option<Location> {
        match span.src {
            USER => Some(Location::new(uri.clone(), lines.range(text, span))),
            PRELUDE => {
                let range = self.prelude.lines.range(PRELUDE_SRC, span);
                Some(Location::new(self.prelude.uri.clone()?, range))
            }
            _ => None,
        }
    }

    /// `nnc check`'s diagnostic: its code and message, the primary label and every other
    /// labelled span as related information, the help under the message.
    fn diagnostic(
        &self,
        uri: &Uri,
        text: &str,
        lines: &Lines,
        d: &nnc_lang::Diagnostic,
    ) -> Diagnostic {
        let (span, label) = &d.primary;
        let range = if span.src == USER {
            lines.range(text, *span)
        } else {
            Range::default()
        };
        let mut message = d.message.clone();
        if let Some(h) = &d.help {
            message.push_str(&format!("\nhelp: {h}"));
        }
        let related: Vec<DiagnosticRelatedInformation> = std::iter::once(&d.primary)
            .chain(&d.labels)
            .filter_map(|(s, l)| {
                Some(DiagnosticRelatedInformation {
                    location: self.location(uri, text, lines, *s)?,
                    message: l.clone(),
                })
            })
            .collect();
        let _ = label;
        Diagnostic {
            range,
            severity: Some(DiagnosticSeverity::ERROR),
            code: Some(NumberOrString::String(d.code.to_string())),
            source: Some("nnc".into()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..Diagnostic::default()
        }
    }

    fn doc(&self, uri: &Uri, at: Position) -> Option<(&Doc, usize)> {
        let doc = self.docs.get(uri)?;
        Some((doc, doc.lines.offset(&doc.text, at)))
    }

    fn hover(&self, uri: &Uri, at: Position) -> Option<Hover> {
        let (doc, offset) = self.doc(uri, at)?;
        let h = doc.analysis.hover(&doc.text, offset)?;
        let mut value = format!("```nnc\n{}\n```", h.code.join("\n"));
        if !h.doc.is_empty() {
            value.push_str("\n\n");
            value.push_str(&h.doc);
        }
        Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value,
            }),
            range: Some(doc.lines.range(&doc.text, h.span)),
        })
    }

    fn definition(&self, uri: &Uri, at: Position) -> Option<GotoDefinitionResponse> {
        let (doc, offset) = self.doc(uri, at)?;
        let span = doc.analysis.definition(&doc.text, offset)?;
        let loc = self.location(uri, &doc.text, &doc.lines, span)?;
        Some(GotoDefinitionResponse::Scalar(loc))
    }

    fn completion(&self, uri: &Uri, at: Position) -> Option<CompletionResponse> {
        let (doc, offset) = self.doc(uri, at)?;
        let items = ide::completions(&doc.text, offset, doc.last_program.as_ref())
            .into_iter()
            .enumerate()
            .map(|(i, c)| CompletionItem {
                kind: Some(match c.kind {
                    CompletionKind::Argument => CompletionItemKind::FIELD,
                    CompletionKind::Setting => CompletionItemKind::PROPERTY,
                    CompletionKind::Variable => CompletionItemKind::VARIABLE,
                    CompletionKind::Layer => CompletionItemKind::CLASS,
                    CompletionKind::Function => CompletionItemKind::FUNCTION,
                    CompletionKind::Keyword => CompletionItemKind::KEYWORD,
                }),
                detail: (!c.detail.is_empty()).then_some(c.detail),
                insert_text: (c.insert != c.label).then_some(c.insert),
                // Keep the order `completions` chose (arguments first).
                sort_text: Some(format!("{i:05}")),
                label: c.label,
                ..CompletionItem::default()
            })
            .collect();
        Some(CompletionResponse::Array(items))
    }
}

type Failure = (ErrorCode, String);

fn parse<P: serde::de::DeserializeOwned>(req: Request) -> Result<P, Failure> {
    serde_json::from_value(req.params).map_err(|e| (ErrorCode::InvalidParams, e.to_string()))
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
