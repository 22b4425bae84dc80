//! Elaboration: checks types and shapes by evaluating each model over abstract tensors, and
//! lowers it to the tensor IR as it goes.
//!
//! Layers are inlined at each call, with their dimension names bound to the argument's
//! sizes (`x: f32[B, D]` binds `B` and `D`), so a layer is checked at every shape it is used
//! with, and an error inside a prelude layer is reported at the user's call. Static values
//! (integers, floats, dimension names) are computed here; only tensors become IR nodes.
//! Implicit broadcasting in the language becomes explicit `reshape`/`broadcast` nodes.

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

    // ---- values ----

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

    fn constant(&mut self, value: f64, ty: TensorType) -> Value {
        self.func.push(Op::Const, vec![], Attr::Value(value), ty)
    }

    /// Turns a static number into a tensor of the given type, or checks a tensor.
    fn as_tensor_like(
        &mut self,
        v: &Val,
        like: &TensorType,
        span: Span,
        op: &str,
    ) -> Option<Value> {
        match v {
            Val::Tensor(t) => Some(*t),
            Val::Int(i) => Some(self.constant(*i as f64, like.clone())),
            Val::Float(f) => {
                if !like.dtype.is_float() && f.fract() != 0.0 {
                    self.report(errors::dtype_mismatch(
                        span,
                        op,
                        &like.to_string(),
                        "a float constant",
                    ));
                    return None;
                }
                Some(self.constant(*f, like.clone()))
            }
            Val::Bool(b) => Some(self.constant(f64::from(u8::from(*b)), like.clone())),
            Val::Error => None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a tensor or a number", &d));
                None
            }
        }
    }

    /// Broadcasts `v` to `shape` by numpy's rules: align from the last axis; sizes equal or 1.
    fn broadcast_to(&mut self, v: Value, shape: &Shape) -> Value {
        let ty = self.ty(v).clone();
        if ty.shape == *shape {
            return v;
        }
        let offset = shape.rank() - ty.rank();
        let mut kept = Vec::new();
        let mut dims = Vec::new();
        for (i, d) in ty.shape.dims().iter().enumerate() {
            if *d == shape.0[offset + i] {
                kept.push(d.clone());
                dims.push(offset + i);
            }
        }
        let mut v = v;
        if kept.len() != ty.rank() {
            v = self.func.push(
                Op::Reshape,
                vec![v],
                Attr::None,
                TensorType::new(ty.dtype, Shape(kept)),
            );
        }
        self.func.push(
            Op::Broadcast,
            vec![v],
            Attr::Dims(dims),
            TensorType::new(ty.dtype, shape.clone()),
        )
    }

    fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
        let r = a.rank().max(b.rank());
        let one = Dim::Known(1);
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let da = if i + a.rank() >= r {
                &a.0[i + a.rank() - r]
            } else {
                &one
            };
            let db = if i + b.rank() >= r {
                &b.0[i + b.rank() - r]
            } else {
                &one
            };
            out.push(if da == db || *db == one {
                da.clone()
            } else if *da == one {
                db.clone()
            } else {
                return None;
            });
        }
        Some(Shape(out))
    }

    /// Applies an elementwise primitive to values, broadcasting them to a common shape.
    fn elementwise(&mut self, op: Op, args: &[Val], spans: &[Span], span: Span) -> Val {
        let name = op.mnemonic();
        if args.iter().any(|a| matches!(a, Val::Error)) {
            return Val::Error;
        }
        // All static: fold.
        if args
            .iter()
            .all(|a| matches!(a, Val::Int(_) | Val::Float(_) | Val::Dim(_) | Val::Bool(_)))
        {
            return self.fold(op, args, span);
        }
        // The common type: dtype of the tensors (which must agree), shape broadcast.
        let mut common: Option<TensorType> = None;
        for (i, a) in args.iter().enumerate() {
            let Val::Tensor(t) = a else {
                if !matches!(a, Val::Int(_) | Val::Float(_) | Val::Bool(_)) {
                    let d = self.describe(a);
                    self.report(errors::kind(spans[i], "a tensor or a number", &d));
                    return Val::Error;
                }
                continue;
            };
            // `select`'s condition may have another element type than its branches.
            if op == Op::Select && i == 0 {
                continue;
            }
            let ty = self.ty(*t).clone();
            common = Some(match common {
                None => ty,
                Some(c) => {
                    if c.dtype != ty.dtype {
                        self.report(errors::dtype_mismatch(
                            span,
                            name,
                            &c.to_string(),
                            &ty.to_string(),
                        ));
                        return Val::Error;
                    }
                    match Self::broadcast_shapes(&c.shape, &ty.shape) {
                        Some(s) => TensorType::new(c.dtype, s),
                        None => {
                            self.report(errors::broadcast(
                                span,
                                name,
                                &c.to_string(),
                                &ty.to_string(),
                            ));
                            return Val::Error;
                        }
                    }
                }
            });
        }
        let mut common = match common {
            Some(c) => c,
            // Only the condition of a select is a tensor: branches take f32.
            None => TensorType::scalar(DType::F32),
        };
        if op == Op::Select {
            if let Val::Tensor(c) = &args[0] {
                let cs = self.ty(*c).shape.clone();
                match Self::broadcast_shapes(&cs, &common.shape) {
                    Some(s) => common.shape = s,
                    None => {
                        let ct = self.ty(*c).to_string();
                        self.report(errors::broadcast(span, name, &ct, &common.to_string()));
                        return Val::Error;
                    }
                }
            }
        }
        if op == Op::StopGradient && !common.dtype.is_float() {
            self.report(errors::stop_gradient_int(span, &common.to_string()));
            return Val::Error;
        }
        if op.info().dtypes == DTypes::Float && !common.dtype.is_float() {
            self.report(errors::float_needed(span, name, &common.to_string()));
            return Val::Error;
        }
        let mut operands = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let v = match a {
                Val::Tensor(t) => *t,
                _ => match self.as_tensor_like(a, &common, spans[i], name) {
                    Some(v) => v,
                    None => return Val::Error,
                },
            };
            operands.push(self.broadcast_to(v, &common.shape));
        }
        match self.func.build(op, operands, Attr::None, None) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, name, msg));
                Val::Error
            }
        }
    }

    /// Folds an elementwise op over static numbers.
    fn fold(&mut self, op: Op, args: &[Val], span: Span) -> Val {
        if let Some(Val::Dim(d)) = args.iter().find(|a| matches!(a, Val::Dim(_))) {
            self.report(errors::symbolic_arith(span, d));
            return Val::Error;
        }
        let all_int = args.iter().all(|a| matches!(a, Val::Int(_) | Val::Bool(_)));
        let ints: Vec<i64> = args
            .iter()
            .map(|a| match a {
                Val::Int(i) => *i,
                Val::Bool(b) => i64::from(*b),
                _ => 0,
            })
            .collect();
        let fs: Vec<f64> = args
            .iter()
            .map(|a| match a {
                Val::Int(i) => *i as f64,
                Val::Float(f) => *f,
                Val::Bool(b) => f64::from(u8::from(*b)),
                _ => 0.0,
            })
            .collect();
        if all_int {
            let (a, b) = (ints[0], *ints.get(1).unwrap_or(&0));
            let r = match op {
                Op::Add => a.checked_add(b),
                Op::Sub => a.checked_sub(b),
                Op::Mul => a.checked_mul(b),
                Op::Neg => a.checked_neg(),
                Op::Abs => a.checked_abs(),
                Op::Sign => Some(a.signum()),
                Op::Max => Some(a.max(b)),
                Op::Min => Some(a.min(b)),
                Op::Div if b == 0 => {
                    self.report(errors::div_zero(span));
                    return Val::Error;
                }
                // Exact integer division stays an integer (`D / 2` is a size); otherwise a float.
                Op::Div if a % b == 0 => Some(a / b),
                Op::Pow if (0..=u32::MAX as i64).contains(&b) => a.checked_pow(b as u32),
                _ => None,
            };
            match (r, op) {
                (Some(v), _) => return Val::Int(v),
                (None, Op::Add | Op::Sub | Op::Mul | Op::Neg | Op::Abs | Op::Pow)
                    if !(op == Op::Pow && b < 0) =>
                {
                    self.report(errors::overflow(span));
                    return Val::Error;
                }
                _ => {}
            }
        }
        // Static floats are f64: the op table's definition, unrounded.
        let Some(v) = op.scalar(&fs, DType::F64) else {
            self.report(errors::op_rule(
                span,
                op.mnemonic(),
                format!("`{}` needs a tensor operand", op.mnemonic()),
            ));
            return Val::Error;
        };
        if op.info().class == Class::Compare {
            return Val::Bool(v != 0.0);
        }
        Val::Float(v)
    }

    // ---- expressions ----

    pub fn eval(&mut self, scope: &mut Scope, e: &Expr) -> Val {
        match &e.kind {
            ExprKind::Int(i) => Val::Int(*i),
            ExprKind::Float(f) => Val::Float(*f),
            ExprKind::Str(s) => Val::Str(s.clone()),
            ExprKind::Paren(x) => self.eval(scope, x),
            ExprKind::List(xs) => Val::List(xs.iter().map(|x| self.eval(scope, x)).collect()),
            ExprKind::Name(n) => self.name(scope, n, e.span),
            ExprKind::Neg(x) => {
                let v = self.eval(scope, x);
                self.elementwise(Op::Neg, &[v], &[x.span], e.span)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(scope, lhs);
                let b = self.eval(scope, rhs);
                self.binary(*op, a, b, lhs.span, rhs.span, e.span)
            }
            ExprKind::Call { callee, args } => self.call(scope, callee, args, e.span),
        }
    }

    fn name(&mut self, scope: &Scope, n: &str, span: Span) -> Val {
        if let Some(v) = scope.get(n) {
            self.note_value(span, n, v);
            return v.clone();
        }
        match n {
            "true" => return Val::Bool(true),
            "false" => return Val::Bool(false),
            "training" => {
                self.read_training = true;
                return Val::Bool(self.training);
            }
            _ => {}
        }
        if let Some(d) = DType::from_name(n) {
            return Val::DType(d);
        }
        if INITIALIZERS.iter().any(|(i, _)| *i == n) {
            return self.initializer(n, &[], span);
        }
        // Resolution already reported unknown names; stay silent to avoid cascades.
        if !self.errors.iter().any(|d| d.span() == span) {
            let cands: Vec<&str> = scope.keys().map(|s| s.as_str()).collect();
            let sugg = crate::diagnostics::suggest(n, cands).map(str::to_string);
            self.report(errors::unknown_name(span, n, sugg.as_deref()));
        }
        Val::Error
    }

    fn binary(&mut self, op: BinOp, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> Val {
        let prim = match op {
            BinOp::Add => Op::Add,
            BinOp::Sub => Op::Sub,
            BinOp::Mul => Op::Mul,
            BinOp::Div => Op::Div,
            BinOp::Pow => Op::Pow,
            BinOp::Lt => Op::Lt,
            BinOp::Le => Op::Le,
            BinOp::Gt => Op::Gt,
            BinOp::Ge => Op::Ge,
            BinOp::Eq => Op::Eq,
            BinOp::Ne => Op::Ne,
            BinOp::MatMul => return self.matmul(a, b, sa, sb, span),
        };
        self.elementwise(prim, &[a, b], &[sa, sb], span)
    }

    fn matmul(&mut self, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> Val {
        let (Val::Tensor(x), Val::Tensor(y)) = (&a, &b) else {
            for (v, s) in [(&a, sa), (&b, sb)] {
                if !matches!(v, Val::Tensor(_) | Val::Error) {
                    let d = self.describe(v);
                    self.report(errors::kind(s, "a tensor", &d));
                }
            }
            return Val::Error;
        };
        match self.func.build(Op::MatMul, vec![*x, *y], Attr::None, None) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::matmul(span, msg));
                Val::Error
            }
        }
    }

    fn call(&mut self, scope: &mut Scope, callee: &Ident, args: &[Arg], span: Span) -> Val {
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            let v = self.eval(scope, &a.value);
            vals.push((a.name.clone(), v, a.value.span));
        }
        let name = callee.name.as_str();
        if let Some(def) = self.defs.layers.get(name).copied() {
            let before = self.func.params.len();
            let v = self.instantiate(def, vals, span);
            self.note(callee.span, || self.layer_note(def, before));
            return v;
        }
        if let Some(rule) = self.defs.rules.get(name).copied() {
            let params: Vec<&ParamDef> = rule.params.iter().collect();
            return self.config_call(name, &params, vals, span);
        }
        if let Some((_, kws)) = names::SCHEDULES
            .iter()
            .chain(names::DATA_SOURCES)
            .find(|(n, _)| *n == name)
        {
            return self.static_call(name, kws, vals, span);
        }
        if INITIALIZERS.iter().any(|(n, _)| *n == name) {
            return self.init_call(name, vals, span);
        }
        if name == "size" {
            return self.size(vals, span);
        }
        if name == "shape" {
            let Some(slots) = self.bind_args("shape", &["x"], vals, span) else {
                return Val::Error;
            };
            let Some((x, xs)) = &slots[0] else {
                self.report(errors::missing_arg(span, "shape", "x"));
                return Val::Error;
            };
            let Some(x) = self.tensor_arg(x, *xs) else {
                return Val::Error;
            };
            let dims = self.ty(x).shape.0.clone();
            return Val::List(
                dims.into_iter()
                    .map(|d| match d {
                        Dim::Known(n) => Val::Int(n as i64),
                        Dim::Sym(s) => Val::Dim(s),
                    })
                    .collect(),
            );
        }
        if name == "full" {
            return self.full(vals, span);
        }
        if name == "steps" {
            let why = "`steps(..)` is what a `for` loop steps over (`for x in steps(xs) { .. }`), not a value";
            self.report(errors::steps_arg(span, why));
            return Val::Error;
        }
        if name == "stack" {
            let Some(slots) = self.bind_args("stack", &["xs", "axis"], vals, span) else {
                return Val::Error;
            };
            if slots[0].is_none() {
                self.report(errors::missing_arg(span, "stack", "xs"));
                return Val::Error;
            }
            let spans: Vec<Span> = slots
                .iter()
                .map(|s| s.as_ref().map_or(span, |s| s.1))
                .collect();
            let vals: Vec<Option<Val>> = slots.into_iter().map(|s| s.map(|s| s.0)).collect();
            return self.concat(vals, &spans, span, true);
        }
        if name == "random" {
            return self.random(vals, span);
        }
        if let Some((op, class)) = names::class_of(name) {
            return self.primitive(op, class, vals, span);
        }
        if !self.errors.iter().any(|d| d.span() == callee.span) {
            self.report(errors::unknown_function(callee.span, name, None));
        }
        Val::Error
    }

    /// Binds call arguments to declared parameter names: positional, then by keyword.
    /// Returns one slot per parameter (None where the default applies).
    fn bind_args(
        &mut self,
        callee: &str,
        params: &[&str],
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Option<Vec<Option<(Val, Span)>>> {
        let mut slots: Vec<Option<(Val, Span)>> = vec![None; params.len()];
        let mut ok = true;
        let mut positional = 0;
        for (kw, v, s) in args {
            let idx = match &kw {
                None => {
                    positional += 1;
                    if positional > params.len() {
                        self.report(errors::arity(s, callee, params.len(), positional));
                        ok = false;
                        continue;
                    }
                    positional - 1
                }
                Some(k) => match params.iter().position(|p| *p == k.name) {
                    Some(i) => i,
                    None => {
                        self.report(errors::unknown_kwarg(k.span, callee, &k.name, params));
                        ok = false;
                        continue;
                    }
                },
            };
            if slots[idx].is_some() {
                self.report(errors::arg_twice(kw.map_or(s, |k| k.span), params[idx]));
                ok = false;
                continue;
            }
            slots[idx] = Some((v, s));
        }
        let _ = span;
        ok.then_some(slots)
    }

    // ---- layers ----

    /// A layer's header as written, and the parameters (trainable values) one call of
    /// it made, for hover.
    fn layer_note(&self, def: &FnDef, params_before: usize) -> String {
        let header = crate::ide::header(def.span, self.defs.src);
        // Parameters have known shapes (`param_symbolic` otherwise).
        let count: u128 = self
            .func
            .params
            .get(params_before..)
            .unwrap_or(&[])
            .iter()
            .filter(|p| p.kind == ParamKind::Param)
            .map(|p| p.ty.shape.volume().0)
            .sum();
        let s = if count == 1 { "" } else { "s" };
        let digits = count.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{header}\n\n{grouped} trainable parameter{s} in this call")
    }

    fn instantiate(
        &mut self,
        def: &'d FnDef,
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let pnames: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let Some(slots) = self.bind_args(&def.name.name, &pnames, args, span) else {
            return Val::Error;
        };
        // Error context: prelude errors go to the user's call; user layers get a label.
        let saved_site = self.site.clone();
        let pushed_call = def.span.src == USER && span.src == USER;
        if def.span.src == PRELUDE && span.src == USER {
            self.site = Some((span, def.name.name.clone()));
        }
        if pushed_call {
            self.calls.push((span, def.name.name.clone()));
        }
        let base = self
            .frames
            .last()
            .map(|f| f.stmt.clone())
            .unwrap_or_default();
        let params_before = self.func.params.len();
        self.frames
            .push(Frame::new(&def.name.name, base, None, params_before));
        let result = self.instantiate_body(def, slots, span);
        self.frames.pop();
        if pushed_call {
            self.calls.pop();
        }
        self.site = saved_site;
        result
    }

    fn instantiate_body(
        &mut self,
        def: &'d FnDef,
        slots: Vec<Option<(Val, Span)>>,
        span: Span,
    ) -> Val {
        let mut scope = Scope::new();
        for (p, slot) in def.params.iter().zip(slots) {
            let (v, vspan) = match slot {
                Some(s) => s,
                None => match &p.default {
                    Some(d) => (self.eval(&mut scope, d), d.span),
                    None => {
                        self.report(errors::missing_arg(span, &def.name.name, &p.name.name));
                        return Val::Error;
                    }
                },
            };
            let v = match &p.ty {
                Some(ty) => self.bind_typed(&mut scope, &p.name.name, ty, v, vspan),
                None => v,
            };
            if matches!(v, Val::Error) {
                return Val::Error;
            }
            self.note_value(p.name.span, &p.name.name, &v);
            if let (Val::Tensor(t), Some(f)) = (&v, self.frames.last_mut()) {
                f.inputs.push((p.name.name.clone(), *t));
            }
            scope.insert(p.name.name.clone(), v);
        }
        let ret = self.body(&mut scope, &def.body);
        self.collect_buffer_updates(&scope);
        let Some(ret) = ret else {
            return Val::Error;
        };
        if let (Some(ann), Some(rspan)) = (&def.ret, def.body.last().map(|s| s.span())) {
            self.check_return(&mut scope, ann, &ret, rspan);
        }
        ret
    }

    /// Elaborates statements; returns the returned value (None if there was none, which
    /// resolution reported).
    pub fn body(&mut self, scope: &mut Scope, body: &'d [Stmt]) -> Option<Val> {
        for s in body {
            let before = self.func.nodes.len();
            self.statements += 1;
            if self.statements > MAX_STATEMENTS {
                if self.statements == MAX_STATEMENTS + 1 {
                    self.report(errors::too_many_statements(s.span()));
                }
                return None;
            }
            match s {
                Stmt::Assign { name, value, .. } => {
                    self.set_stmt(&name.name);
                    let v = self.eval(scope, value);
                    self.note_value(name.span, &name.name, &v);
                    scope.insert(name.name.clone(), v);
                }
                Stmt::Param {
                    trainable,
                    name,
                    ty,
                    init,
                    span,
                } => {
                    let kind = if *trainable {
                        ParamKind::Param
                    } else {
                        ParamKind::Buffer
                    };
                    let v = self.param(scope, kind, name, ty, init.as_ref(), *span);
                    self.note(name.span, || {
                        let what = if *trainable { "param" } else { "state" };
                        format!("{what} {}: {}", name.name, self.describe(&v))
                    });
                    if let (Val::Tensor(b), Some(f)) = (&v, self.frames.last_mut()) {
                        if *trainable {
                            f.params.push((name.name.clone(), *b));
                        } else {
                            f.buffers.push((name.clone(), *b));
                        }
                    }
                    scope.insert(name.name.clone(), v);
                }
                Stmt::Return { value, .. } => {
                    self.set_stmt("out");
                    let mut v = self.eval(scope, value);
                    self.mark_lines(before, s.span());
                    let at_top = self.frames.len() == 1 && self.nesting == 0;
                    let grad = self.frames.last_mut().and_then(|f| f.grad.take());
                    if let Some((g, at)) = grad {
                        let before = self.func.nodes.len();
                        v = self.grad_block(v, g, at, value.span);
                        self.mark_lines(before, g.span());
                    }
                    if at_top {
                        self.mark_top(before, s.span());
                    }
                    return Some(v);
                }
                // Elaborated at `return`, once the result's type is known; a grad block
                // in a model was reported by resolution.
                Stmt::Grad { .. } => {
                    if self.frames.len() > 1
                        && let Some(f) = self.frames.last_mut()
                    {
                        f.grad = Some((s, scope.clone()));
                    }
                }
                // Outside a grad block: reported by resolution.
                Stmt::GradAssign { .. } => {}
                Stmt::State { .. } => {}
                Stmt::Yield { name, value, .. } => {
                    let v = self.eval(scope, value);
                    if let Some(ys) = self.yields.last_mut() {
                        ys.retain(|(n, _)| n.name != name.name);
                        ys.push((name.clone(), v));
                    }
                }
                Stmt::For {
                    var, iter, body, ..
                } if crate::resolve::is_steps(iter) => {
                    self.steps_loop(scope, var, iter, body, s.span());
                    if self.statements > MAX_STATEMENTS {
                        return None;
                    }
                }
                Stmt::For {
                    var, iter, body, ..
                } => {
                    let items = match self.eval(scope, iter) {
                        Val::Int(n) if (0..=MAX_UNROLL).contains(&n) => {
                            (0..n).map(Val::Int).collect()
                        }
                        Val::List(items) if items.len() as i64 <= MAX_UNROLL => items,
                        Val::Error => continue,
                        other => {
                            let d = match other {
                                Val::Int(n) => format!("{n} (at most {MAX_UNROLL} iterations)"),
                                other => self.describe(&other),
                            };
                            self.report(errors::static_count(iter.span, &d));
                            continue;
                        }
                    };
                    for item in items {
                        scope.insert(var.name.clone(), item);
                        self.nesting += 1;
                        self.body(scope, body);
                        self.nesting -= 1;
                        if self.statements > MAX_STATEMENTS {
                            return None;
                        }
                    }
                }
                Stmt::If {
                    cond, then, els, ..
                } => {
                    let taken = match self.eval(scope, cond) {
                        Val::Bool(b) => b,
                        Val::Int(i) => i != 0,
                        // Folded comparisons of static numbers (`gt(t, 0)`) give 0.0 or 1.0.
                        Val::Float(f) => f != 0.0,
                        Val::Error => continue,
                        other => {
                            let d = self.describe(&other);
                            self.report(errors::static_condition(cond.span, &d));
                            continue;
                        }
                    };
                    self.nesting += 1;
                    self.body(scope, if taken { then } else { els });
                    self.nesting -= 1;
                }
            }
            self.mark_lines(before, s.span());
            if self.frames.len() == 1 && self.nesting == 0 {
                self.mark_top(before, s.span());
            }
        }
        None
    }

    /// `for x in steps(xs, axis) { .. }`: the body elaborated once, over stand-ins for the
    /// values it carries (names it assigns that hold tensors before the loop) and for one
    /// step of `xs`, then outlined into a scan (`nnc_ir::outline`). After the loop the
    /// carried names hold their last values and each `yield`ed name the stacked steps;
    /// the body's other names are gone.
    fn steps_loop(
        &mut self,
        scope: &mut Scope,
        var: &Ident,
        iter: &'d Expr,
        body: &'d [Stmt],
        span: Span,
    ) {
        let ExprKind::Call { args, .. } = &iter.kind else {
            return;
        };
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            let v = self.eval(scope, &a.value);
            vals.push((a.name.clone(), v, a.value.span));
        }
        let Some(slots) = self.bind_args("steps", &["xs", "axis"], vals, iter.span) else {
            return;
        };
        let xs = match &slots[0] {
            Some((Val::Tensor(x), _)) if self.ty(*x).rank() >= 1 => *x,
            Some((Val::Error, _)) => return,
            Some((other, sp)) => {
                let d = self.describe(other);
                let why = format!("it steps along a tensor of rank 1 or more, not {d}");
                self.report(errors::steps_arg(*sp, &why));
                return;
            }
            None => {
                self.report(errors::missing_arg(iter.span, "steps", "xs"));
                return;
            }
        };
        let xt = self.ty(xs).clone();
        let rank = xt.rank() as i64;
        let axis = match &slots[1] {
            None => 1.min(rank - 1),
            Some((Val::Int(a), _)) if (-rank..rank).contains(a) => a.rem_euclid(rank),
            Some((Val::Error, _)) => return,
            Some((other, sp)) => {
                let d = self.describe(other);
                let why = format!("`axis` must be an axis of {xt}, found {d}");
                self.report(errors::steps_arg(*sp, &why));
                return;
            }
        } as usize;
        // The sequence with its steps first.
        let mut perm: Vec<usize> = vec![axis];
        perm.extend((0..xt.rank()).filter(|&a| a != axis));
        let seq = if axis == 0 {
            xs
        } else {
            match self
                .func
                .build(Op::Transpose, vec![xs], Attr::Perm(perm.clone()), None)
            {
                Ok(v) => v,
                Err(e) => {
                    self.report(errors::op_rule(iter.span, "steps", e));
                    return;
                }
            }
        };
        // What the loop carries: names it assigns that hold tensors now.
        let mut assigned = Vec::new();
        assigned_names(body, &mut assigned);
        let mut carried: Vec<(String, Value)> = Vec::new();
        for n in &assigned {
            match scope.get(n) {
                Some(Val::Tensor(v)) => {
                    if !carried.iter().any(|(c, _)| c == n) {
                        carried.push((n.clone(), *v));
                    }
                }
                None | Some(Val::Error) => {}
                Some(other) => {
                    let d = self.describe(other);
                    let at = assignment(body, n).unwrap_or(span);
                    self.report(errors::static_carry(at, n, &d));
                    return;
                }
            }
        }
        let start = self.func.nodes.len();
        let mut holes = Vec::new();
        let mut inner = scope.clone();
        let step_ty = nnc_ir::TensorType::new(xt.dtype, Shape(self.ty(seq).shape.0[1..].to_vec()));
        for (n, v) in &carried {
            let ty = self.ty(*v).clone();
            let h = self.func.push(Op::LoopVar, vec![], Attr::None, ty);
            holes.push(h);
            inner.insert(n.clone(), Val::Tensor(h));
        }
        let x = self.func.push(Op::LoopVar, vec![], Attr::None, step_ty);
        holes.push(x);
        inner.insert(var.name.clone(), Val::Tensor(x));
        let updates = self.buffer_updates.len();
        self.yields.push(Vec::new());
        self.nesting += 1;
        self.body(&mut inner, body);
        self.nesting -= 1;
        let ys = self.yields.pop().unwrap_or_default();
        if self.statements > MAX_STATEMENTS {
            return;
        }
        let mut ok = self.buffer_updates.len() == updates;
        if !ok {
            self.report(errors::steps_arg(
                span,
                "a layer with buffers (batch norm) cannot run inside it",
            ));
        }
        let mut outs = Vec::new();
        for (n, v) in &carried {
            let before = self.ty(*v).to_string();
            match inner.get(n) {
                Some(Val::Tensor(nv)) if self.ty(*nv).to_string() == before => outs.push(*nv),
                Some(Val::Error) => ok = false,
                other => {
                    let after = match other {
                        Some(Val::Tensor(nv)) => self.ty(*nv).to_string(),
                        Some(o) => self.describe(o),
                        None => "gone".into(),
                    };
                    let at = assignment(body, n).unwrap_or(span);
                    self.report(errors::carry_type(at, n, &before, &after));
                    ok = false;
                }
            }
        }
        let mut yielded = Vec::new();
        for (n, v) in &ys {
            match v {
                Val::Tensor(t) => {
                    outs.push(*t);
                    yielded.push(n.name.clone());
                }
                Val::Error => ok = false,
                other => {
                    let d = self.describe(other);
                    let why = format!("`yield {}` needs a tensor, found {d}", n.name);
                    self.report(errors::steps_arg(n.span, &why));
                    ok = false;
                }
            }
        }
        let mut init: Vec<Value> = carried.iter().map(|(_, v)| *v).collect();
        init.push(seq);
        let name = format!("{}.step", var.name);
        let done = if ok {
            nnc_ir::outline::outline(
                &mut self.func,
                start,
                &holes,
                carried.len(),
                &init,
                &outs,
                &name,
            )
        } else {
            Err(String::new())
        };
        let out = match done {
            Ok(o) => o,
            Err(e) => {
                if !e.is_empty() {
                    self.report(errors::op_rule(span, "steps", e));
                }
                // Drop the body; the names it assigned are errors from here on.
                self.func.nodes.truncate(start);
                self.lines.truncate(start);
                self.top.truncate(start);
                for n in carried
                    .iter()
                    .map(|(n, _)| n.clone())
                    .chain(ys.iter().map(|(n, _)| n.name.clone()))
                {
                    scope.insert(n, Val::Error);
                }
                return;
            }
        };
        // Source lines and top-level statements of the nodes left outside, then the scan's.
        let remap = |v: &mut Vec<usize>, fill: usize| {
            let old = std::mem::take(v);
            let at = |i: usize| old.get(i).copied().unwrap_or(fill);
            let mut new: Vec<usize> = (0..start).map(at).collect();
            new.extend(out.kept.iter().map(|&i| at(i)));
            *v = new;
        };
        remap(&mut self.lines, 0);
        remap(&mut self.top, usize::MAX);
        for (k, (n, _)) in carried.iter().enumerate() {
            scope.insert(n.clone(), Val::Tensor(out.results[k]));
        }
        // Each output with its steps on `axis`.
        for (k, n) in yielded.into_iter().enumerate() {
            let stacked = out.results[carried.len() + k];
            let v = if axis == 0 {
                Val::Tensor(stacked)
            } else {
                let r = self.ty(stacked).rank();
                let mut p: Vec<usize> = (1..r).collect();
                p.insert(axis.min(r - 1), 0);
                match self
                    .func
                    .build(Op::Transpose, vec![stacked], Attr::Perm(p), None)
                {
                    Ok(t) => Val::Tensor(t),
                    Err(e) => {
                        self.report(errors::op_rule(span, "steps", e));
                        Val::Error
                    }
                }
            };
            scope.insert(n, v);
        }
    }

    /// Records that the nodes from `before` on were made by the model's top-level
    /// statement at `span`.
    fn mark_top(&mut self, before: usize, span: Span) {
        if span.src != USER {
            return;
        }
        self.top.resize(self.func.nodes.len(), usize::MAX);
        for t in &mut self.top[before.min(self.func.nodes.len())..] {
            if *t == usize::MAX {
                *t = span.start;
            }
        }
    }

    /// A layer's own backward: `y` returned with the adjoints the grad block `g` gives the
    /// instance's float inputs and parameters, each computed from a cotangent standing for
    /// `y`'s adjoint (`custom_grad`; autodiff substitutes the real adjoint).
    fn grad_block(&mut self, y: Val, g: &'d Stmt, mut scope: Scope, yspan: Span) -> Val {
        let Stmt::Grad { dy, body, span } = g else {
            return y;
        };
        let yv = match y {
            Val::Tensor(v) if self.ty(v).dtype.is_float() => v,
            Val::Error => return Val::Error,
            other => {
                let d = self.describe(&other);
                self.report(errors::grad_result(yspan, &d));
                return Val::Error;
            }
        };
        let Some(frame) = self.frames.last() else {
            return Val::Tensor(yv);
        };
        // Primals: float tensor inputs, then the layer's own parameters.
        let mut primals: Vec<(String, Value)> = frame
            .inputs
            .iter()
            .filter(|(_, v)| self.func.ty(*v).dtype.is_float())
            .cloned()
            .collect();
        primals.extend(frame.params.iter().cloned());
        let ints: Vec<(String, String)> = frame
            .inputs
            .iter()
            .filter(|(_, v)| !self.func.ty(*v).dtype.is_float())
            .map(|(n, v)| (n.clone(), self.func.ty(*v).to_string()))
            .collect();
        let layer = frame.layer.clone();
        let own: HashSet<Value> = frame.params.iter().map(|(_, v)| *v).collect();
        let foreign = (frame.params_before..self.func.params.len())
            .map(|i| Value::Param(i as u32))
            .find(|v| {
                !own.contains(v)
                    && matches!(v, Value::Param(i) if self.func.params[*i as usize].kind == ParamKind::Param)
            });
        if let Some(Value::Param(i)) = foreign {
            let name = self.func.params[i as usize].name.clone();
            self.report(errors::grad_sublayer_param(*span, &layer, &name));
            return Val::Error;
        }
        let yt = self.ty(yv).clone();
        let ct = match self.func.build(Op::Cotangent, vec![], Attr::None, Some(yt)) {
            Ok(v) => v,
            Err(e) => {
                self.report(errors::op_rule(*span, "grad", e));
                return Val::Error;
            }
        };
        scope.insert(dy.name.clone(), Val::Tensor(ct));
        let mut given: HashMap<String, Value> = HashMap::new();
        let mut ok = true;
        for s in body {
            let Stmt::GradAssign { target, value, .. } = s else {
                self.body(&mut scope, std::slice::from_ref(s));
                continue;
            };
            let before = self.func.nodes.len();
            let v = self.eval(&mut scope, value);
            self.mark_lines(before, s.span());
            let Some((_, p)) = primals.iter().find(|(n, _)| *n == target.name) else {
                // Resolution reported names the layer does not have; what is left is an
                // integer input.
                if let Some((_, t)) = ints.iter().find(|(n, _)| *n == target.name) {
                    let why = format!("`{}` is {t}, and integers carry no gradient", target.name);
                    self.report(errors::unknown_adjoint(
                        target.span,
                        &target.name,
                        &why,
                        None,
                    ));
                }
                ok = false;
                continue;
            };
            let pt = self.func.ty(*p).clone();
            match v {
                Val::Tensor(a) if *self.ty(a) == pt => _ = given.insert(target.name.clone(), a),
                Val::Error => ok = false,
                other => {
                    let d = match &other {
                        Val::Tensor(a) => self.ty(*a).to_string(),
                        o => self.describe(o),
                    };
                    self.report(errors::adjoint_type(
                        value.span,
                        &target.name,
                        &pt.to_string(),
                        &d,
                    ));
                    ok = false;
                }
            }
        }
        let missing: Vec<String> = primals
            .iter()
            .filter(|(n, _)| !given.contains_key(n))
            .map(|(n, _)| n.clone())
            .collect();
        if !ok {
            return Val::Error;
        }
        if !missing.is_empty() {
            self.report(errors::missing_adjoint(*span, &layer, &missing));
            return Val::Error;
        }
        let mut args = vec![yv, ct];
        for (n, p) in &primals {
            args.push(*p);
            args.push(given[n]);
        }
        match self.func.build(Op::CustomGrad, args, Attr::None, None) {
            Ok(v) => Val::Tensor(v),
            Err(e) => {
                self.report(errors::op_rule(*span, "grad", e));
                Val::Error
            }
        }
    }

    /// Records the values the current instance's buffer names hold at its end: a buffer
    /// assigned in the layer (`running_mean = ...`) gets that value as its update.
    pub fn collect_buffer_updates(&mut self, scope: &Scope) {
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        for (name, b) in std::mem::take(&mut frame.buffers) {
            let Some(Val::Tensor(v)) = scope.get(&name.name) else {
                continue;
            };
            if *v == b {
                continue;
            }
            let (bt, vt) = (self.func.ty(b).clone(), self.func.ty(*v).clone());
            if bt != vt {
                let d =
                    errors::buffer_type(name.span, &name.name, &bt.to_string(), &vt.to_string());
                self.report(d);
                continue;
            }
            self.buffer_updates.push((b, *v));
        }
    }

    fn set_stmt(&mut self, name: &str) {
        if let Some(f) = self.frames.last_mut() {
            f.stmt = name.to_string();
        }
    }

    /// The dotted path of the current layer instance, allocated on first use so only
    /// layers with parameters take names.
    fn instance_path(&mut self) -> String {
        for i in 0..self.frames.len() {
            if self.frames[i].path.is_some() {
                continue;
            }
            let parent = self.frames[i - 1].path.clone().unwrap_or_default();
            let base = if parent.is_empty() {
                self.frames[i].base.clone()
            } else {
                format!("{parent}.{}", self.frames[i].base)
            };
            let mut path = base.clone();
            let mut n = 2;
            while !self.used.insert(path.clone()) {
                path = format!("{base}_{n}");
                n += 1;
            }
            self.frames[i].path = Some(path);
        }
        self.frames
            .last()
            .and_then(|f| f.path.clone())
            .unwrap_or_default()
    }

    fn param(
        &mut self,
        scope: &mut Scope,
        kind: ParamKind,
        name: &Ident,
        ty: &TypeAnn,
        init: Option<&Expr>,
        span: Span,
    ) -> Val {
        let Some(t) = self.eval_type(scope, ty) else {
            return Val::Error;
        };
        if t.shape.dims().iter().any(|d| d.known().is_none()) {
            self.report(errors::param_symbolic(ty.span(), &t.to_string()));
            return Val::Error;
        }
        let init_val = match init {
            Some(e) => self.eval(scope, e),
            None => Val::Init("zeros".into(), vec![]),
        };
        let init_span = init.map_or(span, |e| e.span);
        let Some(resolved) = self.resolve_init(&init_val, &t, init_span) else {
            return Val::Error;
        };
        let prefix = self.instance_path();
        let mut full = if prefix.is_empty() {
            name.name.clone()
        } else {
            format!("{prefix}.{}", name.name)
        };
        if prefix.is_empty() {
            let base = full.clone();
            let mut n = 2;
            while !self.used.insert(full.clone()) {
                full = format!("{base}_{n}");
                n += 1;
            }
        }
        Val::Tensor(self.func.add_param(kind, full, t, resolved))
    }

    /// Turns an initializer value into a concrete distribution for a parameter of type `t`.
    /// Fans follow PyTorch: rank 2 is `[in, out]` (our dense layout); rank >= 3 is
    /// `[out, in, k...]` (convolution); rank 1 uses its size for both.
    pub fn resolve_init(&mut self, v: &Val, t: &TensorType, span: Span) -> Option<Init> {
        let dims: Vec<f64> = t
            .shape
            .dims()
            .iter()
            .map(|d| d.known().unwrap_or(1) as f64)
            .collect();
        let (fan_in, fan_out) = match dims.as_slice() {
            [] => (1.0, 1.0),
            [n] => (*n, *n),
            [i, o] => (*i, *o),
            [o, i, rest @ ..] => {
                let k: f64 = rest.iter().product();
                (i * k, o * k)
            }
        };
        let (name, args) = match v {
            Val::Init(n, a) => (n.as_str(), a.as_slice()),
            Val::Int(i) => return Some(Init::Fill(*i as f64)),
            Val::Float(f) => return Some(Init::Fill(*f)),
            Val::Error => return None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "an initializer", &d));
                return None;
            }
        };
        let arg = |k: &str| {
            args.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        Some(match name {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "fill" => Init::Fill(arg("value")),
            "normal" => Init::Normal {
                mean: arg("mean"),
                std: arg("std"),
            },
            "uniform" => Init::Uniform {
                lo: arg("lo"),
                hi: arg("hi"),
            },
            "xavier_uniform" | "glorot_uniform" => {
                let a = arg("gain") * (6.0 / (fan_in + fan_out)).sqrt();
                Init::Uniform { lo: -a, hi: a }
            }
            "xavier_normal" | "glorot_normal" => Init::Normal {
                mean: 0.0,
                std: arg("gain") * (2.0 / (fan_in + fan_out)).sqrt(),
            },
            "he_uniform" | "kaiming_uniform" => {
                let a = arg("gain") * (3.0 / fan_in).sqrt();
                Init::Uniform { lo: -a, hi: a }
            }
            // PyTorch's default for nn.Linear and nn.Conv2d weights.
            "fan_in_uniform" => Init::Uniform {
                lo: -1.0 / fan_in.sqrt(),
                hi: 1.0 / fan_in.sqrt(),
            },
            "he_normal" | "kaiming_normal" => Init::Normal {
                mean: 0.0,
                std: arg("gain") / fan_in.sqrt(),
            },
            _ => unreachable!("initializer names come from INITIALIZERS"),
        })
    }

    fn initializer(&mut self, name: &str, given: &[(String, f64)], _span: Span) -> Val {
        let (_, params) = INITIALIZERS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("caller checked");
        let args = params
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    given.iter().find(|(g, _)| g == k).map_or(*d, |(_, v)| *v),
                )
            })
            .collect();
        Val::Init(name.to_string(), args)
    }

    fn init_call(&mut self, name: &str, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let (_, params) = INITIALIZERS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("caller checked");
        let pnames: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        let Some(slots) = self.bind_args(name, &pnames, args, span) else {
            return Val::Error;
        };
        let mut given = Vec::new();
        for (k, slot) in pnames.iter().zip(slots) {
            match slot {
                Some((Val::Int(i), _)) => given.push((k.to_string(), i as f64)),
                Some((Val::Float(f), _)) => given.push((k.to_string(), f)),
                Some((Val::Error, _)) => return Val::Error,
                Some((other, s)) => {
                    let d = self.describe(&other);
                    self.report(errors::kind(s, "a number", &d));
                    return Val::Error;
                }
                None if params.iter().any(|(p, d)| p == k && d.is_nan()) => {
                    self.report(errors::missing_arg(span, name, k));
                    return Val::Error;
                }
                None => {}
            }
        }
        self.initializer(name, &given, span)
    }

    /// Checks a value against a declared parameter type, binding the type's free
    /// dimension names.
    fn bind_typed(
        &mut self,
        scope: &mut Scope,
        pname: &str,
        ty: &TypeAnn,
        v: Val,
        vspan: Span,
    ) -> Val {
        if matches!(v, Val::Error) {
            return v;
        }
        match ty {
            TypeAnn::Scalar(kind) => match (kind.name.as_str(), &v) {
                ("int", Val::Int(_)) | ("bool", Val::Bool(_)) | ("float", Val::Float(_)) => v,
                ("float", Val::Int(i)) => Val::Float(*i as f64),
                ("int", Val::Dim(_)) => v,
                (k, _) => {
                    let d = self.describe(&v);
                    let what = match k {
                        "int" => "an integer",
                        "float" => "a float",
                        _ => "a boolean",
                    };
                    self.report(errors::kind(vspan, what, &d));
                    Val::Error
                }
            },
            TypeAnn::Tensor { dtype, dims, .. } => {
                let Val::Tensor(t) = v else {
                    let d = self.describe(&v);
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::kind(vspan, &format!("a tensor {expected}"), &d));
                    return Val::Error;
                };
                let actual = self.ty(t).clone();
                if actual.rank() != dims.len() {
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::rank(
                        vspan,
                        pname,
                        &format!("{} ({expected})", dims.len()),
                        &format!("{} ({actual})", actual.rank()),
                    ));
                    return Val::Error;
                }
                let dt = DType::from_name(&dtype.name);
                let mut ok = dt == Some(actual.dtype);
                for (d, a) in dims.iter().zip(actual.shape.dims()) {
                    let av = match a {
                        Dim::Known(n) => Val::Int(*n as i64),
                        Dim::Sym(s) => Val::Dim(s.clone()),
                    };
                    if let ExprKind::Name(n) = &d.kind {
                        match scope.get(n) {
                            None => {
                                scope.insert(n.clone(), av);
                                continue;
                            }
                            Some(bound) if !same_dim(bound, &av) && ok => {
                                let first = self.describe_dim(bound);
                                self.report(errors::dim_binding(vspan, n, &first, &a.to_string()));
                                return Val::Error;
                            }
                            _ => continue,
                        }
                    }
                    let want = self.eval(scope, d);
                    if !same_dim(&want, &av) {
                        ok = false;
                    }
                }
                if !ok {
                    let expected = self.render_ann(scope, ty);
                    self.report(errors::arg_type(
                        vspan,
                        pname,
                        &expected,
                        &actual.to_string(),
                    ));
                    return Val::Error;
                }
                Val::Tensor(t)
            }
        }
    }

    fn describe_dim(&self, v: &Val) -> String {
        match v {
            Val::Int(i) => i.to_string(),
            Val::Dim(d) => d.clone(),
            other => self.describe(other),
        }
    }

    /// Renders a type annotation with the dimensions known so far substituted.
    fn render_ann(&mut self, scope: &mut Scope, ty: &TypeAnn) -> String {
        match ty {
            TypeAnn::Scalar(k) => k.name.clone(),
            TypeAnn::Tensor { dtype, dims, .. } => {
                let parts: Vec<String> = dims
                    .iter()
                    .map(|d| match &d.kind {
                        ExprKind::Name(n) if !scope.contains_key(n) => n.clone(),
                        _ => {
                            let saved = self.errors.len();
                            let v = self.eval(scope, d);
                            self.errors.truncate(saved);
                            self.describe_dim(&v)
                        }
                    })
                    .collect();
                format!("{}[{}]", dtype.name, parts.join(", "))
            }
        }
    }

    /// Evaluates a tensor type annotation in a scope where all its names are bound.
    pub fn eval_type(&mut self, scope: &mut Scope, ty: &TypeAnn) -> Option<TensorType> {
        let TypeAnn::Tensor { dtype, dims, .. } = ty else {
            let d = ty.span();
            self.report(errors::kind(
                d,
                "a tensor type like f32[B, 64]",
                "a scalar type",
            ));
            return None;
        };
        let Some(dt) = DType::from_name(&dtype.name) else {
            if !self.errors.iter().any(|e| e.span() == dtype.span) {
                self.report(errors::unknown_type(dtype.span, &dtype.name));
            }
            return None;
        };
        let mut out = Vec::new();
        for d in dims {
            match self.eval(scope, d) {
                Val::Int(n) if n > 0 => out.push(Dim::Known(n as u64)),
                Val::Dim(s) => out.push(Dim::Sym(s)),
                Val::Error => return None,
                other => {
                    let text = match other {
                        Val::Int(n) => n.to_string(),
                        o => self.describe(&o),
                    };
                    self.report(errors::bad_dim(d.span, &text));
                    return None;
                }
            }
        }
        let t = TensorType::new(dt, Shape(out));
        if let Some(why) = nnc_ir::limits::too_large(&t) {
            self.report(errors::too_large(ty.span(), why));
            return None;
        }
        Some(t)
    }

    pub fn check_return(&mut self, scope: &mut Scope, ann: &TypeAnn, ret: &Val, rspan: Span) {
        let Val::Tensor(t) = ret else {
            if !matches!(ret, Val::Error) {
                let d = self.describe(ret);
                let expected = self.render_ann(scope, ann);
                self.report(errors::return_type(rspan, ann.span(), &expected, &d));
            }
            return;
        };
        let actual = self.ty(*t).clone();
        let saved = self.errors.len();
        let expected = self.eval_type(scope, ann);
        self.errors.truncate(saved);
        if expected.as_ref() != Some(&actual) {
            let shown = self.render_ann(scope, ann);
            self.report(errors::return_type(
                rspan,
                ann.span(),
                &shown,
                &actual.to_string(),
            ));
        }
    }

    // ---- built-in primitives ----

    fn primitive(
        &mut self,
        op: Op,
        class: Class,
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let name = op.mnemonic();
        let Sig::Call(params, required) = op.info().sig else {
            self.report(errors::op_rule(
                span,
                name,
                format!("`{name}` is not callable by name"),
            ));
            return Val::Error;
        };
        let Some(slots) = self.bind_args(name, params, args, span) else {
            return Val::Error;
        };
        let mut vals = Vec::new();
        let mut spans = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some((v, s)) => {
                    if matches!(v, Val::Error) {
                        return Val::Error;
                    }
                    vals.push(Some(v));
                    spans.push(s);
                }
                None if i < required => {
                    self.report(errors::missing_arg(span, name, params[i]));
                    return Val::Error;
                }
                None => {
                    vals.push(None);
                    spans.push(span);
                }
            }
        }
        match class {
            Class::Unary | Class::Binary | Class::Compare | Class::Select => {
                let vs: Vec<Val> = vals.into_iter().map(|v| v.expect("all required")).collect();
                self.elementwise(op, &vs, &spans, span)
            }
            Class::MatMul => {
                let mut it = vals.into_iter().map(|v| v.expect("required"));
                let (a, b) = (it.next().expect("two"), it.next().expect("two"));
                self.matmul(a, b, spans[0], spans[1], span)
            }
            Class::Reduce => self.reduce(op, vals, &spans, span),
            Class::Transpose => self.transpose(vals, &spans, span),
            Class::Given
                if matches!(op, Op::Im2col | Op::Col2im | Op::Slice | Op::Pad | Op::Iota) =>
            {
                self.layout(op, vals, &spans, span)
            }
            Class::Given if matches!(op, Op::Gather | Op::ScatterAdd) => {
                self.take(op, vals, &spans, span)
            }
            Class::Concat => self.concat(vals, &spans, span, false),
            Class::Given => self.given(op, vals, &spans, span),
            // Written as a `grad` block or a `for .. in steps(..)` loop, never called (their
            // `Sig` is `None`).
            Class::CustomGrad | Class::Scan => {
                let why = format!("`{name}` is written as a `grad` block or a `steps` loop");
                self.report(errors::op_rule(span, name, why));
                Val::Error
            }
        }
    }

    fn tensor_arg(&mut self, v: &Val, span: Span) -> Option<Value> {
        match v {
            Val::Tensor(t) => Some(*t),
            Val::Error => None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a tensor", &d));
                None
            }
        }
    }

    fn axes(&mut self, v: Option<&Val>, ty: &TensorType, span: Span) -> Option<Vec<usize>> {
        let rank = ty.rank() as i64;
        let list: Vec<Val> = match v {
            None => return Some((0..ty.rank()).collect()),
            Some(Val::List(xs)) => xs.clone(),
            Some(other) => vec![other.clone()],
        };
        let mut axes = Vec::new();
        for a in list {
            let Val::Int(i) = a else {
                let d = self.describe(&a);
                self.report(errors::kind(span, "an axis (an integer)", &d));
                return None;
            };
            let norm = if i < 0 { i + rank } else { i };
            if norm < 0 || norm >= rank {
                self.report(errors::axis(span, i, &ty.to_string()));
                return None;
            }
            axes.push(norm as usize);
        }
        axes.sort_unstable();
        axes.dedup();
        Some(axes)
    }

    fn reduce(&mut self, op: Op, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let Some(x) = vals[0].as_ref().and_then(|v| self.tensor_arg(v, spans[0])) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let Some(axes) = self.axes(vals[1].as_ref(), &ty, spans[1]) else {
            return Val::Error;
        };
        let keepdims = match &vals[2] {
            None => false,
            Some(Val::Bool(b)) => *b,
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[2], "a boolean", &d));
                return Val::Error;
            }
        };
        if op == Op::Mean && !ty.dtype.is_float() {
            self.report(errors::float_needed(span, "mean", &ty.to_string()));
            return Val::Error;
        }
        let r = match self.func.build(op, vec![x], Attr::Axes(axes.clone()), None) {
            Ok(r) => r,
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                return Val::Error;
            }
        };
        if !keepdims {
            return Val::Tensor(r);
        }
        let dims = ty
            .shape
            .dims()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        Val::Tensor(self.func.push(
            Op::Reshape,
            vec![r],
            Attr::None,
            TensorType::new(ty.dtype, Shape(dims)),
        ))
    }

    fn transpose(&mut self, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let Some(x) = vals[0].as_ref().and_then(|v| self.tensor_arg(v, spans[0])) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let perm: Vec<usize> = match &vals[1] {
            None => {
                let r = ty.rank();
                let mut p: Vec<usize> = (0..r).collect();
                if r >= 2 {
                    p.swap(r - 2, r - 1);
                }
                p
            }
            Some(Val::List(xs)) => {
                let mut p = Vec::new();
                for v in xs {
                    match v {
                        Val::Int(i) if *i >= 0 => p.push(*i as usize),
                        other => {
                            let d = self.describe(other);
                            self.report(errors::kind(spans[1], "a list of axes", &d));
                            return Val::Error;
                        }
                    }
                }
                p
            }
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[1], "a list of axes", &d));
                return Val::Error;
            }
        };
        match self
            .func
            .build(Op::Transpose, vec![x], Attr::Perm(perm), None)
        {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, "transpose", msg));
                Val::Error
            }
        }
    }

    /// `size(x, axis)`: the static size of one axis (an integer, or a dimension name).
    fn size(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("size", &["x", "axis"], args, span) else {
            return Val::Error;
        };
        let [Some((x, xs)), axis] = &slots[..] else {
            self.report(errors::missing_arg(span, "size", "x"));
            return Val::Error;
        };
        let Some(x) = self.tensor_arg(x, *xs) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let (av, aspan) = axis.clone().unwrap_or((Val::Int(-1), span));
        let Some(a) = self.axes(Some(&av), &ty, aspan) else {
            return Val::Error;
        };
        let [a] = a[..] else {
            self.report(errors::kind(aspan, "one axis", "a list"));
            return Val::Error;
        };
        match &ty.shape.0[a] {
            Dim::Known(n) => Val::Int(*n as i64),
            Dim::Sym(s) => Val::Dim(s.clone()),
        }
    }

    /// `full(shape, value)`: a constant f32 tensor.
    fn full(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("full", &["shape", "value"], args, span) else {
            return Val::Error;
        };
        let [Some((shape, ss)), value] = &slots[..] else {
            self.report(errors::missing_arg(span, "full", "shape"));
            return Val::Error;
        };
        let Some(dims) = self.dims_arg(shape, *ss) else {
            return Val::Error;
        };
        let v = match value {
            None => 0.0,
            Some((Val::Int(i), _)) => *i as f64,
            Some((Val::Float(f), _)) => *f,
            Some((Val::Error, _)) => return Val::Error,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a number", &d));
                return Val::Error;
            }
        };
        let ty = TensorType::new(DType::F32, Shape(dims));
        if let Some(why) = nnc_ir::limits::too_large(&ty) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        Val::Tensor(self.constant(v, ty))
    }

    /// `random(shape)`: uniform noise in [0, 1), a new draw at every training step. Only
    /// in training mode; the step's key is the function's `noise_key` input, added on
    /// first use.
    fn random(&mut self, args: Vec<(Option<Ident>, Val, Span)>, span: Span) -> Val {
        let Some(slots) = self.bind_args("random", &["shape"], args, span) else {
            return Val::Error;
        };
        let [Some((shape, ss))] = &slots[..] else {
            self.report(errors::missing_arg(span, "random", "shape"));
            return Val::Error;
        };
        let Some(dims) = self.dims_arg(shape, *ss) else {
            return Val::Error;
        };
        self.read_training = true;
        if !self.training {
            self.report(errors::random_outside_training(span));
            return Val::Error;
        }
        let key = match self.func.inputs.iter().position(|a| a.name == NOISE_KEY) {
            Some(i) => Value::Input(i as u32),
            None => self
                .func
                .add_input(NOISE_KEY, TensorType::scalar(DType::I32)),
        };
        self.randoms += 1;
        let ty = TensorType::new(DType::F32, Shape(dims));
        let stream = Attr::Value(f64::from(self.randoms));
        self.build_given(Op::Random, vec![key], stream, ty, span)
    }

    /// A non-negative static integer argument.
    fn count_arg(&mut self, v: Option<&(Val, Span)>, default: i64) -> Option<usize> {
        match v {
            None => Some(default as usize),
            Some((Val::Int(n), _)) if *n >= 0 => Some(*n as usize),
            Some((Val::Error, _)) => None,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a non-negative integer", &d));
                None
            }
        }
    }

    /// A window size: one integer for both axes, or a list of two.
    fn pair_arg(&mut self, v: Option<&(Val, Span)>, default: usize) -> Option<[usize; 2]> {
        match v {
            None => Some([default; 2]),
            Some((Val::Int(n), _)) if *n >= 0 => Some([*n as usize; 2]),
            Some((Val::List(xs), _))
                if xs.len() == 2 && xs.iter().all(|x| matches!(x, Val::Int(n) if *n >= 0)) =>
            {
                let n = |x: &Val| if let Val::Int(n) = x { *n as usize } else { 0 };
                Some([n(&xs[0]), n(&xs[1])])
            }
            Some((Val::Error, _)) => None,
            Some((other, s)) => {
                let d = self.describe(other);
                self.report(errors::kind(*s, "a size (an integer or a list of two)", &d));
                None
            }
        }
    }

    /// A list of known or symbolic dimensions (`[B, 4]`).
    fn dims_arg(&mut self, v: &Val, span: Span) -> Option<Vec<Dim>> {
        let Val::List(items) = v else {
            let d = self.describe(v);
            self.report(errors::kind(span, "a list of dimensions", &d));
            return None;
        };
        let mut dims = Vec::new();
        for it in items {
            match it {
                Val::Int(n) if *n > 0 => dims.push(Dim::Known(*n as u64)),
                Val::Dim(s) => dims.push(Dim::Sym(s.clone())),
                Val::Error => return None,
                other => {
                    let d = self.describe_dim(other);
                    self.report(errors::bad_dim(span, &d));
                    return None;
                }
            }
        }
        Some(dims)
    }

    /// Windows (`im2col`, `col2im`), slices and padding along an axis, and `iota`.
    fn layout(&mut self, op: Op, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let slots: Vec<Option<(Val, Span)>> = vals
            .into_iter()
            .zip(spans)
            .map(|(v, s)| v.map(|v| (v, *s)))
            .collect();
        if op == Op::Iota {
            let Some(dims) = slots[0].as_ref().and_then(|(v, s)| self.dims_arg(v, *s)) else {
                return Val::Error;
            };
            let ty = TensorType::new(DType::F32, Shape(dims));
            let Some(axes) = self.axes(slots[1].as_ref().map(|(v, _)| v), &ty, spans[1]) else {
                return Val::Error;
            };
            return self.build_given(op, vec![], Attr::Axes(axes), ty, span);
        }
        let Some(x) = slots[0].as_ref().and_then(|(v, s)| self.tensor_arg(v, *s)) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        match op {
            Op::Im2col | Op::Col2im => {
                let k = usize::from(op == Op::Col2im);
                let Some(kernel) = self.pair_arg(slots[1 + k].as_ref(), 1) else {
                    return Val::Error;
                };
                let Some(stride) = self.pair_arg(slots[2 + k].as_ref(), 1) else {
                    return Val::Error;
                };
                let Some(pad) = self.pair_arg(slots[3 + k].as_ref(), 0) else {
                    return Val::Error;
                };
                let attr = Attr::Window {
                    kernel,
                    stride,
                    pad,
                };
                let result = if op == Op::Im2col {
                    nnc_ir::im2col_type(&ty, kernel, stride, pad)
                } else {
                    match self.pair_arg(slots[1].as_ref(), 1) {
                        Some([h, w]) if ty.rank() == 6 => {
                            let mut d = ty.shape.0[..2].to_vec();
                            d.extend([Dim::Known(h as u64), Dim::Known(w as u64)]);
                            Ok(TensorType::new(ty.dtype, Shape(d)))
                        }
                        Some(_) => Err(format!(
                            "`col2im` needs windows [N, C, KH, KW, OH, OW], found {ty}"
                        )),
                        None => return Val::Error,
                    }
                };
                match result {
                    Ok(t) => self.build_given(op, vec![x], attr, t, span),
                    Err(msg) => {
                        self.report(errors::op_rule(span, op.mnemonic(), msg));
                        Val::Error
                    }
                }
            }
            _ => {
                // slice(x, start, end, axis) / pad(x, before, after, axis)
                let Some(axes) = self.axes(
                    Some(slots[3].as_ref().map_or(&Val::Int(0), |(v, _)| v)),
                    &ty,
                    spans[3],
                ) else {
                    return Val::Error;
                };
                let axis = axes[0];
                let (Some(a), Some(b)) = (
                    self.count_arg(slots[1].as_ref(), 0),
                    self.count_arg(slots[2].as_ref(), 0),
                ) else {
                    return Val::Error;
                };
                let Some(len) = ty.shape.0[axis].known() else {
                    let msg = format!("axis {axis} of {ty} has no known size");
                    self.report(errors::op_rule(span, op.mnemonic(), msg));
                    return Val::Error;
                };
                let (new_len, start) = if op == Op::Slice {
                    if a >= b || b as u64 > len {
                        let msg =
                            format!("[{a}, {b}) is not a non-empty range of axis {axis} of {ty}");
                        self.report(errors::op_rule(span, "slice", msg));
                        return Val::Error;
                    }
                    ((b - a) as u64, a)
                } else {
                    (len + (a + b) as u64, a)
                };
                let mut dims = ty.shape.0.clone();
                dims[axis] = Dim::Known(new_len);
                let t = TensorType::new(ty.dtype, Shape(dims));
                self.build_given(op, vec![x], Attr::Offset { axis, start }, t, span)
            }
        }
    }

    /// `concat([a, b, ..], axis = 0)`: tensors joined along an axis; with `stack`, along a
    /// new axis (each operand gets a size-1 axis there first).
    fn concat(&mut self, vals: Vec<Option<Val>>, spans: &[Span], span: Span, stack: bool) -> Val {
        let name = if stack { "stack" } else { "concat" };
        let items = match &vals[0] {
            Some(Val::List(xs)) if !xs.is_empty() => xs.clone(),
            Some(Val::Tensor(t)) => vec![Val::Tensor(*t)],
            Some(Val::Error) | None => return Val::Error,
            Some(other) => {
                let d = self.describe(other);
                self.report(errors::kind(spans[0], "a list of tensors", &d));
                return Val::Error;
            }
        };
        let mut parts = Vec::new();
        for v in &items {
            let Some(t) = self.tensor_arg(v, spans[0]) else {
                return Val::Error;
            };
            parts.push(t);
        }
        let first = self.ty(parts[0]).clone();
        // `stack`'s axis may be one past the last.
        let probe = if stack {
            let mut d = first.shape.0.clone();
            d.push(Dim::Known(1));
            TensorType::new(first.dtype, Shape(d))
        } else {
            first.clone()
        };
        let axis_val = vals.get(1).cloned().flatten().unwrap_or(Val::Int(0));
        let Some(axes) = self.axes(
            Some(&axis_val),
            &probe,
            spans.get(1).copied().unwrap_or(span),
        ) else {
            return Val::Error;
        };
        let axis = axes[0];
        if stack {
            for p in parts.iter_mut() {
                let t = self.ty(*p).clone();
                let mut d = t.shape.0.clone();
                d.insert(axis.min(d.len()), Dim::Known(1));
                match self.func.build(
                    Op::Reshape,
                    vec![*p],
                    Attr::None,
                    Some(TensorType::new(t.dtype, Shape(d))),
                ) {
                    Ok(v) => *p = v,
                    Err(msg) => {
                        self.report(errors::op_rule(span, name, msg));
                        return Val::Error;
                    }
                }
            }
        }
        match self.func.build(Op::Concat, parts, Attr::Axis(axis), None) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, name, msg));
                Val::Error
            }
        }
    }

    /// The user's line a span is on: its own for user code, the user's call for code
    /// inside the prelude (1-based; what run-time errors name).
    fn user_line(&self, span: Span) -> usize {
        let at = if span.src == USER {
            span.start
        } else {
            self.site.as_ref().map_or(0, |(s, _)| s.start)
        };
        self.defs.line_of(at)
    }

    /// Gives the nodes from `before` on that have no line yet the line of a user
    /// statement (the innermost user statement that made a node names it; prelude code
    /// takes the line of the user's statement that called it).
    pub(crate) fn mark_lines(&mut self, before: usize, span: Span) {
        if span.src != USER {
            return;
        }
        let line = self.defs.line_of(span.start);
        self.lines.resize(self.func.nodes.len(), 0);
        for l in &mut self.lines[before.min(self.func.nodes.len())..] {
            if *l == 0 {
                *l = line;
            }
        }
    }

    /// `gather(x, ids, axis = 0)`: rows of `x` along `axis` picked by integer ids;
    /// `scatter_add(x, ids, size, axis = 0)`: its adjoint, `x` summed into `size` rows.
    fn take(&mut self, op: Op, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let (Some(xv), Some(iv)) = (vals[0].clone(), vals[1].clone()) else {
            return Val::Error;
        };
        let (Some(x), Some(ids)) = (
            self.tensor_arg(&xv, spans[0]),
            self.tensor_arg(&iv, spans[1]),
        ) else {
            return Val::Error;
        };
        let (xt, it) = (self.ty(x).clone(), self.ty(ids).clone());
        if it.dtype != DType::I32 {
            self.report(errors::labels_dtype(spans[1], &it.to_string()));
            return Val::Error;
        }
        let axis_at = if op == Op::Gather { 2 } else { 3 };
        let axis_val = vals[axis_at].clone().unwrap_or(Val::Int(0));
        let line = self.user_line(span);
        let result = if op == Op::Gather {
            let Some(axes) = self.axes(Some(&axis_val), &xt, spans[axis_at]) else {
                return Val::Error;
            };
            let axis = axes[0];
            let mut dims = xt.shape.0[..axis].to_vec();
            dims.extend(it.shape.0.iter().cloned());
            dims.extend(xt.shape.0[axis + 1..].iter().cloned());
            (axis, TensorType::new(xt.dtype, Shape(dims)))
        } else {
            // The table has x's axes before the ids' axes, `size` rows, then the rest.
            let size = vals[2].clone().map(|v| (v, spans[2]));
            let Some(rows) = self.count_arg(size.as_ref(), 0) else {
                return Val::Error;
            };
            let lead = xt.rank().saturating_sub(it.rank());
            let table_rank = lead + 1;
            let proxy = TensorType::new(xt.dtype, Shape(vec![Dim::Known(1); table_rank.max(1)]));
            let Some(axes) = self.axes(Some(&axis_val), &proxy, spans[axis_at]) else {
                return Val::Error;
            };
            let axis = axes[0];
            if xt.rank() < axis + it.rank() {
                let msg = format!("{xt} has no room for ids {it} at axis {axis}");
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                return Val::Error;
            }
            let mut dims = xt.shape.0[..axis].to_vec();
            dims.push(Dim::Known(rows as u64));
            dims.extend(xt.shape.0[axis + it.rank()..].iter().cloned());
            (axis, TensorType::new(xt.dtype, Shape(dims)))
        };
        let (axis, ty) = result;
        self.build_given(op, vec![x, ids], Attr::Index { axis, line }, ty, span)
    }

    fn build_given(
        &mut self,
        op: Op,
        args: Vec<Value>,
        attr: Attr,
        ty: TensorType,
        span: Span,
    ) -> Val {
        if let Some(why) = nnc_ir::limits::too_large(&ty) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        match self.func.build(op, args, attr, Some(ty)) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                Val::Error
            }
        }
    }

    fn given(&mut self, op: Op, vals: Vec<Option<Val>>, spans: &[Span], span: Span) -> Val {
        let vals: Vec<Val> = vals.into_iter().map(|v| v.expect("all required")).collect();
        let Some(x) = self.tensor_arg(&vals[0], spans[0]) else {
            return Val::Error;
        };
        let ty = self.ty(x).clone();
        let target = match op {
            Op::Reshape => {
                let Some(dims) = self.dims_arg(&vals[1], spans[1]) else {
                    return Val::Error;
                };
                let to = TensorType::new(ty.dtype, Shape(dims));
                if ty.shape.volume() != to.shape.volume() {
                    self.report(errors::reshape(span, &ty.to_string(), &to.to_string()));
                    return Val::Error;
                }
                to
            }
            Op::Cast => match &vals[1] {
                Val::DType(d) => ty.with_dtype(*d),
                other => {
                    let d = self.describe(other);
                    self.report(errors::kind(
                        spans[1],
                        "an element type (f32, f64, i32)",
                        &d,
                    ));
                    return Val::Error;
                }
            },
            Op::OneHot => {
                if ty.dtype != DType::I32 {
                    self.report(errors::labels_dtype(spans[0], &ty.to_string()));
                    return Val::Error;
                }
                let n = match &vals[1] {
                    Val::Int(n) if *n > 0 => *n as u64,
                    other => {
                        let d = self.describe_dim(other);
                        self.report(errors::bad_dim(spans[1], &d));
                        return Val::Error;
                    }
                };
                let mut dims = ty.shape.0.clone();
                dims.push(Dim::Known(n));
                TensorType::new(DType::F32, Shape(dims))
            }
            _ => {
                self.report(errors::op_rule(
                    span,
                    op.mnemonic(),
                    format!("`{}` has no elaboration rule", op.mnemonic()),
                ));
                return Val::Error;
            }
        };
        if let Some(why) = nnc_ir::limits::too_large(&target) {
            self.report(errors::too_large(span, why));
            return Val::Error;
        }
        match self.func.build(op, vec![x], Attr::None, Some(target)) {
            Ok(v) => Val::Tensor(v),
            Err(msg) => {
                self.report(errors::op_rule(span, op.mnemonic(), msg));
                Val::Error
            }
        }
    }

    // ---- configuration calls (train blocks) ----

    fn static_of(&mut self, v: &Val, span: Span) -> Option<Static> {
        Some(match v {
            Val::Int(i) => Static::Int(*i),
            Val::Float(f) => Static::Float(*f),
            Val::Bool(b) => Static::Bool(*b),
            Val::Str(s) => Static::Str(s.clone()),
            Val::List(xs) => Static::List(
                xs.iter()
                    .map(|x| self.static_of(x, span))
                    .collect::<Option<_>>()?,
            ),
            Val::Error => return None,
            other => {
                let d = self.describe(other);
                self.report(errors::kind(span, "a constant", &d));
                return None;
            }
        })
    }

    fn config_call(
        &mut self,
        name: &str,
        params: &[&ParamDef],
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let pnames: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
        let Some(slots) = self.bind_args(name, &pnames, args, span) else {
            return Val::Error;
        };
        let mut out = Vec::new();
        let mut scope = Scope::new();
        for (p, slot) in params.iter().zip(slots) {
            let (v, s) = match slot {
                Some(vs) => vs,
                None => match &p.default {
                    Some(d) => (self.eval(&mut scope, d), d.span),
                    None => {
                        self.report(errors::missing_arg(span, name, &p.name.name));
                        return Val::Error;
                    }
                },
            };
            let Some(st) = self.static_of(&v, s) else {
                return Val::Error;
            };
            scope.insert(p.name.name.clone(), v);
            out.push((p.name.name.clone(), st));
        }
        Val::Call(CallSpec {
            name: name.to_string(),
            args: out,
        })
    }

    fn static_call(
        &mut self,
        name: &str,
        kws: &[(&str, names::ArgKind)],
        args: Vec<(Option<Ident>, Val, Span)>,
        span: Span,
    ) -> Val {
        let keys: Vec<&str> = kws.iter().map(|(k, _)| *k).collect();
        let Some(slots) = self.bind_args(name, &keys, args, span) else {
            return Val::Error;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (&(k, kind), slot) in kws.iter().zip(slots) {
            if let Some((v, s)) = slot {
                let Some(st) = self.static_of(&v, s) else {
                    return Val::Error;
                };
                if !arg_fits(kind, &st) {
                    let found = self.describe(&v);
                    self.report(errors::setting_value(
                        s,
                        &format!("{name}(..., {k})"),
                        kind.describe(),
                        &found,
                    ));
                    ok = false;
                }
                out.push((k.to_string(), st));
            }
        }
        if !ok {
            return Val::Error;
        }
        let on = |k: &str| out.iter().any(|(n, v)| n == k && *v == Static::Bool(true));
        if on("standardize") && on("min_max") {
            self.report(errors::setting_value(
                span,
                &format!("{name}(..., standardize, min_max)"),
                "one normalization, not both",
                "both true",
            ));
            return Val::Error;
        }
        Val::Call(CallSpec {
            name: name.to_string(),
            args: out,
        })
    }
}

