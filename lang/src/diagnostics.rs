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
        let spans: Vec<Span> = std::iter::once(d.primary.0)
            .chain(d.labels.iter().map(|(s, _)| *s).filter(|s| s.src == src))
            .collect();
        let clipped = Clipped::new(text, &spans);
        let clamp = |s: Span| {
            let start = clipped.map(s.start.min(text.len()));
            let end = clipped.map(s.end.clamp(s.start.min(text.len()), text.len()));
            miette::SourceSpan::new(start.into(), end.max(start) - start)
        };
        let mut labels = vec![miette::LabeledSpan::new_primary_with_span(
            non_empty(&clip_text(&d.primary.1)),
            clamp(d.primary.0),
        )];
        let mut notes = Vec::new();
        for (s, l) in &d.labels {
            if s.src == src {
                labels.push(miette::LabeledSpan::new_with_span(
                    non_empty(&clip_text(l)),
                    clamp(*s),
                ));
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
        let message = clip_text(&d.message);
        let clipped_diag;
        let diag = if message.len() == d.message.len() {
            d
        } else {
            clipped_diag = Diagnostic {
                message,
                ..d.clone()
            };
            &clipped_diag
        };
        let report = Report {
            diag,
            source: miette::NamedSource::new(name, clipped.text),
            labels,
            help: help.map(|h| clip_text(&h)),
        };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{d}\n"));
        }
    }
    out
}

/// Lines longer than this are shown as a window around the spans they hold.
const MAX_LINE: usize = 160;
/// Messages, labels and help longer than this (a quoted megabyte identifier) are cut.
const MAX_TEXT: usize = 400;

/// `s` cut to at most `MAX_TEXT` bytes (on a character boundary), marked with `…`.
fn clip_text(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The source as rendered: every line longer than `MAX_LINE` cut to a window (around the
/// first span that starts in it, else its beginning) with `…` where text was left out, so
/// the renderer never lays out a megabyte line (miette panics past column 65,535 and
/// takes quadratic time). Line numbers are unchanged; offsets map through `map`.
struct Clipped {
    text: String,
    /// For each clipped line: its start, the window kept, and where the window begins in
    /// `text`; lines between keep their offsets shifted by what earlier lines lost.
    cuts: Vec<Cut>,
}

struct Cut {
    line_start: usize,
    line_end: usize,
    keep: (usize, usize),
    new_keep_start: usize,
    new_line_end: usize,
}

impl Clipped {
    fn new(text: &str, spans: &[Span]) -> Clipped {
        if text.lines().all(|l| l.len() <= MAX_LINE) {
            return Clipped {
                text: text.to_string(),
                cuts: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len().min(1 << 20));
        let mut cuts = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            let end = start + body.len();
            if body.len() <= MAX_LINE {
                out.push_str(line);
            } else {
                let focus = spans
                    .iter()
                    .map(|s| s.start)
                    .find(|&o| o >= start && o <= end)
                    .unwrap_or(start);
                let boundary = |mut o: usize, up: bool| {
                    while !text.is_char_boundary(o) {
                        if up { o += 1 } else { o -= 1 }
                    }
                    o
                };
                let lo = boundary(focus.saturating_sub(MAX_LINE / 3).max(start), false);
                let hi = boundary((lo + MAX_LINE).min(end), false);
                if lo > start {
                    out.push('…');
                }
                let new_keep_start = out.len();
                out.push_str(&text[lo..hi]);
                if hi < end {
                    out.push('…');
                }
                let new_line_end = out.len();
                out.push_str(&line[body.len()..]);
                cuts.push(Cut {
                    line_start: start,
                    line_end: end,
                    keep: (lo, hi),
                    new_keep_start,
                    new_line_end,
                });
            }
            start += line.len();
        }
        Clipped { text: out, cuts }
    }

    /// Where offset `o` of the original text is in the clipped one.
    fn map(&self, o: usize) -> usize {
        // The last cut line starting at or before `o`.
        let k = self.cuts.partition_point(|c| c.line_start <= o);
        if k == 0 {
            return o;
        }
        let c = &self.cuts[k - 1];
        if o > c.line_end {
            // After the cut line: shifted by what it lost.
            return o - c.line_end + c.new_line_end;
        }
        if o < c.keep.0 {
            c.new_keep_start
        } else if o > c.keep.1 {
            c.new_line_end
        } else {
            c.new_keep_start + (o - c.keep.0)
        }
    }
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
