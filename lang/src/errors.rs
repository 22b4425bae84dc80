//! Constructor functions for every diagnostic the front end reports, one per error kind.
//! The code is stable; `tests/errors/` holds one input per code with its rendered output.

use crate::diagnostics::{Diagnostic, Span};

fn e(
    code: &'static str,
    msg: impl Into<String>,
    span: Span,
    label: impl Into<String>,
) -> Diagnostic {
    Diagnostic::error(code, msg, span, label)
}

fn did_you_mean(d: Diagnostic, suggestion: Option<&str>) -> Diagnostic {
    match suggestion {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d,
    }
}

// ---- syntax (E00xx) ----

pub(crate) fn syntax(span: Span, msg: String) -> Diagnostic {
    e("E0001", format!("syntax error: {msg}"), span, "here")
}
pub(crate) fn bad_literal(span: Span, text: &str, why: &str) -> Diagnostic {
    let shown: String = text.chars().take(40).collect();
    e("E0002", format!("bad numeric literal `{shown}`"), span, why)
        .with_help("write integers as `10` and floats as `0.5` or `1e-3`")
}
pub(crate) fn too_deep(span: Span) -> Diagnostic {
    e(
        "E0003",
        format!(
            "brackets nest deeper than {} levels",
            crate::limits::MAX_NESTING
        ),
        span,
        "too deep here",
    )
    .with_help("name intermediate values with `=` instead of nesting")
}
pub(crate) fn too_long(span: Span, ops: usize) -> Diagnostic {
    e(
        "E0004",
        format!(
            "expression too long: more than {} operators",
            crate::limits::MAX_OPERATORS
        ),
        span,
        format!("{ops} operators so far"),
    )
    .with_help("split it into several statements with intermediate names")
}
pub(crate) fn too_many_statements(span: Span) -> Diagnostic {
    e(
        "E0006",
        format!(
            "the model unrolls to more than {} statements",
            crate::limits::MAX_STATEMENTS
        ),
        span,
        "the limit was reached here",
    )
    .with_help("nested `for` loops multiply; unroll fewer steps")
}

/// The input is not UTF-8; `offset` is the first bad byte.
pub fn not_utf8(span: Span, offset: usize) -> Diagnostic {
    e(
        "E0005",
        format!("the file is not valid UTF-8 (bad byte at offset {offset})"),
        span,
        "invalid UTF-8 here",
    )
    .with_help("nnc source files are UTF-8 text")
}

/// A bug in nnc, reported as a diagnostic rather than a panic.
pub fn internal(msg: impl std::fmt::Display) -> Diagnostic {
    e(
        "E0900",
        format!("internal compiler error: {msg}"),
        Span::new(crate::diagnostics::USER, 0, 0),
        "while compiling this file",
    )
    .with_help("this is a bug in nnc; please report it with the file")
}

// ---- names and structure (E01xx) ----

