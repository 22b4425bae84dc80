//! The front end's driver: parse the user's program beside the prelude, run the static
//! checks, then elaborate every model (and its train block and optimizer rule) into the
//! tensor IR. Diagnostics are collected across all of it, deduplicated and sorted.

use std::sync::LazyLock;

use nnc_ir::{DType, Dim, Func, Module, ParamKind, Shape, TensorType, Value};

use crate::ast::*;
use crate::diagnostics::{Diagnostic, PRELUDE, Span, USER};
use crate::elab::{CallSpec, Elab, Static, Val};
use crate::errors;
use crate::names::{SETTINGS, SettingKind};
use crate::resolve::{Defs, resolve};

/// The prelude's source text.
pub const PRELUDE_SRC: &str = include_str!("prelude.nn");

static PRELUDE_AST: LazyLock<Program> =
    LazyLock::new(|| match crate::syntax::parse(PRELUDE_SRC, PRELUDE) {
        Ok(p) => p,
        Err(e) => panic!("the prelude does not parse: {e:?}"),
    });

/// The parsed prelude.
pub fn prelude() -> &'static Program {
    &PRELUDE_AST
}

/// A checked program: its syntax tree, its IR, and how each model trains.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The user's syntax tree.
    pub program: Program,
    /// One function per model (`@Mlp`); for trained models also `@Mlp.loss` (returning
    /// the loss and the model's output) and `@Mlp.update` (the optimizer rule, over one
    /// flat parameter).
    pub module: Module,
    /// The train blocks, resolved.
    pub trains: Vec<TrainSpec>,
    /// The user's source line of each node of the models' functions and training losses
    /// (as elaborated, before any pass; 0 where none is known), by function name: what
    /// run-time errors point at.
    pub lines: std::collections::HashMap<String, Vec<usize>>,
    /// For each node of a model's function, the byte offset in the user's source of the
    /// model's top-level statement that made it (`usize::MAX` where none did): what
    /// `nnc draw` groups nodes and parameters by.
    pub statements: std::collections::HashMap<String, Vec<usize>>,
}

/// A resolved train block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    /// The model's name; its functions are `@{model}`, `@{model}.loss`, `@{model}.update`.
    pub model: String,
    /// The optimizer rule and its hyperparameters (defaults filled in).
    pub optimizer: CallSpec,
    /// The learning-rate schedule (`constant` when not given).
    pub schedule: CallSpec,
    /// Batch size (default 32).
    pub batch: i64,
    /// Epochs (default 10).
    pub epochs: i64,
    /// The other settings given (`seed`, `clip`, `grad_noise`, `data`), by name.
    pub settings: Vec<(String, Static)>,
    /// Where data comes from, if declared.
    pub data: Option<CallSpec>,
}

/// Parses only, for `nnc ir --stage ast`.
pub fn parse(src: &str) -> Result<Program, Vec<Diagnostic>> {
    crate::syntax::parse(src, USER)
}

/// Parses and checks a program. Returns every diagnostic found, sorted by position.
pub fn check(src: &str) -> Result<Checked, Vec<Diagnostic>> {
    check_noting(src, false).0
}

/// Notes on spans of the user's source: a name's type, a call's signature.
pub(crate) type Notes = Vec<(Span, String)>;

