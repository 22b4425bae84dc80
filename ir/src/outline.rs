//! Outlining a loop body: the front end elaborates a `for x in steps(xs)` body once, in
//! place, over stand-ins (`loop_var` nodes) for the carries and the step of the sequence;
//! `outline` then moves the nodes that depend on them into the body function of a `scan`
//! and leaves the rest (loop-invariant work: weights broadcast, constants) outside,
//! computed once.

use crate::Error;

use std::collections::HashMap;

use crate::graph::{Func, Loop, Value};
use crate::op::{Attr, Op};

/// What `outline` made: the scan's results (final carries, then the stacked outputs) and,
/// for each node left outside from `start` on, its old index (in its new order).
pub struct Outlined {
    /// `scan_out` values.
    pub results: Vec<Value>,
    /// The old index of each node from `start` on that stayed outside, in order.
    pub kept: Vec<usize>,
}

/// Replaces the nodes of `f` from `start` on by a scan. `holes` are the stand-ins (nodes
/// from `start` on): the first `carries` for the carries, the rest for one step of each
/// sequence; `init` gives, for each hole, its carry's initial value or its sequence (in
/// the outer function: defined before `start`, or after it and outside the body); `outs` are the body's results: the new
/// carries, then one step of each output. Nodes that depend on a hole (or on a cotangent
/// made inside, so a grad block stays whole) form the body; every other value they read
/// becomes a constant operand of the scan.
pub fn outline(
    f: &mut Func,
    start: usize,
    holes: &[Value],
    carries: usize,
    init: &[Value],
    outs: &[Value],
    name: &str,
) -> Result<Outlined, Error> {
    let n = f.nodes.len();
    let hole_of: HashMap<Value, usize> = holes.iter().enumerate().map(|(k, &v)| (v, k)).collect();
    let mut inside = vec![false; n];
    for i in start..n {
        let v = Value::Node(i as u32);
        inside[i] = hole_of.contains_key(&v)
            || f.nodes[i].op == Op::Cotangent
            || f.nodes[i]
                .args
                .iter()
                .any(|a| matches!(a, Value::Node(j) if inside[*j as usize]));
    }
    let mut body = Func::new(name);
    for (k, &h) in holes.iter().enumerate() {
        body.add_input(format!("v{k}"), f.ty(h).clone());
    }
    // Values of the body: holes and captures are inputs, inside nodes are nodes.
    let mut map: HashMap<Value, Value> = HashMap::new();
    for (&h, &k) in &hole_of {
        map.insert(h, Value::Input(k as u32));
    }
    let mut captures: Vec<Value> = Vec::new();
    let mut get = |body: &mut Func, map: &mut HashMap<Value, Value>, v: Value| -> Value {
        if let Some(&b) = map.get(&v) {
            return b;
        }
        // A constant is made again inside (fused loops compute it in registers) rather
        // than read from memory at every step.
        if let Value::Node(i) = v
            && f.nodes[i as usize].op == Op::Const
        {
            let c = &f.nodes[i as usize];
            let b = body.push(Op::Const, vec![], c.attr.clone(), c.ty.clone());
            map.insert(v, b);
            return b;
        }
        let b = body.add_input(format!("k{}", captures.len()), f.ty(v).clone());
        captures.push(v);
        map.insert(v, b);
        b
    };
    for (i, &is_inside) in inside.iter().enumerate().skip(start) {
        let v = Value::Node(i as u32);
        if !is_inside || hole_of.contains_key(&v) {
            continue;
        }
        let node = f.nodes[i].clone();
        let args = node
            .args
            .iter()
            .map(|&a| get(&mut body, &mut map, a))
            .collect();
        let b = body.push(node.op, args, node.attr, node.ty);
        map.insert(v, b);
    }
    body.outputs = outs.iter().map(|&o| get(&mut body, &mut map, o)).collect();
    // The outer function: nodes before `start`, the ones left outside, then the scan.
    let old = std::mem::take(&mut f.nodes);
    f.nodes = old[..start].to_vec();
    let mut outer: HashMap<u32, u32> = HashMap::new();
    let mut kept = Vec::new();
    let remap = |outer: &HashMap<u32, u32>, v: Value| match v {
        Value::Node(i) if i as usize >= start => outer.get(&i).map(|&j| Value::Node(j)),
        v => Some(v),
    };
    for (i, node) in old.iter().enumerate().skip(start) {
        if inside[i] {
            continue;
        }
        let mut node = node.clone();
        node.args = node
            .args
            .iter()
            .map(|&a| {
                remap(&outer, a).ok_or_else(|| {
                    Error::Outline("a loop-invariant node reads the loop body".into())
                })
            })
            .collect::<Result<_, _>>()?;
        outer.insert(i as u32, f.nodes.len() as u32);
        kept.push(i);
        f.nodes.push(node);
    }
    // Initial values and sequences are defined before `start`, or are nodes after it that
    // stay outside (a loop's noise, drawn for all steps before it runs).
    let mut args: Vec<Value> = Vec::with_capacity(init.len() + captures.len());
    for &v in init {
        args.push(
            remap(&outer, v).ok_or_else(|| {
                Error::Outline("a loop's sequence is made inside the loop".into())
            })?,
        );
    }
    for &c in &captures {
        args.push(
            remap(&outer, c)
                .ok_or_else(|| Error::Outline("a loop operand is made inside the loop".into()))?,
        );
    }
    let l = Loop {
        carries,
        sequences: holes.len() - carries,
        reverse: false,
        body,
    };
    let scan = f.build(Op::Scan, args, Attr::Loop(Box::new(l)), None)?;
    let results = f.scan_outs(scan);
    Ok(Outlined { results, kept })
}
