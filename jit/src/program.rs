//! The backend-neutral program of a planned function: kernel calls (with their
//! descriptors computed) and fused loops, which Cranelift (`cranelift.rs`), LLVM
//! (`llvm.rs`) and objects (`object.rs`) all emit.

use crate::Error;

use crate::kernels;
use crate::plan::{
    Loc, Plan, fusible, member_of, merge_axes, plan, scalar_broadcast, scan_layout, shape_of,
    sizes_text, strides, unary_kernel,
};
use nnc_ir::{Attr, DType, Dim, Func, Op, Value};
use std::collections::HashMap;

/// A kernel of `nnc-rt` that generated code calls.
pub(crate) use kernels::KernelFn;

/// An argument of a kernel call: a buffer, a constant, or a descriptor (an array of
/// constants the call reads through a pointer).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Loc(Loc),
    Imm(i64),
    Desc(Vec<i64>),
    /// An array of buffer addresses (a scan's operands and results).
    Ptrs(Vec<Loc>),
    /// The entry of the program's k-th loop body.
    Body(usize),
}

/// One fused loop: `count` elements; at each index the nodes of `order` are computed from
/// the `leaves` (read at the index), the `scalars` (one value broadcast to every index) and
/// each other, and the `stores` written.
#[derive(Clone, Debug)]
pub(crate) struct LoopSpec {
    pub order: Vec<usize>,
    pub leaves: Vec<(Value, Loc)>,
    pub scalars: Vec<(usize, Loc)>,
    pub stores: Vec<(usize, Loc)>,
    pub members: Vec<usize>,
    /// Elements per row.
    pub count: usize,
    /// Rows: the loop runs `rows` times over `count` elements, each operand's address
    /// advanced by its step per row (1 row: one loop over all the elements).
    pub rows: usize,
    /// Per leaf, elements its address advances per row: `count` (a value of the loop's
    /// shape), 0 (a broadcast row, read again in every row) or its operand's row length
    /// (a slice read in place).
    pub leaf_step: Vec<usize>,
    /// Per leaf, elements from its buffer's start to its first (a slice's start).
    pub leaf_offset: Vec<usize>,
    /// Per scalar, elements its address advances per row: 0 (one value for the whole
    /// loop) or 1 (a broadcast's element for the row).
    pub scalar_step: Vec<usize>,
    /// Per store, elements its address advances per row: `count`, or a concat's row
    /// length for an operand stored in place into it.
    pub store_step: Vec<usize>,
    /// Per store, elements from its buffer's start to its first (an operand's columns in
    /// a concat).
    pub store_offset: Vec<usize>,
}

/// One step of a compiled function, in a form both backends take.
#[derive(Clone, Debug)]
pub(crate) enum Instr {
    Call(KernelFn, Vec<Arg>),
    Loop(Box<LoopSpec>),
}

/// A function planned for concrete sizes: its steps, the scratch it needs (f32 elements,
/// with and without reuse), its outputs and whether they may overwrite its operands.
pub(crate) struct Program {
    pub instrs: Vec<Instr>,
    /// The body of each scan, in node order, with its own program (`Arg::Body(k)`).
    pub bodies: Vec<(Func, Program)>,
    pub scratch: usize,
    pub unshared: usize,
    pub outputs: Vec<(DType, Vec<usize>)>,
    pub in_place: bool,
}