/// `check`, also returning what the elaborator noted about the user's spans when
/// `noting` (for an editor's hover).
pub(crate) fn check_noting(src: &str, noting: bool) -> (Result<Checked, Vec<Diagnostic>>, Notes) {
    let program = match parse(src) {
        Ok(p) => p,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut errors = Vec::new();
    let defs = Defs::collect(prelude(), &program, src, &mut errors);
    if noting {
        *defs.notes.borrow_mut() = Some(Vec::new());
    }
    resolve(&defs, &program, &mut errors);
    let mut module = Module::default();
    let mut trains = Vec::new();
    let mut lines = std::collections::HashMap::new();
    let mut statements = std::collections::HashMap::new();
    // Elaborate only what resolved cleanly, so one mistake is reported once.
    let resolved_ok = errors.is_empty();
    if resolved_ok {
        for item in &program.items {
            match item {
                Item::Model(m) => {
                    let name = m.name.name.clone();
                    let (func, .., mut func_lines, mut top) =
                        model_func(&defs, m, name, &[], false, &mut errors);
                    func_lines.resize(func.nodes.len(), 0);
                    top.resize(func.nodes.len(), usize::MAX);
                    lines.insert(func.name.clone(), func_lines);
                    statements.insert(func.name.clone(), top);
                    module.funcs.push(func);
                    if let Some(t) = defs.trains.get(m.name.name.as_str()) {
                        if let Some(TrainFuncs {
                            loss,
                            update: Some(update),
                            spec,
                            modal,
                            lines: loss_lines,
                        }) = train(&defs, m, t, true, &mut errors)
                        {
                            lines.insert(loss.name.clone(), loss_lines);
                            module.funcs.push(loss);
                            module.funcs.push(update);
                            trains.push(spec);
                            // A model that reads `training` gets its loss in inference mode
                            // too, for evaluation.
                            if modal
                                && let Some(TrainFuncs { loss: eval, .. }) =
                                    train(&defs, m, t, false, &mut errors)
                            {
                                module.funcs.push(eval);
                            }
                        }
                    }
                }
                Item::Rule(r) => {
                    // Check every rule with its defaults, even when no train block uses it.
                    let spec = CallSpec {
                        name: r.name.name.clone(),
                        args: Vec::new(),
                    };
                    let _ = rule_func(&defs, r, &spec, "check", r.name.span, &mut errors);
                }
                _ => {}
            }
        }
    }
    if errors.is_empty() {
        debug_assert!(
            nnc_ir::verify_module(&module).is_ok(),
            "{:?}",
            nnc_ir::verify_module(&module)
        );
    }
    let notes = defs.notes.take().unwrap_or_default();
    drop(defs);
    if errors.is_empty() {
        let checked = Checked {
            program,
            module,
            trains,
            lines,
            statements,
        };
        return (Ok(checked), notes);
    }
    errors.sort_by_key(|d| (d.span().src, d.span().start, d.code));
    errors.dedup_by(|a, b| a.code == b.code && a.primary == b.primary && a.message == b.message);
    (Err(errors), notes)
}

/// A model's function, its final scope and returned value, whether it read `training`,
/// and its buffers' new values.
type ModelFunc = (
    Func,
    std::collections::HashMap<String, Val>,
    Val,
    bool,
    Vec<(Value, Value)>,
    Vec<usize>,
    Vec<usize>,
);

/// Builds a model's function: inputs from its typed parameters, then its body, in
/// training or inference mode (the value of `training`). Also says whether the body read
/// `training`.
fn model_func<'d>(
    defs: &'d Defs<'d>,
    m: &'d FnDef,
    name: String,
    extra: &'d [ParamDef],
    training: bool,
    errors: &mut Vec<Diagnostic>,
) -> ModelFunc {
    let mut scope = std::collections::HashMap::new();
    let mut func = Func::new(name);
    // Inputs first, so their names are reserved before parameters are named.
    let mut pending = Vec::new();
    for p in m.params.iter().chain(extra) {
        match (&p.ty, &p.default) {
            (Some(TypeAnn::Tensor { dtype, dims, .. }), _) => {
                let Some(dt) = DType::from_name(&dtype.name) else {
                    continue;
                };
                let mut shape = Vec::new();
                let mut ok = true;
                for d in dims {
                    match &d.kind {
                        ExprKind::Int(n) if *n > 0 => shape.push(Dim::Known(*n as u64)),
                        ExprKind::Name(n) => match scope.get(n) {
                            Some(Val::Int(k)) if *k > 0 => shape.push(Dim::Known(*k as u64)),
                            Some(Val::Dim(s)) => shape.push(Dim::Sym(s.clone())),
                            None => {
                                scope.insert(n.clone(), Val::Dim(n.clone()));
                                shape.push(Dim::Sym(n.clone()));
                            }
                            Some(_) => {
                                errors.push(errors::bad_dim(d.span, n));
                                ok = false;
                            }
                        },
                        _ => {
                            let text = match &d.kind {
                                ExprKind::Int(n) => n.to_string(),
                                _ => "an expression".to_string(),
                            };
                            errors.push(errors::bad_dim(d.span, &text));
                            ok = false;
                        }
                    }
                }
                if ok {
                    let v = func.add_input(p.name.name.clone(), TensorType::new(dt, Shape(shape)));
                    scope.insert(p.name.name.clone(), Val::Tensor(v));
                } else {
                    scope.insert(p.name.name.clone(), Val::Error);
                }
            }
            (_, Some(_)) => pending.push(p),
            (_, None) => errors.push(errors::kind(
                p.span,
                "a typed input like `x: f32[B, 64]` or a default value",
                "an untyped parameter",
            )),
        }
    }
    let mut elab = Elab::new(defs, func, errors);
    elab.training = training;
    for p in m.params.iter().chain(extra) {
        if let Some(v) = scope.get(&p.name.name) {
            elab.note_value(p.name.span, &p.name.name, v);
        }
    }
    for p in pending {
        let d = p.default.as_ref().expect("pending params have defaults");
        let v = elab.eval(&mut scope, d);
        scope.insert(p.name.name.clone(), v);
    }
    let ret = elab.body(&mut scope, &m.body).unwrap_or(Val::Error);
    elab.collect_buffer_updates(&scope);
    if let (Some(ann), Some(last)) = (&m.ret, m.body.last()) {
        elab.check_return(&mut scope, ann, &ret, last.span());
    }
    if let Val::Tensor(v) = ret {
        elab.func.outputs.push(v);
    } else if !matches!(ret, Val::Error) {
        let span = m.body.last().map_or(m.span, |s| s.span());
        let d = errors::kind(span, "a model to return a tensor", "something else");
        elab.errors.push(d);
    }
    let func = std::mem::replace(&mut elab.func, Func::new(""));
    let updates = std::mem::take(&mut elab.buffer_updates);
    let lines = std::mem::take(&mut elab.lines);
    let top = std::mem::take(&mut elab.top);
    (func, scope, ret, elab.read_training, updates, lines, top)
}

