//! The reference interpreter: evaluates IR functions on host tensors, one node at a time.
//!
//! It is the oracle every backend and every optimization is tested against, so it is kept
//! plain and obviously correct rather than fast: each op is a direct loop over indices.
//! Arithmetic is done in f64 and rounded to the node's element type after every op, so an
//! f32 graph computes what a correctly rounded f32 machine would (up to double rounding,
//! which is exact for +, -, *, / and sqrt).

use std::collections::HashMap;

use nnc_ir::{Attr, DType, Dim, Func, Op, TensorType, Value};
use nnc_runtime::Tensor;

/// Why an evaluation could not run: the caller passed values that do not fit the function.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvalError {}

/// The first node that makes a non-finite value from finite operands (where a NaN or an
/// infinity started), with that value: what a diverged training step reports.
pub fn first_non_finite(
    func: &Func,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<Option<(usize, f64)>, EvalError> {
    let mut found = None;
    run(func, inputs, params, &mut |i, args, t| {
        let finite = |t: &Tensor| t.data.iter().all(|v| v.is_finite());
        if found.is_none() && args.iter().all(|a| finite(a)) {
            if let Some(&v) = t.data.iter().find(|v| !v.is_finite()) {
                found = Some((i, v));
            }
        }
        found.is_none()
    })?;
    Ok(found)
}

/// Evaluates `func` on inputs and parameter values (in declaration order). Symbolic
/// dimensions are bound from the inputs, and must be bound consistently.
pub fn eval(func: &Func, inputs: &[Tensor], params: &[Tensor]) -> Result<Vec<Tensor>, EvalError> {
    run(func, inputs, params, &mut |_, _, _| true)
}

/// Evaluates node by node; `each(i, operands, value)` sees every node's value and may
/// stop the evaluation by returning false (the outputs are then not computed).
fn run(
    func: &Func,
    inputs: &[Tensor],
    params: &[Tensor],
    each: &mut dyn FnMut(usize, &[&Tensor], &Tensor) -> bool,
) -> Result<Vec<Tensor>, EvalError> {
    if inputs.len() != func.inputs.len() {
        return Err(EvalError(format!(
            "`@{}` takes {} inputs, got {}",
            func.name,
            func.inputs.len(),
            inputs.len()
        )));
    }
    if params.len() != func.params.len() {
        return Err(EvalError(format!(
            "`@{}` has {} parameters, got {}",
            func.name,
            func.params.len(),
            params.len()
        )));
    }
    let mut syms: HashMap<&str, usize> = HashMap::new();
    let named = func
        .inputs
        .iter()
        .map(|a| (&a.name, &a.ty))
        .chain(func.params.iter().map(|p| (&p.name, &p.ty)));
    for ((name, ty), t) in named.zip(inputs.iter().chain(params)) {
        if !t.matches(ty) {
            return Err(EvalError(format!("`{name}` expects {ty}, got {}", t.ty())));
        }
        for (d, &n) in ty.shape.dims().iter().zip(&t.shape) {
            if let Dim::Sym(s) = d {
                if let Some(&prev) = syms.get(s.as_str())
                    && prev != n
                {
                    return Err(EvalError(format!(
                        "`{name}` has {s} = {n}, but an earlier value had {s} = {prev}"
                    )));
                }
                syms.insert(s, n);
            }
        }
    }
    let shape_of = |ty: &TensorType| -> Result<Vec<usize>, EvalError> {
        ty.shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Ok(*n as usize),
                Dim::Sym(s) => syms
                    .get(s.as_str())
                    .copied()
                    .ok_or_else(|| EvalError(format!("dimension {s} is not bound by any input"))),
            })
            .collect()
    };
    let mut vals: Vec<Tensor> = Vec::with_capacity(func.nodes.len());
    // The results of each scan, by node, until its `scan_out`s read them.
    let mut loops: HashMap<usize, Vec<Tensor>> = HashMap::new();
    for node in &func.nodes {
        let get = |v: Value| -> &Tensor {
            match v {
                Value::Input(i) => &inputs[i as usize],
                Value::Param(i) => &params[i as usize],
                Value::Node(i) => &vals[i as usize],
            }
        };
        let args: Vec<&Tensor> = node.args.iter().map(|&a| get(a)).collect();
        let out_shape = shape_of(&node.ty)?;
        check_ids(node, &args)?;
        let mut t = match &node.attr {
            Attr::Loop(l) => {
                loops.insert(vals.len(), scan(l, &args)?);
                Tensor::new(node.ty.dtype, Vec::new(), vec![0.0])
            }
            Attr::Output(k) => {
                let Some(Value::Node(s)) = node.args.first() else {
                    return Err(EvalError("`scan_out` reads no scan".into()));
                };
                loops
                    .get(&(*s as usize))
                    .and_then(|r| r.get(*k))
                    .cloned()
                    .ok_or_else(|| EvalError(format!("`scan_out` of %{s} has no result {k}")))?
            }
            _ => apply(node.op, &node.attr, &args, node.ty.dtype, out_shape),
        };
        t.round();
        if !each(vals.len(), &args, &t) {
            return Ok(Vec::new());
        }
        vals.push(t);
    }
    Ok(func
        .outputs
        .iter()
        .map(|&v| match v {
            Value::Input(i) => inputs[i as usize].clone(),
            Value::Param(i) => params[i as usize].clone(),
            Value::Node(i) => vals[i as usize].clone(),
        })
        .collect())
}

