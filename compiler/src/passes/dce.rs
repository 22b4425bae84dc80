//! Dead code elimination: keeps only the nodes some output depends on.

use std::collections::HashMap;

use nnc_ir::{Func, Value};

/// Drops every node no output depends on, renumbering the rest in order.
pub fn run(f: &Func) -> Func {
    let mut live = vec![false; f.nodes.len()];
    let mut stack: Vec<u32> = f
        .outputs
        .iter()
        .filter_map(|v| match v {
            Value::Node(i) => Some(*i),
            _ => None,
        })
        .collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i as usize], true) {
            continue;
        }
        for a in &f.nodes[i as usize].args {
            if let Value::Node(j) = a {
                stack.push(*j);
            }
        }
    }
    let mut g = f.clone();
    g.nodes.clear();
    let mut map: HashMap<u32, u32> = HashMap::new();
    let remap = |map: &HashMap<u32, u32>, v: Value| match v {
        Value::Node(i) => Value::Node(map[&i]),
        v => v,
    };
    for (i, n) in f.nodes.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let mut n = n.clone();
        n.args = n.args.iter().map(|&a| remap(&map, a)).collect();
        map.insert(i as u32, g.nodes.len() as u32);
        g.nodes.push(n);
    }
    g.outputs = f.outputs.iter().map(|&o| remap(&map, o)).collect();
    g
}
