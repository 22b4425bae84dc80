//! Reverse-mode automatic differentiation as an IR-to-IR transform.
//!
//! `grad(f)` takes a function whose first output is a scalar loss and returns a function
//! with the same inputs and parameters that computes the same outputs followed by the
//! gradient of the loss with respect to every trained parameter (`param`, not `state`), in
//! declaration order. The forward nodes are copied unchanged; the backward nodes follow,
//! built from the vector-Jacobian product of each primitive in [`vjp`] — the one table of
//! gradient rules, one arm per op of the op table.
//!
//! Only values that depend on a trained parameter get an adjoint, so constants, inputs and
//! integer values never produce backward nodes. Adjoints of a value used several times are
//! summed with `add`.

use crate::Error;

use std::collections::HashMap;

use nnc_ir::{Attr, Dim, Func, Op, ParamKind, Shape, TensorType, Value};

/// What the gradient of an op's operand is, as emitted by [`vjp`].
type Contribution = (usize, Value);

/// Builds the gradient function of `f` (named `{f.name}` with `.loss` replaced by `.grad`,
/// or `.grad` appended). `f`'s first output must be a float scalar.
pub fn grad(f: &Func) -> Result<Func, Error> {
    let Some(&loss) = f.outputs.first() else {
        return Err(Error::Autodiff(format!(
            "`@{}` returns nothing to differentiate",
            f.name
        )));
    };
    let lt = f.ty(loss).clone();
    if lt.rank() != 0 || !lt.dtype.is_float() {
        return Err(Error::Autodiff(format!(
            "`@{}` must return a float scalar loss first, found {lt}",
            f.name
        )));
    }
    let mut g = f.clone();
    g.name = nnc_ir::Role::Grad.name(nnc_ir::Role::of(&f.name).0);

    // Which values depend on a trained parameter.
    let mut needs = vec![false; f.nodes.len()];
    let needs_value = |needs: &[bool], v: Value| match v {
        Value::Input(_) => false,
        Value::Param(i) => f.params[i as usize].kind == ParamKind::Param,
        Value::Node(i) => needs[i as usize],
    };
    for (i, n) in f.nodes.iter().enumerate() {
        needs[i] = n.ty.dtype.is_float() && n.args.iter().any(|&a| needs_value(&needs, a));
    }

    let seeds = if needs_value(&needs, loss) {
        vec![(
            loss,
            g.build(Op::Const, vec![], Attr::Value(1.0), Some(lt))?,
        )]
    } else {
        Vec::new()
    };
    let leaf = |v: Value| needs_value(&needs, v);
    let adj = backprop(f, &mut g, &needs, &leaf, &seeds)?;
    for (i, p) in f.params.iter().enumerate() {
        if p.kind != ParamKind::Param {
            continue;
        }
        let v = Value::Param(i as u32);
        let gv = match adj.get(&v) {
            Some(&gv) => gv,
            // The loss does not depend on this parameter: its gradient is zero.
            None => g.build(Op::Const, vec![], Attr::Value(0.0), Some(p.ty.clone()))?,
        };
        g.outputs.push(gv);
    }
    Ok(g)
}

/// Reverse accumulation over `f`'s nodes, emitting the backward into `g` (a copy of `f`
/// being extended): starts from the adjoints `seeds` (summed where a value repeats) and
/// returns the adjoint of every value that got one. `needs[i]`: node `i` depends on a
/// value being differentiated.
fn backprop(
    f: &Func,
    g: &mut Func,
    needs: &[bool],
    leaf: &dyn Fn(Value) -> bool,
    seeds: &[(Value, Value)],
) -> Result<HashMap<Value, Value>, Error> {
    let needs_value = |v: Value| match v {
        Value::Node(i) => needs[i as usize],
        v => leaf(v),
    };
    let mut adj: HashMap<Value, Value> = HashMap::new();
    let add = |g: &mut Func, adj: &mut HashMap<Value, Value>, a: Value, ga: Value| {
        let total = match adj.get(&a) {
            Some(&prev) => g.build(Op::Add, vec![prev, ga], Attr::None, None)?,
            None => ga,
        };
        adj.insert(a, total);
        Ok::<(), Error>(())
    };
    for &(v, s) in seeds {
        add(g, &mut adj, v, s)?;
    }
    // The adjoints of each scan's results, by (scan, result), gathered from its scan_outs.
    let mut outs: HashMap<(u32, usize), Value> = HashMap::new();
    for i in (0..f.nodes.len()).rev() {
        let node = &f.nodes[i];
        if let (Op::ScanOut, Attr::Output(k), Some(&gy)) =
            (node.op, &node.attr, adj.get(&Value::Node(i as u32)))
            && let Value::Node(s) = node.args[0]
        {
            let prev = outs.get(&(s, *k)).copied();
            let total = match prev {
                Some(p) => g.build(Op::Add, vec![p, gy], Attr::None, None)?,
                None => gy,
            };
            outs.insert((s, *k), total);
            continue;
        }
        let wants: Vec<bool> = node
            .args
            .iter()
            .map(|&a| needs_value(a) && f.ty(a).dtype.is_float())
            .collect();
        let contributions = if let Attr::Loop(l) = &node.attr {
            let n = l.body.outputs.len();
            let gys: Vec<Option<Value>> =
                (0..n).map(|k| outs.get(&(i as u32, k)).copied()).collect();
            if gys.iter().all(Option::is_none) {
                continue;
            }
            scan(f, g, i, &gys, &wants)?
        } else {
            let Some(&gy) = adj.get(&Value::Node(i as u32)) else {
                continue;
            };
            if node.op == Op::CustomGrad {
                custom(f, g, i, gy, &wants)?
            } else {
                vjp(
                    g,
                    node.op,
                    &node.attr,
                    &node.args,
                    Value::Node(i as u32),
                    gy,
                    &wants,
                )?
            }
        };
        for (k, ga) in contributions {
            add(g, &mut adj, node.args[k], ga)?;
        }
    }
    Ok(adj)
}

