//! ONNX's own `GRU` and `LSTM` for the prelude's recurrent layers.
//!
//! A `scan` whose body is exactly the prelude's GRU cell (PyTorch's: gates r, z, n, the
//! reset gate applied after the recurrent product) or LSTM cell (gates i, f, g, o), fed
//! `transpose(x @ wi + bi)` from zero states, is one ONNX node: `GRU` with
//! `linear_before_reset = 1`, or `LSTM`, with the weights reordered into ONNX's gate order
//! (z, r, h and i, o, f, c) and laid out as ONNX wants them (`W [1, G*U, F]`,
//! `R [1, G*U, U]`, `B [1, 2*G*U]`). The match is structural: every node of the cell is
//! checked, adds and products in either operand order, so what it accepts computes what
//! the ONNX operator computes. Any other loop stays a `Scan`.

use nnc_ir::{Attr, Dim, Func, Node, Op, Value};

/// Which cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Gru,
    Lstm,
}

impl Kind {
    /// The ONNX operator.
    pub fn op(self) -> &'static str {
        match self {
            Kind::Gru => "GRU",
            Kind::Lstm => "LSTM",
        }
    }

    /// The gates.
    pub fn gates(self) -> usize {
        match self {
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }

    /// For each of ONNX's gates in its order, nnc's gate block: GRU z, r, h from r, z, n;
    /// LSTM i, o, f, c from i, f, g, o.
    pub fn order(self) -> &'static [usize] {
        match self {
            Kind::Gru => &[1, 0, 2],
            Kind::Lstm => &[0, 3, 1, 2],
        }
    }
}

/// What a scan's result is, in ONNX's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// The last hidden state (`Y_h`).
    Hidden,
    /// The last cell state (`Y_c`).
    Cell,
    /// Every hidden state (`Y`).
    Every,
}

/// A recognized recurrent layer.
#[derive(Debug)]
pub struct Rnn {
    pub kind: Kind,
    pub units: usize,
    /// The layer's input `[B, T, F]`, in the enclosing function.
    pub x: Value,
    /// The parameters `wi [F, G*U]`, `wh [U, G*U]`, `bi [G*U]`, `bh [G*U]`.
    pub wi: u32,
    pub wh: u32,
    pub bi: u32,
    pub bh: u32,
    /// The scan's results, in order.
    pub results: Vec<Output>,
}

/// Nodes of one function, matched with operands in either order where the op commutes.
struct Match<'a> {
    f: &'a Func,
}

impl<'a> Match<'a> {
    fn node(&self, v: Value) -> Option<&'a Node> {
        match v {
            Value::Node(j) => self.f.nodes.get(j as usize),
            _ => None,
        }
    }

    /// The operands of `v` if it is an `op` node.
    fn args(&self, v: Value, op: Op) -> Option<&'a [Value]> {
        self.node(v)
            .filter(|n| n.op == op)
            .map(|n| n.args.as_slice())
    }

    /// `pick(a, b)` or else `pick(b, a)` on the operands of a binary `op` node.
    fn either<T>(&self, v: Value, op: Op, pick: impl Fn(Value, Value) -> Option<T>) -> Option<T> {
        let a = self.args(v, op)?;
        pick(a[0], a[1]).or_else(|| pick(a[1], a[0]))
    }

    fn constant(&self, v: Value, x: f64) -> bool {
        self.node(v)
            .is_some_and(|n| n.op == Op::Const && n.attr == Attr::Value(x))
    }

    /// `x` where `v` is `sigmoid(x)`.
    fn sigmoid(&self, v: Value) -> Option<Value> {
        Some(self.args(v, Op::Sigmoid)?[0])
    }

    fn tanh(&self, v: Value) -> Option<Value> {
        Some(self.args(v, Op::Tanh)?[0])
    }

    /// The source of `v` if it is the gate block `k` (of width `units`) along axis 1.
    fn block(&self, v: Value, k: usize, units: usize) -> Option<Value> {
        let n = self.node(v).filter(|n| n.op == Op::Slice)?;
        let width = n.ty.shape.dims().get(1)?.known()? as usize;
        (n.attr
            == Attr::Offset {
                axis: 1,
                start: k * units,
            }
            && width == units)
            .then(|| n.args[0])
    }

    /// The leaves of a tree of adds.
    fn terms(&self, v: Value, out: &mut Vec<Value>) {
        match self.args(v, Op::Add) {
            Some(a) => {
                self.terms(a[0], out);
                self.terms(a[1], out);
            }
            None => out.push(v),
        }
    }
}