pub(crate) fn unknown_name(span: Span, name: &str, suggestion: Option<&str>) -> Diagnostic {
    did_you_mean(
        e(
            "E0101",
            format!("unknown name `{name}`"),
            span,
            "not defined here",
        ),
        suggestion,
    )
}
pub(crate) fn unknown_function(span: Span, name: &str, suggestion: Option<&str>) -> Diagnostic {
    did_you_mean(
        e(
            "E0102",
            format!("unknown layer or function `{name}`"),
            span,
            "not defined",
        ),
        suggestion,
    )
}
pub(crate) fn duplicate_definition(span: Span, first: Span, what: &str, name: &str) -> Diagnostic {
    e(
        "E0103",
        format!("{what} `{name}` is defined twice"),
        span,
        "second definition",
    )
    .with_label(first, "first defined here")
    .with_help("rename one of them")
}
pub(crate) fn duplicate_param(span: Span, first: Span, name: &str) -> Diagnostic {
    e(
        "E0104",
        format!("parameter `{name}` is declared twice"),
        span,
        "again here",
    )
    .with_label(first, "first here")
}
pub(crate) fn recursion(span: Span, cycle: &[String]) -> Diagnostic {
    e(
        "E0105",
        format!("layers call each other in a cycle: {}", cycle.join(" -> ")),
        span,
        "this call closes the cycle",
    )
    .with_help("layers are inlined, so they cannot be recursive; unroll the repetition by hand")
}
pub(crate) fn missing_return(span: Span, what: &str, name: &str) -> Diagnostic {
    e(
        "E0106",
        format!("{what} `{name}` has no `return`"),
        span,
        "no return in this body",
    )
    .with_help("end the body with `return <expression>`")
}
pub(crate) fn after_return(span: Span) -> Diagnostic {
    e("E0107", "statement after `return`", span, "never runs")
        .with_help("remove it or move it before `return`")
}
pub(crate) fn unknown_kwarg(span: Span, callee: &str, kw: &str, known: &[&str]) -> Diagnostic {
    let d = e(
        "E0109",
        format!("`{callee}` has no parameter `{kw}`"),
        span,
        "unknown keyword",
    );
    match crate::diagnostics::suggest(kw, known.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None if known.is_empty() => d.with_help(format!("`{callee}` takes no keyword arguments")),
        None => d.with_help(format!("`{callee}` takes: {}", known.join(", "))),
    }
}
pub(crate) fn arity(span: Span, callee: &str, max: usize, found: usize) -> Diagnostic {
    e(
        "E0110",
        format!(
            "`{callee}` takes at most {max} argument{}, found {found}",
            if max == 1 { "" } else { "s" }
        ),
        span,
        "too many arguments",
    )
}
pub(crate) fn arg_twice(span: Span, name: &str) -> Diagnostic {
    e(
        "E0111",
        format!("argument `{name}` is given twice"),
        span,
        "given again here",
    )
}
pub(crate) fn missing_arg(span: Span, callee: &str, name: &str) -> Diagnostic {
    e(
        "E0112",
        format!("`{callee}` is missing its argument `{name}`"),
        span,
        "in this call",
    )
    .with_help(format!("pass `{name}` positionally or as `{name} = ...`"))
}
pub(crate) fn misplaced(span: Span, what: &str, place: &str) -> Diagnostic {
    e(
        "E0113",
        format!("`{what}` is not allowed in {place}"),
        span,
        "not allowed here",
    )
}
pub(crate) fn unknown_type(span: Span, name: &str) -> Diagnostic {
    let known = ["f32", "f64", "i32", "int", "float", "bool"];
    did_you_mean(
        e(
            "E0114",
            format!("unknown type `{name}`"),
            span,
            "not a type",
        ),
        crate::diagnostics::suggest(name, known),
    )
}
pub(crate) fn train_unknown_model(span: Span, name: &str, suggestion: Option<&str>) -> Diagnostic {
    did_you_mean(
        e(
            "E0115",
            format!("`train` names `{name}`, which is not a model"),
            span,
            "no such model",
        ),
        suggestion,
    )
}
pub(crate) fn unknown_setting(span: Span, key: &str, known: &[&str]) -> Diagnostic {
    let d = e(
        "E0116",
        format!("unknown train setting `{key}`"),
        span,
        "not a setting",
    );
    match crate::diagnostics::suggest(key, known.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d.with_help(format!("settings are: {}", known.join(", "))),
    }
}
pub(crate) fn missing_setting(span: Span, key: &str) -> Diagnostic {
    e(
        "E0117",
        format!("the train block has no `{key}`"),
        span,
        "in this block",
    )
    .with_help(format!(
        "add `{key} = ...`, for example `loss = cross_entropy(output, y)`"
    ))
}
pub(crate) fn unknown_optimizer(span: Span, name: &str, known: &[&str]) -> Diagnostic {
    let d = e(
        "E0118",
        format!("unknown optimizer `{name}`"),
        span,
        "not a rule",
    );
    match crate::diagnostics::suggest(name, known.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d.with_help(format!("optimizers are the rules: {}", known.join(", "))),
    }
}
pub(crate) fn unknown_schedule(span: Span, name: &str, known: &[&str]) -> Diagnostic {
    let d = e(
        "E0119",
        format!("unknown schedule `{name}`"),
        span,
        "not a schedule",
    );
    d.with_help(format!("schedules are: {}", known.join(", ")))
}
pub(crate) fn duplicate_setting(span: Span, first: Span, key: &str) -> Diagnostic {
    e(
        "E0122",
        format!("train setting `{key}` is given twice"),
        span,
        "again here",
    )
    .with_label(first, "first here")
}
pub(crate) fn no_update(span: Span, rule: &str, w: &str) -> Diagnostic {
    e(
        "E0123",
        format!("rule `{rule}` never assigns `{w}`"),
        span,
        "in this rule",
    )
    .with_help(format!(
        "a rule computes the new parameter: `{w} = {w} - lr * ...`"
    ))
}

