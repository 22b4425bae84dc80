//! Scheduling: reorders nodes (a stable topological order) so that scalar work comes as
//! early as its operands allow. An optimizer rule computes its bias corrections from the
//! step number between the vector updates; moved ahead, they no longer split the vector
//! work, which the JIT then fuses into one loop over the parameters.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use nnc_ir::{Func, Value};

fn scalar(f: &Func, i: usize) -> bool {
    f.nodes[i].ty.rank() == 0
}

/// The same nodes in a topological order that puts ready scalar nodes first, otherwise
/// keeping the original order.
pub fn run(f: &Func) -> Func {
    let n = f.nodes.len();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending = vec![0usize; n];
    for (i, node) in f.nodes.iter().enumerate() {
        for a in &node.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
                pending[i] += 1;
            }
        }
    }
    // Ready nodes by (not scalar, original index): scalars first, then in order.
    let mut ready: BinaryHeap<Reverse<(bool, usize)>> = (0..n)
        .filter(|&i| pending[i] == 0)
        .map(|i| Reverse((!scalar(f, i), i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(Reverse((!scalar(f, u), u)));
            }
        }
    }
    let mut new_index = vec![0u32; n];
    for (k, &i) in order.iter().enumerate() {
        new_index[i] = k as u32;
    }
    let remap = |v: Value| match v {
        Value::Node(i) => Value::Node(new_index[i as usize]),
        v => v,
    };
    let mut g = f.clone();
    g.nodes = order
        .iter()
        .map(|&i| {
            let mut node = f.nodes[i].clone();
            node.args = node.args.iter().map(|&a| remap(a)).collect();
            node
        })
        .collect();
    g.outputs = f.outputs.iter().map(|&o| remap(o)).collect();
    g
}
