//! Common subexpression elimination: every op is pure, so two nodes with the same op,
//! operands, attribute and type compute the same value, and the second is dropped.

use std::collections::HashMap;

use nnc_ir::{Attr, Func, Node, Value};

use super::{Rewrite, rebuild};

/// A hashable key for a node (floats by their bits).
#[derive(Hash, PartialEq, Eq)]
struct Key {
    op: nnc_ir::Op,
    args: Vec<Value>,
    attr: (u8, Vec<usize>, u64),
    ty: String,
}

fn key(n: &Node) -> Key {
    let attr = match &n.attr {
        Attr::None => (0, vec![], 0),
        Attr::Axes(a) => (1, a.clone(), 0),
        Attr::Dims(d) => (2, d.clone(), 0),
        Attr::Perm(p) => (3, p.clone(), 0),
        Attr::Value(v) => (4, vec![], v.to_bits()),
        Attr::Window {
            kernel,
            stride,
            pad,
        } => (5, [*kernel, *stride, *pad].concat(), 0),
        Attr::Offset { axis, start } => (6, vec![*axis, *start], 0),
        Attr::Index { axis, line } => (7, vec![*axis, *line], 0),
        Attr::Axis(axis) => (8, vec![*axis], 0),
        Attr::Output(k) => (9, vec![*k], 0),
        Attr::Loop(l) => (10, vec![l.carries, l.sequences, l.reverse as usize], 0),
        Attr::Causal(c) => (11, vec![*c as usize], 0),
    };
    // Two scans are the same when their bodies print the same.
    let body = match &n.attr {
        Attr::Loop(l) => l.body.to_string(),
        _ => String::new(),
    };
    Key {
        op: n.op,
        args: n.args.clone(),
        attr,
        ty: n.ty.to_string() + &body,
    }
}

/// Replaces each node by an earlier identical one where there is one.
pub fn run(f: &Func) -> Func {
    let mut seen: HashMap<Key, Value> = HashMap::new();
    rebuild(f, |g, n| {
        let k = key(&n);
        match seen.get(&k) {
            Some(&v) => Rewrite::Value(v),
            None => {
                seen.insert(k, Value::Node(g.nodes.len() as u32));
                Rewrite::Node(n)
            }
        }
    })
}