/// The vector-Jacobian product of a whole function: a function taking `f`'s inputs, then a
/// cotangent for each of its outputs, and returning the adjoint of each input; inputs
/// without `wrt[i]`, integer inputs and inputs the outputs do not depend on get zeros, and
/// nothing is computed for them. `f` has no parameters.
pub fn vjp_func(f: &Func, wrt: &[bool]) -> Result<Func, Error> {
    let mut g = f.clone();
    g.name = format!("{}.vjp", f.name);
    g.outputs.clear();
    let n_in = f.inputs.len();
    let float_in = |v: Value| matches!(v, Value::Input(i) if wrt[i as usize] && f.inputs[i as usize].ty.dtype.is_float());
    let mut needs = vec![false; f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        needs[i] = n.ty.dtype.is_float()
            && n.args.iter().any(|&a| match a {
                Value::Node(j) => needs[j as usize],
                a => float_in(a),
            });
    }
    let mut seeds = Vec::new();
    for (k, &o) in f.outputs.iter().enumerate() {
        let ty = f.ty(o).clone();
        let ct = g.add_input(format!("d{k}"), ty);
        let live = match o {
            Value::Node(j) => needs[j as usize],
            o => float_in(o),
        };
        if live {
            seeds.push((o, ct));
        }
    }
    let adj = backprop(f, &mut g, &needs, &float_in, &seeds)?;
    for i in 0..n_in {
        let v = Value::Input(i as u32);
        let gv = match adj.get(&v) {
            Some(&gv) => gv,
            None => {
                let ty = f.inputs[i].ty.clone();
                g.build(Op::Const, vec![], Attr::Value(0.0), Some(ty))?
            }
        };
        g.outputs.push(gv);
    }
    Ok(g)
}

/// The values of the body's vector-Jacobian product `j` its backward part (nodes marked
/// `back`) reads from the forward step: those it computes again (`remat`, with what they
/// read, marked in the second result) and the residuals, saved per step (the first; the
/// carries among them are inputs below `nc`).
fn residuals_of(
    j: &Func,
    back: &[bool],
    nc: usize,
    remat: &dyn Fn(usize) -> bool,
) -> (Vec<Value>, Vec<bool>) {
    let mut residuals: Vec<Value> = Vec::new();
    let mut copy = vec![false; j.nodes.len()];
    let mut stack: Vec<Value> = Vec::new();
    for (k, n) in j.nodes.iter().enumerate() {
        if back[k] {
            stack.extend(&n.args);
        }
    }
    stack.extend(&j.outputs);
    while let Some(v) = stack.pop() {
        match v {
            Value::Node(k) if !back[k as usize] => {
                let k = k as usize;
                if remat(k) {
                    if !std::mem::replace(&mut copy[k], true) {
                        stack.extend(&j.nodes[k].args);
                    }
                } else if !residuals.contains(&v) {
                    residuals.push(v);
                }
            }
            Value::Input(k) if (k as usize) < nc && !residuals.contains(&v) => residuals.push(v),
            _ => {}
        }
    }
    (residuals, copy)
}

