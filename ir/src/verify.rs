//! The IR verifier: checks the invariants every pass must keep, and reports failures on
//! the IR text (`; error:` after the offending line), as Cranelift's verifier does.
//!
//! A verifier failure is a compiler bug, never a user error: user errors are caught by the
//! front end, with source spans.

use crate::Error;

use std::collections::{HashMap, HashSet};

use crate::graph::{Func, Module, Value};
use crate::print::print_func;

/// Checks every function; on failure returns the annotated IR text.
pub fn verify_module(module: &Module) -> Result<(), Error> {
    let mut names = HashSet::new();
    for func in &module.funcs {
        if !names.insert(&func.name) {
            return Err(Error::Invalid(format!(
                "function `@{}` is defined twice",
                func.name
            )));
        }
        verify_func(func)?;
    }
    Ok(())
}

/// Checks one function: unique names, operands defined before use, and every node's type
/// equal to what the op table's rule gives.
pub fn verify_func(func: &Func) -> Result<(), Error> {
    let mut errors: HashMap<usize, String> = HashMap::new();
    let mut general = Vec::new();
    let mut seen = HashSet::new();
    for n in func
        .inputs
        .iter()
        .map(|a| &a.name)
        .chain(func.params.iter().map(|p| &p.name))
    {
        if !seen.insert(n) {
            general.push(format!("`%{n}` is defined twice"));
        }
    }
    let defined = |v: Value, i: usize| match v {
        Value::Input(k) => (k as usize) < func.inputs.len(),
        Value::Param(k) => (k as usize) < func.params.len(),
        Value::Node(k) => (k as usize) < i,
    };
    for (i, node) in func.nodes.iter().enumerate() {
        let is_scan = |v: &Value| matches!(v, Value::Node(k) if func.nodes[*k as usize].op == crate::op::Op::Scan);
        if node.op != crate::op::Op::ScanOut
            && node.args.iter().any(|a| defined(*a, i) && is_scan(a))
        {
            errors.insert(i, "a scan's own value is read only by scan_out".into());
            continue;
        }
        if let Some(bad) = node.args.iter().find(|&&a| !defined(a, i)) {
            errors.insert(
                i,
                format!("operand {bad:?} is not defined before this node"),
            );
            continue;
        }
        if let crate::op::Attr::Loop(l) = &node.attr
            && let Err(e) = verify_func(&l.body)
        {
            errors.insert(i, format!("in the body: {e}"));
            continue;
        }
        if node.op == crate::op::Op::ScanOut {
            let k = match node.attr {
                crate::op::Attr::Output(k) => k,
                _ => usize::MAX,
            };
            let want = node.args.first().and_then(|&s| func.scan_result(s, k));
            if want.as_ref() != Some(&node.ty) {
                errors.insert(i, format!("not result {k} of a scan of type {}", node.ty));
                continue;
            }
        }
        let tys: Vec<_> = node.args.iter().map(|&a| func.ty(a)).collect();
        match node.op.result_type(&tys, &node.attr, Some(&node.ty)) {
            Ok(t) if t == node.ty => {}
            Ok(t) => {
                errors.insert(i, format!("the op gives {t}"));
            }
            Err(e) => {
                errors.insert(i, e.to_string());
            }
        }
    }
    for &o in &func.outputs {
        if !defined(o, func.nodes.len()) {
            general.push(format!("output {o:?} is not defined"));
        } else if matches!(o, Value::Node(k) if func.nodes[k as usize].op == crate::op::Op::Scan) {
            general.push(format!("output {o:?} is a scan, not one of its results"));
        }
    }
    if errors.is_empty() && general.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for g in &general {
        text.push_str(&format!("; error: {g}\n"));
    }
    if general.is_empty() {
        text.push_str(&print_func(func, &|i| {
            errors.get(&i).map(|e| format!("error: {e}"))
        }));
    }
    Err(Error::Invalid(text))
}
