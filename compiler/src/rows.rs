//! Row independence: does each row of a function's outputs depend only on the same row of
//! its inputs? Then the function may run on a batch in pieces (a chunk of rows at a time)
//! and give what it gives on the whole batch, which is what an ahead-of-time object needs
//! to take any batch size with kernels compiled for fixed ones.
//!
//! The batch is the symbolic dimension `batch` on the leading axis of inputs. Each value
//! is either free of the rows (parameters, constants, inputs without the batch axis) or has
//! one axis that enumerates them, every other axis being computed within a row. Each op
//! either carries that axis to its result or mixes rows (a reduction over it, a slice of
//! it, a matrix product contracting it, the row index itself), which is reported.

use crate::Error;

use nnc_ir::{Attr, Class, Dim, Func, Op, Value};

/// Ops that compute each element from the same element of their operands (the table's
/// elementwise classes, plus casts and one-hot, which only append an axis).
fn elementwise(op: Op) -> bool {
    matches!(
        op.info().class,
        Class::Unary | Class::Binary | Class::Compare | Class::Select
    ) || matches!(op, Op::Cast | Op::OneHot)
}

/// Where a value's rows are.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rows {
    /// The same for every row.
    Free,
    /// This axis enumerates the rows.
    Axis(usize),
    /// No rows, but a uniform average over the rows of row-wise values, plus terms free
    /// of the rows, and linear in that average (`batch_mean` only): the average of the
    /// values on equal pieces of the batch.
    Mean,
}

/// Where each output's rows are: the inputs' from their shapes (the batch on the leading
/// axis, or none), then every node's (`node_rows`, with batch means when `means`).
fn output_rows(f: &Func, batch: &str, means: bool) -> Result<Vec<Rows>, Error> {
    let is_batch = |d: &Dim| matches!(d, Dim::Sym(s) if s == batch);
    let mut inputs = Vec::with_capacity(f.inputs.len());
    for a in &f.inputs {
        inputs.push(match a.ty.shape.dims().iter().position(is_batch) {
            None => Rows::Free,
            Some(0) => Rows::Axis(0),
            Some(_) => {
                return Err(Error::Rows(format!(
                    "input `{}` has the batch dimension `{batch}` on a later axis than the first",
                    a.name
                )));
            }
        });
    }
    let rows = node_rows(f, &inputs, batch, means)?;
    Ok(f.outputs
        .iter()
        .map(|&v| match v {
            Value::Input(i) => inputs[i as usize],
            Value::Param(_) => Rows::Free,
            Value::Node(i) => rows[i as usize],
        })
        .collect())
}

/// `Ok` if every output has the rows on its leading axis and each depends only on its own
/// rows of the inputs; else the first op that mixes rows, as `%i = op: why`.
pub fn independent(f: &Func, batch: &str) -> Result<(), Error> {
    let is_batch = |d: &Dim| matches!(d, Dim::Sym(s) if s == batch);
    let outs = output_rows(f, batch, false)?;
    for (k, (&o, &r)) in f.outputs.iter().zip(&outs).enumerate() {
        let dims = f.ty(o).shape.dims();
        match r {
            Rows::Axis(0) if dims.first().is_some_and(is_batch) => {}
            Rows::Axis(_) => {
                return Err(Error::Rows(format!(
                    "output {k} does not have the batch dimension `{batch}` as its first axis"
                )));
            }
            Rows::Free | Rows::Mean => {
                return Err(Error::Rows(format!(
                    "output {k} does not depend on the rows of the inputs"
                )));
            }
        }
    }
    Ok(())
}

/// `Ok` if `f`'s first output (a loss) is the mean over the batch's rows of values each
/// computed from its own row (plus terms free of the rows, linearly: `mean(l) + c`,
/// `2 * mean(l)`), and every other output has the rows on its leading axis. Then `f` on
/// equal pieces of the batch gives, averaged, the first output on the whole batch, and the
/// pieces' other outputs stacked; so do their gradients. What the training step checks
/// before splitting its batch over threads.
pub fn batch_mean(f: &Func, batch: &str) -> Result<(), Error> {
    let is_batch = |d: &Dim| matches!(d, Dim::Sym(s) if s == batch);
    let outs = output_rows(f, batch, true)?;
    for (k, (&o, &r)) in f.outputs.iter().zip(&outs).enumerate() {
        let ok = match (k, r) {
            (0, r) => r == Rows::Mean,
            (_, Rows::Axis(0)) => f.ty(o).shape.dims().first().is_some_and(is_batch),
            _ => false,
        };
        if !ok {
            let what = if k == 0 {
                "is not a mean over the rows"
            } else {
                "does not keep the rows first"
            };
            return Err(Error::Rows(format!("output {k} {what}")));
        }
    }
    Ok(())
}