/// Runs a scan: the body once per step of axis 0 of the sequences (last to first when
/// `reverse`), carrying the carries; returns the final carries and the stacked outputs.
fn scan(l: &nnc_ir::Loop, args: &[&Tensor]) -> Result<Vec<Tensor>, EvalError> {
    let (nc, ns) = (l.carries, l.sequences);
    let steps = args[nc].shape[0];
    let mut carries: Vec<Tensor> = args[..nc].iter().map(|&t| t.clone()).collect();
    let ny = l.body.outputs.len() - nc;
    let mut ys: Vec<Vec<Tensor>> = vec![Vec::with_capacity(steps); ny];
    let order: Vec<usize> = if l.reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    for t in order {
        let mut ins = carries.clone();
        for x in &args[nc..nc + ns] {
            let len: usize = x.shape[1..].iter().product();
            ins.push(Tensor::new(
                x.dtype,
                x.shape[1..].to_vec(),
                x.data[t * len..(t + 1) * len].to_vec(),
            ));
        }
        ins.extend(args[nc + ns..].iter().map(|&t| t.clone()));
        let mut outs = eval(&l.body, &ins, &[])?;
        let rest = outs.split_off(nc);
        carries = outs;
        for (y, v) in ys.iter_mut().zip(rest) {
            y.push(v);
        }
    }
    let mut results = carries;
    for (k, mut y) in ys.into_iter().enumerate() {
        if l.reverse {
            y.reverse();
        }
        let ty = l.body.ty(l.body.outputs[nc + k]);
        let step: Vec<usize> = match y.first() {
            Some(t) => t.shape.clone(),
            None => ty
                .shape
                .dims()
                .iter()
                .map(|d| d.known().unwrap_or(0) as usize)
                .collect(),
        };
        let mut shape = vec![steps];
        shape.extend(step);
        let data = y.into_iter().flat_map(|t| t.data).collect();
        results.push(Tensor::new(ty.dtype, shape, data));
    }
    Ok(results)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Computes one op. Shapes were checked by the verifier; `out` is the result's shape.
pub fn apply(op: Op, attr: &Attr, args: &[&Tensor], dtype: DType, out: Vec<usize>) -> Tensor {
    let n: usize = out.iter().product();
    // Elementwise ops: the op table's scalar definition at every element.
    if let Some(f) = op.info().scalar {
        let mut xs = vec![0.0; args.len()];
        let data = (0..n)
            .map(|i| {
                for (x, a) in xs.iter_mut().zip(args) {
                    *x = a.data[i];
                }
                f(&xs, dtype)
            })
            .collect();
        return Tensor {
            dtype,
            shape: out,
            data,
        };
    }
    match op {
        Op::Neg
        | Op::Abs
        | Op::Sign
        | Op::Exp
        | Op::Log
        | Op::Sqrt
        | Op::Tanh
        | Op::Sigmoid
        | Op::Sin
        | Op::Cos
        | Op::Erf
        | Op::StopGradient
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Max
        | Op::Min
        | Op::Pow
        | Op::Lt
        | Op::Le
        | Op::Gt
        | Op::Ge
        | Op::Eq
        | Op::Ne
        | Op::Select => unreachable!("elementwise ops have a scalar definition (op table test)"),
        // A backward's stand-in for an adjoint that exists only inside autodiff.
        Op::Cotangent => Tensor {
            dtype,
            shape: out,
            data: vec![0.0; n],
        },
        Op::CustomGrad => args[0].clone(),
        // Evaluated by `run`, which holds the loop's results; the front end's stand-in
        // never reaches it.
        Op::Scan | Op::ScanOut | Op::LoopVar => Tensor {
            dtype,
            shape: out,
            data: vec![0.0; n],
        },
        Op::Sum | Op::Mean | Op::ReduceMax => {
            let Attr::Axes(axes) = attr else {
                unreachable!("verified")
            };
            reduce(op, axes, args[0], dtype, out)
        }
        Op::MatMul => matmul(args[0], args[1], dtype, out),
        Op::Broadcast => {
            let Attr::Dims(dims) = attr else {
                unreachable!("verified")
            };
            // Operand axis k is result axis dims[k].
            let pairs: Vec<(usize, usize)> =
                dims.iter().enumerate().map(|(k, &d)| (d, k)).collect();
            gather(args[0], dtype, out, &pairs)
        }
        Op::Reshape | Op::Cast => {
            let mut data = args[0].data.clone();
            if dtype == DType::I32 {
                data.iter_mut().for_each(|x| *x = x.trunc());
            }
            Tensor {
                dtype,
                shape: out,
                data,
            }
        }
        Op::Transpose => {
            let Attr::Perm(perm) = attr else {
                unreachable!("verified")
            };
            // Result axis k is operand axis perm[k].
            let pairs: Vec<(usize, usize)> =
                perm.iter().enumerate().map(|(k, &p)| (k, p)).collect();
            gather(args[0], dtype, out, &pairs)
        }
        Op::Const => {
            let Attr::Value(v) = attr else {
                unreachable!("verified")
            };
            Tensor {
                dtype,
                shape: out,
                data: vec![*v; n],
            }
        }
        Op::Im2col | Op::Col2im => {
            let Attr::Window { stride, pad, .. } = attr else {
                unreachable!("verified")
            };
            let (img_shape, cols_shape) = if op == Op::Im2col {
                (args[0].shape.clone(), out.clone())
            } else {
                (out.clone(), args[0].shape.clone())
            };
            let mut data = vec![0.0; n];
            for_each_window(&img_shape, &cols_shape, *stride, *pad, |img, col| {
                if op == Op::Im2col {
                    data[col] = args[0].data[img];
                } else {
                    data[img] += args[0].data[col];
                }
            });
            Tensor {
                dtype,
                shape: out,
                data,
            }
        }
        Op::Slice | Op::Pad => {
            let Attr::Offset { axis, start } = *attr else {
                unreachable!("verified")
            };
            let (big, small) = if op == Op::Slice {
                (args[0].shape.clone(), out.clone())
            } else {
                (out.clone(), args[0].shape.clone())
            };
            let (bs, ss) = (strides(&big), strides(&small));
            let mut data = vec![0.0; n];
            for i in 0..small.iter().product::<usize>() {
                let j: usize = (0..small.len())
                    .map(|a| {
                        let idx = (i / ss[a]) % small[a];
                        (idx + if a == axis { start } else { 0 }) * bs[a]
                    })
                    .sum();
                if op == Op::Slice {
                    data[i] = args[0].data[j];
                } else {
                    data[j] = args[0].data[i];
                }
            }
            Tensor {
                dtype,
                shape: out,
                data,
            }
        }
        Op::Random => {
            let Attr::Value(stream) = attr else {
                unreachable!("verified")
            };
            let key = args[0].data[0] as i64 as u64;
            Tensor {
                dtype,
                data: (0..n)
                    .map(|i| {
                        f64::from(nnc_runtime::rng::counter_uniform(
                            key,
                            *stream as u64,
                            i as u64,
                        ))
                    })
                    .collect(),
                shape: out,
            }
        }
        Op::Iota => {
            let Attr::Axes(axes) = attr else {
                unreachable!("verified")
            };
            let st = strides(&out);
            let a = axes[0];
            Tensor {
                dtype,
                data: (0..n).map(|i| ((i / st[a]) % out[a]) as f64).collect(),
                shape: out,
            }
        }
        Op::Concat => {
            let Attr::Axis(axis) = *attr else {
                unreachable!("verified")
            };
            let outer: usize = out[..axis].iter().product();
            let mut data = Vec::with_capacity(n);
            for o in 0..outer {
                for a in args {
                    let chunk: usize = a.shape[axis..].iter().product();
                    data.extend_from_slice(&a.data[o * chunk..(o + 1) * chunk]);
                }
            }
            Tensor {
                dtype,
                shape: out,
                data,
            }
        }
        Op::Gather | Op::ScatterAdd => {
            let Attr::Index { axis, .. } = *attr else {
                unreachable!("verified")
            };
            take(op, axis, args[0], args[1], dtype, out)
        }
        Op::Attention | Op::AttentionGrad => {
            let Attr::Causal(causal) = *attr else {
                unreachable!("verified")
            };
            Tensor {
                dtype,
                data: attention(op, args, causal),
                shape: out,
            }
        }
        Op::OneHot => {
            let classes = *out.last().expect("one_hot has rank >= 1");
            let mut data = vec![0.0; n];
            for (i, &label) in args[0].data.iter().enumerate() {
                if label >= 0.0 && (label as usize) < classes {
                    data[i * classes + label as usize] = 1.0;
                }
            }
            Tensor {
                dtype,
                shape: out,
                data,
            }
        }
    }
}

/// `attention` (softmax(q k^T / sqrt(d)) v, query i seeing keys j <= i if causal) or its
/// adjoint (dq, dk, dv joined along axis -2), in f64, one batch slice at a time, by the
/// definition: the scores of each query row, their softmax, the sums.
fn attention(op: Op, args: &[&Tensor], causal: bool) -> Vec<f64> {
    let (q, k, v) = (args[0], args[1], args[2]);
    let r = q.shape.len();
    let (tq, tk, d) = (q.shape[r - 2], k.shape[r - 2], q.shape[r - 1]);
    let batch: usize = q.shape[..r - 2].iter().product();
    let scale = 1.0 / (d as f64).sqrt();
    let grad = op == Op::AttentionGrad;
    let per = if grad { (tq + 2 * tk) * d } else { tq * d };
    let mut out = vec![0.0; batch * per];
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut p = vec![0.0; tk];
    for b in 0..batch {
        let (qs, ks) = (
            &q.data[b * tq * d..][..tq * d],
            &k.data[b * tk * d..][..tk * d],
        );
        let vs = &v.data[b * tk * d..][..tk * d];
        let res = &mut out[b * per..][..per];
        for i in 0..tq {
            let n = if causal { (i + 1).min(tk) } else { tk };
            let qi = &qs[i * d..][..d];
            for j in 0..n {
                p[j] = scale * dot(qi, &ks[j * d..][..d]);
            }
            let m = p[..n]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |a, x| if a < x { x } else { a });
            p[..n].iter_mut().for_each(|x| *x = (*x - m).exp());
            let l: f64 = p[..n].iter().sum();
            p[..n].iter_mut().for_each(|x| *x /= l);
            if !grad {
                for j in 0..n {
                    for c in 0..d {
                        res[i * d + c] += p[j] * vs[j * d + c];
                    }
                }
                continue;
            }
            let (o, dy) = (
                &args[3].data[b * tq * d..][..tq * d],
                &args[4].data[b * tq * d..][..tq * d],
            );
            let dyi = &dy[i * d..][..d];
            let di = dot(dyi, &o[i * d..][..d]);
            let (dq, rest) = res.split_at_mut(tq * d);
            let (dk, dv) = rest.split_at_mut(tk * d);
            for j in 0..n {
                let ds = p[j] * (dot(dyi, &vs[j * d..][..d]) - di);
                for c in 0..d {
                    dq[i * d + c] += scale * ds * ks[j * d + c];
                    dk[j * d + c] += scale * ds * qi[c];
                    dv[j * d + c] += p[j] * dyi[c];
                }
            }
        }
    }
    out
}

