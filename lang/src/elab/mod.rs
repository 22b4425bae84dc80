//! Elaboration: checks types and shapes by evaluating each model over abstract tensors, and
//! lowers it to the tensor IR as it goes.
//!
//! Layers are inlined at each call, with their dimension names bound to the argument's
//! sizes (`x: f32[B, D]` binds `B` and `D`), so a layer is checked at every shape it is used
//! with, and an error inside a prelude layer is reported at the user's call. Static values
//! (integers, floats, dimension names) are computed here; only tensors become IR nodes.
//! Implicit broadcasting in the language becomes explicit `reshape`/`broadcast` nodes.
//!
//! One `Elab` per function being built, its methods split by concern: `values.rs` (static
//! values, broadcasting, folding), `expr.rs` (expressions and call routing), `layers.rs`
//! (inlining, naming, parameters), `types.rs` (annotations), `control.rs` (statements,
//! `for`/`if`, `steps` loops, grad blocks, source lines), `prims.rs` (the op table's
//! primitives by class), `config.rs` (train-block calls). This file holds the state.

mod config;
mod control;
mod expr;
mod layers;
mod prims;
mod types;
mod values;

use std::collections::{HashMap, HashSet};

use nnc_ir::{
    Attr, Class, DType, DTypes, Dim, Func, Init, Op, ParamKind, Shape, Sig, TensorType, Value,
};

use crate::ast::*;
use crate::diagnostics::{Diagnostic, PRELUDE, Span, USER};
use crate::errors;
use crate::limits::{MAX_STATEMENTS, MAX_UNROLL};
use crate::names::{self, INITIALIZERS};
use crate::resolve::Defs;

/// A static value of the train configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Static {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Static>),
}

/// A named call with its evaluated keyword arguments (`adam(lr = 0.001)`).
#[derive(Clone, Debug, PartialEq)]
pub struct CallSpec {
    /// The called name.
    pub name: String,
    /// Arguments by name, in the callee's declared order, defaults filled in where known.
    pub args: Vec<(String, Static)>,
}

/// The value of an expression during elaboration.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Tensor(Value),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Dim(String),
    DType(DType),
    List(Vec<Val>),
    Init(String, Vec<(String, f64)>),
    Call(CallSpec),
    /// Already reported; anything computed from it is silently an error too.
    Error,
}

type Scope = HashMap<String, Val>;

/// The input through which the training driver passes each step's noise key (`random`).
pub const NOISE_KEY: &str = "noise_key";

/// One layer instance on the inlining stack, for parameter naming and error context.
struct Frame<'d> {
    /// The name of the caller's statement that made this instance (`h1` in `h1 = dense(..)`).
    base: String,
    /// The dotted path, once a parameter needed it.
    path: Option<String>,
    /// The statement being elaborated in this frame.
    stmt: String,
    /// The buffers this instance declared: their names and values.
    buffers: Vec<(Ident, Value)>,
    /// The tensor inputs the instance was called with, by parameter name.
    inputs: Vec<(String, Value)>,
    /// The trained parameters it declared itself.
    params: Vec<(String, Value)>,
    /// How many parameters the function had when the instance began.
    params_before: usize,
    /// Its `grad` block, with the names in scope where it stands, until `return`.
    grad: Option<(&'d Stmt, Scope)>,
    /// The layer's name.
    layer: String,
}

impl Frame<'_> {
    fn new(layer: &str, base: String, path: Option<String>, params_before: usize) -> Self {
        Frame {
            base,
            path,
            stmt: "out".into(),
            buffers: Vec::new(),
            inputs: Vec::new(),
            params: Vec::new(),
            params_before,
            grad: None,
            layer: layer.to_string(),
        }
    }
}

pub(crate) struct Elab<'a, 'd> {
    pub defs: &'d Defs<'d>,
    pub func: Func,
    pub errors: &'a mut Vec<Diagnostic>,
    frames: Vec<Frame<'d>>,
    used: HashSet<String>,
    /// The user's call into the prelude, where prelude errors are reported.
    site: Option<(Span, String)>,
    /// User call sites of the user layers being inlined.
    calls: Vec<(Span, String)>,
    /// The value of `training`: true while building the training loss, false for the
    /// forward pass and evaluation.
    pub training: bool,
    /// Whether anything read `training` (the model then has an inference-mode loss too).
    pub read_training: bool,
    /// Calls of `random` so far: each gets its own stream.
    randoms: u32,
    /// New values of buffers, by buffer: what their names held when their layer ended.
    pub buffer_updates: Vec<(Value, Value)>,
    /// Statements elaborated so far, against `MAX_STATEMENTS`.
    statements: u64,
    /// The user's source line of each node (0 where none is known yet).
    pub lines: Vec<usize>,
    /// The source offset of the model's top-level statement that made each node.
    pub top: Vec<usize>,
    /// How many `for`/`if` bodies are being elaborated inside the current frame's.
    nesting: u32,
    /// The values each enclosing `steps` loop's body yields, innermost last.
    yields: Vec<Vec<(Ident, Val)>>,
    /// The noise each enclosing `steps` loop's body draws, innermost last: a stand-in for
    /// one step's draw, its shape and its stream. The loop draws all its steps' noise
    /// before it runs and steps through it like a sequence, so every step gets its own.
    noise: Vec<Vec<(Value, Vec<Dim>, Attr)>>,
}

