//! Static checks that need no types: duplicate definitions, unknown names and functions,
//! recursion between layers, missing or misplaced `return`, misplaced declarations.
//!
//! These run on every item, used or not, so a layer nobody calls is still checked for
//! what can be checked without its argument shapes. Shapes are checked by `elab` when a
//! model instantiates the layer.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::diagnostics::{Diagnostic, Span, suggest};
use crate::errors;
use crate::names;

/// The definitions visible to a program: the prelude's, shadowed by the user's.
pub struct Defs<'a> {
    /// Layers by name.
    pub layers: HashMap<&'a str, &'a FnDef>,
    /// Models by name.
    pub models: HashMap<&'a str, &'a FnDef>,
    /// Rules by name.
    pub rules: HashMap<&'a str, &'a RuleDef>,
    /// Train blocks by model name.
    pub trains: HashMap<&'a str, &'a TrainDef>,
    /// The user's source text.
    pub src: &'a str,
    /// Where each line of the user's source starts (run-time errors name lines).
    pub line_starts: Vec<usize>,
    /// What the elaborator learned about spans of the user's source (a name's type, a
    /// call's signature and parameter count), when an editor asked for it: `None` while
    /// only checking, so `nnc check` pays nothing for it.
    pub notes: std::cell::RefCell<Option<Vec<(Span, String)>>>,
}

impl<'a> Defs<'a> {
    /// The 1-based line of a byte offset of the user's source.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1)
    }

    /// Collects definitions, reporting duplicates within the user's program. A user
    /// definition may shadow a prelude one of the same name.
    pub fn collect(
        prelude: &'a Program,
        user: &'a Program,
        src: &'a str,
        errors: &mut Vec<Diagnostic>,
    ) -> Defs<'a> {
        let mut defs = Defs {
            layers: HashMap::new(),
            models: HashMap::new(),
            rules: HashMap::new(),
            trains: HashMap::new(),
            src,
            line_starts: std::iter::once(0)
                .chain(src.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            notes: std::cell::RefCell::new(None),
        };
        for item in &prelude.items {
            match item {
                Item::Layer(f) => _ = defs.layers.insert(&f.name.name, f),
                Item::Rule(r) => _ = defs.rules.insert(&r.name.name, r),
                _ => {}
            }
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut seen_trains: HashMap<&str, Span> = HashMap::new();
        for item in &user.items {
            let name = item.name();
            let (table, what) = match item {
                Item::Train(_) => (&mut seen_trains, "train block for"),
                Item::Layer(_) => (&mut seen, "layer"),
                Item::Model(_) => (&mut seen, "model"),
                Item::Rule(_) => (&mut seen, "rule"),
            };
            if let Some(&first) = table.get(name.name.as_str()) {
                errors.push(errors::duplicate_definition(
                    name.span, first, what, &name.name,
                ));
                continue;
            }
            table.insert(&name.name, name.span);
            match item {
                Item::Layer(f) => _ = defs.layers.insert(&f.name.name, f),
                Item::Model(f) => _ = defs.models.insert(&f.name.name, f),
                Item::Rule(r) => _ = defs.rules.insert(&r.name.name, r),
                Item::Train(t) => _ = defs.trains.insert(&t.model.name, t),
            }
        }
        defs
    }

    fn is_callable(&self, name: &str) -> bool {
        self.layers.contains_key(name)
            || self.rules.contains_key(name)
            || names::is_builtin_function(name)
    }

    fn callables(&self) -> Vec<&'a str> {
        let mut v: Vec<&'a str> = self
            .layers
            .keys()
            .chain(self.rules.keys())
            .copied()
            .collect();
        for n in names::builtin_functions() {
            v.push(n);
        }
        v
    }
}

/// Runs the static checks over the user's items.
pub fn resolve(defs: &Defs<'_>, user: &Program, errors: &mut Vec<Diagnostic>) {
    for item in &user.items {
        match item {
            Item::Layer(f) => fn_def(defs, f, "layer", errors),
            Item::Model(f) => fn_def(defs, f, "model", errors),
            Item::Rule(r) => rule_def(defs, r, errors),
            Item::Train(t) => train_def(defs, t, errors),
        }
    }
    recursion(defs, user, errors);
}

struct Scope<'d> {
    names: HashSet<String>,
    defs: &'d Defs<'d>,
    /// In a model (no grad block) rather than a layer.
    model: bool,
    /// The layer's inputs and `param`s, which a grad block gives adjoints.
    adjointable: Vec<String>,
    /// The layer's buffers (not trained: no adjoint).
    buffers: Vec<String>,
    /// How many `for .. in steps(..)` bodies enclose the statement.
    steps: u32,
}

