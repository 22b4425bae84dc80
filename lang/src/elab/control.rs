//! Statements and control flow: assignment, static `for` (unrolled) and `if`, `steps`
//! loops (outlined into a `scan`), grad blocks, and the source line and statement of
//! every node.

use super::*;

impl<'a, 'd> Elab<'a, 'd> {
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
    pub(super) fn steps_loop(
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
        self.noise.push(Vec::new());
        self.nesting += 1;
        self.body(&mut inner, body);
        self.nesting -= 1;
        let ys = self.yields.pop().unwrap_or_default();
        let noise = self.noise.pop().unwrap_or_default();
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
        // Each draw inside the body: every step's at once (an outer draw with the steps
        // first, itself a step's draw of an enclosing loop if there is one), stepped
        // through as one more sequence.
        let steps = self.ty(seq).shape.0[0].clone();
        for (h, dims, stream) in noise {
            let key = match self.func.inputs.iter().position(|a| a.name == NOISE_KEY) {
                Some(i) => Value::Input(i as u32),
                None => self
                    .func
                    .add_input(NOISE_KEY, TensorType::scalar(DType::I32)),
            };
            let mut all = vec![steps.clone()];
            all.extend(dims);
            let Some(outer) = self.noise(key, all, stream, span) else {
                ok = false;
                continue;
            };
            holes.push(h);
            init.push(outer);
        }
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
            Err(nnc_ir::Error::Outline(String::new()))
        };
        let out = match done {
            Ok(o) => o,
            Err(e) => {
                if !e.to_string().is_empty() {
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
    pub(super) fn mark_top(&mut self, before: usize, span: Span) {
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
    pub(super) fn grad_block(&mut self, y: Val, g: &'d Stmt, mut scope: Scope, yspan: Span) -> Val {
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

    /// The user's line a span is on: its own for user code, the user's call for code
    /// inside the prelude (1-based; what run-time errors name).
    pub(super) fn user_line(&self, span: Span) -> usize {
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
