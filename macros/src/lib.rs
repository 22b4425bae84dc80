//! `model!` and `include_model!`: nnc's language inside Rust.
//!
//! The macro is thin. It prints the tokens back to source text, remembering which byte
//! range each token became, and hands the text to the one front end (`nnc_lang::check`).
//! Diagnostics come back with byte spans, which the span map turns into the tokens'
//! spans, so `cargo build` reports each error on the offending tokens with the CLI's
//! message and help. A program that checks becomes one typed struct per model, a thin
//! shell over `nnc::Net` holding the source text.

use std::fmt::Write as _;

use proc_macro2::{Delimiter, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{format_ident, quote};

/// Source text rebuilt from tokens, with the span of each token's bytes.
#[derive(Default)]
struct Mapped {
    text: String,
    spans: Vec<(usize, usize, Span)>,
}

impl Mapped {
    fn push(&mut self, s: &str, span: Span, space_after: bool) {
        let start = self.text.len();
        self.text.push_str(s);
        self.spans.push((start, self.text.len(), span));
        if space_after {
            self.text.push(' ');
        }
    }

    fn tokens(&mut self, ts: TokenStream) {
        for tt in ts {
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    if !open.is_empty() {
                        self.push(open, g.span_open(), true);
                    }
                    self.tokens(g.stream());
                    if !close.is_empty() {
                        self.push(close, g.span_close(), true);
                    }
                    if g.delimiter() == Delimiter::Brace {
                        self.text.push('\n');
                    }
                }
                TokenTree::Punct(p) => {
                    let joint = p.spacing() == Spacing::Joint;
                    self.push(&p.as_char().to_string(), p.span(), !joint);
                }
                TokenTree::Ident(i) => self.push(&i.to_string(), i.span(), true),
                TokenTree::Literal(l) => self.push(&l.to_string(), l.span(), true),
            }
        }
    }

    /// The spans of the first and last tokens overlapping a byte range.
    fn find(&self, start: usize, end: usize) -> Option<(Span, Span)> {
        let end = end.max(start + 1);
        let hits: Vec<Span> = self
            .spans
            .iter()
            .filter(|(s, e, _)| *s < end && start < *e)
            .map(|(_, _, sp)| *sp)
            .collect();
        if let (Some(first), Some(last)) = (hits.first(), hits.last()) {
            return Some((*first, *last));
        }
        // An empty span (end of input): the token just before it.
        self.spans
            .iter()
            .rev()
            .find(|(_, e, _)| *e <= start)
            .map(|(_, _, sp)| (*sp, *sp))
    }
}

/// `compile_error!` spanning `start..end`, as syn does it: the path carries the first
/// span and the braces the last, so rustc underlines the whole range on stable.
fn compile_error(start: Span, end: Span, msg: &str) -> TokenStream {
    let colon = |s: Spacing, span: Span| {
        let mut p = Punct::new(':', s);
        p.set_span(span);
        TokenTree::Punct(p)
    };
    let mut bang = Punct::new('!', Spacing::Alone);
    bang.set_span(start);
    let mut lit = Literal::string(msg);
    lit.set_span(end);
    let mut group = proc_macro2::Group::new(Delimiter::Brace, TokenTree::Literal(lit).into());
    group.set_span(end);
    [
        colon(Spacing::Joint, start),
        colon(Spacing::Alone, start),
        TokenTree::Ident(Ident::new("core", start)),
        colon(Spacing::Joint, start),
        colon(Spacing::Alone, start),
        TokenTree::Ident(Ident::new("compile_error", start)),
        TokenTree::Punct(bang),
        TokenTree::Group(group),
    ]
    .into_iter()
    .collect()
}