impl Scope<'_> {
    fn expr(&self, e: &Expr, errors: &mut Vec<Diagnostic>) {
        match &e.kind {
            ExprKind::Name(n) => {
                if !self.names.contains(n) && !names::is_global_name(n) && !self.defs.is_callable(n)
                {
                    let cands: Vec<&str> = self.names.iter().map(|s| s.as_str()).collect();
                    errors.push(errors::unknown_name(e.span, n, suggest(n, cands)));
                }
            }
            ExprKind::Call { callee, args } => {
                if !self.defs.is_callable(&callee.name) {
                    let cands = self.defs.callables();
                    errors.push(errors::unknown_function(
                        callee.span,
                        &callee.name,
                        suggest(&callee.name, cands),
                    ));
                }
                for a in args {
                    self.expr(&a.value, errors);
                }
            }
            ExprKind::Neg(x) | ExprKind::Paren(x) => self.expr(x, errors),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs, errors);
                self.expr(rhs, errors);
            }
            ExprKind::List(xs) => xs.iter().for_each(|x| self.expr(x, errors)),
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) => {}
        }
    }

    /// Adds the names a signature binds: parameters and the bare dimension names of their
    /// tensor types, checking defaults and dimension expressions on the way.
    fn params(&mut self, params: &[ParamDef], errors: &mut Vec<Diagnostic>) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for p in params {
            if let Some(&first) = seen.get(p.name.name.as_str()) {
                errors.push(errors::duplicate_param(p.name.span, first, &p.name.name));
            }
            seen.insert(&p.name.name, p.name.span);
            if let Some(ty) = &p.ty {
                self.type_ann(ty, true, errors);
            }
            if let Some(d) = &p.default {
                self.expr(d, errors);
            }
            self.names.insert(p.name.name.clone());
        }
    }

    fn type_ann(&mut self, ty: &TypeAnn, binds: bool, errors: &mut Vec<Diagnostic>) {
        match ty {
            TypeAnn::Scalar(id) => {
                if !matches!(id.name.as_str(), "int" | "float" | "bool") {
                    errors.push(errors::unknown_type(id.span, &id.name));
                }
            }
            TypeAnn::Tensor { dtype, dims, .. } => {
                if nnc_ir::DType::from_name(&dtype.name).is_none() {
                    errors.push(errors::unknown_type(dtype.span, &dtype.name));
                }
                for d in dims {
                    match &d.kind {
                        ExprKind::Name(n) if binds => _ = self.names.insert(n.clone()),
                        _ => self.expr(d, errors),
                    }
                }
            }
        }
    }

    fn body(&mut self, body: &[Stmt], place: Place, errors: &mut Vec<Diagnostic>) -> bool {
        let mut returned = false;
        let mut params: HashMap<&str, Span> = HashMap::new();
        let mut grad_seen = false;
        let mut adjoints: HashMap<&str, Span> = HashMap::new();
        for s in body {
            if returned {
                errors.push(errors::after_return(s.span()));
                return true;
            }
            match s {
                Stmt::Assign { name, value, .. } => {
                    self.expr(value, errors);
                    self.names.insert(name.name.clone());
                }
                Stmt::Param {
                    trainable,
                    name,
                    ty,
                    init,
                    span,
                } => {
                    if place != Place::Layer {
                        let what = if *trainable { "param" } else { "buffer" };
                        errors.push(errors::misplaced(*span, what, place.describe()));
                    }
                    if let Some(&first) = params.get(name.name.as_str()) {
                        errors.push(errors::duplicate_param(name.span, first, &name.name));
                    }
                    params.insert(&name.name, name.span);
                    self.type_ann(ty, false, errors);
                    if let Some(i) = init {
                        self.expr(i, errors);
                    }
                    self.names.insert(name.name.clone());
                }
                Stmt::State { name, init, span } => {
                    if place != Place::Rule {
                        errors.push(errors::misplaced(*span, "state", place.describe()));
                    }
                    if let Some(i) = init {
                        self.expr(i, errors);
                    }
                    self.names.insert(name.name.clone());
                }
                Stmt::Return { value, span } => {
                    if place != Place::Layer {
                        errors.push(errors::misplaced(*span, "return", place.describe()));
                    }
                    self.expr(value, errors);
                    returned = true;
                }
                Stmt::Grad { dy, body, span } => {
                    if place != Place::Layer || self.model {
                        let p = if self.model {
                            "a model"
                        } else {
                            place.describe()
                        };
                        errors.push(errors::misplaced_grad(*span, p));
                    } else if grad_seen {
                        errors.push(errors::misplaced_grad(
                            *span,
                            "a layer that has one already (one grad block per layer)",
                        ));
                    }
                    grad_seen = true;
                    let saved = self.names.clone();
                    self.names.insert(dy.name.clone());
                    self.body(body, Place::Grad, errors);
                    self.names = saved;
                }
                Stmt::GradAssign {
                    target,
                    value,
                    span,
                } => {
                    self.expr(value, errors);
                    if place != Place::Grad {
                        errors.push(errors::misplaced_adjoint(*span, &target.name));
                        continue;
                    }
                    let name = target.name.as_str();
                    if !self.adjointable.iter().any(|a| a == name) {
                        let why = if self.buffers.iter().any(|b| b == name) {
                            format!("`{name}` is a buffer, which is not trained")
                        } else {
                            let list: Vec<String> =
                                self.adjointable.iter().map(|a| format!("`{a}`")).collect();
                            format!("the layer has {}", list.join(", "))
                        };
                        let cands: Vec<&str> =
                            self.adjointable.iter().map(|s| s.as_str()).collect();
                        errors.push(errors::unknown_adjoint(
                            target.span,
                            name,
                            &why,
                            suggest(name, cands),
                        ));
                    } else if let Some(&first) = adjoints.get(name) {
                        errors.push(errors::adjoint_twice(target.span, first, name));
                    } else {
                        adjoints.insert(name, target.span);
                    }
                }
                Stmt::For {
                    var,
                    iter,
                    body,
                    span,
                } => {
                    if !matches!(place, Place::Layer | Place::Nested | Place::Grad) {
                        errors.push(errors::misplaced(*span, "for", place.describe()));
                    }
                    self.expr(iter, errors);
                    self.names.insert(var.name.clone());
                    let native = is_steps(iter);
                    self.steps += native as u32;
                    self.body(body, Place::Nested, errors);
                    self.steps -= native as u32;
                }
                Stmt::Yield { name, value, span } => {
                    self.expr(value, errors);
                    if self.steps == 0 {
                        errors.push(errors::misplaced_yield(*span));
                    }
                    self.names.insert(name.name.clone());
                }
                Stmt::If {
                    cond,
                    then,
                    els,
                    span,
                } => {
                    if !matches!(place, Place::Layer | Place::Nested | Place::Grad) {
                        errors.push(errors::misplaced(*span, "if", place.describe()));
                    }
                    self.expr(cond, errors);
                    self.body(then, Place::Nested, errors);
                    self.body(els, Place::Nested, errors);
                }
            }
        }
        returned
    }
}