/// The backend-neutral form of `f` for the sizes `dims`: the buffer plan's steps as kernel
/// calls (with their descriptors computed) and fused loops, then copies of outputs that
/// were not computed in place.
pub(crate) fn program(f: &Func, dims: &HashMap<String, usize>) -> Result<Program, Error> {
    if !crate::supports(f) {
        return Err(Error::Unsupported(format!(
            "the JIT compiles f32 and i32 graphs; `@{}` uses f64",
            f.name
        )));
    }
    // Every value at these sizes must fit the memory limit (checked arithmetic: a batch of
    // 10^7 rows is an error here, not an abort when the buffers are allocated).
    let limit = nnc_ir::limits::memory_limit() as u128;
    for ty in f
        .inputs
        .iter()
        .map(|a| &a.ty)
        .chain(f.params.iter().map(|p| &p.ty))
        .chain(f.nodes.iter().map(|n| &n.ty))
    {
        let mut n: u128 = 4;
        for d in ty.shape.dims() {
            let k = match d {
                Dim::Known(k) => *k as u128,
                Dim::Sym(s) => *dims
                    .get(s)
                    .ok_or_else(|| Error::Input(format!("no size for dimension {s}")))?
                    as u128,
            };
            n = n.saturating_mul(k);
        }
        if n > limit {
            return Err(Error::TooLarge(format!(
                "`@{}` at {} needs a {ty} of {}, more than the memory limit of {} (`--memory-limit` sets another)",
                f.name,
                sizes_text(dims),
                nnc_ir::limits::bytes_text(n),
                nnc_ir::limits::bytes_text(limit)
            )));
        }
    }
    let Plan {
        loc,
        own: _,
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
        scratch,
        unshared,
    } = plan(f, dims)?;
    if scratch as u128 * 4 > limit {
        return Err(Error::TooLarge(format!(
            "`@{}` at {} needs {} of scratch memory, more than the memory limit of {}",
            f.name,
            sizes_text(dims),
            nnc_ir::limits::bytes_text(scratch as u128 * 4),
            nnc_ir::limits::bytes_text(limit)
        )));
    }
    let value_loc = |loc: &[Loc], v: Value| match v {
        Value::Input(i) => Loc::Input(i as usize),
        Value::Param(i) => Loc::Param(i as usize),
        Value::Node(i) => loc[i as usize],
    };
    let value_shape = |v: Value| -> Result<Vec<usize>, Error> {
        match v {
            Value::Node(i) => Ok(shapes[i as usize].clone()),
            v => shape_of(f.ty(v), dims),
        }
    };
    let mut prog: Vec<Instr> = Vec::new();
    let mut bodies: Vec<(Func, Program)> = Vec::new();
    for step in &steps {
        let i = step[0];
        // Computed by the product before it, in its epilogue.
        if by_product[i].is_some() {
            continue;
        }
        let n = &f.nodes[i];
        let here = loc[i];
        let count: usize = shapes[i].iter().product();
        let dst = Arg::Loc(here);
        let arg = |k: usize| Arg::Loc(value_loc(&loc, n.args[k]));
        let is_int = n.ty.dtype == DType::I32;
        match n.op {
            Op::Pow => {
                let (x, y) = (arg(0), arg(1));
                let k = Arg::Imm(kernels::MathKind::Pow as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x, y, dst, cnt]));
            }
            Op::Div if is_int => {
                let (x, y) = (arg(0), arg(1));
                let k = Arg::Imm(kernels::MathKind::IntDiv as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x, y, dst, cnt]));
            }
            Op::Cast => {
                // Float to int (the other casts are aliases).
                let x = arg(0);
                let k = Arg::Imm(kernels::MathKind::Trunc as i64);
                let cnt = Arg::Imm(count as i64);
                prog.push(Instr::Call(KernelFn::Math, vec![k, x.clone(), x, dst, cnt]));
            }
            _ if unary_kernel(n, dims).is_some() => {
                let kind = unary_kernel(n, dims).map_or(0, |k| k as i64);
                // Its operand where it is, or the rows of the slice it reads in place.
                let rows = match n.args[0] {
                    Value::Node(k) => strided[k as usize].map(|r| (k as usize, r)),
                    _ => None,
                };
                let (x, desc) = match rows {
                    Some((k, r)) => (
                        value_loc(&loc, f.nodes[k].args[0]),
                        [count / r.inner.max(1), r.inner, r.step, r.offset],
                    ),
                    None => (value_loc(&loc, n.args[0]), [1, count, count, 0]),
                };
                let d = Arg::Desc(desc.iter().map(|&v| v as i64).collect());
                prog.push(Instr::Call(
                    KernelFn::Unary,
                    vec![Arg::Imm(kind), Arg::Loc(x), dst, d],
                ));
            }
            _ if fusible(f, n, dims) || scalar_broadcast(f, n) => {
                // One loop for every node of the step: each member's inlined tree,
                // operands first, then the member, stored to its buffer.
                let mut order = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let mut leaves: Vec<Value> = Vec::new();
                let mut scalars: Vec<(usize, Value)> = Vec::new();
                // The row length of the broadcasts read in place, if any.
                let mut inner: Option<usize> = None;
                for &m in step {
                    let mut stack = vec![(m, false)];
                    while let Some((j, done)) = stack.pop() {
                        if done {
                            order.push(j);
                            continue;
                        }
                        if !seen.insert(j) {
                            continue;
                        }
                        stack.push((j, true));
                        let nj = &f.nodes[j];
                        if scalar_broadcast(f, nj) || strided[j].is_some_and(|r| r.repeat) {
                            scalars.push((j, nj.args[0]));
                            continue;
                        }
                        for &a in &nj.args {
                            match a {
                                Value::Node(k)
                                    if inlined[k as usize]
                                        || strided[k as usize].is_some_and(|r| r.repeat) =>
                                {
                                    inner = inner.or(strided[k as usize].map(|r| r.inner));
                                    stack.push((k as usize, false))
                                }
                                // A bias-like broadcast or a slice: its operand, one
                                // row per row.
                                Value::Node(k) if strided[k as usize].is_some() => {
                                    inner = inner.or(strided[k as usize].map(|r| r.inner));
                                    if !leaves.contains(&a) {
                                        leaves.push(a);
                                    }
                                }
                                // A member (or an alias of one) is read in registers.
                                _ if member_of(f, a, step).is_some() => {}
                                _ if !leaves.contains(&a) => leaves.push(a),
                                _ => {}
                            }
                        }
                    }
                }
                // An operand stored in place into a concat: the loop runs over its rows.
                let inner = inner
                    .or(step.iter().find_map(|&m| placed[m].first().map(|p| p.row)))
                    .unwrap_or(count);
                // A leaf read in place for a broadcast lives where its operand does.
                let source = |v: Value| match v {
                    Value::Node(k) if strided[k as usize].is_some() => f.nodes[k as usize].args[0],
                    v => v,
                };
                let rows_at = |v: Value| match v {
                    Value::Node(k) => strided[k as usize],
                    _ => None,
                };
                // Each member to its buffer, or, placed, into each concat it is read by.
                let mut stores: Vec<(usize, Loc, usize, usize)> = Vec::new();
                for &m in step {
                    if placed[m].is_empty() || kept[m] {
                        stores.push((m, loc[m], inner, 0));
                    }
                    for p in &placed[m] {
                        stores.push((m, loc[p.concat], p.step, p.offset));
                    }
                }
                prog.push(Instr::Loop(Box::new(LoopSpec {
                    order,
                    leaf_step: leaves
                        .iter()
                        .map(|&v| rows_at(v).map_or(inner, |r| r.step))
                        .collect(),
                    leaf_offset: leaves
                        .iter()
                        .map(|&v| rows_at(v).map_or(0, |r| r.offset))
                        .collect(),
                    scalar_step: scalars
                        .iter()
                        .map(|&(j, _)| usize::from(strided[j].is_some()))
                        .collect(),
                    leaves: leaves
                        .iter()
                        .map(|&v| (v, value_loc(&loc, source(v))))
                        .collect(),
                    scalars: scalars
                        .iter()
                        .map(|&(j, v)| (j, value_loc(&loc, v)))
                        .collect(),
                    stores: stores.iter().map(|&(m, l, _, _)| (m, l)).collect(),
                    store_step: stores.iter().map(|s| s.2).collect(),
                    store_offset: stores.iter().map(|s| s.3).collect(),
                    members: step.clone(),
                    count: inner,
                    rows: count / inner,
                })));
            }
            Op::Sum if matches!(n.args[0], Value::Node(j) if summed[j as usize]) => {
                let Value::Node(j) = n.args[0] else {
                    return Err(Error::Codegen("summed product without its product".into()));
                };
                let mm = &f.nodes[j as usize];
                let Value::Node(t) = mm.args[0] else {
                    return Err(Error::Codegen(
                        "summed product without its transpose".into(),
                    ));
                };
                let p = f.nodes[t as usize].args[0];
                let ps = value_shape(p)?; // [T, K, m]
                let qs = value_shape(mm.args[1])?; // [T, K, n]
                let (m, k, nn) = (ps[2], ps[0] * ps[1], qs[2]);
                let d = vec![
                    1, m as i64, k as i64, nn as i64, 1, m as i64, nn as i64, 1, 0, 0,
                ];
                let (ap, bp) = (
                    Arg::Loc(value_loc(&loc, p)),
                    Arg::Loc(value_loc(&loc, mm.args[1])),
                );
                prog.push(Instr::Call(
                    KernelFn::Matmul,
                    vec![ap, bp, dst, Arg::Desc(d)],
                ));
            }
            Op::Sum | Op::Mean | Op::ReduceMax => {
                let Attr::Axes(axes) = &n.attr else {
                    return Err(Error::Codegen("reduction without axes".into()));
                };
                let xs = value_shape(n.args[0])?;
                let kept: Vec<usize> = (0..xs.len()).filter(|a| !axes.contains(a)).collect();
                let out_strides = strides(&kept.iter().map(|&a| xs[a]).collect::<Vec<_>>());
                let mut ostr = vec![0i64; xs.len()];
                for (k, &a) in kept.iter().enumerate() {
                    ostr[a] = out_strides[k];
                }
                let kind = match n.op {
                    Op::Sum => 0,
                    Op::Mean => 1,
                    _ => 2,
                };
                let reduced: usize = axes.iter().map(|&a| xs[a]).product();
                let (xs, ostr) = merge_axes(&xs, &ostr);
                let mut d = vec![xs.len() as i64, kind, reduced as i64, count as i64];
                d.extend(xs.iter().map(|&s| s as i64));
                d.extend(ostr);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Reduce, vec![x, dst, dp]));
            }
            Op::Broadcast | Op::Transpose => {
                let xs = value_shape(n.args[0])?;
                let xstr = strides(&xs);
                let out = &shapes[i];
                let mut per_out = vec![0i64; out.len()];
                match &n.attr {
                    Attr::Dims(d) => d
                        .iter()
                        .enumerate()
                        .for_each(|(k, &o)| per_out[o] = xstr[k]),
                    Attr::Perm(p) => p
                        .iter()
                        .enumerate()
                        .for_each(|(k, &a)| per_out[k] = xstr[a]),
                    _ => return Err(Error::Codegen("layout op without its attribute".into())),
                }
                let (out, per_out) = merge_axes(out, &per_out);
                let mut d = vec![out.len() as i64];
                d.extend(out.iter().map(|&s| s as i64));
                d.extend(per_out);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Gather, vec![x, dst, dp]));
            }
            Op::OneHot => {
                let classes = *shapes[i].last().unwrap_or(&1);
                let x = arg(0);
                let nn = Arg::Imm((count / classes.max(1)) as i64);
                let c = Arg::Imm(classes as i64);
                prog.push(Instr::Call(KernelFn::OneHot, vec![x, dst, nn, c]));
            }
            Op::Im2col | Op::Col2im => {
                let Attr::Window {
                    kernel,
                    stride,
                    pad,
                } = n.attr
                else {
                    return Err(Error::Codegen("window op without its attribute".into()));
                };
                let (img, cols) = if n.op == Op::Im2col {
                    (value_shape(n.args[0])?, shapes[i].clone())
                } else {
                    (shapes[i].clone(), value_shape(n.args[0])?)
                };
                let d = [
                    img[0] * img[1],
                    img[2],
                    img[3],
                    kernel[0],
                    kernel[1],
                    cols[4],
                    cols[5],
                    stride[0],
                    stride[1],
                    pad[0],
                    pad[1],
                ];
                let kind = Arg::Imm(if n.op == Op::Im2col {
                    kernels::LayoutKind::Im2col
                } else {
                    kernels::LayoutKind::Col2im
                } as i64);
                let x = arg(0);
                let dp = Arg::Desc(d.iter().map(|&v| v as i64).collect());
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, x, dst, dp]));
            }
            Op::Slice | Op::Pad => {
                let Attr::Offset { axis, start } = n.attr else {
                    return Err(Error::Codegen("slice without its attribute".into()));
                };
                let (big, small) = if n.op == Op::Slice {
                    (value_shape(n.args[0])?, shapes[i].clone())
                } else {
                    (shapes[i].clone(), value_shape(n.args[0])?)
                };
                let outer: usize = big[..axis].iter().product();
                let inner: usize = big[axis + 1..].iter().product();
                let d = vec![
                    outer as i64,
                    big[axis] as i64,
                    small[axis] as i64,
                    inner as i64,
                    start as i64,
                ];
                let kind = Arg::Imm(if n.op == Op::Slice {
                    kernels::LayoutKind::Slice
                } else {
                    kernels::LayoutKind::Pad
                } as i64);
                let x = arg(0);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, x, dst, dp]));
            }
            Op::Random => {
                let Attr::Value(stream) = n.attr else {
                    return Err(Error::Codegen("random without its stream".into()));
                };
                let kind = Arg::Imm(kernels::LayoutKind::Random as i64);
                let key = arg(0);
                let dp = Arg::Desc(vec![count as i64, stream as i64]);
                prog.push(Instr::Call(KernelFn::Layout, vec![kind, key, dst, dp]));
            }
            Op::Iota => {
                let Attr::Axes(axes) = &n.attr else {
                    return Err(Error::Codegen("iota without its axis".into()));
                };
                let out = &shapes[i];
                let a = axes[0];
                let d = vec![
                    out[..a].iter().product::<usize>() as i64,
                    out[a] as i64,
                    out[a + 1..].iter().product::<usize>() as i64,
                ];
                let kind = Arg::Imm(kernels::LayoutKind::Iota as i64);
                let dp = Arg::Desc(d);
                prog.push(Instr::Call(
                    KernelFn::Layout,
                    vec![kind, dst.clone(), dst, dp],
                ));
            }
            // Its operands' loop wrote it.
            Op::Concat if written[i] => {}
            Op::Concat => {
                let Attr::Axis(axis) = n.attr else {
                    return Err(Error::Codegen("concat without its axis".into()));
                };
                // Each operand placed at its offset along the axis (no zero fill: the
                // pieces cover the result).
                let out = &shapes[i];
                let outer: usize = out[..axis].iter().product();
                let inner: usize = out[axis + 1..].iter().product();
                let mut start = 0;
                for k in 0..n.args.len() {
                    let len = value_shape(n.args[k])?[axis];
                    let d = vec![
                        outer as i64,
                        out[axis] as i64,
                        len as i64,
                        inner as i64,
                        start as i64,
                    ];
                    let kind = Arg::Imm(kernels::LayoutKind::Place as i64);
                    prog.push(Instr::Call(
                        KernelFn::Layout,
                        vec![kind, arg(k), dst.clone(), Arg::Desc(d)],
                    ));
                    start += len;
                }
            }
            Op::Gather | Op::ScatterAdd => {
                let Attr::Index { axis, line } = n.attr else {
                    return Err(Error::Codegen("gather without its axis".into()));
                };
                let table = if n.op == Op::Gather {
                    value_shape(n.args[0])?
                } else {
                    shapes[i].clone()
                };
                let ids: usize = value_shape(n.args[1])?.iter().product();
                let d = vec![
                    table[..axis].iter().product::<usize>() as i64,
                    table[axis] as i64,
                    table[axis + 1..].iter().product::<usize>() as i64,
                    ids as i64,
                    line as i64,
                ];
                let kind = Arg::Imm(if n.op == Op::Gather {
                    kernels::TakeKind::Gather
                } else {
                    kernels::TakeKind::ScatterAdd
                } as i64);
                let (ids, x) = (arg(1), arg(0));
                prog.push(Instr::Call(
                    KernelFn::Take,
                    vec![kind, ids, x, dst, Arg::Desc(d)],
                ));
            }
            Op::MatMul => {
                let out = &shapes[i];
                let r = out.len();
                let (m, nn) = (out[r - 2], out[r - 1]);
                let batch: usize = out[..r - 2].iter().product();
                let a_shape = value_shape(n.args[0])?;
                let b_shape = value_shape(n.args[1])?;
                let k = a_shape[a_shape.len() - 1];
                // An absorbed transpose is read through its operand with swapped strides.
                let operand = |k_arg: usize, rows: usize, cols: usize| -> (Loc, i64, i64) {
                    let v = n.args[k_arg];
                    if let Value::Node(j) = v
                        && absorbed[j as usize]
                    {
                        let src = f.nodes[j as usize].args[0];
                        // The source is [cols, rows]: element (r, c) at c * rows + r.
                        return (value_loc(&loc, src), 1, rows as i64);
                    }
                    (value_loc(&loc, v), cols as i64, 1)
                };
                let (al, a_rs, a_cs) = operand(0, m, k);
                let (bl, b_rs, b_cs) = operand(1, k, nn);
                // A rank-2 operand is shared by the batch (batch stride 0).
                let a_bs = if a_shape.len() == 2 { 0 } else { m * k };
                let b_bs = if b_shape.len() == 2 { 0 } else { k * nn };
                // A row-major batch times a shared matrix is one taller product.
                let (batch, m, a_bs) = if b_bs == 0 && a_bs != 0 && a_cs == 1 && a_rs == k as i64 {
                    (1, batch * m, 0)
                } else {
                    (batch, m, a_bs)
                };
                let d = vec![
                    batch as i64,
                    m as i64,
                    k as i64,
                    nn as i64,
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    a_bs as i64,
                    b_bs as i64,
                ];
                let (ap, bp) = (Arg::Loc(al), Arg::Loc(bl));
                match epilogue[i] {
                    Some(e) if batch == 1 => {
                        let mut d = d;
                        let flags = [
                            (e.bias.is_some(), kernels::EPILOGUE_BIAS),
                            (e.relu, kernels::EPILOGUE_RELU),
                            (e.mask.is_some(), kernels::EPILOGUE_MASK),
                        ];
                        d.push(flags.iter().filter(|f| f.0).map(|f| f.1).sum());
                        let at = |v: Option<Value>| {
                            v.map_or(dst.clone(), |v| Arg::Loc(value_loc(&loc, v)))
                        };
                        let (bias, mask) = (at(e.bias), at(e.mask));
                        prog.push(Instr::Call(
                            KernelFn::MatmulEpilogue,
                            vec![ap, bp, dst.clone(), Arg::Desc(d), bias, mask],
                        ));
                    }
                    Some(_) => {
                        return Err(Error::Codegen(
                            "a product with an epilogue is one matrix product".into(),
                        ));
                    }
                    None => {
                        let dp = Arg::Desc(d);
                        prog.push(Instr::Call(KernelFn::Matmul, vec![ap, bp, dst, dp]));
                    }
                }
            }
            Op::Scan => {
                let Attr::Loop(l) = &n.attr else {
                    return Err(Error::Codegen("scan without its body".into()));
                };
                let Loc::Scratch(base) = here else {
                    return Err(Error::Codegen(
                        "a scan's buffer is not in scratch memory".into(),
                    ));
                };
                let lay = scan_layout(f, i, dims)?;
                let mut ptrs: Vec<Loc> = n.args.iter().map(|&a| value_loc(&loc, a)).collect();
                let at = |o: usize| Loc::Scratch(base + o);
                ptrs.extend(lay.results.iter().map(|&o| at(o)));
                ptrs.extend(lay.carries.iter().map(|&o| at(o)));
                ptrs.push(at(lay.scratch));
                let k = bodies.len();
                bodies.push((l.body.clone(), program(&l.body, dims)?));
                prog.push(Instr::Call(
                    KernelFn::Scan,
                    vec![Arg::Desc(lay.desc.encode()), Arg::Ptrs(ptrs), Arg::Body(k)],
                ));
            }
            Op::Attention | Op::AttentionGrad => {
                let Attr::Causal(causal) = n.attr else {
                    return Err(Error::Codegen("attention without its causal flag".into()));
                };
                let (qs, ks) = (value_shape(n.args[0])?, value_shape(n.args[1])?);
                let r = qs.len();
                let desc = vec![
                    i64::from(n.op == Op::AttentionGrad),
                    qs[..r - 2].iter().product::<usize>() as i64,
                    qs[r - 2] as i64,
                    ks[r - 2] as i64,
                    qs[r - 1] as i64,
                    i64::from(causal),
                ];
                let mut ptrs: Vec<Loc> = n.args.iter().map(|&a| value_loc(&loc, a)).collect();
                let Arg::Loc(d) = dst else {
                    return Err(Error::Codegen("attention's result is not a buffer".into()));
                };
                ptrs.push(d);
                prog.push(Instr::Call(
                    KernelFn::Attention,
                    vec![Arg::Desc(desc), Arg::Ptrs(ptrs)],
                ));
            }
            Op::Reshape | Op::StopGradient | Op::ScanOut => {}
            op => {
                return Err(Error::Unsupported(format!(
                    "the JIT cannot lower `{}` yet",
                    op.mnemonic()
                )));
            }
        }
    }
    // Copy each output to the caller's buffer.
    let mut outputs = Vec::new();
    for (k, &o) in f.outputs.iter().enumerate() {
        let shape = value_shape(o)?;
        let len: usize = shape.iter().product();
        outputs.push((f.ty(o).dtype, shape));
        let l = value_loc(&loc, o);
        if l == Loc::Output(k) {
            continue;
        }
        let dst = Arg::Loc(Loc::Output(k));
        let src = Arg::Loc(l);
        let cnt = Arg::Imm(len as i64);
        prog.push(Instr::Call(KernelFn::Copy, vec![dst, src, cnt]));
    }
    let in_place = {
        let count = |i: usize| shapes[i].iter().product::<usize>();
        let big = (0..f.nodes.len()).map(count).max().unwrap_or(0);
        let big_steps: Vec<&Vec<usize>> = steps
            .iter()
            .filter(|st| st.iter().any(|&i| count(i) == big))
            .collect();
        // Inlined nodes run inside their user's loop; every other big node must be a
        // member of the one loop, and so must every output.
        let all_in_loop = (0..f.nodes.len())
            .filter(|&i| count(i) == big && !inlined[i])
            .all(|i| big_steps.len() == 1 && big_steps[0].contains(&i));
        let fused_loop = big_steps
            .first()
            .is_some_and(|st| fusible(f, &f.nodes[st[0]], dims));
        let outputs_stored = f.outputs.iter().all(|o| {
            matches!(o, Value::Node(i) if big_steps.first().is_some_and(|st| st.contains(&(*i as usize))))
        });
        big_steps.len() == 1 && all_in_loop && fused_loop && outputs_stored
    };
    Ok(Program {
        instrs: prog,
        bodies,
        scratch,
        unshared,
        outputs,
        in_place,
    })
}
