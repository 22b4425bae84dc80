//! The buffer plan and the fusion decisions for one IR function at concrete sizes.
//!
//! Buffers: inputs and parameters come in as arrays of pointers; every other value gets
//! an offset in one scratch arena, except reshapes and value-preserving casts (aliases of
//! their operand) and transposes of the last two axes whose only users are matrix products
//! (which read the operand with swapped strides instead). Elementwise nodes are inlined
//! into the loops of their users or stored once (`inlined_nodes`).

use crate::Error;

use crate::kernels;
use nnc_ir::{Attr, DType, Dim, Func, Lowering, Op, Value};
use std::collections::HashMap;

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Loc {
    Input(usize),
    Param(usize),
    Scratch(usize),
    /// Written straight into the caller's output buffer.
    Output(usize),
}

pub(crate) fn shape_of(
    ty: &nnc_ir::TensorType,
    dims: &HashMap<String, usize>,
) -> Result<Vec<usize>, Error> {
    ty.shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Ok(*n as usize),
            Dim::Sym(s) => dims
                .get(s)
                .copied()
                .ok_or_else(|| Error::Input(format!("no size for dimension {s}"))),
        })
        .collect()
}

pub(crate) fn strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// Merges each axis into the next where the walk is contiguous (`stride[a] == stride[a
/// + 1] * shape[a + 1]`, zero strides included), so strided kernels run longer rows:
/// pooling's reduction over `[N, C, 2, 2, OH, OW]` becomes one over `[N*C, 4, OH*OW]`.
pub(crate) fn merge_axes(shape: &[usize], strides: &[i64]) -> (Vec<usize>, Vec<i64>) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: Vec<i64> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 && !out_shape.is_empty() {
            continue;
        }
        match (out_shape.last_mut(), out_strides.last_mut()) {
            (Some(pn), Some(ps)) if *ps == s * n as i64 || *pn == 1 => {
                *pn *= n;
                *ps = s;
            }
            _ => {
                out_shape.push(n);
                out_strides.push(s);
            }
        }
    }
    (out_shape, out_strides)
}

/// Transposes of the last two axes whose every user is a matrix product.
pub(crate) fn absorbed_transposes(f: &Func) -> Vec<bool> {
    let mut absorbed: Vec<bool> = f
        .nodes
        .iter()
        .map(|n| match (&n.op, &n.attr) {
            (Op::Transpose, Attr::Perm(p)) => {
                let r = p.len();
                r >= 2
                    && p[r - 2] == r - 1
                    && p[r - 1] == r - 2
                    && p[..r - 2].iter().enumerate().all(|(i, &k)| i == k)
            }
            _ => false,
        })
        .collect();
    for n in &f.nodes {
        if n.op != Op::MatMul {
            for a in &n.args {
                if let Value::Node(i) = a {
                    absorbed[*i as usize] = false;
                }
            }
        }
    }
    for o in &f.outputs {
        if let Value::Node(i) = o {
            absorbed[*i as usize] = false;
        }
    }
    absorbed
}

/// Batched products `[T, m, K] x [T, K, n]` whose only user sums them over the batch
/// (`sum axes=[0]`), with the left operand a transpose read through strides and the right
/// one row-major: both are then one `[m, T*K] x [T*K, n]` product, computed by the sum's
/// step into its buffer without the `[T, m, n]` in between (a recurrence's weight
/// gradient over all its steps).
pub(crate) fn summed_products(f: &Func, absorbed: &[bool]) -> Vec<bool> {
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        for a in &n.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
            }
        }
    }
    f.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let lhs_absorbed = matches!(n.args.first(), Some(Value::Node(j)) if absorbed[*j as usize]);
            let rhs_plain = matches!(n.args.get(1), Some(&v) if !matches!(v, Value::Node(j) if absorbed[j as usize]));
            n.op == Op::MatMul
                && n.ty.rank() == 3
                && n.args.iter().all(|&a| f.ty(a).rank() == 3)
                && lhs_absorbed
                && rhs_plain
                && users[i].len() == 1
                && !f.outputs.contains(&Value::Node(i as u32))
                && {
                    let u = &f.nodes[users[i][0]];
                    u.op == Op::Sum && matches!(&u.attr, Attr::Axes(a) if a == &[0])
                }
        })
        .collect()
}

/// Ops computed in registers inside a fused loop: the op table's `Fused` lowering, except
/// integer division (a kernel: it truncates and defines x / 0 = 0) and the
/// transcendental functions nnc-rt computes on wider vectors (`unary_kernel`).
pub(crate) fn fusible(_f: &Func, n: &nnc_ir::Node, dims: &HashMap<String, usize>) -> bool {
    let int_div = n.op == Op::Div && n.ty.dtype == DType::I32;
    matches!(n.op.info().lowering, Lowering::Fused { .. })
        && !int_div
        && unary_kernel(n, dims).is_none()
}

/// Most elements a transcendental function computed by nnc-rt's `nnc_unary` may have: up
/// to here its operand and result stay in L2, so the kernel's sixteen lanes (Cranelift's
/// loops have four) are worth the stored operand; beyond, the loop reads memory once
/// instead of three times and stays fused.
pub(crate) const UNARY_KERNEL_MAX: usize = 1 << 16;