/// Whether a `for`'s iterable is `steps(..)`: the loop is a scan, not unrolled.
pub(crate) fn is_steps(iter: &Expr) -> bool {
    matches!(&iter.kind, ExprKind::Call { callee, .. } if callee.name == "steps")
}

#[derive(Clone, Copy, PartialEq)]
enum Place {
    Layer,
    Rule,
    Train,
    /// The body of a `for` or `if` inside a layer: assignments and more control flow.
    Nested,
    /// A layer's `grad` block: assignments, adjoints, control flow.
    Grad,
}

impl Place {
    fn describe(self) -> &'static str {
        match self {
            Place::Layer => "a layer or model",
            Place::Rule => "a rule",
            Place::Train => "a train block",
            Place::Grad => "a grad block (it assigns names and adjoints: `x.grad = ..`)",
            Place::Nested => {
                "the body of a `for` or `if` (assign names there; declare parameters and return outside)"
            }
        }
    }
}

fn fn_def(defs: &Defs<'_>, f: &FnDef, what: &str, errors: &mut Vec<Diagnostic>) {
    let mut adjointable: Vec<String> = f.params.iter().map(|p| p.name.name.clone()).collect();
    let mut buffers = Vec::new();
    for s in &f.body {
        if let Stmt::Param {
            trainable, name, ..
        } = s
        {
            if *trainable {
                adjointable.push(name.name.clone());
            } else {
                buffers.push(name.name.clone());
            }
        }
    }
    let mut scope = Scope {
        names: HashSet::new(),
        defs,
        model: what == "model",
        adjointable,
        buffers,
        steps: 0,
    };
    scope.params(&f.params, errors);
    if !scope.body(&f.body, Place::Layer, errors) {
        let end = Span::new(f.span.src, f.span.end.saturating_sub(1), f.span.end);
        errors.push(
            errors::missing_return(end, what, &f.name.name)
                .with_label(f.name.span, format!("{what} defined here")),
        );
    }
    if let Some(ret) = &f.ret {
        // The result type may use every name the signature bound.
        scope.type_ann(ret, false, errors);
    }
}

