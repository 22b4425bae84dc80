//! What an editor asks of a source text: its diagnostics (exactly `check`'s), the type or
//! signature under the cursor, where a name is defined, what may be typed next.
//!
//! Offsets are byte offsets into the user's source; spans whose `src` is `PRELUDE` point
//! into `PRELUDE_SRC`. The protocol (LSP's lines and UTF-16 columns, URIs) is the CLI's.

use std::collections::BTreeSet;

use nnc_ir::{Sig, TABLE};

use crate::ast::*;
use crate::check::{PRELUDE_SRC, check_noting, prelude};
use crate::diagnostics::{Diagnostic, PRELUDE, Span, USER};
use crate::names::{self, DATA_SOURCES, INITIALIZERS, SCHEDULES, SETTINGS, STATIC_FUNCTIONS};

/// One source text, checked, with what the elaborator noted about its spans.
pub struct Analysis {
    /// Every diagnostic `check` reports (empty when the program is correct).
    pub diagnostics: Vec<Diagnostic>,
    /// The syntax tree, when the text parses.
    pub program: Option<Program>,
    /// `(span, text)`: a name's type, a layer call's header and parameter count. A layer
    /// instantiated twice notes its spans twice.
    notes: Vec<(Span, String)>,
}

/// What hover shows: code lines (a name's types, a header) and prose under them.
#[derive(Clone, Debug, PartialEq)]
pub struct Hover {
    /// The span described.
    pub span: Span,
    /// Lines of nnc code: `h: f32[B, 128]`, `layer dense(x, units, bias = true)`.
    pub code: Vec<String>,
    /// The definition's comment, the parameter count, where it comes from.
    pub doc: String,
}

/// Checks `src` and keeps what hover and definition need.
pub fn analyze(src: &str) -> Analysis {
    let (checked, notes) = check_noting(src, true);
    let (diagnostics, program) = match checked {
        Ok(c) => (Vec::new(), Some(c.program)),
        Err(d) => (d, crate::check::parse(src).ok()),
    };
    Analysis {
        diagnostics,
        program,
        notes,
    }
}

/// The identifier around `offset` (`offset` may be just past its end): its span and text.
fn word_at(src: &str, offset: usize) -> Option<(usize, usize, &str)> {
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = src.as_bytes();
    let offset = offset.min(b.len());
    let mut start = offset;
    while start > 0 && is_ident(b[start - 1]) {
        start -= 1;
    }
    let mut end = offset;
    while end < b.len() && is_ident(b[end]) {
        end += 1;
    }
    (start < end && !b[start].is_ascii_digit()).then(|| (start, end, &src[start..end]))
}

/// The text of the source a span points into.
fn source(span: Span, user: &str) -> &str {
    if span.src == PRELUDE {
        PRELUDE_SRC
    } else {
        user
    }
}

/// A definition's header as written (`layer dense(x, units, bias = true)`), with the
/// comment lines right above it.
pub(crate) fn header(span: Span, user: &str) -> String {
    let text = source(span, user);
    let def = text.get(span.start..span.end).unwrap_or("");
    let head = def.split('{').next().unwrap_or("").trim();
    let above = text.get(..span.start).unwrap_or("");
    let mut comments: Vec<&str> = above
        .lines()
        .rev()
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('#'))
        .map(|l| l.trim_start().trim_start_matches('#').trim())
        .collect();
    // `lines` drops a final empty line; the definition starts a line of its own.
    if !above.ends_with('\n') {
        comments.clear();
    }
    comments.reverse();
    let doc = comments.join(" ");
    if doc.is_empty() {
        head.to_string()
    } else {
        format!("{head}\n\n{doc}")
    }
}

/// A layer, model or rule by name: the user's first, then the prelude's.
fn lookup<'a>(program: Option<&'a Program>, name: &str) -> Option<&'a Item> {
    let find = |p: &'a Program| {
        p.items
            .iter()
            .find(|i| !matches!(i, Item::Train(_)) && i.name().name == name)
    };
    program.and_then(find).or_else(|| find(prelude()))
}

fn item_span(item: &Item) -> Span {
    match item {
        Item::Layer(f) | Item::Model(f) => f.span,
        Item::Train(t) => t.span,
        Item::Rule(r) => r.span,
    }
}