/// The recurrent layer scan `i` of `f` is, if it is one.
pub fn recognize(f: &Func, i: usize) -> Option<Rnn> {
    let n = &f.nodes[i];
    let Attr::Loop(l) = &n.attr else {
        return None;
    };
    let kind = match (l.carries, l.sequences) {
        (1, 1) => Kind::Gru,
        (2, 1) => Kind::Lstm,
        _ => return None,
    };
    if l.reverse {
        return None;
    }
    let outer = Match { f };
    let b = Match { f: &l.body };
    let body = &l.body;
    let nc = l.carries;
    let dims = |t: &nnc_ir::TensorType| -> Option<Vec<usize>> {
        t.shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Known(k) => Some(*k as usize),
                Dim::Sym(_) => Some(0),
            })
            .collect()
    };
    // The state's width and the gates' (from the step of the sequence).
    let units = *dims(&body.inputs[0].ty)?.get(1)?;
    let wide = *dims(&body.inputs[nc].ty)?.get(1)?;
    if units == 0 || wide != kind.gates() * units || !n.ty.dtype.is_float() {
        return None;
    }
    // The states start at zero.
    for &init in &n.args[..nc] {
        outer.constant(init, 0.0).then_some(())?;
    }
    // The sequence: transpose(x, [1, 0, 2]) @ wi + bi.
    let param = |v: Value, shape: &[usize]| match v {
        Value::Param(k) => (dims(f.ty(v)).as_deref() == Some(shape)).then_some(k),
        _ => None,
    };
    // Or, the LSTM's, transpose(x, [1, 0, 2]) @ wi, with both biases added in the step.
    let projection = |m: Value| -> Option<(Value, u32)> {
        let m = outer.args(m, Op::MatMul)?;
        let t = outer.node(m[0]).filter(|t| t.op == Op::Transpose)?;
        (t.attr == Attr::Perm(vec![1, 0, 2])).then_some(())?;
        let feat = *dims(f.ty(m[0]))?.get(2)?;
        Some((t.args[0], param(m[1], &[feat, wide])?))
    };
    let (x, wi, seq_bi) = match projection(n.args[nc]) {
        Some((x, wi)) => (x, wi, None),
        None => outer.either(n.args[nc], Op::Add, |p, q| {
            let (x, wi) = projection(p)?;
            let bc = outer.node(q).filter(|c| c.op == Op::Broadcast)?;
            (bc.attr == Attr::Dims(vec![2])).then_some(())?;
            Some((x, wi, Some(param(bc.args[0], &[wide])?)))
        })?,
    };
    (f.ty(x).rank() == 3).then_some(())?;
    // A constant of the body, as its operand outside.
    let outside = |v: Value| match v {
        Value::Input(k) if k as usize > nc => n.args.get(k as usize).copied(),
        _ => None,
    };
    let wh = |v: Value| param(outside(v)?, &[units, wide]);
    // The step's bias: bh, or bi + bh where the sequence has none.
    let bh = |v: Value| -> Option<(u32, u32)> {
        let bc = outer.node(outside(v)?).filter(|c| c.op == Op::Broadcast)?;
        (bc.attr == Attr::Dims(vec![1])).then_some(())?;
        match seq_bi {
            Some(bi) => Some((bi, param(bc.args[0], &[wide])?)),
            None => outer.either(bc.args[0], Op::Add, |p, q| {
                Some((param(p, &[wide])?, param(q, &[wide])?))
            }),
        }
    };
    let xt = Value::Input(nc as u32);
    // `terms` are exactly `h @ wh` and `bh`, and `extra` (in any order and grouping).
    let recurrent = |sum: Value, h: Value, extra: Option<Value>| -> Option<(u32, (u32, u32))> {
        let mut terms = Vec::new();
        b.terms(sum, &mut terms);
        if let Some(e) = extra {
            let k = terms.iter().position(|&t| t == e)?;
            terms.remove(k);
        }
        let [p, q] = terms[..] else { return None };
        let pick = |m: Value, c: Value| {
            let a = b.args(m, Op::MatMul)?;
            (a[0] == h).then_some(())?;
            Some((wh(a[1])?, bh(c)?))
        };
        pick(p, q).or_else(|| pick(q, p))
    };
    let (wh, bh, results) = match kind {
        Kind::Gru => {
            let h = Value::Input(0);
            let next = body.outputs[0];
            // h' = (1 - z) * n + z * h
            let (z, cand) = b.either(next, Op::Add, |p, q| {
                let z = b.either(q, Op::Mul, |z, hv| (hv == h).then_some(z))?;
                let cand = b.either(p, Op::Mul, |s, c| {
                    let s = b.args(s, Op::Sub)?;
                    (b.constant(s[0], 1.0) && s[1] == z).then_some(c)
                })?;
                Some((z, cand))
            })?;
            // A gate: sigmoid(block k of xt + block k of hh); returns hh.
            let gate = |v: Value, k: usize| {
                b.either(b.sigmoid(v)?, Op::Add, |p, q| {
                    (b.block(p, k, units)? == xt).then_some(())?;
                    b.block(q, k, units)
                })
            };
            let hz = gate(z, 1)?;
            // n = tanh(block 2 of xt + r * block 2 of hh)
            let (r, hn) = b.either(b.tanh(cand)?, Op::Add, |p, q| {
                (b.block(p, 2, units)? == xt).then_some(())?;
                b.either(q, Op::Mul, |r, s| Some((r, b.block(s, 2, units)?)))
            })?;
            let hr = gate(r, 0)?;
            (hz == hr && hz == hn).then_some(())?;
            let (wh, bh) = recurrent(hz, h, None)?;
            let mut results = vec![Output::Hidden];
            for &o in &body.outputs[1..] {
                (o == next).then_some(())?;
                results.push(Output::Every);
            }
            (wh, bh, results)
        }
        Kind::Lstm => {
            // Which carry is h (the one multiplied by wh) and which c.
            let try_roles = |hk: usize, ck: usize| {
                let (h, c) = (Value::Input(hk as u32), Value::Input(ck as u32));
                let (hn, cn) = (body.outputs[hk], body.outputs[ck]);
                // h' = o * tanh(c')
                let a = b.either(hn, Op::Mul, |o, t| {
                    (b.tanh(t)? == cn).then_some(())?;
                    b.block(b.sigmoid(o)?, 3, units)
                })?;
                let gate = |v: Value, k: usize| b.block(b.sigmoid(v)?, k, units);
                // c' = f * c + i * g
                b.either(cn, Op::Add, |p, q| {
                    let fa = b.either(p, Op::Mul, |fg, cv| (cv == c).then(|| gate(fg, 1))?)?;
                    let (ia, ga) = b.either(q, Op::Mul, |ig, gg| {
                        Some((gate(ig, 0)?, b.block(b.tanh(gg)?, 2, units)?))
                    })?;
                    (fa == a && ia == a && ga == a).then_some(())
                })?;
                let (wh, bh) = recurrent(a, h, Some(xt))?;
                let mut results = vec![Output::Hidden; 2];
                results[ck] = Output::Cell;
                for &o in &body.outputs[2..] {
                    (o == hn).then_some(())?;
                    results.push(Output::Every);
                }
                Some((wh, bh, results))
            };
            try_roles(1, 0).or_else(|| try_roles(0, 1))?
        }
    };
    let (bi, bh) = bh;
    Some(Rnn {
        kind,
        units,
        x,
        wi,
        wh,
        bi,
        bh,
        results,
    })
}

/// ONNX's `W` (or `R`) from nnc's `[rows, G*U]` weight: `[1, G*U, rows]`, gate blocks in
/// ONNX's order.
pub fn weights(kind: Kind, units: usize, w: &[f32]) -> Vec<f64> {
    let wide = kind.gates() * units;
    let rows = w.len() / wide;
    let mut out = Vec::with_capacity(w.len());
    for &g in kind.order() {
        for j in 0..units {
            for r in 0..rows {
                out.push(f64::from(w[r * wide + g * units + j]));
            }
        }
    }
    out
}

/// ONNX's `B`, `[1, 2*G*U]`: the input bias then the recurrent one, each in ONNX's gate
/// order.
pub fn biases(kind: Kind, units: usize, bi: &[f32], bh: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(bi.len() + bh.len());
    for b in [bi, bh] {
        for &g in kind.order() {
            out.extend(b[g * units..(g + 1) * units].iter().map(|&v| f64::from(v)));
        }
    }
    out
}