pub(crate) fn misplaced_grad(span: Span, place: &str) -> Diagnostic {
    e(
        "E0124",
        format!("a `grad` block is not allowed in {place}"),
        span,
        "not allowed here",
    )
    .with_help("a layer may end with one `grad (dy) { .. }` block, at its top level before `return`; models, rules and train blocks use their layers' gradients")
}
pub(crate) fn misplaced_adjoint(span: Span, name: &str) -> Diagnostic {
    e(
        "E0125",
        format!("`{name}.grad` is assigned outside a layer's `grad` block"),
        span,
        "not in a grad block",
    )
    .with_help("adjoints are assigned at the top level of `grad (dy) { .. }`")
}
pub(crate) fn misplaced_yield(span: Span) -> Diagnostic {
    e(
        "E0129",
        "`yield` outside a `for .. in steps(..)` loop",
        span,
        "not in a steps loop",
    )
    .with_help("`yield name = value` stacks one value per step of `for x in steps(xs) { .. }`")
}
pub(crate) fn unknown_adjoint(
    span: Span,
    name: &str,
    why: &str,
    suggestion: Option<&str>,
) -> Diagnostic {
    did_you_mean(
        e(
            "E0126",
            format!("`{name}.grad` names no input or parameter of this layer: {why}"),
            span,
            "no such gradient",
        ),
        suggestion,
    )
}
pub(crate) fn adjoint_twice(span: Span, first: Span, name: &str) -> Diagnostic {
    e(
        "E0128",
        format!("`{name}.grad` is assigned twice"),
        span,
        "again here",
    )
    .with_label(first, "first here")
    .with_help("give each adjoint once: sum the parts into one expression")
}

// ---- types and shapes (E02xx) ----