/// A built-in's parameters, if `name` is one.
fn builtin_params(name: &str) -> Option<Vec<&'static str>> {
    if let Some((_, k)) = SCHEDULES
        .iter()
        .chain(DATA_SOURCES)
        .find(|(n, _)| *n == name)
    {
        return Some(k.iter().map(|(n, _)| *n).collect());
    }
    if let Some((_, k)) = INITIALIZERS.iter().find(|(n, _)| *n == name) {
        return Some(k.iter().map(|(n, _)| *n).collect());
    }
    let statics: &[(&str, &[&'static str])] = &[
        ("size", &["x", "axis"]),
        ("shape", &["x"]),
        ("full", &["shape", "value"]),
        ("stack", &["xs", "axis"]),
        ("steps", &["xs", "axis"]),
        ("random", &["shape"]),
    ];
    debug_assert!(
        STATIC_FUNCTIONS
            .iter()
            .all(|f| statics.iter().any(|s| s.0 == *f))
    );
    if let Some((_, p)) = statics.iter().find(|(n, _)| *n == name) {
        return Some(p.to_vec());
    }
    TABLE
        .iter()
        .find(|r| r.mnemonic == name)
        .and_then(|r| match r.sig {
            Sig::Call(p, _) => Some(p.to_vec()),
            Sig::None => None,
        })
}

/// The parameters a callable takes, by name.
fn callee_params(program: Option<&Program>, name: &str) -> Vec<String> {
    match lookup(program, name) {
        Some(Item::Layer(f) | Item::Model(f)) => {
            f.params.iter().map(|p| p.name.name.clone()).collect()
        }
        Some(Item::Rule(r)) => r.params.iter().map(|p| p.name.name.clone()).collect(),
        _ => builtin_params(name)
            .unwrap_or_default()
            .into_iter()
            .map(String::from)
            .collect(),
    }
}

impl Analysis {
    /// An analysis that found only `d` (an internal error) and knows nothing else.
    pub fn failed(d: Diagnostic) -> Analysis {
        Analysis {
            diagnostics: vec![d],
            program: None,
            notes: Vec::new(),
        }
    }

    /// What to show over `offset`: the elaborated type of a name (every distinct one, for a
    /// layer instantiated with different shapes), a layer call's header and parameter
    /// count, or a definition's or built-in's signature.
    pub fn hover(&self, src: &str, offset: usize) -> Option<Hover> {
        let inside = |s: &Span| s.src == USER && s.start <= offset && offset < s.end;
        let best = self
            .notes
            .iter()
            .filter(|(s, _)| inside(s))
            .map(|(s, _)| *s)
            .min_by_key(|s| s.end - s.start);
        if let Some(span) = best {
            let mut code = Vec::new();
            let mut docs = Vec::new();
            for (_, text) in self.notes.iter().filter(|(s, _)| *s == span) {
                let (c, d) = text.split_once("\n\n").unwrap_or((text, ""));
                if !code.iter().any(|x| x == c) {
                    code.push(c.to_string());
                }
                if !d.is_empty() && !docs.iter().any(|x| x == d) {
                    docs.push(d.to_string());
                }
            }
            if code.len() > 4 {
                let more = code.len() - 4;
                code.truncate(4);
                code.push(format!("# and {more} more instantiations"));
            }
            let doc = docs.join("\n\n");
            return Some(Hover { span, code, doc });
        }
        let (start, end, word) = word_at(src, offset)?;
        let span = Span::new(USER, start, end);
        let hover = |code: String, doc: String| {
            Some(Hover {
                span,
                code: vec![code],
                doc,
            })
        };
        if let Some(item) = lookup(self.program.as_ref(), word) {
            let at = item_span(item);
            let text = header(at, src);
            let (code, doc) = text.split_once("\n\n").unwrap_or((&text, ""));
            let from = if at.src == PRELUDE {
                "from the prelude"
            } else {
                ""
            };
            let doc = [doc, from]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>();
            return hover(code.to_string(), doc.join("\n\n"));
        }
        if let Some(p) = builtin_params(word) {
            return hover(format!("{word}({})", p.join(", ")), "built in".into());
        }
        if let Some((name, kind, required)) = SETTINGS.iter().find(|s| s.0 == word) {
            let req = if *required { "required" } else { "optional" };
            return hover(
                format!("{name} = .."),
                format!("train setting ({kind:?}, {req})"),
            );
        }
        None
    }

    /// Where the name at `offset` is defined: a local name's first binding in its layer,
    /// model or rule, or a layer's, model's or rule's definition (the prelude's included).
    pub fn definition(&self, src: &str, offset: usize) -> Option<Span> {
        let (start, end, word) = word_at(src, offset)?;
        let program = self.program.as_ref()?;
        let is_call = src[end..].trim_start().starts_with('(');
        if !is_call
            && let Some(item) = program
                .items
                .iter()
                .find(|i| item_span(i).start <= start && end <= item_span(i).end)
            && let Some(s) = local_binding(item, word)
        {
            return Some(s);
        }
        lookup(Some(program), word).map(|i| i.name().span)
    }
}

/// The first place an item binds `name`: a parameter, an assignment, a `param`, a loop
/// variable, a grad block's adjoint.
fn local_binding(item: &Item, name: &str) -> Option<Span> {
    let (params, body): (&[ParamDef], &[Stmt]) = match item {
        Item::Layer(f) | Item::Model(f) => (&f.params, &f.body),
        Item::Train(t) => (&t.params, &[]),
        Item::Rule(r) => {
            for id in [&r.weight, &r.grad] {
                if id.name == name {
                    return Some(id.span);
                }
            }
            (&r.params, &r.body)
        }
    };
    if let Some(p) = params.iter().find(|p| p.name.name == name) {
        return Some(p.name.span);
    }
    fn walk(body: &[Stmt], name: &str) -> Option<Span> {
        body.iter().find_map(|s| match s {
            Stmt::Assign { name: n, .. }
            | Stmt::Param { name: n, .. }
            | Stmt::State { name: n, .. }
                if n.name == name =>
            {
                Some(n.span)
            }
            Stmt::For { var, body, .. } => (var.name == name)
                .then_some(var.span)
                .or_else(|| walk(body, name)),
            Stmt::Grad { dy, body, .. } => (dy.name == name)
                .then_some(dy.span)
                .or_else(|| walk(body, name)),
            Stmt::If { then, els, .. } => walk(then, name).or_else(|| walk(els, name)),
            _ => None,
        })
    }
    walk(body, name)
}

/// What a completion inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    /// A keyword argument of the call the cursor is in (`units = `).
    Argument,
    /// A train block's setting (`optimizer = `).
    Setting,
    /// A name bound earlier in the same definition.
    Variable,
    /// A layer, model or rule.
    Layer,
    /// A built-in function (a primitive, initializer, schedule, data source).
    Function,
    /// A keyword of the language.
    Keyword,
}