/// A gather's or scatter's ids must name rows of the table: anything else is an error
/// naming the op's source line, never a read outside the table.
fn check_ids(node: &nnc_ir::Node, args: &[&Tensor]) -> Result<(), EvalError> {
    let (Op::Gather | Op::ScatterAdd, Attr::Index { axis, line }) = (node.op, &node.attr) else {
        return Ok(());
    };
    let rows = match node.op {
        Op::Gather => args[0].shape[*axis],
        _ => node.ty.shape.0[*axis].known().unwrap_or(0) as usize,
    };
    match args[1]
        .data
        .iter()
        .find(|&&id| !(id >= 0.0 && id < rows as f64))
    {
        Some(&id) => Err(EvalError(nnc_ir::op::index_error(node.op, *line, id, rows))),
        None => Ok(()),
    }
}

/// Rows `[outer, rows, inner]` of a table and `[outer, ids, inner]` of what gathering
/// from it gives: `gathered[o, j, i] = table[o, ids[j], i]`.
fn take(op: Op, axis: usize, x: &Tensor, ids: &Tensor, dtype: DType, out: Vec<usize>) -> Tensor {
    let table = if op == Op::Gather { &x.shape } else { &out };
    let outer: usize = table[..axis].iter().product();
    let rows = table[axis];
    let inner: usize = table[axis + 1..].iter().product();
    let n = ids.data.len();
    let mut data = vec![0.0; out.iter().product()];
    for o in 0..outer {
        for (j, &id) in ids.data.iter().enumerate() {
            let t = (o * rows + id as usize) * inner;
            let g = (o * n + j) * inner;
            for i in 0..inner {
                if op == Op::Gather {
                    data[g + i] = x.data[t + i];
                } else {
                    data[t + i] += x.data[g + i];
                }
            }
        }
    }
    Tensor {
        dtype,
        shape: out,
        data,
    }
}