/// The `nnc_unary` function node `n` is computed with, if it is one: exp, log, tanh,
/// sigmoid, erf, sin or cos on f32, of at most `UNARY_KERNEL_MAX` elements.
pub(crate) fn unary_kernel(
    n: &nnc_ir::Node,
    dims: &HashMap<String, usize>,
) -> Option<kernels::unary::UnaryKind> {
    use kernels::unary::UnaryKind as U;
    let kind = match n.op {
        Op::Exp => U::Exp,
        Op::Log => U::Log,
        Op::Tanh => U::Tanh,
        Op::Sigmoid => U::Sigmoid,
        Op::Erf => U::Erf,
        Op::Sin => U::Sin,
        Op::Cos => U::Cos,
        _ => return None,
    };
    let count: usize = shape_of(&n.ty, dims).ok()?.iter().product();
    (n.ty.dtype == DType::F32 && count <= UNARY_KERNEL_MAX).then_some(kind)
}

/// A broadcast of a rank-0 value: the same scalar at every element.
pub(crate) fn scalar_broadcast(f: &Func, n: &nnc_ir::Node) -> bool {
    n.op == Op::Broadcast && f.ty(n.args[0]).rank() == 0
}

/// Nodes computed inside their users' loops instead of in memory: fusible ops and scalar
/// broadcasts whose every user is a fusible op over as many elements, and that are not
/// outputs. A node with several users is recomputed in each user's loop, so that is
/// allowed only where it costs one cheap op: constants, scalar broadcasts, and single
/// arithmetic ops (not exp, ln, tanh, sqrt or division) over values in memory. Without
/// this bound a recurrence (an LSTM's cell state, used by the next step and by the
/// backward pass) was recomputed from its first step in every loop that needed it.
pub(crate) fn inlined_nodes(f: &Func, dims: &HashMap<String, usize>) -> Result<Vec<bool>, Error> {
    let count = |ty: &nnc_ir::TensorType| -> Result<usize, Error> {
        Ok(shape_of(ty, dims)?.iter().product())
    };
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        for a in &n.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
            }
        }
    }
    let mut out = vec![false; f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        if !(fusible(f, n, dims) || scalar_broadcast(f, n)) || users[i].is_empty() {
            continue;
        }
        if f.outputs.contains(&Value::Node(i as u32)) {
            continue;
        }
        let c = count(&n.ty)?;
        let mut ok = true;
        for &u in &users[i] {
            let un = &f.nodes[u];
            ok &= fusible(f, un, dims) && un.op != Op::Const && count(&un.ty)? == c;
        }
        let mut distinct = users[i].clone();
        distinct.dedup();
        let shared = distinct.len() > 1;
        let cheap = n.op == Op::Const
            || scalar_broadcast(f, n)
            || (n.op.info().lowering == (Lowering::Fused { cheap: true })
                && n.args.iter().all(|a| match a {
                    Value::Node(j) => !out[*j as usize],
                    _ => true,
                }));
        out[i] = ok && (!shared || cheap);
    }
    Ok(out)
}

/// How a broadcast or a slice its users' loops read in place walks its operand: the loop
/// runs as rows of `inner` elements, and the operand is either one element per row, the
/// same across it (`repeat: true`: a broadcast adding trailing axes, as a row statistic
/// does), or a row of `inner` elements from `offset` on, advanced by `step` per row (0 for
/// a broadcast adding leading axes, as a bias does: one row read again in every row; the
/// operand's row length for a slice: its columns `start..start + inner`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rows {
    pub inner: usize,
    pub repeat: bool,
    pub step: usize,
    pub offset: usize,
}