/// How an op carries a batch mean (`Rows::Mean`) among its operands, none of which has
/// rows: linearly (sums, differences, scaling by what is free of the rows, reshapes,
/// broadcasts and reductions of it), or not at all (`None`).
fn mean_rule(op: Op, args: &[Rows]) -> Option<Rows> {
    if args.iter().any(|r| matches!(r, Rows::Axis(_))) {
        return None;
    }
    let means = args.iter().filter(|&&r| r == Rows::Mean).count();
    let linear = match op {
        Op::Neg | Op::Add | Op::Sub | Op::Broadcast | Op::Reshape | Op::Sum | Op::Mean => true,
        Op::Mul => means == 1,
        Op::Div => args[0] == Rows::Mean && args[1] == Rows::Free,
        Op::CustomGrad => return Some(args[0]),
        _ => false,
    };
    linear.then_some(Rows::Mean)
}

/// Where each node's rows are, given the inputs'; the first op that mixes rows is an
/// error. Nodes no output depends on are `Free`.
fn node_rows(f: &Func, inputs: &[Rows], batch: &str, means: bool) -> Result<Vec<Rows>, Error> {
    let is_batch = |d: &Dim| matches!(d, Dim::Sym(s) if s == batch);
    // The batch axis of a shape, with the product of the known sizes before and after it
    // (a reshape keeps rows apart when it keeps both products: element (p, b, s) is at
    // (p * B + b) * S + s on both sides).
    let split = |dims: &[Dim]| -> Option<(usize, u64, u64)> {
        let a = dims.iter().position(is_batch)?;
        let product = |ds: &[Dim]| {
            ds.iter().try_fold(1u64, |acc, d| match d {
                Dim::Known(n) => Some(acc * n),
                Dim::Sym(_) => None,
            })
        };
        Some((a, product(&dims[..a])?, product(&dims[a + 1..])?))
    };
    let mut rows: Vec<Rows> = Vec::with_capacity(f.nodes.len());
    let of = |rows: &[Rows], v: Value| match v {
        Value::Input(i) => inputs[i as usize],
        Value::Param(_) => Rows::Free,
        Value::Node(i) => rows[i as usize],
    };
    // Only what the outputs' values depend on: a layer's own backward (custom_grad's
    // operands after the first) never runs going forward.
    let mut live = vec![false; f.nodes.len()];
    let mark = |live: &mut Vec<bool>, v: &Value| {
        if let Value::Node(j) = *v {
            live[j as usize] = true;
        }
    };
    f.outputs.iter().for_each(|o| mark(&mut live, o));
    for i in (0..f.nodes.len()).rev() {
        if live[i] {
            let n = &f.nodes[i];
            let read = if n.op == Op::CustomGrad {
                1
            } else {
                n.args.len()
            };
            n.args[..read].iter().for_each(|a| mark(&mut live, a));
        }
    }
    let mut scans: std::collections::HashMap<usize, Vec<Rows>> = Default::default();
    for (i, n) in f.nodes.iter().enumerate() {
        if !live[i] {
            rows.push(Rows::Free);
            continue;
        }
        let args: Vec<Rows> = n.args.iter().map(|&v| of(&rows, v)).collect();
        let mix = |why: &str| {
            Err(Error::Rows(format!(
                "%{i} = {}: {why}",
                n.op.info().mnemonic
            )))
        };
        if args.contains(&Rows::Mean) {
            match mean_rule(n.op, &args) {
                Some(r) => {
                    rows.push(r);
                    continue;
                }
                None => return mix("mixes a mean over the rows with other values"),
            }
        }
        let axes: Vec<usize> = args
            .iter()
            .filter_map(|r| match r {
                Rows::Axis(a) => Some(*a),
                Rows::Free | Rows::Mean => None,
            })
            .collect();
        let r = match n.op {
            Op::Const => Rows::Free,
            // Stand-ins are the rows of what they stand for (set by `scan_rows`).
            Op::LoopVar => Rows::Free,
            Op::Iota => {
                let along = match &n.attr {
                    Attr::Axes(a) => a.first().copied(),
                    _ => None,
                };
                if along.is_some_and(|a| is_batch(&n.ty.shape.dims()[a])) {
                    return mix(
                        "counts along the batch axis (each row would see its index in the piece)",
                    );
                }
                Rows::Free
            }
            Op::Random => return mix("draws noise (training only)"),
            // A loop keeps rows apart when its body does: the carries' rows stay where
            // they are from step to step, a sequence's rows are on an axis after its
            // steps.
            Op::Scan => {
                let Attr::Loop(l) = &n.attr else {
                    return mix("has no body");
                };
                match scan_rows(l, &args, batch) {
                    Ok(r) => {
                        scans.insert(i, r);
                        Rows::Free
                    }
                    Err(e) => return mix(&format!("its body {e}")),
                }
            }
            Op::ScanOut => match (n.args[0], &n.attr) {
                (Value::Node(s), Attr::Output(k)) => scans
                    .get(&(s as usize))
                    .and_then(|r| r.get(*k).copied())
                    .unwrap_or(Rows::Free),
                _ => return mix("reads no scan"),
            },
            _ if axes.is_empty() => Rows::Free,
            _ if elementwise(n.op) => {
                if axes.iter().any(|&a| a != axes[0]) {
                    return mix("combines values whose rows lie on different axes");
                }
                Rows::Axis(axes[0])
            }
            Op::Sum | Op::Mean | Op::ReduceMax => {
                let Attr::Axes(reduced) = &n.attr else {
                    return mix("has no axes");
                };
                let a = axes[0];
                if means && n.op == Op::Mean && reduced.contains(&a) {
                    // A uniform average over the rows (and within them).
                    rows.push(Rows::Mean);
                    continue;
                }
                if reduced.contains(&a) {
                    return mix("reduces over the batch axis");
                }
                Rows::Axis(a - reduced.iter().filter(|&&r| r < a).count())
            }
            Op::Broadcast => match &n.attr {
                Attr::Dims(d) => Rows::Axis(d[axes[0]]),
                _ => return mix("has no axis map"),
            },
            Op::Transpose => match &n.attr {
                Attr::Perm(p) => Rows::Axis(p.iter().position(|&x| x == axes[0]).unwrap_or(0)),
                _ => return mix("has no permutation"),
            },
            Op::Reshape => {
                let from = split(f.ty(n.args[0]).shape.dims());
                match (from, split(n.ty.shape.dims())) {
                    (Some((a, p, s)), Some((b, q, t))) if a == axes[0] && (p, s) == (q, t) => {
                        Rows::Axis(b)
                    }
                    _ => return mix("reshapes across the batch axis"),
                }
            }
            Op::MatMul => {
                let rank = |v: Value| f.ty(v).shape.dims().len();
                let (lr, rr, out) = (rank(n.args[0]), rank(n.args[1]), n.ty.shape.dims().len());
                // Each operand's rows, as a result axis; contracting them mixes rows.
                let mut at = Vec::new();
                for (k, (&r, rank)) in args.iter().zip([lr, rr]).enumerate() {
                    if let Rows::Axis(a) = r {
                        let contracted = if k == 0 { a == rank - 1 } else { a == rank - 2 };
                        if contracted {
                            return mix("contracts the batch axis");
                        }
                        // lhs's M axis, rhs's N axis and the batch axes keep their place
                        // counted from the end.
                        let placed = if k == 1 && a == rank - 1 {
                            out - 1
                        } else {
                            a + out - rank
                        };
                        at.push(placed);
                    }
                }
                if at.iter().any(|&a| a != at[0]) {
                    return mix("multiplies rows of one operand with all rows of the other");
                }
                Rows::Axis(at[0])
            }
            Op::Im2col | Op::Col2im => {
                if axes[0] > 1 {
                    return mix("slides a window along the batch axis");
                }
                Rows::Axis(axes[0])
            }
            Op::Slice | Op::Pad => match n.attr {
                Attr::Offset { axis, .. } if axis != axes[0] => Rows::Axis(axes[0]),
                _ => return mix("slices or pads the batch axis"),
            },
            // gather(table, ids): the ids' axes replace the table's indexed axis.
            Op::Gather => {
                let Attr::Index { axis, .. } = n.attr else {
                    return mix("has no axis");
                };
                let ids_rank = f.ty(n.args[1]).shape.dims().len();
                match (args[0], args[1]) {
                    (Rows::Free, Rows::Axis(a)) => Rows::Axis(axis + a),
                    (Rows::Axis(a), Rows::Free) if a < axis => Rows::Axis(a),
                    (Rows::Axis(a), Rows::Free) if a > axis => Rows::Axis(a - 1 + ids_rank),
                    _ => return mix("picks rows of the batch axis"),
                }
            }
            // concat along another axis than the rows' keeps them (free operands are the
            // same for every row).
            Op::Concat => match n.attr {
                Attr::Axis(axis) if axes.iter().all(|&a| a == axes[0] && a != axis) => {
                    Rows::Axis(axes[0])
                }
                _ => return mix("joins along the batch axis"),
            },
            // The value is its first operand's.
            Op::CustomGrad => args[0],
            // Attention mixes the rows of a sequence, never those of a batch axis.
            Op::Attention | Op::AttentionGrad => {
                let rank = n.ty.shape.dims().len();
                match axes.first() {
                    None => Rows::Free,
                    Some(&a) if a + 2 < rank && axes.iter().all(|&b| b == a) => Rows::Axis(a),
                    Some(_) => return mix("attends across the batch axis"),
                }
            }
            // scatter_add sums every row's values into one table.
            Op::ScatterAdd => return mix("sums the batch into one table"),
            // A new op is refused until it has a rule: refusing is always safe.
            _ => return mix("has no rule for rows yet"),
        };
        rows.push(r);
    }
    Ok(rows)
}