fn rule_def(defs: &Defs<'_>, r: &RuleDef, errors: &mut Vec<Diagnostic>) {
    let mut scope = Scope {
        names: HashSet::new(),
        defs,
        model: false,
        adjointable: Vec::new(),
        buffers: Vec::new(),
        steps: 0,
    };
    scope.params(&r.params, errors);
    for n in [&r.weight.name, &r.grad.name] {
        scope.names.insert(n.clone());
    }
    scope.names.extend(["lr".to_string(), "step".to_string()]);
    scope.body(&r.body, Place::Rule, errors);
    let assigns_w = r
        .body
        .iter()
        .any(|s| matches!(s, Stmt::Assign { name, .. } if name.name == r.weight.name));
    if !assigns_w {
        errors.push(errors::no_update(r.name.span, &r.name.name, &r.weight.name));
    }
}

fn train_def(defs: &Defs<'_>, t: &TrainDef, errors: &mut Vec<Diagnostic>) {
    let Some(model) = defs.models.get(t.model.name.as_str()) else {
        let cands: Vec<&str> = defs.models.keys().copied().collect();
        errors.push(errors::train_unknown_model(
            t.model.span,
            &t.model.name,
            suggest(&t.model.name, cands),
        ));
        return;
    };
    let mut scope = Scope {
        names: HashSet::new(),
        defs,
        model: false,
        adjointable: Vec::new(),
        buffers: Vec::new(),
        steps: 0,
    };
    scope.params(&model.params, errors);
    scope.params(&t.params, errors);
    scope.names.insert("output".into());
    // The loss may read the model's named values (layer-local and auxiliary losses).
    for s in &model.body {
        if let Stmt::Assign { name, .. } = s {
            scope.names.insert(name.name.clone());
        }
    }
    scope.body(&t.body, Place::Train, errors);
}

/// Reports each cycle in the layer call graph once, at the call that closes it.
fn recursion(defs: &Defs<'_>, user: &Program, errors: &mut Vec<Diagnostic>) {
    fn calls(e: &Expr, out: &mut Vec<(String, Span)>) {
        match &e.kind {
            ExprKind::Call { callee, args } => {
                out.push((callee.name.clone(), callee.span));
                args.iter().for_each(|a| calls(&a.value, out));
            }
            ExprKind::Neg(x) | ExprKind::Paren(x) => calls(x, out),
            ExprKind::Binary { lhs, rhs, .. } => {
                calls(lhs, out);
                calls(rhs, out);
            }
            ExprKind::List(xs) => xs.iter().for_each(|x| calls(x, out)),
            _ => {}
        }
    }
    let mut graph: HashMap<&str, Vec<(String, Span)>> = HashMap::new();
    for item in &user.items {
        if let Item::Layer(f) = item {
            let mut out = Vec::new();
            let mut exprs = Vec::new();
            f.body.iter().for_each(|s| s.exprs(&mut exprs));
            exprs.into_iter().for_each(|e| calls(e, &mut out));
            for p in &f.params {
                if let Some(d) = &p.default {
                    calls(d, &mut out);
                }
            }
            out.retain(|(n, _)| {
                defs.layers
                    .get(n.as_str())
                    .is_some_and(|l| l.span.src == crate::diagnostics::USER)
            });
            graph.insert(&f.name.name, out);
        }
    }
    // Iterative DFS with colors; a back edge closes a cycle.
    let mut color: HashMap<&str, u8> = HashMap::new();
    let mut names: Vec<&str> = graph.keys().copied().collect();
    names.sort_unstable();
    for &start in &names {
        if color.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        color.insert(start, 1);
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let edges = &graph[node];
            if *next >= edges.len() {
                color.insert(node, 2);
                stack.pop();
                continue;
            }
            let (callee, span) = &edges[*next];
            *next += 1;
            let Some((callee_key, _)) = graph.get_key_value(callee.as_str()) else {
                continue;
            };
            match color.get(callee_key).copied().unwrap_or(0) {
                0 => {
                    color.insert(callee_key, 1);
                    stack.push((callee_key, 0));
                }
                1 => {
                    let from = stack
                        .iter()
                        .position(|(n, _)| *n == *callee_key)
                        .unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|(n, _)| n.to_string()).collect();
                    cycle.push(callee.clone());
                    errors.push(errors::recursion(*span, &cycle));
                }
                _ => {}
            }
        }
    }
}
