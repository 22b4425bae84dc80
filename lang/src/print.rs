//! Prints a syntax tree as canonical source text, for `nnc ir --stage ast`.
//!
//! The output is valid nnc source: parsing it and printing again gives the same text.
//! Parentheses are printed where the source had them, so the tree is reproduced exactly.

use std::fmt::Write;

use crate::ast::*;

/// Prints a whole program.
pub fn program(p: &Program) -> String {
    let mut out = String::new();
    for (i, item) in p.items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match item {
            Item::Layer(f) => fn_def(&mut out, "layer", f),
            Item::Model(f) => fn_def(&mut out, "model", f),
            Item::Train(t) => {
                write!(out, "train {}({}) ", t.model.name, params(&t.params)).unwrap();
                block(&mut out, &t.body);
            }
            Item::Rule(r) => {
                write!(
                    out,
                    "rule {}({}) for ({}, {}) ",
                    r.name.name,
                    params(&r.params),
                    r.weight.name,
                    r.grad.name
                )
                .unwrap();
                block(&mut out, &r.body);
            }
        }
    }
    out
}

fn fn_def(out: &mut String, kw: &str, f: &FnDef) {
    write!(out, "{kw} {}({})", f.name.name, params(&f.params)).unwrap();
    if let Some(r) = &f.ret {
        write!(out, " -> {}", type_ann(r)).unwrap();
    }
    out.push(' ');
    block(out, &f.body);
}

fn params(ps: &[ParamDef]) -> String {
    let parts: Vec<String> = ps
        .iter()
        .map(|p| {
            let mut s = p.name.name.clone();
            if let Some(t) = &p.ty {
                write!(s, ": {}", type_ann(t)).unwrap();
            }
            if let Some(d) = &p.default {
                write!(s, " = {}", expr(d)).unwrap();
            }
            s
        })
        .collect();
    parts.join(", ")
}

fn type_ann(t: &TypeAnn) -> String {
    match t {
        TypeAnn::Scalar(i) => i.name.clone(),
        TypeAnn::Tensor { dtype, dims, .. } => {
            let ds: Vec<String> = dims.iter().map(expr).collect();
            format!("{}[{}]", dtype.name, ds.join(", "))
        }
    }
}

fn block(out: &mut String, body: &[Stmt]) {
    nested(out, body, 1);
    out.push('\n');
}

/// A block's statements at `depth` levels of indentation, braces included (no newline
/// after the closing brace).
fn nested(out: &mut String, body: &[Stmt], depth: usize) {
    out.push_str("{\n");
    let pad = "    ".repeat(depth);
    for s in body {
        out.push_str(&pad);
        match s {
            Stmt::Assign { name, value, .. } => {
                write!(out, "{} = {}", name.name, expr(value)).unwrap()
            }
            Stmt::Param {
                trainable,
                name,
                ty,
                init,
                ..
            } => {
                let kw = if *trainable { "param" } else { "buffer" };
                write!(out, "{kw} {}: {}", name.name, type_ann(ty)).unwrap();
                if let Some(i) = init {
                    write!(out, " = {}", expr(i)).unwrap();
                }
            }
            Stmt::State { name, init, .. } => {
                write!(out, "state {}", name.name).unwrap();
                if let Some(i) = init {
                    write!(out, " = {}", expr(i)).unwrap();
                }
            }
            Stmt::Return { value, .. } => write!(out, "return {}", expr(value)).unwrap(),
            Stmt::Grad { dy, body, .. } => {
                write!(out, "grad ({}) ", dy.name).unwrap();
                nested(out, body, depth + 1);
            }
            Stmt::GradAssign { target, value, .. } => {
                write!(out, "{}.grad = {}", target.name, expr(value)).unwrap()
            }
            Stmt::For {
                var, iter, body, ..
            } => {
                write!(out, "for {} in {} ", var.name, expr(iter)).unwrap();
                nested(out, body, depth + 1);
            }
            Stmt::If {
                cond, then, els, ..
            } => {
                write!(out, "if {} ", expr(cond)).unwrap();
                nested(out, then, depth + 1);
                if !els.is_empty() {
                    out.push_str(" else ");
                    nested(out, els, depth + 1);
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&"    ".repeat(depth - 1));
    out.push('}');
}

/// Prints one expression.
pub fn expr(e: &Expr) -> String {
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