/// Copies `x` into a tensor of shape `out`, where each `(out_axis, x_axis)` pair says which
/// result axis indexes which operand axis; result axes not listed are broadcast.
fn gather(x: &Tensor, dtype: DType, out: Vec<usize>, pairs: &[(usize, usize)]) -> Tensor {
    let os = strides(&out);
    let xs = strides(&x.shape);
    let n: usize = out.iter().product();
    let data = (0..n)
        .map(|i| {
            x.data[pairs
                .iter()
                .map(|&(o, a)| (i / os[o]) % out[o] * xs[a])
                .sum::<usize>()]
        })
        .collect();
    Tensor {
        dtype,
        shape: out,
        data,
    }
}

fn reduce(op: Op, axes: &[usize], x: &Tensor, dtype: DType, out: Vec<usize>) -> Tensor {
    let n: usize = out.iter().product();
    let init = if op == Op::ReduceMax {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    let mut data = vec![init; n];
    let xs = strides(&x.shape);
    // The output stride of each kept input axis.
    let kept: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
    let os = strides(&out);
    for (i, &v) in x.data.iter().enumerate() {
        let o: usize = kept
            .iter()
            .enumerate()
            .map(|(k, &a)| (i / xs[a]) % x.shape[a] * os[k])
            .sum();
        data[o] = if op == Op::ReduceMax {
            if v > data[o] || v.is_nan() {
                v
            } else {
                data[o]
            }
        } else {
            data[o] + v
        };
    }
    if op == Op::Mean {
        let count: usize = axes.iter().map(|&a| x.shape[a]).product();
        data.iter_mut().for_each(|v| *v /= count as f64);
    }
    Tensor {
        dtype,
        shape: out,
        data,
    }
}

/// Calls `f(image index, column index)` for every window element that lies inside the
/// image (`img` is `[N, C, H, W]`, `cols` is `[N, C, KH, KW, OH, OW]`).
pub fn for_each_window(
    img: &[usize],
    cols: &[usize],
    stride: [usize; 2],
    pad: [usize; 2],
    mut f: impl FnMut(usize, usize),
) {
    let (h, w) = (img[2], img[3]);
    let (kh, kw, oh, ow) = (cols[2], cols[3], cols[4], cols[5]);
    let planes = img[0] * img[1];
    let mut col = 0;
    for p in 0..planes {
        for i in 0..kh {
            for j in 0..kw {
                for y in 0..oh {
                    let iy = (y * stride[0] + i) as isize - pad[0] as isize;
                    for x in 0..ow {
                        let ix = (x * stride[1] + j) as isize - pad[1] as isize;
                        if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                            f((p * h + iy as usize) * w + ix as usize, col);
                        }
                        col += 1;
                    }
                }
            }
        }
    }
}

fn matmul(a: &Tensor, b: &Tensor, dtype: DType, out: Vec<usize>) -> Tensor {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch: usize = out[..out.len() - 2].iter().product();
    // A rank-2 operand of a batched product is shared: its batch stride is 0.
    let a_bs = if ra == 2 && rb > 2 { 0 } else { m * k };
    let b_bs = if rb == 2 && ra > 2 { 0 } else { k * n };
    let mut data = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let (ao, bo, co) = (bi * a_bs, bi * b_bs, bi * m * n);
        for i in 0..m {
            for p in 0..k {
                let av = a.data[ao + i * k + p];
                let brow = &b.data[bo + p * n..bo + p * n + n];
                let crow = &mut data[co + i * n..co + i * n + n];
                for (c, &bv) in crow.iter_mut().zip(brow) {
                    *c += av * bv;
                }
            }
        }
    }
    Tensor {
        dtype,
        shape: out,
        data,
    }
}