/// One completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// What the list shows.
    pub label: String,
    /// What it is.
    pub kind: CompletionKind,
    /// A one-line description (a layer's header).
    pub detail: String,
    /// What is inserted.
    pub insert: String,
}

const KEYWORDS: &[&str] = &[
    "layer", "model", "train", "rule", "for", "in", "if", "else", "param", "buffer", "state",
    "return", "yield",
];

/// The innermost unclosed bracket `open` before `at`, skipping balanced pairs.
fn unclosed(src: &str, at: usize, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in src.as_bytes()[..at].iter().enumerate().rev() {
        if c == close {
            depth += 1;
        } else if c == open {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// What may be typed at `offset`: keyword arguments inside a call, settings inside a train
/// block, then names in scope, layers, built-ins and keywords, all starting with the word
/// being typed. Works on text that does not parse yet; `program` (the last tree that did)
/// supplies user layers' parameters and local names.
pub fn completions(src: &str, offset: usize, program: Option<&Program>) -> Vec<Completion> {
    let offset = offset.min(src.len());
    let (start, prefix) = match word_at(src, offset) {
        Some((s, _, _)) if s < offset => (s, &src[s..offset]),
        _ => (offset, ""),
    };
    let before = src[..start].trim_end();
    let at_arg = before.ends_with('(') || before.ends_with(',');
    let at_stmt = before.is_empty()
        || before.ends_with('{')
        || before.ends_with('}')
        || src[..start].trim_end_matches([' ', '\t']).ends_with('\n');
    let mut out: Vec<Completion> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |label: String, kind, detail: String, insert: String| {
        if label.starts_with(prefix) && seen.insert(label.clone()) {
            out.push(Completion {
                label,
                kind,
                detail,
                insert,
            });
        }
    };
    // Inside a call: its keyword arguments.
    if let Some(open) = unclosed(src, start, b'(', b')')
        && at_arg
        && let Some((_, _, callee)) = word_at(src, src[..open].trim_end().len())
    {
        for p in callee_params(program, callee) {
            let insert = format!("{p} = ");
            push(
                p,
                CompletionKind::Argument,
                format!("argument of `{callee}`"),
                insert,
            );
        }
    }
    // Inside a train block, at a statement: its settings.
    let brace = unclosed(src, start, b'{', b'}');
    let in_train = brace.is_some_and(|b| {
        let line = src[..b].rsplit('\n').next().unwrap_or("");
        line.trim_start().starts_with("train")
    });
    if in_train && at_stmt {
        for (name, kind, required) in SETTINGS {
            let req = if *required { "required" } else { "optional" };
            push(
                name.to_string(),
                CompletionKind::Setting,
                format!("{kind:?} ({req})"),
                format!("{name} = "),
            );
        }
    }
    // Names bound earlier in the enclosing definition.
    if let Some(p) = program {
        for item in &p.items {
            let s = item_span(item);
            if s.start <= start && start <= s.end {
                for n in bound_names(item, start) {
                    push(n.clone(), CompletionKind::Variable, String::new(), n);
                }
            }
        }
    }
    // Layers and rules: the user's (from the tree, else from the text), then the prelude's.
    let mut user_defs: Vec<(String, String)> = Vec::new();
    if let Some(p) = program {
        for item in &p.items {
            if let Item::Layer(_) | Item::Rule(_) = item {
                user_defs.push((item.name().name.clone(), header(item_span(item), src)));
            }
        }
    } else {
        for line in src.lines() {
            let mut w = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            if let (Some("layer" | "rule"), Some(name)) = (w.next(), w.next())
                && !name.is_empty()
            {
                user_defs.push((
                    name.to_string(),
                    line.split('{').next().unwrap_or("").trim().to_string(),
                ));
            }
        }
    }
    for item in &prelude().items {
        if let Item::Layer(_) | Item::Rule(_) = item {
            let head = header(item_span(item), src);
            user_defs.push((item.name().name.clone(), head));
        }
    }
    for (name, head) in user_defs {
        let detail = head.lines().next().unwrap_or("").to_string();
        push(name.clone(), CompletionKind::Layer, detail, name);
    }
    for name in names::builtin_functions() {
        let params = builtin_params(name).unwrap_or_default().join(", ");
        push(
            name.to_string(),
            CompletionKind::Function,
            format!("{name}({params})"),
            name.to_string(),
        );
    }
    if at_stmt {
        for k in KEYWORDS {
            push(
                k.to_string(),
                CompletionKind::Keyword,
                String::new(),
                k.to_string(),
            );
        }
    }
    out
}

/// Names an item binds before `offset`.
fn bound_names(item: &Item, offset: usize) -> Vec<String> {
    let mut out = Vec::new();
    let (params, body): (&[ParamDef], &[Stmt]) = match item {
        Item::Layer(f) | Item::Model(f) => (&f.params, &f.body),
        Item::Train(t) => (&t.params, &[]),
        Item::Rule(r) => {
            out.push(r.weight.name.clone());
            out.push(r.grad.name.clone());
            (&r.params, &r.body)
        }
    };
    out.extend(params.iter().map(|p| p.name.name.clone()));
    fn walk(body: &[Stmt], offset: usize, out: &mut Vec<String>) {
        for s in body {
            if s.span().start >= offset {
                return;
            }
            match s {
                Stmt::Assign { name, .. } | Stmt::Param { name, .. } | Stmt::State { name, .. } => {
                    out.push(name.name.clone())
                }
                Stmt::For { var, body, .. } => {
                    out.push(var.name.clone());
                    walk(body, offset, out);
                }
                Stmt::Grad { dy, body, .. } => {
                    out.push(dy.name.clone());
                    walk(body, offset, out);
                }
                Stmt::If { then, els, .. } => {
                    walk(then, offset, out);
                    walk(els, offset, out);
                }
                _ => {}
            }
        }
    }
    walk(body, offset, &mut out);
    out
}
