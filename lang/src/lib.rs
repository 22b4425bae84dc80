//! nnc's language front end: source text to a checked program and its tensor IR.
//!
//! ```text
//! text --syntax--> ast --resolve--> (names, recursion, returns) --elab--> nnc_ir::Module
//! ```
//!
//! **Invariant:** checking never panics on user input and collects every error it can:
//! `check` returns all diagnostics, each with a span into the user's text.

#![warn(missing_docs)]

pub mod ast;
mod check;
pub mod diagnostics;
mod elab;
mod errors;
pub mod ide;
mod limits;
pub mod names;
pub mod print;
mod resolve;
mod syntax;

pub use check::{Checked, PRELUDE_SRC, TrainSpec, check, parse, prelude};
pub use diagnostics::{Diagnostic, Sources, Span, render};
pub use elab::{CallSpec, NOISE_KEY, Static};
pub use errors::{internal, not_utf8};
pub use limits::{MAX_NESTING, MAX_OPERATORS};