impl<'a, 'd> Elab<'a, 'd> {
    pub fn new(defs: &'d Defs<'d>, func: Func, errors: &'a mut Vec<Diagnostic>) -> Self {
        let used = func.inputs.iter().map(|a| a.name.clone()).collect();
        Elab {
            defs,
            func,
            errors,
            frames: vec![Frame::new("", String::new(), Some(String::new()), 0)],
            used,
            site: None,
            calls: Vec::new(),
            training: false,
            read_training: false,
            randoms: 0,
            buffer_updates: Vec::new(),
            statements: 0,
            lines: Vec::new(),
            top: Vec::new(),
            nesting: 0,
            yields: Vec::new(),
            noise: Vec::new(),
        }
    }

    fn report(&mut self, mut d: Diagnostic) {
        if d.span().src == PRELUDE {
            if let Some((site, name)) = &self.site {
                d.labels.retain(|(s, _)| s.src != PRELUDE);
                d.help = Some(match d.help {
                    Some(h) => format!("{h}\n(the error is inside the prelude's `{name}`)"),
                    None => format!("the error is inside the prelude's `{name}`"),
                });
                d.primary = (*site, format!("in this call of `{name}`"));
            }
        } else if let Some((site, name)) = self.calls.last() {
            let inside = d.span().start >= site.start && d.span().end <= site.end;
            if !inside {
                d.labels.push((*site, format!("in this call of `{name}`")));
            }
        }
        self.errors.push(d);
    }

    fn ty(&self, v: Value) -> &TensorType {
        self.func.ty(v)
    }

    /// Records what an editor shows over a span of the user's source, when one asked
    /// (`Defs::notes`); the text is made only then.
    pub fn note(&self, span: Span, text: impl FnOnce() -> String) {
        if span.src == USER
            && let Some(notes) = self.defs.notes.borrow_mut().as_mut()
        {
            notes.push((span, text()));
        }
    }

    /// `name: type` for hover.
    pub fn note_value(&self, span: Span, name: &str, v: &Val) {
        self.note(span, || format!("{name}: {}", self.describe(v)));
    }

    pub fn describe(&self, v: &Val) -> String {
        match v {
            Val::Tensor(t) => self.ty(*t).to_string(),
            Val::Int(i) => format!("the integer {i}"),
            Val::Float(f) => format!("the float {f:?}"),
            Val::Bool(b) => format!("the boolean {b}"),
            Val::Str(s) => format!("the string {s:?}"),
            Val::Dim(d) => format!("the symbolic dimension {d}"),
            Val::DType(d) => format!("the element type {d}"),
            Val::List(_) => "a list".into(),
            Val::Init(n, _) => format!("the initializer `{n}`"),
            Val::Call(c) => format!("`{}(...)`", c.name),
            Val::Error => "an error".into(),
        }
    }
}

/// Entry points used by the driver in `check.rs`.
impl Elab<'_, '_> {
    /// Makes a rule's value a vector of the parameter's type: numbers and scalars are
    /// broadcast; anything else is an error.
    pub fn vectorize(&mut self, v: Val, ty: &TensorType, span: Span) -> Val {
        match v {
            Val::Tensor(t) if self.ty(t) == ty => Val::Tensor(t),
            Val::Tensor(t) if self.ty(t).rank() == 0 && self.ty(t).dtype == ty.dtype => {
                Val::Tensor(self.broadcast_to(t, &ty.shape))
            }
            Val::Int(_) | Val::Float(_) => match self.as_tensor_like(&v, ty, span, "=") {
                Some(t) => Val::Tensor(t),
                None => Val::Error,
            },
            Val::Error => Val::Error,
            other => {
                let d = self.describe(&other);
                self.report(errors::kind(
                    span,
                    &format!("a value of the parameter's type {ty}"),
                    &d,
                ));
                Val::Error
            }
        }
    }
}