pub(crate) fn dtype_mismatch(span: Span, op: &str, a: &str, b: &str) -> Diagnostic {
    e(
        "E0201",
        format!("element types differ in `{op}`: {a} and {b}"),
        span,
        "mixed element types",
    )
    .with_help("convert one side with `cast(x, f32)`")
}
pub(crate) fn broadcast(span: Span, op: &str, a: &str, b: &str) -> Diagnostic {
    e(
        "E0202",
        format!("shapes do not broadcast in `{op}`: {a} and {b}"),
        span,
        "incompatible shapes",
    )
    .with_help("sizes must be equal or 1, aligned from the last axis")
}
pub(crate) fn matmul(span: Span, msg: impl std::fmt::Display) -> Diagnostic {
    e("E0203", msg.to_string(), span, "in this matrix product")
}
pub(crate) fn op_rule(span: Span, op: &str, msg: impl std::fmt::Display) -> Diagnostic {
    e("E0204", msg.to_string(), span, format!("in this `{op}`"))
}
pub(crate) fn return_type(span: Span, decl: Span, expected: &str, found: &str) -> Diagnostic {
    e(
        "E0205",
        format!("return type mismatch: expected {expected}, found {found}"),
        span,
        format!("this is {found}"),
    )
    .with_label(decl, format!("declared as {expected}"))
}
pub(crate) fn arg_type(span: Span, param: &str, expected: &str, found: &str) -> Diagnostic {
    e(
        "E0206",
        format!("argument `{param}` expected {expected}, found {found}"),
        span,
        format!("this is {found}"),
    )
}
pub(crate) fn rank(span: Span, param: &str, expected: &str, found: &str) -> Diagnostic {
    e(
        "E0207",
        format!("argument `{param}` expected rank {expected}, found {found}"),
        span,
        "wrong number of axes",
    )
}
pub(crate) fn axis(span: Span, axis: i64, ty: &str) -> Diagnostic {
    e(
        "E0208",
        format!("axis {axis} is out of range for {ty}"),
        span,
        "no such axis",
    )
}
pub(crate) fn reshape(span: Span, from: &str, to: &str) -> Diagnostic {
    e(
        "E0209",
        format!("cannot reshape {from} to {to}: element counts differ"),
        span,
        "in this reshape",
    )
}
pub(crate) fn kind(span: Span, expected: &str, found: &str) -> Diagnostic {
    e(
        "E0210",
        format!("expected {expected}, found {found}"),
        span,
        format!("this is {found}"),
    )
}
pub(crate) fn loss_not_scalar(span: Span, ty: &str) -> Diagnostic {
    e(
        "E0211",
        format!("the loss must be a float scalar, found {ty}"),
        span,
        "not a scalar",
    )
    .with_help("reduce it with `mean(...)` or `sum(...)`")
}
pub(crate) fn float_needed(span: Span, op: &str, ty: &str) -> Diagnostic {
    e(
        "E0212",
        format!("`{op}` needs a float tensor, found {ty}"),
        span,
        "integer tensor",
    )
    .with_help("convert it with `cast(x, f32)`")
}
pub(crate) fn symbolic_arith(span: Span, dim: &str) -> Diagnostic {
    e(
        "E0213",
        format!("cannot compute with the symbolic dimension `{dim}`"),
        span,
        "symbolic",
    )
    .with_help("only known sizes can be combined arithmetically")
}
pub(crate) fn labels_dtype(span: Span, ty: &str) -> Diagnostic {
    e(
        "E0214",
        format!("labels must be i32, found {ty}"),
        span,
        "not integer labels",
    )
    .with_help("declare the labels as `y: i32[B]`")
}
pub(crate) fn dim_binding(span: Span, name: &str, first: &str, second: &str) -> Diagnostic {
    e(
        "E0215",
        format!("dimension `{name}` is {first} here but {second} elsewhere"),
        span,
        format!("`{name}` = {second}"),
    )
}
pub(crate) fn bad_dim(span: Span, value: &str) -> Diagnostic {
    e(
        "E0216",
        format!("a dimension must be a positive integer or a name, found {value}"),
        span,
        "bad dimension",
    )
}
pub(crate) fn div_zero(span: Span) -> Diagnostic {
    e(
        "E0217",
        "division by zero in a constant expression",
        span,
        "divides by zero",
    )
}
pub(crate) fn overflow(span: Span) -> Diagnostic {
    e(
        "E0218",
        "integer overflow in a constant expression",
        span,
        "overflows",
    )
}
pub(crate) fn too_large(span: Span, why: String) -> Diagnostic {
    e(
        "E0225",
        format!("tensor too large: {why}"),
        span,
        "this size",
    )
}
pub(crate) fn training_too_large(span: Span, why: String) -> Diagnostic {
    e(
        "E0225",
        format!("training needs too much memory: {why}"),
        span,
        "with this optimizer",
    )
}
pub(crate) fn param_symbolic(span: Span, ty: &str) -> Diagnostic {
    e(
        "E0219",
        format!("a parameter's shape must be known, found {ty}"),
        span,
        "symbolic size",
    )
    .with_help("parameters cannot depend on the batch size")
}
pub(crate) fn setting_value(span: Span, key: &str, expected: &str, found: &str) -> Diagnostic {
    e(
        "E0220",
        format!("`{key}` must be {expected}, found {found}"),
        span,
        "bad value",
    )
}
pub(crate) fn static_count(span: Span, found: &str) -> Diagnostic {
    e(
        "E0221",
        format!("`for` needs a known count or a list, found {found}"),
        span,
        "not a static count",
    )
    .with_help("loops are unrolled while checking, so the count must be known: an integer, a known dimension, or a list")
}
pub(crate) fn static_condition(span: Span, found: &str) -> Diagnostic {
    e(
        "E0222",
        format!("`if` needs a static condition (a boolean or an integer), found {found}"),
        span,
        "not a static condition",
    )
    .with_help("only one branch is built, so the condition must be known while checking; use `select(c, a, b)` to choose between tensors element by element")
}
pub(crate) fn random_outside_training(span: Span) -> Diagnostic {
    e(
        "E0223",
        "`random` draws noise for training only, but this builds the model for inference",
        span,
        "noise in inference mode",
    )
    .with_help("guard it with `if training { .. }`, as the prelude's `dropout` does")
}
pub(crate) fn adjoint_type(span: Span, name: &str, primal: &str, found: &str) -> Diagnostic {
    e(
        "E0226",
        format!("`{name}.grad` must have `{name}`'s type {primal}, found {found}"),
        span,
        format!("this is {found}"),
    )
    .with_help("an adjoint has its value's shape and dtype: reduce over broadcast axes (`sum(dy, axis = 0)`) or transpose as needed")
}
pub(crate) fn missing_adjoint(span: Span, layer: &str, names: &[String]) -> Diagnostic {
    let list: Vec<String> = names.iter().map(|n| format!("`{n}.grad`")).collect();
    e(
        "E0227",
        format!(
            "the grad block of `{layer}` does not give {}",
            list.join(", ")
        ),
        span,
        "in this grad block",
    )
    .with_help("a grad block gives the adjoint of every float tensor input and every `param` of its layer (write `x.grad = 0.0 * x` for none)")
}
pub(crate) fn stop_gradient_int(span: Span, ty: &str) -> Diagnostic {
    e(
        "E0228",
        format!("`stop_gradient` of an integer tensor {ty}: integers carry no gradient"),
        span,
        "integer tensor",
    )
    .with_help("remove `stop_gradient`: integer values are never differentiated")
}
pub(crate) fn grad_sublayer_param(span: Span, layer: &str, param: &str) -> Diagnostic {
    e(
        "E0229",
        format!("`{layer}` has a grad block, but parameter `{param}` of a layer it calls would get no gradient"),
        span,
        "in this grad block",
    )
    .with_help("declare the parameters a grad block trains with `param` in the layer itself")
}
pub(crate) fn grad_result(span: Span, found: &str) -> Diagnostic {
    e(
        "E0230",
        format!("a layer with a grad block must return a float tensor, found {found}"),
        span,
        "its result",
    )
}
pub(crate) fn steps_arg(span: Span, why: &str) -> Diagnostic {
    e("E0231", format!("bad `steps` loop: {why}"), span, "here").with_help(
        "`for x in steps(xs, axis = 1) { .. }` steps along an axis of a tensor; x is one step",
    )
}
pub(crate) fn carry_type(span: Span, name: &str, before: &str, after: &str) -> Diagnostic {
    e(
        "E0232",
        format!("`{name}` is {before} before the loop but {after} after a step"),
        span,
        "this step changes its type",
    )
    .with_help("a value a `steps` loop assigns must keep its type from step to step")
}
pub(crate) fn static_carry(span: Span, name: &str, what: &str) -> Diagnostic {
    e(
        "E0233",
        format!("a `steps` loop can carry tensors only: `{name}` is {what}"),
        span,
        "assigned in the loop's body",
    )
    .with_help("compute static values before the loop, or give the name another spelling inside it")
}
pub(crate) fn buffer_type(span: Span, name: &str, declared: &str, found: &str) -> Diagnostic {
    e(
        "E0224",
        format!("buffer `{name}` is {declared}, but its new value is {found}"),
        span,
        "declared here",
    )
    .with_help("a buffer's update must keep its type; reduce over the batch first")
}
