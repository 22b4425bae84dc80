//! Prints a syntax tree as canonical source text, for `nnc ir --stage ast`.
//!
//! The output is valid nnc source: parsing it and printing again gives the same text.
//! Parentheses are printed where the source had them, so the tree is reproduced exactly.

use std::fmt::Write;

use crate::ast::*;

/// Prints a whole program.
pub fn program(p: &Program) -> String {
    Printer::new("").program(p)
}

/// Formats source text: the canonical printing of its syntax tree with the source's
/// comments (each before the statement it preceded, or after the one it ended the line
/// of) and its blank lines between statements and items (one at most). `src` must be the
/// text `p` was parsed from. Formatting the result again gives it unchanged.
pub fn format(src: &str, p: &Program) -> String {
    let mut out = Printer::new(src).program(p);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// A `#` comment of the source: where it starts and its text (without the newline).
struct Comment {
    at: usize,
    text: String,
}

/// The comments of `src`, in order (a `#` inside a string is not one).
fn comments(src: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_str = false;
    let mut it = src.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => in_str = !in_str,
            '\n' => in_str = false,
            '#' if !in_str => {
                let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
                out.push(Comment {
                    at: i,
                    text: src[i..end].trim_end().to_string(),
                });
                while it.peek().is_some_and(|&(j, _)| j < end) {
                    it.next();
                }
            }
            _ => {}
        }
    }
    out
}

struct Printer<'s> {
    src: &'s str,
    comments: Vec<Comment>,
    next: usize,
    /// Where the last printed thing ended in the source.
    last: usize,
}

impl<'s> Printer<'s> {
    fn new(src: &'s str) -> Self {
        Printer {
            src,
            comments: comments(src),
            next: 0,
            last: 0,
        }
    }

    /// Whether the source has a blank line between `from` and `to`.
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let gap = self.src.get(from..to).unwrap_or("");
        gap.split('\n').skip(1).collect::<Vec<_>>().len() >= 2
            && gap.lines().skip(1).any(|l| l.trim().is_empty())
    }

    /// The comments before source offset `before`, each on its own line at `pad`, with
    /// the source's blank lines kept (between items and statements, not after an opening
    /// brace: `first`).
    fn leading(&mut self, out: &mut String, before: usize, pad: &str, mut first: bool) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.at < before) {
            let (at, text) = (c.at, c.text.clone());
            if !first && self.blank_between(self.last, at) {
                out.push('\n');
            }
            writeln!(out, "{pad}{text}").unwrap();
            self.last = at + text.len();
            self.next += 1;
            first = false;
        }
        if !first && self.blank_between(self.last, before) {
            out.push('\n');
        }
    }

    /// A comment on the same source line after offset `end`, as `  # ..`.
    fn trailing(&mut self, out: &mut String, end: usize) {
        if let Some(c) = self.comments.get(self.next)
            && c.at >= end
            && !self.src[end..c.at].contains('\n')
        {
            write!(out, "  {}", c.text).unwrap();
            self.last = c.at + c.text.len();
            self.next += 1;
        } else {
            self.last = self.last.max(end);
        }
    }

    fn program(&mut self, p: &Program) -> String {
        let mut out = String::new();
        for (i, item) in p.items.iter().enumerate() {
            let span = match item {
                Item::Layer(f) | Item::Model(f) => f.span,
                Item::Train(t) => t.span,
                Item::Rule(r) => r.span,
            };
            if i > 0 && (self.comments.is_empty() || !self.blank_between(self.last, span.start)) {
                out.push('\n');
            }
            self.leading(&mut out, span.start, "", i == 0);
            self.last = span.start;
            match item {
                Item::Layer(f) => self.fn_def(&mut out, "layer", f),
                Item::Model(f) => self.fn_def(&mut out, "model", f),
                Item::Train(t) => {
                    write!(
                        out,
                        "train {}({}) ",
                        t.model.name,
                        params(&t.params, self.src)
                    )
                    .unwrap();
                    self.block(&mut out, &t.body, t.span.end);
                }
                Item::Rule(r) => {
                    write!(
                        out,
                        "rule {}({}) for ({}, {}) ",
                        r.name.name,
                        params(&r.params, self.src),
                        r.weight.name,
                        r.grad.name
                    )
                    .unwrap();
                    self.block(&mut out, &r.body, r.span.end);
                }
            }
        }
        self.leading(&mut out, usize::MAX, "", false);
        out
    }

    fn fn_def(&mut self, out: &mut String, kw: &str, f: &FnDef) {
        write!(out, "{kw} {}({})", f.name.name, params(&f.params, self.src)).unwrap();
        if let Some(r) = &f.ret {
            write!(out, " -> {}", type_ann(r, self.src)).unwrap();
        }
        out.push(' ');
        self.block(out, &f.body, f.span.end);
    }

    /// A top-level block ending (with its `}`) at source offset `end`, then a newline.
    fn block(&mut self, out: &mut String, body: &[Stmt], end: usize) {
        self.nested(out, body, 1, end);
        self.trailing(out, end);
        out.push('\n');
    }

    /// A block's statements at `depth` levels of indentation, braces included (no newline
    /// after the closing brace), which is at source offset `end - 1`.
    fn nested(&mut self, out: &mut String, body: &[Stmt], depth: usize, end: usize) {
        out.push('{');
        let pad = "    ".repeat(depth);
        let open = self.last;
        let mut first = true;
        // A comment after the opening brace, on its line.
        if let Some(s) = body.first() {
            self.trailing(out, open.min(s.span().start));
        }
        out.push('\n');
        for s in body {
            self.leading(out, s.span().start, &pad, first);
            first = false;
            out.push_str(&pad);
            match s {
                Stmt::Assign { name, value, .. } => {
                    write!(out, "{} = {}", name.name, expr_with(value, self.src)).unwrap()
                }
                Stmt::Param {
                    trainable,
                    name,
                    ty,
                    init,
                    ..
                } => {
                    let kw = if *trainable { "param" } else { "buffer" };
                    write!(out, "{kw} {}: {}", name.name, type_ann(ty, self.src)).unwrap();
                    if let Some(i) = init {
                        write!(out, " = {}", expr_with(i, self.src)).unwrap();
                    }
                }
                Stmt::State { name, init, .. } => {
                    write!(out, "state {}", name.name).unwrap();
                    if let Some(i) = init {
                        write!(out, " = {}", expr_with(i, self.src)).unwrap();
                    }
                }
                Stmt::Return { value, .. } => {
                    write!(out, "return {}", expr_with(value, self.src)).unwrap()
                }
                Stmt::Grad { dy, body, span } => {
                    write!(out, "grad ({}) ", dy.name).unwrap();
                    self.last = span.start;
                    self.nested(out, body, depth + 1, span.end);
                }
                Stmt::GradAssign { target, value, .. } => {
                    write!(out, "{}.grad = {}", target.name, expr_with(value, self.src)).unwrap()
                }
                Stmt::Yield { name, value, .. } => {
                    write!(out, "yield {} = {}", name.name, expr_with(value, self.src)).unwrap()
                }
                Stmt::For {
                    var,
                    iter,
                    body,
                    span,
                } => {
                    write!(out, "for {} in {} ", var.name, expr_with(iter, self.src)).unwrap();
                    self.last = iter.span.end;
                    self.nested(out, body, depth + 1, span.end);
                }
                Stmt::If {
                    cond,
                    then,
                    els,
                    span,
                } => {
                    write!(out, "if {} ", expr_with(cond, self.src)).unwrap();
                    self.last = cond.span.end;
                    // The then-block ends where the else-block's first statement starts.
                    let then_end = els.first().map_or(span.end, |e| e.span().start);
                    self.nested(out, then, depth + 1, then_end);
                    if !els.is_empty() {
                        out.push_str(" else ");
                        self.nested(out, els, depth + 1, span.end);
                    }
                }
            }
            self.trailing(out, s.span().end);
            out.push('\n');
        }
        // Comments before the closing brace.
        self.leading(out, end.saturating_sub(1), &pad, first);
        out.push_str(&"    ".repeat(depth - 1));
        out.push('}');
        self.last = self.last.max(end);
    }
}