/// Builds `@Model.loss` and `@Model.update` from a train block (in inference mode, only
/// the loss, as `@Model.eval`). Also says whether the model read `training`.
fn train<'d>(
    defs: &'d Defs<'d>,
    m: &'d FnDef,
    t: &'d TrainDef,
    training: bool,
    errors: &mut Vec<Diagnostic>,
) -> Option<TrainFuncs> {
    let name = &m.name.name;
    let before = errors.len();
    let fname = if training {
        nnc_ir::Role::Loss
    } else {
        nnc_ir::Role::Eval
    }
    .name(name);
    let (func, mut scope, output, modal, updates, lines, _) =
        model_func(defs, m, fname, &t.params, training, errors);
    if errors.len() > before {
        return None;
    }
    let mut elab = Elab::new(defs, func, errors);
    elab.training = training;
    elab.lines = lines;
    scope.insert("output".into(), output.clone());
    let mut seen: std::collections::HashMap<&str, Span> = std::collections::HashMap::new();
    let mut spec = TrainSpec {
        model: name.clone(),
        optimizer: CallSpec {
            name: String::new(),
            args: Vec::new(),
        },
        schedule: CallSpec {
            name: "constant".into(),
            args: Vec::new(),
        },
        batch: 32,
        epochs: 10,
        settings: Vec::new(),
        data: None,
    };
    let mut loss = None;
    let mut opt_span = t.model.span;
    for s in &t.body {
        let Stmt::Assign {
            name: key, value, ..
        } = s
        else {
            continue;
        };
        let Some(&(_, kind, _)) = SETTINGS.iter().find(|(k, _, _)| *k == key.name) else {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, _, _)| *k).collect();
            elab.errors
                .push(errors::unknown_setting(key.span, &key.name, &known));
            continue;
        };
        if let Some(&first) = seen.get(key.name.as_str()) {
            elab.errors
                .push(errors::duplicate_setting(key.span, first, &key.name));
            continue;
        }
        seen.insert(&key.name, key.span);
        let nodes_before = elab.func.nodes.len();
        // A bare rule or schedule name means a call with the defaults.
        let v = match &value.kind {
            ExprKind::Name(n)
                if defs.rules.contains_key(n.as_str())
                    || crate::names::SCHEDULES.iter().any(|(s, _)| s == n) =>
            {
                let call = Expr {
                    kind: ExprKind::Call {
                        callee: Ident {
                            name: n.clone(),
                            span: value.span,
                        },
                        args: Vec::new(),
                    },
                    span: value.span,
                };
                elab.eval(&mut scope, &call)
            }
            _ => elab.eval(&mut scope, value),
        };
        elab.mark_lines(nodes_before, key.span);
        if matches!(v, Val::Error) {
            continue;
        }
        let found = elab.describe(&v);
        let vspan = value.span;
        match kind {
            SettingKind::Loss => match v {
                Val::Tensor(l)
                    if elab.func.ty(l).rank() == 0 && elab.func.ty(l).dtype.is_float() =>
                {
                    loss = Some(l)
                }
                _ => elab.errors.push(errors::loss_not_scalar(vspan, &found)),
            },
            SettingKind::Optimizer => match v {
                Val::Call(c) if defs.rules.contains_key(c.name.as_str()) => {
                    spec.optimizer = c;
                    opt_span = vspan;
                }
                _ => {
                    let mut known: Vec<&str> = defs.rules.keys().copied().collect();
                    known.sort_unstable();
                    let n = call_name(value);
                    elab.errors
                        .push(errors::unknown_optimizer(vspan, &n, &known));
                }
            },
            SettingKind::Schedule => match v {
                Val::Call(c) if crate::names::SCHEDULES.iter().any(|(s, _)| *s == c.name) => {
                    spec.schedule = c
                }
                _ => {
                    let known: Vec<&str> =
                        crate::names::SCHEDULES.iter().map(|(s, _)| *s).collect();
                    elab.errors
                        .push(errors::unknown_schedule(vspan, &call_name(value), &known));
                }
            },
            SettingKind::Data => match v {
                Val::Call(c) if crate::names::DATA_SOURCES.iter().any(|(s, _)| *s == c.name) => {
                    spec.data = Some(c)
                }
                _ => elab.errors.push(errors::setting_value(
                    vspan,
                    &key.name,
                    "a data source like `csv(\"data.csv\")`",
                    &found,
                )),
            },
            SettingKind::PositiveInt | SettingKind::Int => match v {
                Val::Int(n) if n > 0 || (kind == SettingKind::Int && n == 0) => {
                    match key.name.as_str() {
                        "batch" => spec.batch = n,
                        "epochs" => spec.epochs = n,
                        _ => spec.settings.push((key.name.clone(), Static::Int(n))),
                    }
                }
                _ => {
                    let want = if kind == SettingKind::Int {
                        "a non-negative integer"
                    } else {
                        "a positive integer"
                    };
                    elab.errors
                        .push(errors::setting_value(vspan, &key.name, want, &found));
                }
            },
            SettingKind::Float => match v {
                Val::Int(n) if n >= 0 => spec
                    .settings
                    .push((key.name.clone(), Static::Float(n as f64))),
                Val::Float(f) if f >= 0.0 => {
                    spec.settings.push((key.name.clone(), Static::Float(f)))
                }
                _ => elab.errors.push(errors::setting_value(
                    vspan,
                    &key.name,
                    "a non-negative number",
                    &found,
                )),
            },
        }
    }
    for (key, _, required) in SETTINGS {
        if *required && !seen.contains_key(key) {
            elab.errors.push(errors::missing_setting(t.model.span, key));
        }
    }
    let (Some(loss), Val::Tensor(out)) = (loss, output) else {
        return None;
    };
    elab.func.outputs = vec![loss, out];
    // In training, the buffers' new values follow, one per buffer in order (unchanged
    // ones as themselves); the driver writes them back after each step.
    if training {
        for (i, p) in elab.func.params.iter().enumerate() {
            if p.kind == ParamKind::Buffer {
                let b = Value::Param(i as u32);
                let new = updates.iter().find(|(k, _)| *k == b).map_or(b, |&(_, v)| v);
                elab.func.outputs.push(new);
            }
        }
    }
    let loss_func = std::mem::replace(&mut elab.func, Func::new(""));
    let mut loss_lines = std::mem::take(&mut elab.lines);
    loss_lines.resize(loss_func.nodes.len(), 0);
    let elab_read = elab.read_training;
    if spec.optimizer.name.is_empty() {
        return None;
    }
    // The update rule does not depend on the mode: built once, with the training loss.
    let update = if training {
        let rule = defs.rules[spec.optimizer.name.as_str()];
        let f = &nnc_ir::Role::Update.name(name);
        let u = rule_func(defs, rule, &spec.optimizer, f, opt_span, errors)?;
        // What training holds per trained element: the host's f64 parameter and states,
        // and the JIT's f32 arenas of parameters, gradients and states.
        let states = u
            .params
            .iter()
            .filter(|p| p.kind == ParamKind::State)
            .count() as u128;
        let elements: u128 = loss_func
            .params
            .iter()
            .map(|p| p.ty.shape.volume().0)
            .fold(0u128, u128::saturating_add);
        let bytes = elements.saturating_mul(8 * (1 + states) + 4 * (2 + states));
        let limit = nnc_ir::limits::memory_limit() as u128;
        if bytes > limit {
            errors.push(errors::training_too_large(
                opt_span,
                format!(
                    "`{name}` with `{}` holds its {elements} parameters, their gradients and {states} optimizer state{} each: {} of memory, more than the limit of {}",
                    spec.optimizer.name,
                    if states == 1 { "" } else { "s" },
                    nnc_ir::limits::bytes_text(bytes),
                    nnc_ir::limits::bytes_text(limit)
                ),
            ));
            return None;
        }
        Some(u)
    } else {
        None
    };
    Some(TrainFuncs {
        loss: loss_func,
        update,
        spec,
        modal: modal || elab_read,
        lines: loss_lines,
    })
}

