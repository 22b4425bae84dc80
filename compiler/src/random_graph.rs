//! Random well-typed IR functions, for differential tests of passes and backends against
//! the interpreter. Each function takes small f32 inputs and parameters and applies a
//! random sequence of ops from every class of the table (elementwise, comparisons and
//! selects, reductions, broadcasts, transposes, reshapes, matrix products with batched or
//! shared operands, windows, slices and padding, constants, iota, gathers and scatters,
//! and loops over a sequence axis with their carries).

use nnc_ir::{Attr, DType, Func, Init, Op, ParamKind, Shape, TensorType, Value};
use nnc_runtime::{Rng, Tensor};

fn ty(dims: &[u64]) -> TensorType {
    TensorType::new(DType::F32, Shape::known(dims))
}

fn dims_of(f: &Func, v: Value) -> Vec<u64> {
    f.ty(v)
        .shape
        .dims()
        .iter()
        .map(|d| d.known().unwrap_or(1))
        .collect()
}

/// A random function of `ops` nodes (plus the ones needed to keep values in range).
pub fn random_func(seed: u64, ops: usize) -> Func {
    let mut rng = Rng::stream(seed, "random_graph");
    let mut f = Func::new(format!("random{seed}"));
    let mut pool: Vec<Value> = Vec::new();
    let pick_dims = |rng: &mut Rng| -> Vec<u64> {
        let rank = rng.below(4) as usize;
        (0..rank).map(|_| 1 + rng.below(6)).collect()
    };
    for i in 0..1 + rng.below(2) {
        let d = pick_dims(&mut rng);
        pool.push(f.add_input(format!("x{i}"), ty(&d)));
    }
    for i in 0..1 + rng.below(2) {
        let d = pick_dims(&mut rng);
        pool.push(f.add_param(ParamKind::Param, format!("p{i}"), ty(&d), Init::Zeros));
    }
    let mut built = 0;
    while built < ops {
        let a = pool[rng.below(pool.len() as u64) as usize];
        let ad = dims_of(&f, a);
        let choice = rng.below(21);
        let r = match choice {
            0 => {
                let ops = [
                    Op::Neg,
                    Op::Abs,
                    Op::Sign,
                    Op::Tanh,
                    Op::Sigmoid,
                    Op::Sin,
                    Op::Cos,
                    Op::Erf,
                    Op::StopGradient,
                ];
                let op = ops[rng.below(ops.len() as u64) as usize];
                f.build(op, vec![a], Attr::None, None)
            }
            1 => {
                // exp, log and sqrt on a safe range: tanh first (and abs + 0.5 for log, sqrt).
                let t = f.build(Op::Tanh, vec![a], Attr::None, None).unwrap();
                let op = [Op::Exp, Op::Log, Op::Sqrt][rng.below(3) as usize];
                let arg = if op == Op::Exp {
                    t
                } else {
                    let ab = f.build(Op::Abs, vec![t], Attr::None, None).unwrap();
                    let half = f
                        .build(Op::Const, vec![], Attr::Value(0.5), Some(f.ty(a).clone()))
                        .unwrap();
                    f.build(Op::Add, vec![ab, half], Attr::None, None).unwrap()
                };
                f.build(op, vec![arg], Attr::None, None)
            }
            2..=4 => {
                // A binary op with a same-typed partner, broadcast into shape when needed.
                let same: Vec<Value> = pool
                    .iter()
                    .copied()
                    .filter(|&v| f.ty(v) == f.ty(a))
                    .collect();
                let b = same[rng.below(same.len() as u64) as usize];
                let op = [
                    Op::Add,
                    Op::Sub,
                    Op::Mul,
                    Op::Max,
                    Op::Min,
                    Op::Lt,
                    Op::Ge,
                    Op::Eq,
                    Op::Div,
                ][rng.below(9) as usize];
                if op == Op::Div {
                    // Divide by something away from zero: 1.5 + tanh(b).
                    let t = f.build(Op::Tanh, vec![b], Attr::None, None).unwrap();
                    let c = f
                        .build(Op::Const, vec![], Attr::Value(1.5), Some(f.ty(a).clone()))
                        .unwrap();
                    let d = f.build(Op::Add, vec![t, c], Attr::None, None).unwrap();
                    f.build(Op::Div, vec![a, d], Attr::None, None)
                } else {
                    f.build(op, vec![a, b], Attr::None, None)
                }
            }
            5 => {
                let same: Vec<Value> = pool
                    .iter()
                    .copied()
                    .filter(|&v| f.ty(v) == f.ty(a))
                    .collect();
                let b = same[rng.below(same.len() as u64) as usize];
                let c = f.build(Op::Gt, vec![a, b], Attr::None, None).unwrap();
                f.build(Op::Select, vec![c, b, a], Attr::None, None)
            }
            6 => {
                let op = [Op::Sum, Op::Mean, Op::ReduceMax][rng.below(3) as usize];
                let axes: Vec<usize> = (0..ad.len()).filter(|_| rng.below(2) == 0).collect();
                f.build(op, vec![a], Attr::Axes(axes), None)
            }
            7 if ad.len() < 4 => {
                // A new axis somewhere.
                let at = rng.below(ad.len() as u64 + 1) as usize;
                let mut out = ad.clone();
                out.insert(at, 1 + rng.below(4));
                let dims: Vec<usize> = (0..ad.len())
                    .map(|k| if k < at { k } else { k + 1 })
                    .collect();
                f.build(Op::Broadcast, vec![a], Attr::Dims(dims), Some(ty(&out)))
            }
            8 if ad.len() >= 2 => {
                let mut perm: Vec<usize> = (0..ad.len()).collect();
                rng.shuffle(&mut perm);
                f.build(Op::Transpose, vec![a], Attr::Perm(perm), None)
            }
            9 => {
                let n: u64 = ad.iter().product();
                let out = if rng.below(2) == 0 || !n.is_multiple_of(2) {
                    vec![n]
                } else {
                    vec![2, n / 2]
                };
                f.build(Op::Reshape, vec![a], Attr::None, Some(ty(&out)))
            }
            10 if ad.len() >= 2 => {
                // a @ w with a new parameter w, sometimes through a transpose of a.
                let r = ad.len();
                let n = 1 + rng.below(5);
                let (lhs, k) = if rng.below(2) == 0 {
                    let mut perm: Vec<usize> = (0..r).collect();
                    perm.swap(r - 2, r - 1);
                    (
                        f.build(Op::Transpose, vec![a], Attr::Perm(perm), None)
                            .unwrap(),
                        ad[r - 2],
                    )
                } else {
                    (a, ad[r - 1])
                };
                let mut wd = ad[..r - 2].to_vec();
                wd.extend([k, n]);
                let w = f.add_param(
                    ParamKind::Param,
                    format!("w{}", f.params.len()),
                    ty(&wd),
                    Init::Zeros,
                );
                f.build(Op::MatMul, vec![lhs, w], Attr::None, None)
            }
            11 => {
                let c = f
                    .build(Op::Const, vec![], Attr::Value(0.25), Some(f.ty(a).clone()))
                    .unwrap();
                let ab = f.build(Op::Abs, vec![a], Attr::None, None).unwrap();
                let base = f.build(Op::Add, vec![ab, c], Attr::None, None).unwrap();
                f.build(Op::Pow, vec![base, c], Attr::None, None)
            }
            12 if !ad.is_empty() => {
                // A slice of one axis, or the operand padded along it.
                let axis = rng.below(ad.len() as u64) as usize;
                let mut out = ad.clone();
                if rng.below(2) == 0 {
                    out[axis] = 1 + rng.below(ad[axis]);
                    let start = rng.below(ad[axis] - out[axis] + 1) as usize;
                    f.build(
                        Op::Slice,
                        vec![a],
                        Attr::Offset { axis, start },
                        Some(ty(&out)),
                    )
                } else {
                    out[axis] += rng.below(3);
                    let start = rng.below(out[axis] - ad[axis] + 1) as usize;
                    f.build(
                        Op::Pad,
                        vec![a],
                        Attr::Offset { axis, start },
                        Some(ty(&out)),
                    )
                }
            }
            13 => {
                // Windows of the operand seen as an image [N, C, H, W], or their adjoint.
                let n: u64 = ad.iter().product();
                let (h, w) = if n.is_multiple_of(2) {
                    (2, n / 2)
                } else {
                    (1, n)
                };
                let img = f
                    .build(Op::Reshape, vec![a], Attr::None, Some(ty(&[1, 1, h, w])))
                    .unwrap();
                let kernel = [1 + rng.below(h) as usize, 1 + rng.below(w.min(3)) as usize];
                let stride = [1 + rng.below(2) as usize, 1 + rng.below(2) as usize];
                let pad = [
                    rng.below(kernel[0] as u64) as usize,
                    rng.below(kernel[1] as u64) as usize,
                ];
                let attr = Attr::Window {
                    kernel,
                    stride,
                    pad,
                };
                let cols = nnc_ir::im2col_type(f.ty(img), kernel, stride, pad).unwrap();
                let c = f.build(Op::Im2col, vec![img], attr.clone(), Some(cols));
                if rng.below(2) == 0 {
                    c
                } else {
                    let back = f.ty(img).clone();
                    f.build(Op::Col2im, vec![c.unwrap()], attr, Some(back))
                }
            }
            14 if ad.len() == 3 => {
                // A batch times one shared matrix.
                let n = 1 + rng.below(4);
                let w = f.add_param(
                    ParamKind::Param,
                    format!("w{}", f.params.len()),
                    ty(&[ad[2], n]),
                    Init::Zeros,
                );
                f.build(Op::MatMul, vec![a, w], Attr::None, None)
            }
            15 if !ad.is_empty() => {
                let axis = rng.below(ad.len() as u64) as usize;
                let i = f
                    .build(Op::Iota, vec![], Attr::Axes(vec![axis]), Some(ty(&ad)))
                    .unwrap();
                f.build(Op::Mul, vec![a, i], Attr::None, None)
            }
            16 => {
                // Noise keyed by an integer computed from the operand, times the operand.
                let axes = (0..ad.len()).collect();
                let total = f.build(Op::Sum, vec![a], Attr::Axes(axes), None).unwrap();
                let it = TensorType::new(DType::I32, Shape::known(&[]));
                let key = f
                    .build(Op::Cast, vec![total], Attr::None, Some(it))
                    .unwrap();
                let stream = Attr::Value(1.0 + rng.below(3) as f64);
                let noise = f
                    .build(Op::Random, vec![key], stream, Some(ty(&ad)))
                    .unwrap();
                f.build(Op::Mul, vec![a, noise], Attr::None, None)
            }
            17 if !ad.is_empty() => {
                // Rows picked by ids computed from another value (trunc of |tanh| times
                // fewer than the rows: always in range), or the adjoint summing them back.
                let axis = rng.below(ad.len() as u64) as usize;
                let b = pool[rng.below(pool.len() as u64) as usize];
                let bd = dims_of(&f, b);
                if bd.len() > 2 {
                    continue;
                }
                let t = f.build(Op::Tanh, vec![b], Attr::None, None).unwrap();
                let m = f.build(Op::Abs, vec![t], Attr::None, None).unwrap();
                let k = f
                    .build(
                        Op::Const,
                        vec![],
                        Attr::Value(ad[axis] as f64 - 0.5),
                        Some(ty(&bd)),
                    )
                    .unwrap();
                let m = f.build(Op::Mul, vec![m, k], Attr::None, None).unwrap();
                let it = TensorType::new(DType::I32, Shape::known(&bd));
                let ids = f.build(Op::Cast, vec![m], Attr::None, Some(it)).unwrap();
                let mut gd = ad[..axis].to_vec();
                gd.extend(&bd);
                gd.extend(&ad[axis + 1..]);
                let attr = Attr::Index { axis, line: 0 };
                let g = f.build(Op::Gather, vec![a, ids], attr.clone(), Some(ty(&gd)));
                if rng.below(2) == 0 {
                    g
                } else {
                    f.build(Op::ScatterAdd, vec![g.unwrap(), ids], attr, Some(ty(&ad)))
                }
            }
            18 if !ad.is_empty() => {
                // The operand joined with itself or another value of its shape but the axis.
                let axis = rng.below(ad.len() as u64) as usize;
                let others: Vec<Value> = pool
                    .iter()
                    .copied()
                    .filter(|&v| {
                        let d = dims_of(&f, v);
                        d.len() == ad.len() && (0..d.len()).all(|k| k == axis || d[k] == ad[k])
                    })
                    .collect();
                let parts = (0..1 + rng.below(3))
                    .map(|_| others[rng.below(others.len() as u64) as usize])
                    .collect();
                f.build(Op::Concat, parts, Attr::Axis(axis), None)
            }
            19 if !ad.is_empty() && ad[0] > 0 => {
                // A loop over axis 0 of `a`, carrying a value of one step's type: one of
                // three recurrences, forward or reversed, reading a constant from outside.
                let step = ty(&ad[1..]);
                let same: Vec<Value> = pool.iter().copied().filter(|&v| *f.ty(v) == step).collect();
                let init = if same.is_empty() || rng.below(3) == 0 {
                    f.build(Op::Const, vec![], Attr::Value(0.25), Some(step.clone()))
                        .unwrap()
                } else {
                    same[rng.below(same.len() as u64) as usize]
                };
                let k = if same.is_empty() {
                    init
                } else {
                    same[rng.below(same.len() as u64) as usize]
                };
                let mut body = Func::new("step");
                let c = body.add_input("c", step.clone());
                let x = body.add_input("x", step.clone());
                let kv = body.add_input("k", step.clone());
                let b = |body: &mut Func, op: Op, args: Vec<Value>| {
                    body.build(op, args, Attr::None, None).unwrap()
                };
                let (next, y) = match rng.below(3) {
                    0 => {
                        let ck = b(&mut body, Op::Mul, vec![c, kv]);
                        let s = b(&mut body, Op::Add, vec![ck, x]);
                        let n = b(&mut body, Op::Tanh, vec![s]);
                        (n, n)
                    }
                    1 => {
                        let sx = b(&mut body, Op::Sin, vec![x]);
                        let t = b(&mut body, Op::Mul, vec![sx, kv]);
                        let n = b(&mut body, Op::Add, vec![c, t]);
                        (n, b(&mut body, Op::Mul, vec![n, x]))
                    }
                    _ => {
                        let m = b(&mut body, Op::Max, vec![c, x]);
                        let n = b(&mut body, Op::Tanh, vec![m]);
                        (n, b(&mut body, Op::Sub, vec![c, kv]))
                    }
                };
                body.outputs = vec![next, y];
                let l = nnc_ir::Loop {
                    carries: 1,
                    sequences: 1,
                    reverse: rng.below(2) == 0,
                    body,
                };
                let scan = f.build(Op::Scan, vec![init, a, k], Attr::Loop(Box::new(l)), None);
                scan.map(|s| {
                    let outs = f.scan_outs(s);
                    pool.push(outs[0]);
                    outs[1]
                })
            }
            20 if ad.len() >= 2 => {
                // Attention with the operand as the queries and keys and values of its
                // rank, batch axes and width from the pool (itself, at worst), causal or not.
                let r = ad.len();
                let fits: Vec<Value> = pool
                    .iter()
                    .copied()
                    .filter(|&v| {
                        let d = dims_of(&f, v);
                        d.len() == r && d[..r - 2] == ad[..r - 2] && d[r - 1] == ad[r - 1]
                    })
                    .collect();
                let k = fits[rng.below(fits.len() as u64) as usize];
                let v = fits[rng.below(fits.len() as u64) as usize];
                if dims_of(&f, k) != dims_of(&f, v) {
                    continue;
                }
                let causal = Attr::Causal(rng.below(2) == 0);
                let o = f.build(Op::Attention, vec![a, k, v], causal.clone(), None);
                if rng.below(3) > 0 {
                    o
                } else {
                    // Its adjoint for an adjoint of o's type from the pool (a, at worst).
                    let same: Vec<Value> = pool
                        .iter()
                        .copied()
                        .filter(|&w| dims_of(&f, w) == ad)
                        .collect();
                    let dy = same[rng.below(same.len() as u64) as usize];
                    f.build(
                        Op::AttentionGrad,
                        vec![a, k, v, o.unwrap(), dy],
                        causal,
                        None,
                    )
                }
            }
            _ => continue,
        };
        if let Ok(v) = r {
            pool.push(v);
            built += 1;
        }
    }
    let nodes = f.nodes.len() as u32;
    let outs = 1 + rng.below(3);
    for _ in 0..outs {
        let mut k = nodes - 1 - rng.below(nodes.min(4) as u64) as u32;
        // A scan's own value is no tensor: its scan_outs follow it.
        if f.nodes[k as usize].op == Op::Scan {
            k += 1;
        }
        f.outputs.push(Value::Node(k));
    }
    f
}

/// Random values for a function's inputs and parameters, in (-1, 1).
pub fn random_values(f: &Func, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut rng = Rng::stream(seed, "random_values");
    let mut make = |t: &TensorType| {
        let shape: Vec<usize> = t
            .shape
            .dims()
            .iter()
            .map(|d| d.known().unwrap_or(1) as usize)
            .collect();
        let n = shape.iter().product();
        Tensor::new(
            t.dtype,
            shape,
            (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
        )
    };
    let inputs = f.inputs.iter().map(|a| make(&a.ty)).collect();
    let params = f.params.iter().map(|p| make(&p.ty)).collect();
    (inputs, params)
}
