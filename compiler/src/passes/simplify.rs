//! Simplification and canonicalization, node by node:
//!
//! - `stop_gradient(x)` and `custom_grad(x, ..)` are `x` (the passes run after autodiff);
//! - no-ops vanish: a reshape, broadcast, transpose or cast to the operand's own type, an
//!   identity permutation; a reshape of a reshape, a broadcast of a broadcast and a
//!   transpose of a transpose become one (unless the outer one swaps the last two axes,
//!   which matrix products read for free);
//! - constants fold: an elementwise op, broadcast or reshape of constants is a constant;
//! - a sum of pads (or concats with zeros) of disjoint ranges of one axis is one concat;
//! - `x > 0` is `max(x, 0) > 0` where `max(x, 0)` is computed (a ReLU's derivative reads
//!   the ReLU's output);
//! - identities: `x + 0`, `0 + x`, `x - 0`, `x * 1`, `1 * x`, `x / 1` are `x`, and `x * 0`,
//!   `0 * x` are `0`, and `x - x` is `0`. These are exact for finite `x` only (and gives +0 where
//!   a negative `x` gives -0); a non-finite parameter means
//!   training has already diverged, and the training loop stops on a non-finite loss
//!   before it matters.

use nnc_ir::{Attr, Class, DType, Func, Node, Op, Value};

use super::{Rewrite, rebuild};

fn const_of(g: &Func, v: Value) -> Option<f64> {
    match v {
        Value::Node(i) => {
            let n = &g.nodes[i as usize];
            match (n.op, &n.attr) {
                (Op::Const, Attr::Value(c)) => Some(*c),
                _ => None,
            }
        }
        _ => None,
    }
}

fn constant(v: f64, n: &Node) -> Rewrite {
    let v = match n.ty.dtype {
        DType::F32 => v as f32 as f64,
        DType::I32 => (v as i32) as f64,
        DType::F64 => v,
    };
    Rewrite::Node(Node {
        op: Op::Const,
        args: vec![],
        attr: Attr::Value(v),
        ty: n.ty.clone(),
    })
}

/// The value of an elementwise op on scalars: the op table's definition, rounded to the
/// node's type (as the interpreter computes it). Non-finite results are not folded.
fn fold(n: &Node, xs: &[f64]) -> Option<f64> {
    let v = n.op.scalar(xs, n.ty.dtype)?;
    let v = match n.ty.dtype {
        DType::F32 => v as f32 as f64,
        DType::I32 => (v as i32) as f64,
        DType::F64 => v,
    };
    Some(v).filter(|v| v.is_finite())
}

/// A value placed in a range of an axis: `(start, len, value)`.
type Piece = (usize, usize, Value);

/// The pieces a value places along one axis of zeros, as `(axis, pieces)`: a `pad` places
/// its operand; a `concat` places its operands other than zero constants.
fn placed(g: &Func, v: Value) -> Option<(usize, Vec<Piece>)> {
    let Value::Node(i) = v else { return None };
    let n = &g.nodes[i as usize];
    let len = |v: Value, axis: usize| g.ty(v).shape.0[axis].known().map(|k| k as usize);
    match (n.op, &n.attr) {
        (Op::Pad, &Attr::Offset { axis, start }) => {
            Some((axis, vec![(start, len(n.args[0], axis)?, n.args[0])]))
        }
        (Op::Concat, &Attr::Axis(axis)) => {
            let mut pieces = Vec::new();
            let mut start = 0;
            for &a in &n.args {
                let l = len(a, axis)?;
                if const_of(g, a) != Some(0.0) {
                    pieces.push((start, l, a));
                }
                start += l;
            }
            Some((axis, pieces))
        }
        _ => None,
    }
}

/// `a + b` where both place pieces along one axis of zeros, in disjoint ranges: one
/// `concat` of all the pieces with zeros between. An unrolled recurrence's adjoint (a sum
/// of one padded step per time step) and `sequences = true` (a sum of placed states) then
/// cost O(T) instead of O(T^2).
fn disjoint_pads(g: &mut Func, n: &Node) -> Option<Value> {
    if n.op != Op::Add || !n.ty.dtype.is_float() {
        return None;
    }
    let (ax, mut pieces) = placed(g, n.args[0])?;
    let (bx, more) = placed(g, n.args[1])?;
    if ax != bx {
        return None;
    }
    pieces.extend(more);
    pieces.sort_by_key(|&(start, ..)| start);
    if pieces.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return None;
    }
    let total = n.ty.shape.0[ax].known()? as usize;
    let mut args = Vec::new();
    let mut at = 0;
    let zeros = |g: &mut Func, len: usize| {
        let mut dims = n.ty.shape.0.clone();
        dims[ax] = nnc_ir::Dim::Known(len as u64);
        let ty = nnc_ir::TensorType::new(n.ty.dtype, nnc_ir::Shape(dims));
        g.build(Op::Const, vec![], Attr::Value(0.0), Some(ty)).ok()
    };
    for (start, len, v) in pieces {
        if start > at {
            args.push(zeros(g, start - at)?);
        }
        args.push(v);
        at = start + len;
    }
    if at < total {
        args.push(zeros(g, total - at)?);
    }
    g.build(Op::Concat, args, Attr::Axis(ax), None).ok()
}

