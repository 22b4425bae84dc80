//! Expressions: names, operators, matrix products, and calls routed to layers, rules,
//! schedules, initializers and built-ins, with arguments bound by position and keyword.

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
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

    pub(super) fn name(&mut self, scope: &Scope, n: &str, span: Span) -> Val {
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

    pub(super) fn binary(
        &mut self,
        op: BinOp,
        a: Val,
        b: Val,
        sa: Span,
        sb: Span,
        span: Span,
    ) -> Val {
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

    pub(super) fn matmul(&mut self, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> Val {
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

    pub(super) fn call(
        &mut self,
        scope: &mut Scope,
        callee: &Ident,
        args: &[Arg],
        span: Span,
    ) -> Val {
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
    pub(super) fn bind_args(
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
}