/// The rows of a scan's results from its operands': the body analysed with each carry's
/// rows where its initial value has them (again with a carry's rows as the body gives
/// them, until they agree), each sequence's step with the rows one axis earlier.
fn scan_rows(l: &nnc_ir::Loop, args: &[Rows], batch: &str) -> Result<Vec<Rows>, Error> {
    let (nc, ns) = (l.carries, l.sequences);
    let mut ins: Vec<Rows> = Vec::with_capacity(args.len());
    for (k, &r) in args.iter().enumerate() {
        ins.push(match r {
            Rows::Axis(0) if k >= nc && k < nc + ns => {
                return Err(Error::Rows("steps along the batch axis".into()));
            }
            Rows::Axis(a) if k >= nc && k < nc + ns => Rows::Axis(a - 1),
            r => r,
        });
    }
    for _ in 0..=nc {
        let rows = node_rows(&l.body, &ins, batch, false)?;
        let of = |v: Value| match v {
            Value::Input(i) => ins[i as usize],
            Value::Param(_) => Rows::Free,
            Value::Node(i) => rows[i as usize],
        };
        let outs: Vec<Rows> = l.body.outputs.iter().map(|&o| of(o)).collect();
        if outs[..nc] == ins[..nc] {
            let mut res = outs[..nc].to_vec();
            res.extend(outs[nc..].iter().map(|r| match r {
                Rows::Axis(a) => Rows::Axis(a + 1),
                r => *r,
            }));
            return Ok(res);
        }
        for c in 0..nc {
            if ins[c] == Rows::Free {
                ins[c] = outs[c];
            } else if outs[c] != ins[c] {
                return Err(Error::Rows("moves a carry's rows to another axis".into()));
            }
        }
    }
    Err(Error::Rows("moves a carry's rows to another axis".into()))
}