/// The message of a diagnostic as rustc shows it: code and message, then the labels and
/// help that a single span cannot carry.
fn message(d: &nnc_lang::Diagnostic, text: &str, prelude: &str, where_: Option<&str>) -> String {
    let mut m = format!("{}: {}", d.code, d.message);
    if let Some(w) = where_ {
        let _ = write!(m, "\n  --> {w}");
    }
    let snippet = |s: nnc_lang::Span| {
        let src = if s.src == nnc_lang::diagnostics::PRELUDE {
            prelude
        } else {
            text
        };
        src.get(s.start..s.end.min(src.len()))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !d.primary.1.is_empty() {
        let _ = write!(
            m,
            "\n  = note: {} (`{}`)",
            d.primary.1,
            snippet(d.primary.0)
        );
    }
    for (s, label) in &d.labels {
        let origin = if s.src == nnc_lang::diagnostics::PRELUDE {
            "in the prelude: "
        } else {
            ""
        };
        let _ = write!(m, "\n  = note: {origin}{label} (`{}`)", snippet(*s));
    }
    if let Some(h) = &d.help {
        let _ = write!(m, "\n  = help: {h}");
    }
    m
}

/// Describes a model in nnc's language inside Rust; see the crate `nnc`.
#[proc_macro]
pub fn model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let mut mapped = Mapped::default();
    mapped.tokens(input.into());
    let base = quote! { ::core::env!("CARGO_MANIFEST_DIR") };
    match nnc_lang::check(&mapped.text) {
        Err(diags) => diags
            .iter()
            .map(|d| {
                let s = d.span();
                let (a, b) = mapped
                    .find(s.start, s.end)
                    .unwrap_or((Span::call_site(), Span::call_site()));
                compile_error(a, b, &message(d, &mapped.text, nnc_lang::PRELUDE_SRC, None))
            })
            .collect::<TokenStream>()
            .into(),
        Ok(checked) => generate(&checked, &mapped.text, base, quote! {}).into(),
    }
}