/// A train block's functions: the loss (or, in inference mode, eval) function, the update
/// rule (built with the training loss), the resolved block, whether the model read
/// `training`, and the loss's source lines.
struct TrainFuncs {
    loss: Func,
    update: Option<Func>,
    spec: TrainSpec,
    modal: bool,
    lines: Vec<usize>,
}

fn call_name(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Call { callee, .. } => callee.name.clone(),
        ExprKind::Name(n) => n.clone(),
        _ => "this expression".into(),
    }
}

/// Builds an optimizer rule's function over one flat parameter `f32[N]`:
/// `(w, g, lr, step) -> (w', states'...)`, with `state`s as runtime-owned values.
/// Hyperparameters other than `lr` are folded in as constants.
fn rule_func<'d>(
    defs: &'d Defs<'d>,
    r: &'d RuleDef,
    spec: &CallSpec,
    name: &str,
    site: Span,
    errors: &mut Vec<Diagnostic>,
) -> Option<Func> {
    let before = errors.len();
    let vec_ty = TensorType::new(DType::F32, Shape(vec![Dim::Sym("N".into())]));
    let scalar = TensorType::scalar(DType::F32);
    let mut func = Func::new(name);
    let w = func.add_input(r.weight.name.clone(), vec_ty.clone());
    let g = func.add_input(r.grad.name.clone(), vec_ty.clone());
    let lr = func.add_input("lr", scalar.clone());
    let step = func.add_input("step", scalar);
    let mut scope = std::collections::HashMap::new();
    let mut elab = Elab::new(defs, func, errors);
    // Hyperparameters: the call's values, else the rule's defaults.
    for p in &r.params {
        if p.name.name == "lr" {
            continue;
        }
        let given = spec
            .args
            .iter()
            .find(|(k, _)| *k == p.name.name)
            .map(|(_, v)| v.clone());
        let v = match (given, &p.default) {
            (Some(s), _) => static_val(&s),
            (None, Some(d)) => elab.eval(&mut scope, d),
            (None, None) => {
                elab.errors
                    .push(errors::missing_arg(site, &r.name.name, &p.name.name));
                Val::Error
            }
        };
        scope.insert(p.name.name.clone(), v);
    }
    scope.insert(r.weight.name.clone(), Val::Tensor(w));
    scope.insert(r.grad.name.clone(), Val::Tensor(g));
    scope.insert("lr".into(), Val::Tensor(lr));
    scope.insert("step".into(), Val::Tensor(step));
    let mut states: Vec<(String, Span)> = Vec::new();
    for s in &r.body {
        match s {
            Stmt::Assign { name, value, .. } => {
                let v = elab.eval(&mut scope, value);
                let v = elab.vectorize(v, &vec_ty, value.span);
                scope.insert(name.name.clone(), v);
            }
            Stmt::State { name, init, span } => {
                let init_val = match init {
                    Some(e) => elab.eval(&mut scope, e),
                    None => Val::Init("zeros".into(), vec![]),
                };
                let Some(resolved) =
                    elab.resolve_init(&init_val, &vec_ty, init.as_ref().map_or(*span, |e| e.span))
                else {
                    continue;
                };
                let v = elab.func.add_param(
                    ParamKind::State,
                    name.name.clone(),
                    vec_ty.clone(),
                    resolved,
                );
                scope.insert(name.name.clone(), Val::Tensor(v));
                states.push((name.name.clone(), name.span));
            }
            _ => {}
        }
    }
    let mut outputs: Vec<Value> = Vec::new();
    for n in std::iter::once(&r.weight.name).chain(states.iter().map(|(n, _)| n)) {
        match scope.get(n) {
            Some(Val::Tensor(v)) => outputs.push(*v),
            _ => return None,
        }
    }
    elab.func.outputs = outputs;
    let func = std::mem::replace(&mut elab.func, Func::new(""));
    (errors.len() == before).then_some(func)
}

fn static_val(s: &Static) -> Val {
    match s {
        Static::Int(i) => Val::Int(*i),
        Static::Float(f) => Val::Float(*f),
        Static::Bool(b) => Val::Bool(*b),
        Static::Str(s) => Val::Str(s.clone()),
        Static::List(xs) => Val::List(xs.iter().map(static_val).collect()),
    }
}