/// Broadcasts and slices never stored: their every user is a fusible op over as many
/// elements, and a broadcast adds only leading or only trailing axes, so a loop over rows
/// reads their operand in place (`Rows`); a slice is rows of its operand whatever its axis
/// (an LSTM's gate blocks are read where the gate products put them). The broadcasts and
/// slices one loop reads must agree on its rows; where they do not, the later ones are
/// stored as before.
pub(crate) fn strided_broadcasts(
    f: &Func,
    dims: &HashMap<String, usize>,
    inlined: &[bool],
) -> Result<Vec<Option<Rows>>, Error> {
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        for a in &n.args {
            if let Value::Node(j) = a {
                users[*j as usize].push(i);
            }
        }
    }
    let mut out = vec![None; f.nodes.len()];
    // Read only by loops (or, for a slice, by `nnc_unary`, which takes rows too).
    let only_loops = |i: usize, count: usize, unary: bool| -> Result<bool, Error> {
        let mut ok = !users[i].is_empty() && !f.outputs.contains(&Value::Node(i as u32));
        for &u in &users[i] {
            let un = &f.nodes[u];
            let reads_rows = fusible(f, un, dims) || (unary && unary_kernel(un, dims).is_some());
            ok &= reads_rows
                && un.op != Op::Const
                && shape_of(&un.ty, dims)?.iter().product::<usize>() == count;
        }
        Ok(ok)
    };
    for (i, n) in f.nodes.iter().enumerate() {
        if let (Op::Slice, Attr::Offset { axis, start }) = (n.op, &n.attr) {
            let small = shape_of(&n.ty, dims)?;
            let big = shape_of(f.ty(n.args[0]), dims)?;
            let count: usize = small.iter().product();
            let tail: usize = big[axis + 1..].iter().product();
            let inner = small[*axis] * tail;
            // Rows of fewer than eight elements cost more in loop overhead than the copy.
            if count > 0 && (inner == count || inner >= 8) && only_loops(i, count, true)? {
                out[i] = Some(Rows {
                    inner,
                    repeat: false,
                    step: big[*axis] * tail,
                    offset: start * tail,
                });
            }
            continue;
        }
        let Attr::Dims(d) = &n.attr else { continue };
        if n.op != Op::Broadcast || scalar_broadcast(f, n) {
            continue;
        }
        let shape = shape_of(&n.ty, dims)?;
        let count: usize = shape.iter().product();
        let ok = d.windows(2).all(|w| w[1] == w[0] + 1) && only_loops(i, count, false)?;
        let (first, end) = (d[0], d[d.len() - 1] + 1);
        let rows = if end == shape.len() && first > 0 {
            Some(Rows {
                inner: shape[first..].iter().product(),
                repeat: false,
                step: 0,
                offset: 0,
            })
        } else if first == 0 && end < shape.len() {
            Some(Rows {
                inner: shape[end..].iter().product(),
                repeat: true,
                step: 1,
                offset: 0,
            })
        } else {
            None
        };
        // Rows of fewer than eight elements cost more in loop overhead than the stored
        // broadcast.
        out[i] = rows.filter(|r| ok && r.inner >= 8 && count.is_multiple_of(r.inner));
    }
    // Every loop reads its broadcasts in one shape of rows.
    loop {
        let mut changed = false;
        for (i, n) in f.nodes.iter().enumerate() {
            if inlined[i] || out[i].is_some() || !fusible(f, n, dims) {
                continue;
            }
            let mut want = None;
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                for &a in &f.nodes[j].args {
                    let Value::Node(k) = a else { continue };
                    let k = k as usize;
                    if inlined[k] {
                        stack.push(k);
                    } else if let Some(r) = out[k] {
                        match want {
                            None => want = Some(r.inner),
                            Some(w) if w != r.inner => {
                                out[k] = None;
                                changed = true;
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        if !changed {
            return Ok(out);
        }
    }
}

/// The broadcasts and slices the loop computing node `i` reads in place (through its
/// inlined tree).
fn read_in_place(f: &Func, inlined: &[bool], strided: &[Option<Rows>], i: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = vec![i];
    while let Some(j) = stack.pop() {
        for &a in &f.nodes[j].args {
            let Value::Node(k) = a else { continue };
            let k = k as usize;
            if inlined[k] {
                stack.push(k);
            } else if strided[k].is_some() {
                out.push(k);
            }
        }
    }
    out
}

/// The row length of the loop computing node `i`: that of the broadcasts and slices its
/// tree reads in place, if any.
fn rows_of(f: &Func, inlined: &[bool], strided: &[Option<Rows>], i: usize) -> Option<usize> {
    let first = *read_in_place(f, inlined, strided, i).first()?;
    strided[first].map(|r| r.inner)
}

/// The operands of the slices the loop computing node `i` reads in place. They must be
/// stored before that loop runs: a loop reads them from memory at other indices than the
/// one it computes, so a member of the same loop is no source.
fn sliced(f: &Func, inlined: &[bool], strided: &[Option<Rows>], i: usize) -> Vec<Value> {
    read_in_place(f, inlined, strided, i)
        .into_iter()
        .filter(|&k| f.nodes[k].op == Op::Slice)
        .map(|k| f.nodes[k].args[0])
        .collect()
}

/// Where a scan keeps what it needs inside its buffer (offsets in f32 elements, each
/// aligned to 16 bytes), and what its kernel is told.
pub(crate) struct ScanLayout {
    /// Each result: the final carries, then the stacked outputs.
    pub results: Vec<usize>,
    /// The buffer of each carry a step reads.
    pub carries: Vec<usize>,
    /// The body's scratch arena.
    pub scratch: usize,
    /// Elements in all.
    pub total: usize,
    pub desc: kernels::ScanDesc,
}

pub(crate) fn scan_layout(
    f: &Func,
    i: usize,
    dims: &HashMap<String, usize>,
) -> Result<ScanLayout, Error> {
    let n = &f.nodes[i];
    let Attr::Loop(l) = &n.attr else {
        return Err(Error::Codegen(format!("%{i} is not a scan")));
    };
    let size = |ty: &nnc_ir::TensorType| -> Result<usize, Error> {
        Ok(shape_of(ty, dims)?.iter().product())
    };
    let tys: Vec<&nnc_ir::TensorType> = n.args.iter().map(|&a| f.ty(a)).collect();
    let (nc, ns) = (l.carries, l.sequences);
    let mut top = 0;
    let mut place = |len: usize| {
        top += len.div_ceil(4) * 4;
        top - len.div_ceil(4) * 4
    };
    let mut results = Vec::new();
    for ty in l.result_types(&tys) {
        results.push(place(size(&ty)?));
    }
    let csz: Vec<usize> = tys[..nc]
        .iter()
        .map(|t| size(t))
        .collect::<Result<_, _>>()?;
    let carries = csz.iter().map(|&c| place(c)).collect();
    let body = plan(&l.body, dims)?;
    let scratch = place(body.scratch);
    let step = |ty: &nnc_ir::TensorType| -> Result<usize, Error> {
        Ok(shape_of(ty, dims)?.iter().skip(1).product())
    };
    let steps = match l.steps(&tys) {
        Some(d) => shape_of(
            &nnc_ir::TensorType::new(DType::F32, nnc_ir::Shape(vec![d.clone()])),
            dims,
        )?[0],
        None => 0,
    };
    let desc = kernels::ScanDesc {
        carries: csz,
        sequences: tys[nc..nc + ns]
            .iter()
            .map(|t| step(t))
            .collect::<Result<_, _>>()?,
        constants: n.args.len() - nc - ns,
        outputs: l.body.outputs[nc..]
            .iter()
            .map(|&o| size(l.body.ty(o)))
            .collect::<Result<_, _>>()?,
        steps,
        reverse: l.reverse,
        passthrough: l.body.outputs[nc..]
            .iter()
            .map(|&o| match o {
                Value::Input(c) if (c as usize) < nc => Some(c as usize),
                _ => None,
            })
            .collect(),
    };
    Ok(ScanLayout {
        results,
        carries,
        scratch,
        total: top,
        desc,
    })
}

/// Where every value lives, and which nodes are computed where.
pub(crate) struct Plan {
    pub loc: Vec<Loc>,
    /// The node is computed by its own loop or kernel call into its own buffer.
    pub own: Vec<bool>,
    /// The node is computed in registers inside its users' loops.
    pub inlined: Vec<bool>,
    /// The node is a transpose its matrix-product users read through strides.
    pub absorbed: Vec<bool>,
    /// The node is a batched product its sum computes as one product.
    pub summed: Vec<bool>,
    /// The node is a broadcast its users' loops read in place, row by row.
    pub strided: Vec<Option<Rows>>,
    /// The node is an operand of concats its loop stores it in place into (one store per
    /// concat; it has no buffer of its own): where in each concat's buffer.
    pub placed: Vec<Vec<Placed>>,
    /// A placed operand other nodes read too: it is also stored to its own buffer.
    pub kept: Vec<bool>,
    /// The node is a concat its operands' loop wrote in place: nothing left to do.
    pub written: Vec<bool>,
    /// The node is a matrix product whose one user's loop (a bias, a ReLU, a ReLU's
    /// derivative) runs on its register tiles instead: what to apply, and where to.
    pub epilogue: Vec<Option<ProductEpilogue>>,
    /// The node is that user: the product computes it.
    pub by_product: Vec<Option<usize>>,
    pub shapes: Vec<Vec<usize>>,
    /// The order of execution: each step is one node's kernel call or loop, or one fused
    /// loop computing several nodes (same element count) with a store for each.
    pub steps: Vec<Vec<usize>>,
    /// Scratch elements with buffers reused after their last read.
    pub scratch: usize,
    /// Scratch elements if every buffer had its own place.
    pub unshared: usize,
}

/// Where a loop stores a concat's operand in the concat's buffer: the loop runs over rows
/// of `row` elements, the first stored `offset` elements into the buffer and each next
/// one `step` after it (the concat's row, all of its axis and the axes after it; or, for
/// a concat along its first axis, `row`: the operand is one contiguous block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub concat: usize,
    pub offset: usize,
    pub step: usize,
    pub row: usize,
}

/// A loop a matrix product computes in its epilogue: `into` (the loop's node, whose buffer
/// the product writes), `+ bias[j]` (a rank-1 value), `max(0, .)`, and zero where
/// `mask[i, j] <= 0` (a value of the product's shape in memory).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProductEpilogue {
    pub into: usize,
    pub bias: Option<Value>,
    pub relu: bool,
    pub mask: Option<Value>,
}

/// The epilogue node `r` is, on the product it reads, if its loop is exactly one of
/// `max(p + broadcast(b), 0)`, `p + broadcast(b)` (either order) or
/// `select(h > 0, p, 0)`, with `p` a product of rank 2, the rest inlined into `r`.
fn epilogue_of(
    f: &Func,
    inlined: &[bool],
    strided: &[Option<Rows>],
    r: usize,
) -> Option<(usize, ProductEpilogue)> {
    let node = |v: Value| match v {
        Value::Node(k) => Some(k as usize),
        _ => None,
    };
    let zero = |v: Value| {
        node(v).is_some_and(|k| {
            inlined[k] && matches!((f.nodes[k].op, &f.nodes[k].attr), (Op::Const, Attr::Value(z)) if *z == 0.0)
        })
    };
    let product = |v: Value| {
        node(v).filter(|&k| f.nodes[k].op == Op::MatMul && f.nodes[k].ty.shape.rank() == 2)
    };
    // `p + broadcast(b)` in either order: the product and the bias.
    let biased = |v: Value, inner: bool| -> Option<(usize, Value)> {
        let a = node(v).filter(|&a| inlined[a] == inner && f.nodes[a].op == Op::Add)?;
        let args = &f.nodes[a].args;
        [(args[0], args[1]), (args[1], args[0])]
            .into_iter()
            .find_map(|(p, bb)| {
                let p = product(p)?;
                let bb = node(bb)?;
                let n = &f.nodes[bb];
                let row = n.op == Op::Broadcast
                    && matches!(&n.attr, Attr::Dims(d) if d == &[1])
                    && f.ty(n.args[0]).shape.rank() == 1
                    && (strided[bb].is_some_and(|s| !s.repeat) || inlined[bb]);
                row.then_some((p, n.args[0]))
            })
    };
    let n = &f.nodes[r];
    if n.ty.dtype != DType::F32 {
        return None;
    }
    let ep = |p, bias, relu, mask| {
        Some((
            p,
            ProductEpilogue {
                into: r,
                bias,
                relu,
                mask,
            },
        ))
    };
    match n.op {
        Op::Max if zero(n.args[1]) => {
            let (p, b) = biased(n.args[0], true)?;
            ep(p, Some(b), true, None)
        }
        Op::Add => {
            let (p, b) = biased(Value::Node(r as u32), false)?;
            ep(p, Some(b), false, None)
        }
        Op::Select if zero(n.args[2]) => {
            let p = product(n.args[1])?;
            let g = node(n.args[0]).filter(|&g| inlined[g] && f.nodes[g].op == Op::Gt)?;
            let (h, z) = (f.nodes[g].args[0], f.nodes[g].args[1]);
            let in_memory = node(h).is_none_or(|k| !inlined[k] && strided[k].is_none());
            (zero(z) && in_memory && f.ty(h) == &n.ty).then_some(())?;
            ep(p, None, false, Some(h))
        }
        _ => None,
    }
}

/// The values a node computed at its own step reads from memory: the leaves of its fused
/// tree, a matrix product's operands (through absorbed transposes), or its operands.
pub(crate) fn reads(
    f: &Func,
    inlined: &[bool],
    absorbed: &[bool],
    summed: &[bool],
    strided: &[Option<Rows>],
    i: usize,
) -> Vec<Value> {
    let n = &f.nodes[i];
    if let Some(&Value::Node(j)) = n.args.first()
        && summed[j as usize]
    {
        return reads(f, inlined, absorbed, summed, strided, j as usize);
    }
    if n.op == Op::MatMul {
        return n
            .args
            .iter()
            .map(|&a| match a {
                Value::Node(j) if absorbed[j as usize] => f.nodes[j as usize].args[0],
                a => a,
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut stack = vec![i];
    let mut seen = std::collections::HashSet::new();
    while let Some(j) = stack.pop() {
        if !seen.insert(j) {
            continue;
        }
        for &a in &f.nodes[j].args {
            match a {
                Value::Node(k) if inlined[k as usize] => stack.push(k as usize),
                Value::Node(k) if strided[k as usize].is_some() => {
                    out.push(f.nodes[k as usize].args[0])
                }
                a => out.push(a),
            }
        }
    }
    out
}

/// Plans buffers: aliases, absorbed transposes and inlined nodes take none; outputs are
/// the caller's; every other node gets a 16-byte-aligned range of the scratch arena, reused
/// (first fit) once every node reading it has run.
pub(crate) fn plan(f: &Func, dims: &HashMap<String, usize>) -> Result<Plan, Error> {
    let absorbed = absorbed_transposes(f);
    let inlined = inlined_nodes(f, dims)?;
    let strided = strided_broadcasts(f, dims, &inlined)?;
    let summed = summed_products(f, &absorbed);
    let mut shapes: Vec<Vec<usize>> = f
        .nodes
        .iter()
        .map(|n| shape_of(&n.ty, dims))
        .collect::<Result<_, _>>()?;
    // A scan's buffer holds its results, the carries a step reads and its body's scratch.
    let mut scans: HashMap<usize, ScanLayout> = HashMap::new();
    for (i, nd) in f.nodes.iter().enumerate() {
        if nd.op == Op::Scan {
            let l = scan_layout(f, i, dims)?;
            shapes[i] = vec![l.total];
            scans.insert(i, l);
        }
    }
    let n = f.nodes.len();
    let alias: Vec<bool> = f
        .nodes
        .iter()
        .map(|nd| match nd.op {
            Op::Cast => !(f.ty(nd.args[0]).dtype.is_float() && nd.ty.dtype == DType::I32),
            op => op.info().lowering == Lowering::Alias,
        })
        .collect();
    let own: Vec<bool> = (0..n)
        .map(|i| !alias[i] && !absorbed[i] && !inlined[i] && !summed[i] && strided[i].is_none())
        .collect();
    // The node whose buffer holds a value (through aliases).
    let root = |mut v: Value| -> Option<usize> {
        loop {
            match v {
                Value::Node(i) if alias[i as usize] => v = f.nodes[i as usize].args[0],
                Value::Node(i) => return Some(i as usize),
                _ => return None,
            }
        }
    };
    // A node returned as an output is computed straight into the caller's buffer (outputs
    // never alias inputs or parameters: `Kernel::run_raw`'s contract).
    let mut direct: HashMap<usize, usize> = HashMap::new();
    for (k, o) in f.outputs.iter().enumerate() {
        if let Value::Node(i) = o
            && own[*i as usize]
        {
            direct.entry(*i as usize).or_insert(k);
        }
    }
    // Steps: a node that can be computed in a loop joins the open loop when it has as many
    // elements and reads nothing computed after that loop's step (except the loop's own
    // members, which it reads in registers).
    let count = |i: usize| shapes[i].iter().product::<usize>();
    let mut steps: Vec<Vec<usize>> = Vec::new();
    let mut step_of = vec![usize::MAX; n];
    let mut open: Option<usize> = None;
    // The open loop's row length, if a broadcast it reads set one.
    let mut open_rows: Option<usize> = None;
    for i in (0..n).filter(|&i| own[i]) {
        let nd = &f.nodes[i];
        if fusible(f, nd, dims) || scalar_broadcast(f, nd) {
            let rows = rows_of(f, &inlined, &strided, i);
            if let Some(st) = open {
                let first = steps[st][0];
                // A broadcast scalar is loaded before the loop runs, so it must come from
                // an earlier step.
                let sb = scalar_broadcast(f, nd);
                let joins = count(first) == count(i)
                    && (rows.is_none() || open_rows.is_none() || rows == open_rows)
                    && sliced(f, &inlined, &strided, i)
                        .iter()
                        .all(|&v| root(v).is_none_or(|r| step_of[r] < st))
                    && reads(f, &inlined, &absorbed, &summed, &strided, i)
                        .iter()
                        .all(|&v| match root(v) {
                            None => true,
                            Some(r) => step_of[r] < st || (step_of[r] == st && !sb),
                        });
                if joins {
                    steps[st].push(i);
                    step_of[i] = st;
                    open_rows = open_rows.or(rows);
                    continue;
                }
            }
            open = Some(steps.len());
            open_rows = rows;
        }
        step_of[i] = steps.len();
        steps.push(vec![i]);
    }
    let mut last_use = vec![0usize; n];
    for i in (0..n).filter(|&i| own[i]) {
        for v in reads(f, &inlined, &absorbed, &summed, &strided, i) {
            if let Some(j) = root(v) {
                last_use[j] = last_use[j].max(step_of[i]);
            }
        }
    }
    for &o in &f.outputs {
        if let Some(j) = root(o) {
            last_use[j] = usize::MAX;
        }
    }
    // A concat whose operands one fused loop computes, for it alone, is written in place:
    // the loop stores each operand into its columns of the concat's buffer (allocated at
    // the loop's step), and the concat does nothing.
    let mut readers = vec![0usize; n];
    for i in (0..n).filter(|&i| own[i]) {
        for v in reads(f, &inlined, &absorbed, &summed, &strided, i) {
            if let Some(j) = root(v) {
                readers[j] += 1;
            }
        }
    }
    for &o in &f.outputs {
        if let Some(j) = root(o) {
            readers[j] += 2;
        }
    }
    let mut placed: Vec<Vec<Placed>> = vec![Vec::new(); n];
    let mut written = vec![false; n];
    let mut early: HashMap<usize, Vec<usize>> = HashMap::new();
    // The concats that may be written: each operand a distinct node of one fused step.
    // An operand is stored into each concat that reads it, and into a buffer of its own
    // only if something else reads it too.
    let concat_args = |c: usize| -> Vec<usize> {
        f.nodes[c]
            .args
            .iter()
            .filter_map(|&a| match a {
                Value::Node(k) => Some(k as usize),
                _ => None,
            })
            .collect()
    };
    let mut candidates: Vec<usize> = (0..n)
        .filter(|&c| {
            let ks = concat_args(c);
            own[c]
                && f.nodes[c].op == Op::Concat
                && f.nodes[c].ty.dtype == DType::F32
                && !ks.is_empty()
                && ks.len() == f.nodes[c].args.len()
                && ks.iter().enumerate().all(|(j, &k)| {
                    own[k]
                        && count(k) > 0
                        && !ks[..j].contains(&k)
                        && step_of[k] == step_of[ks[0]]
                        && !direct.contains_key(&k)
                        && fusible(f, &f.nodes[k], dims)
                })
                && fusible(f, &f.nodes[steps[step_of[ks[0]]][0]], dims)
        })
        .collect();
    // Per written concat, the row length its operands' loop runs over.
    let mut concat_rows: HashMap<usize, usize> = HashMap::new();
    loop {
        // Each step's loop runs over one row length: that of what it reads in place, or
        // of the first concat it writes; a concat that wants another is ruled out.
        let mut step_rows: HashMap<usize, usize> = HashMap::new();
        concat_rows.clear();
        let mut out_of_step = None;
        for &c in &candidates {
            let Attr::Axis(axis) = f.nodes[c].attr else {
                out_of_step = Some(c);
                break;
            };
            let ks = concat_args(c);
            let st = step_of[ks[0]];
            let out = &shapes[c];
            let inner: usize = out[axis + 1..].iter().product();
            let outer = out[..axis].iter().product::<usize>();
            let loop_rows = steps[st]
                .iter()
                .find_map(|&m| rows_of(f, &inlined, &strided, m))
                .or(step_rows.get(&st).copied());
            let seg = shapes[ks[0]][axis] * inner;
            let r = loop_rows.unwrap_or(if outer == 1 { count(ks[0]) } else { seg });
            let rows_fit = ks.iter().all(|&k| {
                let seg = shapes[k][axis] * inner;
                loop_rows.is_none_or(|lr| lr == seg || outer == 1) && (outer == 1 || r == seg)
            });
            if !rows_fit {
                out_of_step = Some(c);
                break;
            }
            step_rows.insert(st, r);
            concat_rows.insert(c, r);
        }
        match out_of_step {
            Some(c) => candidates.retain(|&x| x != c),
            None => break,
        }
    }
    for &c in &candidates {
        let Attr::Axis(axis) = f.nodes[c].attr else {
            continue;
        };
        let ks = concat_args(c);
        let st = step_of[ks[0]];
        let out = &shapes[c];
        let inner: usize = out[axis + 1..].iter().product();
        let row = out[axis] * inner;
        let outer = out[..axis].iter().product::<usize>();
        let r = concat_rows[&c];
        let mut start = 0;
        for &k in &ks {
            placed[k].push(Placed {
                concat: c,
                offset: start * inner,
                step: if outer == 1 { r } else { row },
                row: r,
            });
            start += shapes[k][axis];
        }
        written[c] = true;
        early.entry(st).or_default().push(c);
    }
    let kept: Vec<bool> = (0..n)
        .map(|k| !placed[k].is_empty() && readers[k] > placed[k].len())
        .collect();
    // A product whose one reader is a loop of its own that only adds a bias, applies a
    // ReLU or a ReLU's derivative computes that loop's node in its epilogue, straight
    // into the node's buffer (allocated at the product's step).
    let mut epilogue: Vec<Option<ProductEpilogue>> = vec![None; n];
    let mut by_product: Vec<Option<usize>> = vec![None; n];
    for r in (0..n).filter(|&r| own[r]) {
        let Some((p, ep)) = epilogue_of(f, &inlined, &strided, r) else {
            continue;
        };
        let alone = |i: usize| steps[step_of[i]].len() == 1;
        let fits = own[p]
            && !summed[p]
            && readers[p] == 1
            && alone(p)
            && alone(r)
            && step_of[p] < step_of[r]
            && !direct.contains_key(&p)
            && placed[r].is_empty()
            && !written[r]
            && epilogue[p].is_none()
            && f.nodes[p].ty.dtype == DType::F32;
        if fits {
            epilogue[p] = Some(ep);
            by_product[r] = Some(p);
            early.entry(step_of[p]).or_default().push(r);
        }
    }
    let mut loc = vec![Loc::Scratch(usize::MAX); n];
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, size), sorted by offset
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (last step, offset, size)
    let (mut top, mut unshared) = (0usize, 0usize);
    for (t, step) in steps.iter().enumerate() {
        // Release buffers no step from here on reads.
        live.retain(|&(last, off, size)| {
            if last < t {
                free.push((off, size));
                false
            } else {
                true
            }
        });
        free.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for &(off, size) in &free {
            match merged.last_mut() {
                Some((o, s)) if *o + *s == off => *s += size,
                _ => merged.push((off, size)),
            }
        }
        free = merged;
        let early_here = early.get(&t).cloned().unwrap_or_default();
        for &i in early_here.iter().chain(step) {
            // A concat written in place has its buffer from its operands' step; they
            // have none of their own.
            if (!placed[i].is_empty() && !kept[i])
                || epilogue[i].is_some()
                || ((written[i] || by_product[i].is_some()) && !early_here.contains(&i))
            {
                continue;
            }
            if let Some(&k) = direct.get(&i) {
                loc[i] = Loc::Output(k);
                continue;
            }
            let size = count(i).div_ceil(4) * 4;
            unshared += size;
            let off = match free.iter().position(|&(_, s)| s >= size) {
                Some(p) => {
                    let (o, s) = free[p];
                    if s == size {
                        free.remove(p);
                    } else {
                        free[p] = (o + size, s - size);
                    }
                    o
                }
                None => {
                    top += size;
                    top - size
                }
            };
            loc[i] = Loc::Scratch(off);
            live.push((last_use[i], off, size));
        }
    }
    for i in 0..n {
        if let Some(p) = placed[i].first().filter(|_| !kept[i]) {
            loc[i] = loc[p.concat];
        }
        if let Some(e) = epilogue[i] {
            loc[i] = loc[e.into];
        }
    }
    // Aliases live where their operand does; a scan's results at their offsets in its
    // buffer.
    for i in 0..n {
        if alias[i] {
            loc[i] = match f.nodes[i].args[0] {
                Value::Input(k) => Loc::Input(k as usize),
                Value::Param(k) => Loc::Param(k as usize),
                Value::Node(k) => loc[k as usize],
            };
            if let (Attr::Output(r), Value::Node(s)) = (&f.nodes[i].attr, f.nodes[i].args[0])
                && let (Some(l), Loc::Scratch(base)) = (scans.get(&(s as usize)), loc[i])
            {
                loc[i] = Loc::Scratch(base + l.results[*r]);
            }
        }
    }
    Ok(Plan {
        loc,
        own,
        inlined,
        absorbed,
        summed,
        strided,
        placed,
        kept,
        written,
        epilogue,
        by_product,
        shapes,
        steps,
        scratch: top,
        unshared,
    })
}

/// The function with its plan as notes: where each value lives, which nodes are fused
/// into which loop, which call a kernel.
pub fn plan_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, Error> {
    let p = plan(f, dims)?;
    // Which loop computes each inlined node (the first root whose tree holds it).
    let mut fused_into: HashMap<usize, usize> = HashMap::new();
    let mut members: HashMap<usize, usize> = HashMap::new();
    for i in (0..f.nodes.len()).filter(|&i| p.own[i]) {
        let mut stack: Vec<usize> = f.nodes[i]
            .args
            .iter()
            .filter_map(|a| match a {
                Value::Node(k) if p.inlined[*k as usize] => Some(*k as usize),
                _ => None,
            })
            .collect();
        while let Some(j) = stack.pop() {
            if fused_into.contains_key(&j) && fused_into[&j] != i {
                continue;
            }
            if fused_into.insert(j, i).is_none() {
                *members.entry(i).or_default() += 1;
            }
            for a in &f.nodes[j].args {
                if let Value::Node(k) = a
                    && p.inlined[*k as usize]
                {
                    stack.push(*k as usize);
                }
            }
        }
    }
    let where_ = |l: Loc| match l {
        Loc::Scratch(o) => format!("scratch[{}..]", o * 4),
        Loc::Output(k) => format!("output {k}"),
        Loc::Input(k) => format!("input {k}"),
        Loc::Param(k) => format!("param {k}"),
    };
    let note = |i: usize| -> Option<String> {
        let n = &f.nodes[i];
        if p.inlined[i] {
            return Some(format!(
                "fused into %{}",
                fused_into.get(&i).copied().unwrap_or(i)
            ));
        }
        if p.absorbed[i] {
            return Some("read through strides by matmul".into());
        }
        if let Some(r) = p.strided[i] {
            let how = if r.repeat {
                "one of its elements per row"
            } else if n.op == Op::Slice {
                "its rows"
            } else {
                "all of it in every row"
            };
            return Some(format!(
                "read in place by its users' loops: {how} of {}",
                r.inner
            ));
        }
        if p.summed[i] {
            return Some("one product with its sum over the batch".into());
        }
        if !p.own[i] {
            return Some(format!("alias: {}", where_(p.loc[i])));
        }
        if let Some(q) = p.by_product[i] {
            let step = p.steps.iter().position(|st| st.contains(&q)).unwrap_or(0);
            return Some(format!(
                "computed by %{q}'s epilogue -> {}, step {step}",
                where_(p.loc[i])
            ));
        }
        if p.written[i] {
            return Some(format!(
                "written in place by its operands' loop -> {}",
                where_(p.loc[i])
            ));
        }
        let how = match n.op {
            Op::MatMul => match p.epilogue[i] {
                Some(e) => {
                    let what: Vec<&str> = [
                        (e.bias.is_some(), "+ bias"),
                        (e.relu, "relu"),
                        (e.mask.is_some(), "mask"),
                    ]
                    .iter()
                    .filter(|w| w.0)
                    .map(|w| w.1)
                    .collect();
                    format!(
                        "product with epilogue ({}) into %{}",
                        what.join(", "),
                        e.into
                    )
                }
                None => "gemm".to_string(),
            },
            Op::Sum if matches!(n.args[0], Value::Node(j) if p.summed[j as usize]) => {
                "gemm over the batch joined".to_string()
            }
            Op::Sum | Op::Mean | Op::ReduceMax => "kernel reduce".to_string(),
            Op::Broadcast | Op::Transpose => "kernel gather".to_string(),
            Op::OneHot => "kernel one_hot".to_string(),
            Op::Im2col | Op::Col2im | Op::Slice | Op::Pad | Op::Iota | Op::Random | Op::Concat => {
                "kernel layout".to_string()
            }
            Op::Pow | Op::Cast => "kernel math".to_string(),
            _ if unary_kernel(n, dims).is_some() => "kernel unary".to_string(),
            Op::Div if n.ty.dtype == DType::I32 => "kernel math".to_string(),
            Op::Scan => "kernel scan, its body's plan below".to_string(),
            Op::Attention | Op::AttentionGrad => "kernel attention (no scores stored)".to_string(),
            _ => {
                let step = p.steps.iter().find(|st| st.contains(&i));
                let count: usize = p.shapes[i].iter().product();
                let inner = step
                    .into_iter()
                    .flatten()
                    .find_map(|&m| rows_of(f, &p.inlined, &p.strided, m))
                    .or(step
                        .into_iter()
                        .flatten()
                        .find_map(|&m| p.placed[m].first().map(|c| c.row)))
                    .filter(|&r| r < count);
                let rows = match inner {
                    Some(k) => format!(" over {} rows of {k}", count / k),
                    None => String::new(),
                };
                match members.get(&i) {
                    Some(m) => format!("elementwise loop{rows}, {m} fused"),
                    None => format!("elementwise loop{rows}"),
                }
            }
        };
        let step = p.steps.iter().position(|st| st.contains(&i)).unwrap_or(0);
        let shared = p.steps[step].len();
        let with = if shared > 1 {
            format!(", one of {shared} in step {step}")
        } else {
            format!(", step {step}")
        };
        let at: String = p.placed[i]
            .iter()
            .map(|c| {
                format!(
                    " (in place in %{}: rows of {} at {}, {} apart)",
                    c.concat, c.row, c.offset, c.step
                )
            })
            .collect();
        Some(format!("{how} -> {}{at}{with}", where_(p.loc[i])))
    };
    let head = format!(
        "; @{} for {}: scratch {} bytes ({} without reuse)\n",
        f.name,
        sizes_text(dims),
        4 * p.scratch,
        4 * p.unshared
    );
    let mut text = head + &nnc_ir::print::print_func(f, &note);
    for (i, n) in f.nodes.iter().enumerate() {
        if let Attr::Loop(l) = &n.attr {
            text.push_str(&format!(
                "\n; the body of %{i} in @{}, once per step\n",
                f.name
            ));
            text.push_str(&plan_text(&l.body, dims)?);
        }
    }
    Ok(text)
}

/// The sizes a kernel was specialized to, for the text stages' headers (`B = 32, N = 4`).
pub(crate) fn sizes_text(dims: &HashMap<String, usize>) -> String {
    let mut sizes: Vec<String> = dims.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    sizes.sort();
    if sizes.is_empty() {
        "its fixed sizes".to_string()
    } else {
        sizes.join(", ")
    }
}

/// The member of `step` whose buffer `v` reads (through aliases), if any.
pub(crate) fn member_of(f: &Func, mut v: Value, step: &[usize]) -> Option<usize> {
    loop {
        match v {
            Value::Node(i) if step.contains(&(i as usize)) => return Some(i as usize),
            Value::Node(i) if f.nodes[i as usize].op.info().lowering == Lowering::Alias => {
                let nd = &f.nodes[i as usize];
                if nd.op == Op::Cast
                    && f.ty(nd.args[0]).dtype.is_float()
                    && nd.ty.dtype == DType::I32
                {
                    return None;
                }
                v = nd.args[0];
            }
            _ => return None,
        }
    }
}

/// For a division `x / y` whose divisor `y` is loop-invariant (`invariant` finds it), that
/// divisor's entry: the loop multiplies by its reciprocal, computed once before the loop.
pub(crate) fn invariant_divisor<'a, T: 'a>(
    f: &Func,
    j: usize,
    invariant: impl Fn(usize) -> Option<&'a T>,
) -> Option<&'a T> {
    let n = &f.nodes[j];
    match (n.op, n.args.get(1)) {
        // Integer division never reaches a fused loop (a kernel truncates it); the guard
        // keeps it so.
        (Op::Div, Some(&Value::Node(k))) if n.ty.dtype.is_float() => invariant(k as usize),
        _ => None,
    }
}