#[cfg(test)]
mod tests {
    use super::{batch_mean, independent};
    use crate::Error;

    fn mean_check(ir: &str) -> Result<(), Error> {
        let m = nnc_ir::parse_module(ir).unwrap_or_else(|e| panic!("{e}\n{ir}"));
        batch_mean(&m.funcs[0], "B")
    }

    /// A loss that is a mean over rows (scaled, plus a term free of the rows) splits; one
    /// whose rows meet the batch's statistics (batch norm) or a sum over rows does not.
    #[test]
    fn a_loss_splits_when_it_is_a_mean_over_rows() {
        let mean = "func @f(%x: f32[B, 3]) -> (f32[], f32[B, 3]) {
  param %w: f32[3] = zeros
  %0 = exp %x : f32[B, 3]
  %1 = sum %0, axes=[1] : f32[B]
  %2 = mean %1, axes=[0] : f32[]
  %3 = neg %2 : f32[]
  %4 = sum %w, axes=[0] : f32[]
  %5 = add %3, %4 : f32[]
  return %5, %0
}
";
        assert_eq!(mean_check(mean), Ok(()));
        let sum = mean.replace("%2 = mean %1", "%2 = sum %1");
        assert!(mean_check(&sum).is_err());
        let norm = "func @f(%x: f32[B, 3]) -> (f32[], f32[B, 3]) {
  %0 = mean %x, axes=[0] : f32[3]
  %1 = broadcast %0, dims=[1] : f32[B, 3]
  %2 = sub %x, %1 : f32[B, 3]
  %3 = mean %2, axes=[0, 1] : f32[]
  return %3, %2
}
";
        assert!(
            mean_check(norm)
                .unwrap_err()
                .to_string()
                .starts_with("%2 = sub"),
            "{:?}",
            mean_check(norm)
        );
        let squared = mean.replace("%3 = neg %2 : f32[]", "%3 = mul %2, %2 : f32[]");
        assert!(mean_check(&squared).is_err());
        // A mean over rows is not a value that keeps rows apart for `independent`.
        assert!(independent(&nnc_ir::parse_module(mean).unwrap().funcs[0], "B").is_err());
    }

    fn check(ir: &str) -> Result<(), Error> {
        let m = nnc_ir::parse_module(ir).unwrap_or_else(|e| panic!("{e}\n{ir}"));
        independent(&m.funcs[0], "B")
    }

    #[test]
    fn a_dense_layer_and_a_transpose_keep_rows_apart() {
        let ir = "func @f(%x: f32[B, 3]) -> f32[B, 2] {
  param %w: f32[3, 2] = zeros
  %0 = matmul %x, %w : f32[B, 2]
  %1 = transpose %0, perm=[1, 0] : f32[2, B]
  %2 = exp %1 : f32[2, B]
  %3 = transpose %2, perm=[1, 0] : f32[B, 2]
  %4 = sum %3, axes=[1] : f32[B]
  %5 = broadcast %4, dims=[0] : f32[B, 2]
  %6 = div %3, %5 : f32[B, 2]
  return %6
}
";
        assert_eq!(check(ir), Ok(()));
    }

    #[test]
    fn mixing_rows_is_named() {
        let over_batch = "func @f(%x: f32[B, 3]) -> f32[B, 3] {
  %0 = sum %x, axes=[0] : f32[3]
  %1 = broadcast %0, dims=[1] : f32[B, 3]
  %2 = sub %x, %1 : f32[B, 3]
  return %2
}
";
        assert_eq!(
            check(over_batch),
            Err(Error::Rows("%0 = sum: reduces over the batch axis".into()))
        );
        let gram = "func @f(%x: f32[B, 3]) -> f32[B, B] {
  %0 = transpose %x, perm=[1, 0] : f32[3, B]
  %1 = matmul %x, %0 : f32[B, B]
  return %1
}
";
        assert!(
            check(gram)
                .unwrap_err()
                .to_string()
                .starts_with("%1 = matmul"),
            "{:?}",
            check(gram)
        );
        let index = "func @f(%x: f32[B, 3]) -> f32[B, 3] {
  %0 = iota axes=[0] : f32[B, 3]
  %1 = add %x, %0 : f32[B, 3]
  return %1
}
";
        assert!(
            check(index)
                .unwrap_err()
                .to_string()
                .starts_with("%0 = iota")
        );
    }
}
