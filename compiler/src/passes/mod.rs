//! Graph passes, one per file, run in a fixed pipeline with the verifier after each.
//!
//! Every pass is a function `&Func -> Func` that builds a new function (nodes are never
//! edited in place, so the printer's dense numbering stays stable) and must compute the
//! same outputs: `tests/passes.rs` checks each one against the reference interpreter on
//! every example and on random graphs.

use crate::Error;

pub mod cse;
pub mod dce;
pub mod schedule;
pub mod simplify;

use std::collections::HashMap;

use nnc_ir::{Func, Node, Value};

/// A pass: its name (for `--print-after`), what it does, and the transform.
pub struct Pass {
    /// The name on the command line.
    pub name: &'static str,
    /// One line on what it does.
    pub doc: &'static str,
    /// The transform.
    pub run: fn(&Func) -> Func,
}

/// The optimization pipeline, in order.
pub const PIPELINE: &[Pass] = &[
    Pass {
        name: "simplify",
        doc: "algebraic identities, constant folding, reshape/broadcast/transpose/cast no-ops",
        run: simplify::run,
    },
    Pass {
        name: "cse",
        doc: "one node per distinct (op, operands, attribute, type)",
        run: cse::run,
    },
    Pass {
        name: "dce",
        doc: "drops nodes no output depends on",
        run: dce::run,
    },
    Pass {
        name: "schedule",
        doc: "a topological order with scalar work as early as possible",
        run: schedule::run,
    },
];

/// Runs the pipeline, verifying after each pass; `after` sees each pass's result.
pub fn optimize(f: &Func, after: &mut dyn FnMut(&str, &Func)) -> Result<Func, Error> {
    let mut cur = f.clone();
    for p in PIPELINE {
        cur = nested(p.run, &cur);
        nnc_ir::verify_func(&cur).map_err(|e| {
            Error::Invalid(format!("the IR is invalid after pass `{}`:\n{e}", p.name))
        })?;
        after(p.name, &cur);
    }
    Ok(cur)
}

/// Runs a pass on the bodies of `f`'s scans (innermost first), then on `f`.
pub fn nested(run: fn(&Func) -> Func, f: &Func) -> Func {
    let mut g = f.clone();
    for n in &mut g.nodes {
        if let nnc_ir::Attr::Loop(l) = &mut n.attr {
            l.body = nested(run, &l.body);
        }
    }
    run(&g)
}

/// What a rewrite returns for a node: an existing value, or a node to append.
pub enum Rewrite {
    /// Use this (already rebuilt) value instead.
    Value(Value),
    /// Append this node (its operands already rebuilt).
    Node(Node),
}

/// Rebuilds `f` node by node: operands are mapped to their rebuilt values and `rewrite`
/// decides each node's replacement; it may append helper nodes to the function being
/// built (a zero constant a rewrite needs) before returning. Inputs and parameters are
/// kept.
pub fn rebuild(f: &Func, mut rewrite: impl FnMut(&mut Func, Node) -> Rewrite) -> Func {
    let mut g = f.clone();
    g.nodes.clear();
    let mut map: HashMap<Value, Value> = HashMap::new();
    let get = |map: &HashMap<Value, Value>, v: Value| *map.get(&v).unwrap_or(&v);
    for (i, n) in f.nodes.iter().enumerate() {
        let mut n = n.clone();
        n.args = n.args.iter().map(|&a| get(&map, a)).collect();
        let v = match rewrite(&mut g, n) {
            Rewrite::Value(v) => v,
            Rewrite::Node(n) => {
                g.nodes.push(n);
                Value::Node(g.nodes.len() as u32 - 1)
            }
        };
        map.insert(Value::Node(i as u32), v);
    }
    g.outputs = f.outputs.iter().map(|&o| get(&map, o)).collect();
    g
}