fn params(ps: &[ParamDef], src: &str) -> String {
    let parts: Vec<String> = ps
        .iter()
        .map(|p| {
            let mut s = p.name.name.clone();
            if let Some(t) = &p.ty {
                write!(s, ": {}", type_ann(t, src)).unwrap();
            }
            if let Some(d) = &p.default {
                write!(s, " = {}", expr_with(d, src)).unwrap();
            }
            s
        })
        .collect();
    parts.join(", ")
}

fn type_ann(t: &TypeAnn, src: &str) -> String {
    match t {
        TypeAnn::Scalar(i) => i.name.clone(),
        TypeAnn::Tensor { dtype, dims, .. } => {
            let ds: Vec<String> = dims.iter().map(|d| expr_with(d, src)).collect();
            format!("{}[{}]", dtype.name, ds.join(", "))
        }
    }
}

/// Prints one expression.
pub fn expr(e: &Expr) -> String {
    expr_with(e, "")
}

/// Prints one expression; with the source text it was parsed from, numbers are spelled
/// as written there (`1e-3` stays `1e-3`).
fn expr_with(e: &Expr, src: &str) -> String {
    let expr = |x: &Expr| expr_with(x, src);
    if matches!(e.kind, ExprKind::Int(_) | ExprKind::Float(_))
        && let Some(text) = src.get(e.span.start..e.span.end)
    {
        return text.to_string();
    }
    match &e.kind {
        ExprKind::Int(i) => i.to_string(),
        ExprKind::Float(f) => format!("{f:?}"),
        ExprKind::Str(s) => format!("\"{s}\""),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Neg(x) => format!("-{}", expr(x)),
        ExprKind::Paren(x) => format!("({})", expr(x)),
        ExprKind::Binary { op, lhs, rhs } => format!("{} {} {}", expr(lhs), op.symbol(), expr(rhs)),
        ExprKind::List(xs) => {
            let parts: Vec<String> = xs.iter().map(expr).collect();
            format!("[{}]", parts.join(", "))
        }
        ExprKind::Call { callee, args } => {
            let parts: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr(&a.value)),
                    None => expr(&a.value),
                })
                .collect();
            format!("{}({})", callee.name, parts.join(", "))
        }
    }
}