/// Like `model!`, for a model kept in a `.nn` file (a path relative to the crate's root).
/// Errors in the file are reported on the path, with the file's line and column.
#[proc_macro]
pub fn include_model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input: TokenStream = input.into();
    let mut iter = input.clone().into_iter();
    let (lit, span) = match (iter.next(), iter.next()) {
        (Some(TokenTree::Literal(l)), None) => (l.to_string(), l.span()),
        _ => {
            return compile_error(
                Span::call_site(),
                Span::call_site(),
                "include_model! takes one string: the path of a .nn file, relative to the crate's root",
            )
            .into();
        }
    };
    let Some(rel) = lit.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return compile_error(
            span,
            span,
            "expected a string literal: the path of a .nn file",
        )
        .into();
    };
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let path = std::path::Path::new(&root).join(rel);
    let src = match std::fs::read(&path) {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => s,
            Err(_) => {
                return compile_error(span, span, &format!("`{rel}` is not UTF-8 text")).into();
            }
        },
        Err(e) => {
            return compile_error(
                span,
                span,
                &format!("cannot read `{}`: {e}", path.display()),
            )
            .into();
        }
    };
    let dir = std::path::Path::new(rel)
        .parent()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let base = quote! { ::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #dir) };
    let abs = path.to_string_lossy().to_string();
    // Rebuild when the file changes.
    let track = quote! { const _: &str = ::core::include_str!(#abs); };
    match nnc_lang::check(&src) {
        Err(diags) => diags
            .iter()
            .map(|d| {
                let (line, col) = line_col(&src, d.span().start);
                let w = format!("{rel}:{line}:{col}");
                compile_error(
                    span,
                    span,
                    &message(d, &src, nnc_lang::PRELUDE_SRC, Some(&w)),
                )
            })
            .collect::<TokenStream>()
            .into(),
        Ok(checked) => generate(&checked, &src, base, track).into(),
    }
}

fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// A Rust identifier for a language name (dots and keywords made safe).
fn rust_ident(name: &str) -> Ident {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else",
        "enum", "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match",
        "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
        "trait", "true", "try", "type", "unsafe", "use", "where", "while", "yield",
    ];
    let s = name.replace('.', "_");
    if KEYWORDS.contains(&s.as_str()) {
        format_ident!("{}_", s)
    } else {
        format_ident!("{}", s)
    }
}

fn generate(
    checked: &nnc_lang::Checked,
    src: &str,
    base: TokenStream,
    track: TokenStream,
) -> TokenStream {
    let mut out = track;
    for f in checked
        .module
        .funcs
        .iter()
        .filter(|f| !f.name.contains('.'))
    {
        let name = &f.name;
        let ty = format_ident!("{}", name);
        let xs: Vec<Ident> = f.inputs.iter().map(|a| rust_ident(&a.name)).collect();
        let in_doc: Vec<String> = f
            .inputs
            .iter()
            .map(|a| format!("`{}: {}`", a.name, a.ty))
            .collect();
        let out_ty = f
            .output_types()
            .first()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let fwd_doc = format!("The forward pass: {} to `{out_ty}`.", in_doc.join(", "));
        let accessors = f.params.iter().enumerate().map(|(i, p)| {
            let m = rust_ident(&p.name);
            let doc = format!("Parameter `{}: {}`.", p.name, p.ty);
            quote! {
                #[doc = #doc]
                pub fn #m(&self) -> &::nnc::Tensor { self.net.param_at(#i) }
            }
        });
        let train = checked.trains.iter().find(|t| &t.model == name).map(|_| {
            let loss = checked
                .module
                .func(&nnc_ir::Role::Loss.name(name))
                .expect("a trained model has a loss");
            // The labels; the noise key of a model that draws noise is the session's.
            let labels: Vec<_> = loss.inputs[f.inputs.len()..].iter().filter(|a| a.name != nnc_lang::NOISE_KEY).collect();
            let ys: Vec<Ident> = labels.iter().map(|a| rust_ident(&a.name)).collect();
            let y_doc: Vec<String> = labels.iter().map(|a| format!("`{}: {}`", a.name, a.ty)).collect();
            let step_doc = format!("One training step on a batch ({}; {}); returns the loss.", in_doc.join(", "), y_doc.join(", "));
            quote! {
                #[doc = #step_doc]
                pub fn train_step(&mut self, #(#xs: &::nnc::Tensor,)* #(#ys: &::nnc::Tensor),*) -> ::nnc::Result<f32> {
                    self.net.train_step(&[#(#xs,)* #(#ys),*])
                }
                /// Trains `epochs` more epochs over `data` with the train block's rules.
                pub fn fit(&mut self, data: &::nnc::Dataset, epochs: usize) -> ::nnc::Result<::std::vec::Vec<::nnc::Metrics>> {
                    self.net.fit(data, epochs)
                }
                /// Mean loss (and accuracy for classifiers) over `data`.
                pub fn evaluate(&self, data: &::nnc::Dataset) -> ::nnc::Result<::nnc::Metrics> {
                    self.net.evaluate(data)
                }
                /// The data declared in the train block, split and normalized as declared:
                /// `(train, test)` (normalization statistics are fitted on the training rows
                /// and saved with the model).
                pub fn data(&mut self) -> ::nnc::Result<(::nnc::Dataset, ::core::option::Option<::nnc::Dataset>)> {
                    self.net.data()
                }
            }
        });
        let struct_doc = format!("Model `{name}`, generated by nnc from its description.");
        out.extend(quote! {
            #[doc = #struct_doc]
            #[derive(Clone, Debug)]
            pub struct #ty {
                net: ::nnc::Net,
            }

            impl #ty {
                /// The model's source text, as checked at compile time.
                pub const SOURCE: &'static str = #src;

                /// A fresh model, parameters initialized as declared from `seed`.
                pub fn new(seed: u64) -> Self {
                    match ::nnc::Net::new(Self::SOURCE, #name, #base, seed) {
                        Ok(net) => Self { net },
                        // The source checked when the macro expanded.
                        Err(e) => ::core::panic!("nnc: {} (a bug in nnc)", e),
                    }
                }

                #[doc = #fwd_doc]
                pub fn forward(&mut self, #(#xs: &::nnc::Tensor),*) -> ::nnc::Result<::nnc::Tensor> {
                    self.net.forward(&[#(#xs),*])
                }

                #train

                /// Writes a checkpoint, the same format as `nnc train`.
                pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::nnc::Result<()> {
                    self.net.save(path)
                }

                /// Loads a checkpoint written by `save` or by `nnc train`.
                pub fn load(&mut self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::nnc::Result<()> {
                    self.net.load(path)
                }

                /// Every parameter with its name (`h1.w`), in declaration order.
                pub fn params(&self) -> ::std::vec::Vec<(&str, &::nnc::Tensor)> {
                    self.net.params()
                }

                /// The model's run-time state.
                pub fn net(&self) -> &::nnc::Net {
                    &self.net
                }

                #(#accessors)*
            }
        });
    }
    out
}