/// Whether a static value is what a schedule or data source argument needs.
/// The span of the last statement of a block (nested blocks included) that assigns `name`.
fn assignment(body: &[Stmt], name: &str) -> Option<Span> {
    body.iter().rev().find_map(|s| match s {
        Stmt::Assign { name: n, span, .. } if n.name == name => Some(*span),
        Stmt::For { body, .. } => assignment(body, name),
        Stmt::If { then, els, .. } => assignment(els, name).or_else(|| assignment(then, name)),
        _ => None,
    })
}

/// The names a block assigns, nested blocks included.
fn assigned_names(body: &[Stmt], out: &mut Vec<String>) {
    for s in body {
        match s {
            Stmt::Assign { name, .. } => out.push(name.name.clone()),
            Stmt::For { body, .. } => assigned_names(body, out),
            Stmt::If { then, els, .. } => {
                assigned_names(then, out);
                assigned_names(els, out);
            }
            _ => {}
        }
    }
}

fn arg_fits(kind: names::ArgKind, v: &Static) -> bool {
    use names::ArgKind as K;
    let num = match v {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        _ => None,
    };
    match kind {
        K::PositiveInt => matches!(v, Static::Int(i) if *i >= 1),
        K::Count => matches!(v, Static::Int(i) if *i >= 0),
        K::Positive => num.is_some_and(|x| x > 0.0 && x.is_finite()),
        K::NonNegative => num.is_some_and(|x| x >= 0.0 && x.is_finite()),
        K::Fraction => num.is_some_and(|x| (0.0..1.0).contains(&x)),
        K::Text => matches!(v, Static::Str(_)),
        K::Bool => matches!(v, Static::Bool(_)),
    }
}

fn same_dim(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Dim(x), Val::Dim(y)) => x == y,
        (Val::Error, _) | (_, Val::Error) => true,
        _ => false,
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