/// The adjoints of a scan's operands (node `i` of `f`), from the adjoints `gys` of its
/// results: a second scan runs the steps backward. The body's vector-Jacobian product is
/// split in two: what does not depend on the cotangents (the forward step and whatever
/// of the backward needs only its values) becomes the forward scan's body, which also
/// outputs, stacked, every value the rest reads (the residuals, O(T) memory); the rest
/// is the backward scan's body, which carries the carries' adjoints and accumulates the
/// wanted constants'.
fn scan(
    f: &Func,
    g: &mut Func,
    i: usize,
    gys: &[Option<Value>],
    wants: &[bool],
) -> Result<Vec<Contribution>, Error> {
    let node = &f.nodes[i];
    let Attr::Loop(l) = &node.attr else {
        return Err(Error::Autodiff(format!("%{i} is not a scan")));
    };
    let (nc, ns) = (l.carries, l.sequences);
    let nk = node.args.len() - nc - ns;
    let ny = l.body.outputs.len() - nc;
    let n_in = nc + ns + nk;
    // The constants whose adjoints are wanted (each gets an accumulator), and the
    // sequences'.
    let acc: Vec<usize> = (0..nk).filter(|&c| wants[nc + ns + c]).collect();
    let seqs: Vec<usize> = (0..ns).filter(|&c| wants[nc + c]).collect();
    let mut wrt = vec![true; n_in];
    for c in 0..ns {
        wrt[nc + c] = seqs.contains(&c);
    }
    for c in 0..nk {
        wrt[nc + ns + c] = acc.contains(&c);
    }
    let j = vjp_func(&l.body, &wrt)?;
    // Which of its nodes depend on a cotangent (inputs from n_in on).
    let mut back = vec![false; j.nodes.len()];
    let dep = |back: &[bool], v: Value| match v {
        Value::Input(k) => k as usize >= n_in,
        Value::Node(k) => back[k as usize],
        Value::Param(_) => false,
    };
    for (k, n) in j.nodes.iter().enumerate() {
        back[k] = n.args.iter().any(|&a| dep(&back, a));
    }
    // The forward step: the nodes that do not, in order.
    let mut fwd = Func::new(l.body.name.clone());
    fwd.inputs = l.body.inputs.clone();
    let mut fmap: HashMap<Value, Value> = (0..n_in as u32)
        .map(|k| (Value::Input(k), Value::Input(k)))
        .collect();
    for (k, n) in j.nodes.iter().enumerate() {
        if !back[k] {
            let args = n.args.iter().map(|a| fmap[a]).collect();
            let v = fwd.push(n.op, args, n.attr.clone(), n.ty.clone());
            fmap.insert(Value::Node(k as u32), v);
        }
    }
    // What the backward reads of it. Layout ops and constants, and values of the
    // constants alone, are computed again there from their operands (a transpose read by
    // a matrix product costs nothing); every other value is a residual, saved per step.
    let mut per_step = vec![false; j.nodes.len()];
    for (k, n) in j.nodes.iter().enumerate() {
        per_step[k] = n.args.iter().any(|&a| match a {
            Value::Input(x) => (x as usize) < nc + ns,
            Value::Node(x) => per_step[x as usize],
            Value::Param(_) => false,
        });
    }
    let layout = |k: usize| {
        !per_step[k]
            || matches!(
                j.nodes[k].op,
                Op::Const | Op::Transpose | Op::Reshape | Op::Broadcast | Op::Slice
            )
    };
    // One cheap elementwise op (a product, a difference: a sigmoid's y (1 - y)) is
    // computed again in the backward step from the per-step values it reads (its
    // leaves), instead of saved, where that saves no fewer values: when it reads one
    // value, or only values saved anyway.
    let cheap = |k: usize| {
        let n = &j.nodes[k];
        n.op.info().lowering == (nnc_ir::Lowering::Fused { cheap: true }) && n.op != Op::Const
    };
    let mut leaves: Vec<Option<Vec<Value>>> = vec![None; j.nodes.len()];
    for k in 0..j.nodes.len() {
        if !per_step[k] || back[k] || !cheap(k) {
            continue;
        }
        let mut ls: Vec<Value> = Vec::new();
        for &a in &j.nodes[k].args {
            let from = match a {
                Value::Node(x) if layout(x as usize) => continue,
                Value::Node(x) => match &leaves[x as usize] {
                    Some(l) => l.clone(),
                    None => vec![a],
                },
                Value::Input(x) if (x as usize) < nc => vec![a],
                _ => continue,
            };
            for v in from {
                if !ls.contains(&v) {
                    ls.push(v);
                }
            }
        }
        leaves[k] = Some(ls);
    }
    let single = |k: usize| layout(k) || leaves[k].as_ref().is_some_and(|l| l.len() <= 1);
    let (first, _) = residuals_of(&j, &back, nc, &single);
    let within = |k: usize| {
        single(k)
            || leaves[k]
                .as_ref()
                .is_some_and(|l| l.iter().all(|v| first.contains(v)))
    };
    let (mut residuals, copy) = residuals_of(&j, &back, nc, &within);
    residuals.sort();
    fwd.outputs = l.body.outputs.iter().map(|o| fmap[o]).collect();
    fwd.outputs.extend(residuals.iter().map(|r| fmap[r]));
    g.nodes[i].attr = Attr::Loop(Box::new(nnc_ir::Loop {
        carries: nc,
        sequences: ns,
        reverse: l.reverse,
        body: fwd,
    }));
    let scan_v = Value::Node(i as u32);
    let mut saved = Vec::new();
    for k in 0..residuals.len() {
        let at = nc + ny + k;
        let ty = g
            .scan_result(scan_v, at)
            .ok_or_else(|| Error::Autodiff("the forward scan lost a result".into()))?;
        saved.push(g.push(Op::ScanOut, vec![scan_v], Attr::Output(at), ty));
    }
    // A constant's adjoint summed over the steps: carried and accumulated step by step,
    // or, when it is a product contracting the rows (`p^T q`, a weight's gradient),
    // stacked and summed after the loop as one product over all the steps. (Stacking a
    // per-row adjoint, a bias's, and summing it after was measured slower than the carry:
    // 10.9 against 9.8 ms per step on a 64-unit LSTM over 64 steps.)
    let hoisted = |c: usize| -> Option<Vec<Value>> {
        let Value::Node(m) = j.outputs[nc + ns + c] else {
            return None;
        };
        let n = &j.nodes[m as usize];
        if back[m as usize]
            && n.op == Op::MatMul
            && n.ty.rank() == 2
            && let Value::Node(t) = n.args[0]
            && j.nodes[t as usize].op == Op::Transpose
            && j.ty(n.args[1]).rank() == 2
            && j.ty(j.nodes[t as usize].args[0]).rank() == 2
        {
            return Some(vec![j.nodes[t as usize].args[0], n.args[1]]);
        }
        None
    };
    let hoist: Vec<(usize, Vec<Value>)> = acc
        .iter()
        .filter_map(|&c| hoisted(c).map(|v| (c, v)))
        .collect();
    let kept: Vec<usize> = acc
        .iter()
        .copied()
        .filter(|c| !hoist.iter().any(|(h, _)| h == c))
        .collect();
    // One backward step: carries (dc, dk), sequences (residuals, x, dy), constants (k).
    let mut body = Func::new(format!("{}.back", l.body.name));
    let bin = &l.body.inputs;
    let mut map: HashMap<Value, Value> = HashMap::new();
    for (c, b) in bin.iter().enumerate().take(nc) {
        let v = body.add_input(format!("dc{c}"), b.ty.clone());
        map.insert(Value::Input((n_in + c) as u32), v);
    }
    let dk: Vec<Value> = kept
        .iter()
        .map(|&c| body.add_input(format!("dk{c}"), bin[nc + ns + c].ty.clone()))
        .collect();
    for (k, &r) in residuals.iter().enumerate() {
        let v = body.add_input(format!("r{k}"), j.ty(r).clone());
        map.insert(r, v);
    }
    for c in 0..ns {
        let v = body.add_input(format!("x{c}"), bin[nc + c].ty.clone());
        map.insert(Value::Input((nc + c) as u32), v);
    }
    for c in 0..ny {
        let ty = l.body.ty(l.body.outputs[nc + c]).clone();
        let v = body.add_input(format!("dy{c}"), ty);
        map.insert(Value::Input((n_in + nc + c) as u32), v);
    }
    for c in 0..nk {
        let v = body.add_input(format!("k{c}"), bin[nc + ns + c].ty.clone());
        map.insert(Value::Input((nc + ns + c) as u32), v);
    }
    for (k, n) in j.nodes.iter().enumerate() {
        let v = Value::Node(k as u32);
        if back[k] || (copy[k] && !map.contains_key(&v)) {
            let args = n.args.iter().map(|a| map[a]).collect();
            let b = body.push(n.op, args, n.attr.clone(), n.ty.clone());
            map.insert(v, b);
        }
    }
    let get = |v: &Value| {
        map.get(v)
            .copied()
            .ok_or_else(|| Error::Autodiff("a scan's adjoint reads an unsaved value".into()))
    };
    let adj: Vec<Value> = j.outputs.iter().map(get).collect::<Result<_, _>>()?;
    let mut outputs: Vec<Value> = adj[..nc].to_vec();
    for (a, &c) in kept.iter().enumerate() {
        outputs.push(body.build(Op::Add, vec![dk[a], adj[nc + ns + c]], Attr::None, None)?);
    }
    outputs.extend(seqs.iter().map(|&c| adj[nc + c]));
    // Where each hoisted value's steps are: a sequence the backward already reads
    // (`Ok(operand)`), or an output it stacks (`Err(output)`).
    let first_seq = nc + kept.len();
    let seq_inputs = first_seq..first_seq + residuals.len() + ns + ny;
    let mut stacked: Vec<Vec<Result<usize, usize>>> = Vec::new();
    for (_, vals) in &hoist {
        let mut at = Vec::new();
        for v in vals {
            let bv = get(v)?;
            // A value already stacked (a sequence's adjoint is often the weight
            // gradient's right factor) is stacked once.
            let stacked_from = nc + kept.len();
            at.push(match bv {
                Value::Input(k) if seq_inputs.contains(&(k as usize)) => Ok(k as usize),
                _ => match outputs[stacked_from..].iter().position(|&o| o == bv) {
                    Some(p) => Err(stacked_from + p),
                    None => {
                        outputs.push(bv);
                        Err(outputs.len() - 1)
                    }
                },
            });
        }
        stacked.push(at);
    }
    body.outputs = outputs;
    // Its operands in `g`.
    let zeros =
        |g: &mut Func, ty: TensorType| g.build(Op::Const, vec![], Attr::Value(0.0), Some(ty));
    let mut ops = Vec::new();
    for (c, gy) in gys.iter().enumerate().take(nc) {
        let v = match *gy {
            Some(v) => v,
            None => zeros(g, f.ty(node.args[c]).clone())?,
        };
        ops.push(v);
    }
    for &c in &kept {
        ops.push(zeros(g, f.ty(node.args[nc + ns + c]).clone())?);
    }
    ops.extend(&saved);
    ops.extend(&node.args[nc..nc + ns]);
    for c in 0..ny {
        let v = match gys[nc + c] {
            Some(v) => v,
            None => {
                let ty = g
                    .scan_result(scan_v, nc + c)
                    .ok_or_else(|| Error::Autodiff("a scan lost a result".into()))?;
                zeros(g, ty)?
            }
        };
        ops.push(v);
    }
    ops.extend(&node.args[nc + ns..]);
    let back_loop = nnc_ir::Loop {
        carries: nc + kept.len(),
        sequences: residuals.len() + ns + ny,
        reverse: !l.reverse,
        body,
    };
    let bv = g.build(Op::Scan, ops.clone(), Attr::Loop(Box::new(back_loop)), None)?;
    let res = g.scan_outs(bv);
    // The hoisted sums, after the loop.
    let mut sums: HashMap<usize, Value> = HashMap::new();
    for ((c, _), at) in hoist.iter().zip(&stacked) {
        let steps: Vec<Value> = at
            .iter()
            .map(|a| match *a {
                Ok(k) => ops[k],
                Err(o) => res[o],
            })
            .collect();
        let total = if steps.len() == 2 {
            let tr = g.build(
                Op::Transpose,
                vec![steps[0]],
                Attr::Perm(vec![0, 2, 1]),
                None,
            )?;
            let mm = g.build(Op::MatMul, vec![tr, steps[1]], Attr::None, None)?;
            g.build(Op::Sum, vec![mm], Attr::Axes(vec![0]), None)?
        } else {
            g.build(Op::Sum, vec![steps[0]], Attr::Axes(vec![0]), None)?
        };
        sums.insert(*c, total);
    }
    let mut out = Vec::new();
    for (k, &w) in wants.iter().enumerate() {
        if !w {
            continue;
        }
        let v = if k < nc {
            Some(res[k])
        } else if k < nc + ns {
            let at = seqs.iter().position(|&c| c == k - nc);
            at.map(|a| res[nc + kept.len() + a])
        } else if let Some(&s) = sums.get(&(k - nc - ns)) {
            Some(s)
        } else {
            let at = kept.iter().position(|&c| c == k - nc - ns);
            at.map(|a| res[nc + a])
        };
        if let Some(v) = v {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// The adjoints a layer's own backward gives its operands: `custom_grad y, dy, (x, dx)*`
/// at node `i` of `f`, with `gy` the adjoint of its result. Each wanted `dx` is computed
/// again in `g` with `gy` in place of the cotangent `dy`: the nodes between them are
/// copied, the rest (forward values the backward reads) are shared. `y` gets nothing: the
/// layer's body is not differentiated.
fn custom(
    f: &Func,
    g: &mut Func,
    i: usize,
    gy: Value,
    wants: &[bool],
) -> Result<Vec<Contribution>, Error> {
    let node = &f.nodes[i];
    let ct = node.args[1];
    let Value::Node(c) = ct else {
        return Err(Error::Autodiff(format!(
            "custom_grad %{i} has no cotangent operand"
        )));
    };
    if f.nodes[c as usize].op != Op::Cotangent {
        return Err(Error::Autodiff(format!(
            "the second operand of custom_grad %{i} must be a cotangent"
        )));
    }
    let wanted: Vec<usize> = (2..node.args.len())
        .step_by(2)
        .filter(|&k| wants.get(k).copied().unwrap_or(false))
        .collect();
    // The nodes between the cotangent and `i` that the wanted adjoints are computed from
    // (only those can depend on the cotangent): `used[j - start]`. Sized by the block,
    // not the function, so T blocks in an unrolled recurrence cost O(T x block).
    let start = c as usize + 1;
    let mut used = vec![false; i - start];
    let mark = |used: &mut Vec<bool>, v: Value| {
        if let Value::Node(j) = v
            && (j as usize) >= start
            && (j as usize) < i
        {
            used[j as usize - start] = true;
        }
    };
    for &k in &wanted {
        mark(&mut used, node.args[k + 1]);
    }
    for j in (start..i).rev() {
        if used[j - start] {
            f.nodes[j].args.iter().for_each(|&a| mark(&mut used, a));
        }
    }
    // Copy, in order, each of them that depends on the cotangent.
    let mut map: HashMap<Value, Value> = HashMap::from([(ct, gy)]);
    for (j, n) in f.nodes.iter().enumerate().take(i).skip(start) {
        if !used[j - start] || !n.args.iter().any(|a| map.contains_key(a)) {
            continue;
        }
        let args = n.args.iter().map(|a| *map.get(a).unwrap_or(a)).collect();
        let v = g.build(n.op, args, n.attr.clone(), Some(n.ty.clone()))?;
        map.insert(Value::Node(j as u32), v);
    }
    Ok(wanted
        .into_iter()
        .map(|k| {
            let dx = node.args[k + 1];
            (k, *map.get(&dx).unwrap_or(&dx))
        })
        .collect())
}

/// The gradient rules. Given an op applied to `args` giving `y`, and the adjoint `gy` of
/// `y`, emits the adjoint of each operand `k` with `wants[k]` and returns them. Ops whose
/// result is piecewise constant in an operand (signs, comparisons, masks, labels) give that
/// operand no contribution: their derivative is zero wherever it exists.
pub fn vjp(
    f: &mut Func,
    op: Op,
    attr: &Attr,
    args: &[Value],
    y: Value,
    gy: Value,
    wants: &[bool],
) -> Result<Vec<Contribution>, Error> {
    let mut b = Builder { f };
    let want = |k: usize| wants.get(k).copied().unwrap_or(false);
    let x = args.first().copied();
    let mut out: Vec<Contribution> = Vec::new();
    match op {
        // d(-x) = -dx
        Op::Neg => out.push((0, b.un(Op::Neg, gy)?)),
        // d|x| = sign(x) dx
        Op::Abs => {
            let s = b.un(Op::Sign, x.unwrap())?;
            out.push((0, b.bin(Op::Mul, gy, s)?));
        }
        // stop_gradient: no gradient flows back, by definition.
        Op::StopGradient => {}
        // A layer's own backward is applied by `grad` (see `custom`), never here.
        Op::Cotangent => {}
        Op::CustomGrad => {
            return Err(Error::Autodiff(
                "custom_grad is differentiated by its own backward".into(),
            ));
        }
        Op::Scan | Op::ScanOut => {
            return Err(Error::Autodiff(
                "a scan is differentiated by `backprop`".into(),
            ));
        }
        Op::LoopVar => {
            return Err(Error::Autodiff(
                "a loop body's stand-in reached autodiff".into(),
            ));
        }
        // sign, comparisons: piecewise constant, zero derivative.
        Op::Sign | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Eq | Op::Ne => {}
        // d e^x = e^x dx
        Op::Exp => out.push((0, b.bin(Op::Mul, gy, y)?)),
        // d ln x = dx / x
        Op::Log => out.push((0, b.bin(Op::Div, gy, x.unwrap())?)),
        // d sqrt(x) = dx / (2 sqrt(x))
        Op::Sqrt => {
            let two_y = b.bin(Op::Add, y, y)?;
            out.push((0, b.bin(Op::Div, gy, two_y)?));
        }
        // d tanh(x) = (1 - tanh(x)^2) dx
        Op::Tanh => {
            let one = b.fill(1.0, y)?;
            let yy = b.bin(Op::Mul, y, y)?;
            let d = b.bin(Op::Sub, one, yy)?;
            out.push((0, b.bin(Op::Mul, gy, d)?));
        }
        // d sigmoid(x) = y (1 - y) dx
        Op::Sigmoid => {
            let one = b.fill(1.0, y)?;
            let d = b.bin(Op::Sub, one, y)?;
            let yd = b.bin(Op::Mul, y, d)?;
            out.push((0, b.bin(Op::Mul, gy, yd)?));
        }
        // d sin(x) = cos(x) dx
        Op::Sin => {
            let c = b.un(Op::Cos, x.unwrap())?;
            out.push((0, b.bin(Op::Mul, gy, c)?));
        }
        // d cos(x) = -sin(x) dx
        Op::Cos => {
            let s = b.un(Op::Sin, x.unwrap())?;
            let n = b.un(Op::Neg, s)?;
            out.push((0, b.bin(Op::Mul, gy, n)?));
        }
        // d erf(x) = 2/sqrt(pi) e^(-x^2) dx
        Op::Erf => {
            let xv = x.unwrap();
            let xx = b.bin(Op::Mul, xv, xv)?;
            let nxx = b.un(Op::Neg, xx)?;
            let e = b.un(Op::Exp, nxx)?;
            let k = b.fill(std::f64::consts::FRAC_2_SQRT_PI, e)?;
            let d = b.bin(Op::Mul, k, e)?;
            out.push((0, b.bin(Op::Mul, gy, d)?));
        }
        // d(a + b) = da + db
        Op::Add => {
            if want(0) {
                out.push((0, gy));
            }
            if want(1) {
                out.push((1, gy));
            }
        }
        // d(a - b) = da - db
        Op::Sub => {
            if want(0) {
                out.push((0, gy));
            }
            if want(1) {
                out.push((1, b.un(Op::Neg, gy)?));
            }
        }
        // d(a b) = b da + a db
        Op::Mul => {
            if want(0) {
                out.push((0, b.bin(Op::Mul, gy, args[1])?));
            }
            if want(1) {
                out.push((1, b.bin(Op::Mul, gy, args[0])?));
            }
        }
        // d(a / b) = da / b - (a / b) db / b
        Op::Div => {
            let ga = b.bin(Op::Div, gy, args[1])?;
            if want(0) {
                out.push((0, ga));
            }
            if want(1) {
                let t = b.bin(Op::Mul, ga, y)?;
                out.push((1, b.un(Op::Neg, t)?));
            }
        }
        // d max(a, b) = da where a > b, else db (so relu = max(x, 0) has slope 0 at 0,
        // as in PyTorch); min likewise with a < b.
        Op::Max | Op::Min => {
            let cmp = if op == Op::Max { Op::Gt } else { Op::Lt };
            let c = b.bin(cmp, args[0], args[1])?;
            let zero = b.fill(0.0, gy)?;
            if want(0) {
                out.push((0, b.select(c, gy, zero)?));
            }
            if want(1) {
                out.push((1, b.select(c, zero, gy)?));
            }
        }
        // d a^b = b a^(b-1) da + a^b ln(a) db
        Op::Pow => {
            if want(0) {
                let one = b.fill(1.0, y)?;
                let bm1 = b.bin(Op::Sub, args[1], one)?;
                let p = b.bin(Op::Pow, args[0], bm1)?;
                let d = b.bin(Op::Mul, args[1], p)?;
                out.push((0, b.bin(Op::Mul, gy, d)?));
            }
            if want(1) {
                let l = b.un(Op::Log, args[0])?;
                let d = b.bin(Op::Mul, y, l)?;
                out.push((1, b.bin(Op::Mul, gy, d)?));
            }
        }
        // d select(c, a, b) = select(c, da, db); the condition is a mask.
        Op::Select => {
            let zero = b.fill(0.0, gy)?;
            if want(1) {
                out.push((1, b.select(args[0], gy, zero)?));
            }
            if want(2) {
                out.push((2, b.select(args[0], zero, gy)?));
            }
        }
        // d sum(x, axes) = broadcast of dy back along the reduced axes.
        Op::Sum => {
            let xt = b.ty(args[0]);
            out.push((0, b.unreduce(gy, attr, &xt)?));
        }
        // d mean(x, axes) = broadcast of dy / count back along the reduced axes. The count
        // may be a symbolic dimension (the batch), so it is computed as a sum of ones.
        Op::Mean => {
            let xt = b.ty(args[0]);
            let count = b.count(&xt, attr)?;
            let share = b.bin(Op::Div, gy, count)?;
            out.push((0, b.unreduce(share, attr, &xt)?));
        }
        // d reduce_max(x, axes): dy goes to the maxima, shared evenly between ties.
        Op::ReduceMax => {
            let xt = b.ty(args[0]);
            let yb = b.unreduce(y, attr, &xt)?;
            let mask = b.bin(Op::Eq, args[0], yb)?;
            let ties = b.f.build(Op::Sum, vec![mask], attr.clone(), None)?;
            let share = b.bin(Op::Div, gy, ties)?;
            let sb = b.unreduce(share, attr, &xt)?;
            out.push((0, b.bin(Op::Mul, sb, mask)?));
        }
        // d(A B) = dA B + A dB, so dA = dY B^T and dB = A^T dY.
        // A matrix shared by a batch of products gets the sum of the batch's adjoints.
        Op::MatMul => {
            if want(0) {
                let bt = b.swap_last(args[1])?;
                let g = b.bin(Op::MatMul, gy, bt)?;
                out.push((0, b.sum_to_rank(g, b.ty(args[0]).rank())?));
            }
            if want(1) {
                let at = b.swap_last(args[0])?;
                let g = b.bin(Op::MatMul, at, gy)?;
                out.push((1, b.sum_to_rank(g, b.ty(args[1]).rank())?));
            }
        }
        // The adjoint of a copy along new axes sums over those axes.
        Op::Broadcast => {
            let Attr::Dims(dims) = attr else {
                return Err(Error::Autodiff("broadcast without dims".into()));
            };
            let yr = b.ty(y).rank();
            let axes: Vec<usize> = (0..yr).filter(|a| !dims.contains(a)).collect();
            // dims are sorted, so the kept axes come out in the operand's order.
            let s = if axes.is_empty() {
                gy
            } else {
                b.f.build(Op::Sum, vec![gy], Attr::Axes(axes), None)?
            };
            out.push((0, s));
        }
        // Same elements, other shape.
        Op::Reshape => {
            let xt = b.ty(args[0]);
            out.push((0, b.f.build(Op::Reshape, vec![gy], Attr::None, Some(xt))?));
        }
        // The inverse permutation.
        Op::Transpose => {
            let Attr::Perm(perm) = attr else {
                return Err(Error::Autodiff("transpose without perm".into()));
            };
            let mut inv = vec![0; perm.len()];
            for (k, &p) in perm.iter().enumerate() {
                inv[p] = k;
            }
            out.push((
                0,
                b.f.build(Op::Transpose, vec![gy], Attr::Perm(inv), None)?,
            ));
        }
        // No operands.
        Op::Const => {}
        // Float-to-float casts pass the adjoint through, converted back; from an integer
        // there is nothing to differentiate.
        Op::Cast => {
            let xt = b.ty(args[0]);
            if xt.dtype.is_float() {
                out.push((0, b.f.build(Op::Cast, vec![gy], Attr::None, Some(xt))?));
            }
        }
        // Integer labels, indices: not differentiable.
        Op::OneHot | Op::Iota | Op::Random => {}
        // d gather(t, ids) = scatter_add(dy, ids) into t's shape: each row of the table
        // gets the sum of the adjoints of the places it was gathered to (ids are integers:
        // no adjoint). O(ids x row), never O(rows of the table) per id.
        Op::Gather => {
            let tt = b.ty(args[0]);
            let d =
                b.f.build(Op::ScatterAdd, vec![gy, args[1]], attr.clone(), Some(tt))?;
            out.push((0, d));
        }
        // d concat(x1, .., xn) = the slice of dy where each operand sits.
        Op::Concat => {
            let Attr::Axis(axis) = *attr else {
                return Err(Error::Autodiff("concat without its axis".into()));
            };
            let mut start = 0;
            for (k, &a) in args.iter().enumerate() {
                let at = b.ty(a);
                let len = at.shape.0[axis].known().unwrap_or(0) as usize;
                if want(k) {
                    let s =
                        b.f.build(Op::Slice, vec![gy], Attr::Offset { axis, start }, Some(at))?;
                    out.push((k, s));
                }
                start += len;
            }
        }
        // d attention(q, k, v) = the three slices of attention_grad(q, k, v, o, dy), which
        // recomputes the scores row by row (nothing of size Tq x Tk is kept).
        Op::Attention => {
            let (qt, kt) = (b.ty(args[0]), b.ty(args[1]));
            let axis = qt.rank() - 2;
            let tq = qt.shape.0[axis].known().unwrap_or(0) as usize;
            let tk = kt.shape.0[axis].known().unwrap_or(0) as usize;
            let all = b.f.build(
                Op::AttentionGrad,
                vec![args[0], args[1], args[2], y, gy],
                attr.clone(),
                None,
            )?;
            for (k, start, ty) in [(0, 0, qt), (1, tq, kt.clone()), (2, tq + tk, kt)] {
                if want(k) {
                    let s =
                        b.f.build(Op::Slice, vec![all], Attr::Offset { axis, start }, Some(ty))?;
                    out.push((k, s));
                }
            }
        }
        Op::AttentionGrad => {
            return Err(Error::Autodiff(
                "`attention_grad` has no derivative of its own (a second derivative of attention)"
                    .into(),
            ));
        }
        // d scatter_add(x, ids) = gather(dy, ids): each place reads its row's adjoint.
        Op::ScatterAdd => {
            let xt = b.ty(args[0]);
            let d =
                b.f.build(Op::Gather, vec![gy, args[1]], attr.clone(), Some(xt))?;
            out.push((0, d));
        }
        // im2col and col2im are each other's adjoints (a copy into windows, and the sum
        // of the windows back into the image); so are slice and pad.
        Op::Im2col | Op::Col2im | Op::Slice | Op::Pad => {
            let adjoint = match op {
                Op::Im2col => Op::Col2im,
                Op::Col2im => Op::Im2col,
                Op::Slice => Op::Pad,
                _ => Op::Slice,
            };
            let xt = b.ty(args[0]);
            out.push((0, b.f.build(adjoint, vec![gy], attr.clone(), Some(xt))?));
        }
    }
    out.retain(|&(k, _)| want(k));
    Ok(out)
}

/// Emits well-typed nodes; every type comes from the op table's rule.
struct Builder<'a> {
    f: &'a mut Func,
}

impl Builder<'_> {
    fn ty(&self, v: Value) -> TensorType {
        self.f.ty(v).clone()
    }

    fn un(&mut self, op: Op, x: Value) -> Result<Value, Error> {
        Ok(self.f.build(op, vec![x], Attr::None, None)?)
    }

    fn bin(&mut self, op: Op, x: Value, y: Value) -> Result<Value, Error> {
        Ok(self.f.build(op, vec![x, y], Attr::None, None)?)
    }

    fn select(&mut self, c: Value, a: Value, b: Value) -> Result<Value, Error> {
        Ok(self.f.build(Op::Select, vec![c, a, b], Attr::None, None)?)
    }

    /// A constant of `like`'s type.
    fn fill(&mut self, v: f64, like: Value) -> Result<Value, Error> {
        let ty = self.ty(like);
        Ok(self.f.build(Op::Const, vec![], Attr::Value(v), Some(ty))?)
    }

    /// Broadcasts a reduction's result (or adjoint) back to the reduced operand's type.
    fn unreduce(&mut self, v: Value, attr: &Attr, xt: &TensorType) -> Result<Value, Error> {
        let Attr::Axes(axes) = attr else {
            return Err(Error::Autodiff("reduction without axes".into()));
        };
        if axes.is_empty() {
            return Ok(v);
        }
        let kept: Vec<usize> = (0..xt.rank()).filter(|a| !axes.contains(a)).collect();
        let ty = xt.with_dtype(self.ty(v).dtype);
        Ok(self
            .f
            .build(Op::Broadcast, vec![v], Attr::Dims(kept), Some(ty))?)
    }

    /// The number of elements each output of a reduction over `attr`'s axes of `xt` sums,
    /// as a tensor of the output's type: a constant when the axes have known sizes, a sum
    /// of ones otherwise.
    fn count(&mut self, xt: &TensorType, attr: &Attr) -> Result<Value, Error> {
        let Attr::Axes(axes) = attr else {
            return Err(Error::Autodiff("reduction without axes".into()));
        };
        let dims = xt.shape.dims();
        let kept: Vec<Dim> = (0..xt.rank())
            .filter(|a| !axes.contains(a))
            .map(|a| dims[a].clone())
            .collect();
        let out_ty = TensorType::new(xt.dtype, Shape(kept));
        let known: Option<u64> = axes.iter().map(|&a| dims[a].known()).product();
        match known {
            Some(n) => Ok(self
                .f
                .build(Op::Const, vec![], Attr::Value(n as f64), Some(out_ty))?),
            None => {
                let ones = self
                    .f
                    .build(Op::Const, vec![], Attr::Value(1.0), Some(xt.clone()))?;
                Ok(self.f.build(Op::Sum, vec![ones], attr.clone(), None)?)
            }
        }
    }

    /// Sums the leading axes of `x` away until it has rank `rank` (the adjoint of sharing
    /// a matrix across a batch).
    fn sum_to_rank(&mut self, x: Value, rank: usize) -> Result<Value, Error> {
        let r = self.ty(x).rank();
        if r == rank {
            return Ok(x);
        }
        let axes = (0..r - rank).collect();
        Ok(self.f.build(Op::Sum, vec![x], Attr::Axes(axes), None)?)
    }

    /// Swaps the last two axes.
    fn swap_last(&mut self, x: Value) -> Result<Value, Error> {
        let r = self.ty(x).rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        Ok(self
            .f
            .build(Op::Transpose, vec![x], Attr::Perm(perm), None)?)
    }
}