/// Simplifies every node.
pub fn run(f: &Func) -> Func {
    rebuild(f, |g, n| {
        if let Some(v) = disjoint_pads(g, &n) {
            return Rewrite::Value(v);
        }
        let g: &Func = g;
        let ty_of = |v: Value| g.ty(v).clone();
        let same_type = n.args.len() == 1 && ty_of(n.args[0]) == n.ty;
        match n.op {
            Op::Reshape | Op::Cast if same_type => return Rewrite::Value(n.args[0]),
            // After autodiff (passes run on its output) it is the identity.
            Op::StopGradient => return Rewrite::Value(n.args[0]),
            // Likewise a layer's own backward: its cotangent and adjoints are then dead.
            Op::CustomGrad => return Rewrite::Value(n.args[0]),
            Op::Broadcast | Op::Transpose if same_type => {
                let identity = match &n.attr {
                    Attr::Dims(d) | Attr::Perm(d) => d.iter().enumerate().all(|(i, &k)| i == k),
                    _ => false,
                };
                if identity {
                    return Rewrite::Value(n.args[0]);
                }
            }
            _ => {}
        }
        if n.op == Op::Reshape
            && let Value::Node(i) = n.args[0]
        {
            let inner = &g.nodes[i as usize];
            if inner.op == Op::Reshape {
                let x = inner.args[0];
                if ty_of(x) == n.ty {
                    return Rewrite::Value(x);
                }
                return Rewrite::Node(Node { args: vec![x], ..n });
            }
        }
        // A transpose of a transpose is one (result axis i is x's axis inner[outer[i]]), or
        // nothing: the adjoint of `x @ transpose(b)` reads b itself.
        if n.op == Op::Transpose
            && let (Value::Node(i), Attr::Perm(outer)) = (n.args[0], &n.attr)
        {
            let inner = &g.nodes[i as usize];
            if let (Op::Transpose, Attr::Perm(p1)) = (inner.op, &inner.attr) {
                let perm: Vec<usize> = outer.iter().map(|&k| p1[k]).collect();
                let x = inner.args[0];
                if perm.iter().enumerate().all(|(i, &k)| i == k) {
                    return Rewrite::Value(x);
                }
                // A swap of the last two axes stays on its own: a matrix product reads it
                // through strides for free, and a weight gradient summed over the batch
                // (`sum(transpose(p) @ q)`) is one product only over a swapped operand.
                let r = outer.len();
                let swap = r >= 2
                    && outer[r - 2] == r - 1
                    && outer[r - 1] == r - 2
                    && outer[..r - 2].iter().enumerate().all(|(i, &k)| i == k);
                if swap {
                    return Rewrite::Node(n.clone());
                }
                return Rewrite::Node(Node {
                    args: vec![x],
                    attr: Attr::Perm(perm),
                    ..n
                });
            }
        }
        if n.op == Op::Broadcast
            && let (Value::Node(i), Attr::Dims(outer)) = (n.args[0], &n.attr)
        {
            let inner = &g.nodes[i as usize];
            if let (Op::Broadcast, Attr::Dims(d1)) = (inner.op, &inner.attr) {
                let dims = d1.iter().map(|&k| outer[k]).collect();
                return Rewrite::Node(Node {
                    args: vec![inner.args[0]],
                    attr: Attr::Dims(dims),
                    ..n
                });
            }
        }
        let consts: Vec<Option<f64>> = n.args.iter().map(|&a| const_of(g, a)).collect();
        if !n.args.is_empty() && consts.iter().all(Option::is_some) {
            let xs: Vec<f64> = consts.iter().map(|c| c.unwrap()).collect();
            match n.op {
                Op::Broadcast | Op::Reshape => return constant(xs[0], &n),
                Op::Cast if n.ty.dtype.is_float() => return constant(xs[0], &n),
                op if op.is_elementwise() => {
                    if let Some(v) = fold(&n, &xs) {
                        return constant(v, &n);
                    }
                }
                _ => {}
            }
        }
        // `x > 0` where `max(x, 0)` is computed is `max(x, 0) > 0` (the same for every x,
        // NaN and -0 included): a ReLU's derivative then reads the layer's output, not
        // its input, which a product's epilogue then never has to store.
        if n.op == Op::Gt
            && consts[1] == Some(0.0)
            && let Some(k) = g.nodes.iter().position(|m| {
                m.op == Op::Max && m.args[0] == n.args[0] && const_of(g, m.args[1]) == Some(0.0)
            })
        {
            return Rewrite::Node(Node {
                args: vec![Value::Node(k as u32), n.args[1]],
                ..n
            });
        }
        if n.op.info().class == Class::Binary && n.ty.dtype.is_float() {
            let (a, b) = (n.args[0], n.args[1]);
            match (n.op, consts[0], consts[1]) {
                (Op::Add, _, Some(z)) | (Op::Sub, _, Some(z)) if z == 0.0 => {
                    return Rewrite::Value(a);
                }
                (Op::Add, Some(0.0), _) => return Rewrite::Value(b),
                (Op::Mul, _, Some(o)) | (Op::Div, _, Some(o)) if o == 1.0 => {
                    return Rewrite::Value(a);
                }
                (Op::Mul, Some(1.0), _) => return Rewrite::Value(b),
                // x - x is 0 (exact for finite x): what `q - stop_gradient(q)`, a learning
                // rule's way of adding a gradient path without changing the value,
                // becomes once autodiff is done.
                (Op::Sub, ..) if a == b => return constant(0.0, &n),
                (Op::Mul, Some(z), _) | (Op::Mul, _, Some(z)) if z == 0.0 => {
                    return constant(0.0, &n);
                }
                _ => {}
            }
        }
        Rewrite::Node(n)
    })
}
