//! Diagnostics are values with spans: a code, a message naming the concrete things, labels,
//! and a `help:` where a fix is known. They are collected, never thrown, and rendered
//! like rustc's (source line, caret under the span) by miette.
//!
//! The constructor functions at the bottom are the only places that write messages, so the
//! wording stays consistent: lowercase start, no trailing period, concrete types.

use std::fmt;

/// Which source text a span points into.
pub type SourceId = u16;
/// The user's file (or the tokens of a `model!` call).
pub const USER: SourceId = 0;
/// The prelude, nnc's built-in layers written in the language.
pub const PRELUDE: SourceId = 1;

/// A byte range in one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The source it points into.
    pub src: SourceId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span in the given source.
    pub fn new(src: SourceId, start: usize, end: usize) -> Span {
        Span { src, start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            src: self.src,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One error found in the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// A stable code, `E0201`; the error corpus has one file per code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where, with a short label under the caret.
    pub primary: (Span, String),
    /// Other places that explain it (`instantiated here`).
    pub labels: Vec<(Span, String)>,
    /// How to fix it, when known.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with a primary span and label.
    pub fn error(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: (span, label.into()),
            labels: Vec::new(),
            help: None,
        }
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.labels.push((span, label.into()));
        self
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// The primary span.
    pub fn span(&self) -> Span {
        self.primary.0
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code, self.message)
    }
}

/// The texts spans point into, for rendering.
pub struct Sources<'a> {
    /// The user's file name and text.
    pub user: (&'a str, &'a str),
    /// The prelude's text.
    pub prelude: &'a str,
}

struct Report<'a> {
    diag: &'a Diagnostic,
    source: miette::NamedSource<String>,
    labels: Vec<miette::LabeledSpan>,
    help: Option<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.diag, f)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Renders diagnostics like rustc. With `color` false the output is plain text (tests
/// snapshot it).
pub fn render(diags: &[Diagnostic], sources: &Sources<'_>, color: bool) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        let src = d.primary.0.src;
        let (name, text) = if src == PRELUDE {
            ("<prelude>", sources.prelude)
        } else {
            sources.user
        };
        let clamp = |s: Span| {
            let start = s.start.min(text.len());
            miette::SourceSpan::new(start.into(), s.end.clamp(start, text.len()) - start)
        };
        let mut labels = vec![miette::LabeledSpan::new_primary_with_span(
            non_empty(&d.primary.1),
            clamp(d.primary.0),
        )];
        let mut notes = Vec::new();
        for (s, l) in &d.labels {
            if s.src == src {
                labels.push(miette::LabeledSpan::new_with_span(non_empty(l), clamp(*s)));
            } else {
                notes.push(l.clone());
            }
        }
        let mut help = d.help.clone();
        if !notes.is_empty() {
            let n = notes.join("; ");
            help = Some(match help {
                Some(h) => format!("{h}\n{n}"),
                None => n,
            });
        }
        let report = Report {
            diag: d,
            source: miette::NamedSource::new(name, text.to_string()),
            labels,
            help,
        };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{d}\n"));
        }
    }
    out
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// The edit distance between two names, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance, for a `help: did you mean` line.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| c)
}
