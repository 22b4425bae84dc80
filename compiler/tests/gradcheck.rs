//! Every primitive's gradient rule against central finite differences in f64.
//!
//! `case` matches every op exhaustively, and the test walks the op table, so a primitive
//! added without a gradient case does not compile, and one whose rule is wrong fails here.
//! Each case runs on several random inputs, with broadcasting, reductions over different
//! axes and batched matrix products among them.

use nnc_compiler::autodiff::grad;
use nnc_compiler::gradcheck::{Options, check};
use nnc_compiler::interp::eval;
use nnc_ir::{Attr, DType, Dim, Func, Init, Op, ParamKind, Shape, TABLE, TensorType, Value};
use nnc_runtime::{Rng, Tensor};

/// How an operand's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Gen {
    /// Uniform on (-1, 1).
    Any,
    /// Uniform on (0.5, 2): for log, sqrt, pow's base, a divisor.
    Positive,
    /// Magnitude in (0.1, 1) with a random sign: away from the kink of abs and sign.
    AwayFromZero,
    /// Distinct values at least 0.1 apart: no ties for maxima.
    Distinct,
    /// The previous operand plus or minus (0.2, 1): no ties between the two.
    ApartFromPrevious,
    /// 0 or 1.
    Mask,
    /// Integer labels below this bound.
    Labels(usize),
}

struct Operand {
    ty: TensorType,
    /// A trained parameter (differentiated) or an input (not).
    param: bool,
    draw_by: Gen,
}

struct Case {
    op: Op,
    attr: Attr,
    given: Option<TensorType>,
    operands: Vec<Operand>,
}

fn t(dims: &[u64]) -> TensorType {
    TensorType::new(DType::F64, Shape::known(dims))
}

fn p(dims: &[u64], draw_by: Gen) -> Operand {
    Operand {
        ty: t(dims),
        param: true,
        draw_by,
    }
}

fn input(ty: TensorType, draw_by: Gen) -> Operand {
    Operand {
        ty,
        param: false,
        draw_by,
    }
}

fn window(kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> Attr {
    Attr::Window {
        kernel,
        stride,
        pad,
    }
}

fn case(op: Op, attr: Attr, given: Option<TensorType>, operands: Vec<Operand>) -> Case {
    Case {
        op,
        attr,
        given,
        operands,
    }
}

/// The cases for one op. Exhaustive over `Op`: a new op needs its cases here.
fn cases(op: Op) -> Vec<Case> {
    use Gen::*;
    let none = || Attr::None;
    match op {
        // Its gradient is zero by definition, not the derivative of the identity: applied
        // to an input here, and `stop_gradient_blocks_the_gradient` checks the zero.
        Op::StopGradient => vec![case(op, none(), None, vec![input(t(&[3]), Any)])],
        // A layer's own backward is not a derivative rule: `custom_grad_*` below.
        Op::Cotangent | Op::CustomGrad => vec![],
        // A loop and its results: tests/scan.rs checks its gradient on whole recurrences.
        Op::Scan | Op::ScanOut | Op::LoopVar => vec![],
        Op::Neg | Op::Exp | Op::Tanh | Op::Sigmoid | Op::Sin | Op::Cos | Op::Erf => vec![
            case(op, none(), None, vec![p(&[3, 4], Any)]),
            case(op, none(), None, vec![p(&[], Any)]),
        ],
        Op::Abs | Op::Sign => vec![case(op, none(), None, vec![p(&[3, 4], AwayFromZero)])],
        Op::Log | Op::Sqrt => vec![case(op, none(), None, vec![p(&[3, 4], Positive)])],
        Op::Add | Op::Sub | Op::Mul => vec![
            case(op, none(), None, vec![p(&[2, 3], Any), p(&[2, 3], Any)]),
            // One operand not differentiated.
            case(op, none(), None, vec![p(&[4], Any), input(t(&[4]), Any)]),
            case(op, none(), None, vec![input(t(&[4]), Any), p(&[4], Any)]),
        ],
        Op::Div => vec![case(
            op,
            none(),
            None,
            vec![p(&[2, 3], Any), p(&[2, 3], AwayFromZero)],
        )],
        Op::Max | Op::Min | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Eq | Op::Ne => vec![case(
            op,
            none(),
            None,
            vec![p(&[2, 5], Any), p(&[2, 5], ApartFromPrevious)],
        )],
        Op::Pow => vec![
            case(
                op,
                none(),
                None,
                vec![p(&[2, 3], Positive), p(&[2, 3], Any)],
            ),
            case(
                op,
                none(),
                None,
                vec![p(&[5], Positive), input(t(&[5]), Any)],
            ),
        ],
        Op::Select => vec![case(
            op,
            none(),
            None,
            vec![input(t(&[3, 4]), Mask), p(&[3, 4], Any), p(&[3, 4], Any)],
        )],
        Op::Sum | Op::Mean | Op::ReduceMax => {
            let draw_by = if op == Op::ReduceMax { Distinct } else { Any };
            [
                vec![0],
                vec![1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2],
                vec![],
            ]
            .into_iter()
            .map(|axes| case(op, Attr::Axes(axes), None, vec![p(&[2, 3, 4], draw_by)]))
            .collect()
        }
        Op::MatMul => vec![
            case(op, none(), None, vec![p(&[3, 4], Any), p(&[4, 2], Any)]),
            case(
                op,
                none(),
                None,
                vec![p(&[2, 3, 4], Any), p(&[2, 4, 5], Any)],
            ),
            case(
                op,
                none(),
                None,
                vec![input(t(&[3, 4]), Any), p(&[4, 2], Any)],
            ),
            // A matrix shared across a batch, on either side.
            case(op, none(), None, vec![p(&[2, 3, 4], Any), p(&[4, 5], Any)]),
            case(
                op,
                none(),
                None,
                vec![p(&[3, 4], Any), p(&[2, 2, 4, 5], Any)],
            ),
        ],
        Op::Im2col => vec![
            // 3x3 windows, stride 1, no padding.
            case(
                op,
                window([3, 3], [1, 1], [0, 0]),
                Some(t(&[2, 2, 3, 3, 2, 3])),
                vec![p(&[2, 2, 4, 5], Any)],
            ),
            // Stride 2 with padding, non-square windows.
            case(
                op,
                window([2, 3], [2, 2], [1, 1]),
                Some(t(&[1, 3, 2, 3, 3, 3])),
                vec![p(&[1, 3, 5, 5], Any)],
            ),
        ],
        Op::Col2im => vec![
            case(
                op,
                window([3, 3], [1, 1], [0, 0]),
                Some(t(&[2, 2, 4, 5])),
                vec![p(&[2, 2, 3, 3, 2, 3], Any)],
            ),
            case(
                op,
                window([2, 3], [2, 2], [1, 1]),
                Some(t(&[1, 3, 5, 5])),
                vec![p(&[1, 3, 2, 3, 3, 3], Any)],
            ),
        ],
        Op::Slice => vec![
            case(
                op,
                Attr::Offset { axis: 1, start: 2 },
                Some(t(&[2, 3, 4])),
                vec![p(&[2, 6, 4], Any)],
            ),
            case(
                op,
                Attr::Offset { axis: 0, start: 0 },
                Some(t(&[1])),
                vec![p(&[3], Any)],
            ),
        ],
        Op::Pad => vec![
            case(
                op,
                Attr::Offset { axis: 1, start: 2 },
                Some(t(&[2, 6, 4])),
                vec![p(&[2, 3, 4], Any)],
            ),
            case(
                op,
                Attr::Offset { axis: 2, start: 3 },
                Some(t(&[2, 3, 4])),
                vec![p(&[2, 3, 1], Any)],
            ),
        ],
        // No operands (like const): nothing to differentiate.
        Op::Iota => vec![case(op, Attr::Axes(vec![1]), Some(t(&[2, 3])), vec![])],
        // Noise from an integer key: nothing to differentiate.
        Op::Random => vec![case(
            op,
            Attr::Value(3.0),
            Some(t(&[2, 3])),
            vec![input(
                TensorType::new(DType::I32, Shape::known(&[])),
                Labels(100),
            )],
        )],
        Op::Broadcast => vec![
            case(
                op,
                Attr::Dims(vec![1]),
                Some(t(&[2, 3])),
                vec![p(&[3], Any)],
            ),
            case(
                op,
                Attr::Dims(vec![0]),
                Some(t(&[3, 2])),
                vec![p(&[3], Any)],
            ),
            case(op, Attr::Dims(vec![]), Some(t(&[2, 2])), vec![p(&[], Any)]),
            case(
                op,
                Attr::Dims(vec![0, 2]),
                Some(t(&[2, 4, 3])),
                vec![p(&[2, 3], Any)],
            ),
        ],
        Op::Reshape => vec![
            case(op, none(), Some(t(&[3, 4])), vec![p(&[2, 6], Any)]),
            case(op, none(), Some(t(&[1])), vec![p(&[], Any)]),
        ],
        Op::Transpose => vec![
            case(op, Attr::Perm(vec![1, 0]), None, vec![p(&[2, 3], Any)]),
            case(
                op,
                Attr::Perm(vec![2, 0, 1]),
                None,
                vec![p(&[2, 3, 4], Any)],
            ),
        ],
        // No operands: the loss does not depend on the (unused) parameter the harness adds.
        Op::Const => vec![case(op, Attr::Value(0.5), Some(t(&[2, 2])), vec![])],
        Op::Cast => vec![
            // Float to float passes the gradient through.
            case(op, none(), Some(t(&[2, 3])), vec![p(&[2, 3], Any)]),
            // Float to int is piecewise constant: zero gradient.
            case(
                op,
                none(),
                Some(TensorType::new(DType::I32, Shape::known(&[2, 3]))),
                vec![p(&[2, 3], Any)],
            ),
        ],
        Op::Concat => vec![
            case(
                op,
                Attr::Axis(1),
                None,
                vec![p(&[2, 1, 3], Any), p(&[2, 3, 3], Any), p(&[2, 2, 3], Any)],
            ),
            // One operand not differentiated.
            case(
                op,
                Attr::Axis(0),
                None,
                vec![input(t(&[2, 4]), Any), p(&[3, 4], Any)],
            ),
        ],
        // Repeated ids (8 ids of 4 rows): the adjoint sums them.
        Op::Gather => {
            let ids =
                |dims: &[u64]| input(TensorType::new(DType::I32, Shape::known(dims)), Labels(4));
            vec![
                case(
                    op,
                    Attr::Index { axis: 0, line: 0 },
                    Some(t(&[2, 4, 3])),
                    vec![p(&[4, 3], Any), ids(&[2, 4])],
                ),
                case(
                    op,
                    Attr::Index { axis: 1, line: 0 },
                    Some(t(&[2, 8, 5])),
                    vec![p(&[2, 4, 5], Any), ids(&[8])],
                ),
            ]
        }
        Op::ScatterAdd => vec![case(
            op,
            Attr::Index { axis: 1, line: 0 },
            Some(t(&[3, 4])),
            vec![
                p(&[3, 2, 3], Any),
                input(
                    TensorType::new(DType::I32, Shape::known(&[2, 3])),
                    Labels(4),
                ),
            ],
        )],
        // Batched, causal and not, more keys than queries; the adjoint of attention_grad is
        // refused (a second derivative): attention's cases run attention_grad.
        Op::Attention => vec![
            case(
                op,
                Attr::Causal(false),
                None,
                vec![p(&[2, 3, 4], Any), p(&[2, 5, 4], Any), p(&[2, 5, 4], Any)],
            ),
            case(
                op,
                Attr::Causal(true),
                None,
                vec![
                    p(&[2, 2, 4, 3], Any),
                    p(&[2, 2, 4, 3], Any),
                    p(&[2, 2, 4, 3], Any),
                ],
            ),
            case(
                op,
                Attr::Causal(true),
                None,
                vec![p(&[3, 2], Any), input(t(&[5, 2]), Any), p(&[5, 2], Any)],
            ),
        ],
        Op::AttentionGrad => vec![],
        Op::OneHot => vec![case(
            op,
            none(),
            Some(t(&[4, 3])),
            vec![input(
                TensorType::new(DType::I32, Shape::known(&[4])),
                Labels(3),
            )],
        )],
    }
}

/// Builds `loss = sum(cast_f64(op(operands)) * weights)` with the differentiated operands
/// as parameters, plus one unused parameter whose gradient must be exactly zero.
fn build(c: &Case) -> Func {
    let mut f = Func::new(format!("check_{}", c.op.mnemonic()));
    let mut args = Vec::new();
    for (i, o) in c.operands.iter().enumerate() {
        args.push(if o.param {
            f.add_param(ParamKind::Param, format!("p{i}"), o.ty.clone(), Init::Zeros)
        } else {
            f.add_input(format!("x{i}"), o.ty.clone())
        });
    }
    f.add_param(ParamKind::Param, "unused", t(&[2]), Init::Zeros);
    let mut y = f
        .build(c.op, args, c.attr.clone(), c.given.clone())
        .unwrap_or_else(|e| panic!("case for `{}` is ill-typed: {e}", c.op.mnemonic()));
    let yt = f.ty(y).clone();
    if !yt.dtype.is_float() {
        y = f
            .build(
                Op::Cast,
                vec![y],
                Attr::None,
                Some(yt.with_dtype(DType::F64)),
            )
            .unwrap();
    }
    let w = f.add_input("weights", yt.with_dtype(DType::F64));
    let prod = f.build(Op::Mul, vec![y, w], Attr::None, None).unwrap();
    let all: Vec<usize> = (0..yt.rank()).collect();
    let loss = f.build(Op::Sum, vec![prod], Attr::Axes(all), None).unwrap();
    f.outputs.push(loss);
    f
}

fn draw(draw_by: Gen, ty: &TensorType, prev: Option<&Tensor>, rng: &mut Rng) -> Tensor {
    let shape: Vec<usize> = ty
        .shape
        .dims()
        .iter()
        .map(|d| d.known().unwrap() as usize)
        .collect();
    let n: usize = shape.iter().product();
    let data: Vec<f64> = match draw_by {
        Gen::Any => (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
        Gen::Positive => (0..n).map(|_| 0.5 + 1.5 * rng.uniform()).collect(),
        Gen::AwayFromZero => (0..n)
            .map(|_| {
                let m = 0.1 + 0.9 * rng.uniform();
                if rng.uniform() < 0.5 { -m } else { m }
            })
            .collect(),
        Gen::Distinct => {
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.1).collect();
            rng.shuffle(&mut v);
            v.iter().map(|x| x + 0.01 * rng.uniform()).collect()
        }
        Gen::ApartFromPrevious => prev
            .expect("a previous operand")
            .data
            .iter()
            .map(|&a| {
                let d = 0.2 + 0.8 * rng.uniform();
                if rng.uniform() < 0.5 { a - d } else { a + d }
            })
            .collect(),
        Gen::Mask => (0..n).map(|_| (rng.uniform() < 0.5) as u8 as f64).collect(),
        Gen::Labels(k) => (0..n).map(|_| rng.below(k as u64) as f64).collect(),
    };
    Tensor::new(ty.dtype, shape, data)
}

#[test]
fn every_primitive_has_a_gradient_that_matches_finite_differences() {
    let opts = Options {
        max_elems: None,
        ..Options::default()
    };
    let mut checked = 0;
    for row in TABLE {
        let cs = cases(row.op);
        // Loops are checked on whole recurrences (tests/scan.rs); attention_grad is
        // attention's adjoint, checked by attention's cases, and has none of its own.
        if row.lowering == nnc_ir::Lowering::Erased
            || matches!(row.op, Op::Scan | Op::ScanOut | Op::AttentionGrad)
        {
            continue;
        }
        assert!(!cs.is_empty(), "`{}` has no gradient cases", row.mnemonic);
        for (ci, c) in cs.iter().enumerate() {
            let f = build(c);
            nnc_ir::verify_func(&f).unwrap();
            let g = grad(&f).unwrap();
            nnc_ir::verify_func(&g)
                .unwrap_or_else(|e| panic!("gradient of `{}` is ill-formed: {e:?}", row.mnemonic));
            for seed in 0..3 {
                let mut rng = Rng::stream(seed, row.mnemonic);
                let mut operands: Vec<Tensor> = Vec::new();
                for o in &c.operands {
                    let v = draw(o.draw_by, &o.ty, operands.last(), &mut rng);
                    operands.push(v);
                }
                let mut inputs = Vec::new();
                let mut params = Vec::new();
                for (o, v) in c.operands.iter().zip(operands) {
                    if o.param {
                        params.push(v)
                    } else {
                        inputs.push(v)
                    }
                }
                params.push(Tensor::new(DType::F64, vec![2], vec![0.3, -0.7]));
                let wt = f.inputs.last().unwrap().ty.clone();
                inputs.push(draw(Gen::Any, &wt, None, &mut rng));
                let reports = check(&f, &inputs, &params, &opts).unwrap();
                for r in &reports {
                    assert!(
                        r.worst < 1e-6,
                        "`{}` case {ci} seed {seed}: d/d{} at {} is {} by autodiff but {} by \
                         finite differences (error {:e})",
                        row.mnemonic,
                        r.name,
                        r.worst_at,
                        r.analytic,
                        r.numeric,
                        r.worst
                    );
                    checked += r.checked;
                }
                // The unused parameter's gradient is exactly zero.
                let outs = eval(&g, &inputs, &params).unwrap();
                assert_eq!(
                    outs.last().unwrap().data,
                    vec![0.0, 0.0],
                    "{}",
                    row.mnemonic
                );
            }
        }
    }
    assert!(checked > 500, "only {checked} derivatives checked");
}

/// A mean over a symbolic (batch) dimension divides by the bound size at run time.
#[test]
fn mean_over_a_symbolic_dimension() {
    let mut f = Func::new("m");
    let xt = TensorType::new(DType::F64, Shape(vec![Dim::Sym("B".into()), Dim::Known(3)]));
    let x = f.add_input("x", xt.clone());
    let w = f.add_param(ParamKind::Param, "w", t(&[3]), Init::Zeros);
    let wb = f
        .build(Op::Broadcast, vec![w], Attr::Dims(vec![1]), Some(xt))
        .unwrap();
    let prod = f.build(Op::Mul, vec![x, wb], Attr::None, None).unwrap();
    let m = f
        .build(Op::Mean, vec![prod], Attr::Axes(vec![0, 1]), None)
        .unwrap();
    f.outputs.push(m);
    let mut rng = Rng::new(7);
    for b in [1, 2, 5] {
        let x = draw(Gen::Any, &t(&[b, 3]), None, &mut rng);
        let w = draw(Gen::Any, &t(&[3]), None, &mut rng);
        let r = check(&f, &[x], &[w], &Options::default()).unwrap();
        assert!(r[0].worst < 1e-6, "B = {b}: {r:?}");
    }
}

/// `loss = sum(stop_gradient(p) * p)`: the gradient is `stop_gradient(p)`, i.e. `p`, not
/// the `2p` of `sum(p * p)`.
#[test]
fn stop_gradient_blocks_the_gradient() {
    let mut f = Func::new("sg");
    let ty = t(&[3]);
    let p = f.add_param(ParamKind::Param, "p", ty.clone(), Init::Zeros);
    let s = f
        .build(Op::StopGradient, vec![p], Attr::None, None)
        .unwrap();
    let m = f.build(Op::Mul, vec![s, p], Attr::None, None).unwrap();
    let l = f
        .build(Op::Sum, vec![m], Attr::Axes(vec![0]), None)
        .unwrap();
    f.outputs.push(l);
    let g = grad(&f).unwrap();
    let pv = Tensor::new(DType::F64, vec![3], vec![0.5, -1.0, 2.0]);
    let outs = eval(&g, &[], &[pv]).unwrap();
    assert_eq!(outs[0].data, vec![0.25 + 1.0 + 4.0]);
    assert_eq!(outs[1].data, vec![0.5, -1.0, 2.0]);
}

/// `loss = sum(y * y)` with `y = tanh(x * w)` (w broadcast over x's rows) given its own
/// backward for w: `dw = sum(dy * d, axis 0)` with `d` the true derivative `(1 - y^2) x`
/// (`exact`) or a rule that leaves out tanh's slope, `d = x`.
fn custom_grad_model(exact: bool) -> Func {
    let mut f = Func::new("cg");
    let xt = t(&[2, 3]);
    let x = f.add_input("x", xt.clone());
    let w = f.add_param(ParamKind::Param, "w", t(&[3]), Init::Zeros);
    let b = |f: &mut Func, op, args: Vec<Value>| f.build(op, args, Attr::None, None).unwrap();
    let wb = f
        .build(
            Op::Broadcast,
            vec![w],
            Attr::Dims(vec![1]),
            Some(xt.clone()),
        )
        .unwrap();
    let xw = b(&mut f, Op::Mul, vec![x, wb]);
    let y = b(&mut f, Op::Tanh, vec![xw]);
    let dy = f
        .build(Op::Cotangent, vec![], Attr::None, Some(xt.clone()))
        .unwrap();
    let d = if exact {
        let one = f
            .build(Op::Const, vec![], Attr::Value(1.0), Some(xt))
            .unwrap();
        let yy = b(&mut f, Op::Mul, vec![y, y]);
        let slope = b(&mut f, Op::Sub, vec![one, yy]);
        b(&mut f, Op::Mul, vec![slope, x])
    } else {
        x
    };
    let t = b(&mut f, Op::Mul, vec![dy, d]);
    let dw = f
        .build(Op::Sum, vec![t], Attr::Axes(vec![0]), None)
        .unwrap();
    let cg = b(&mut f, Op::CustomGrad, vec![y, dy, w, dw]);
    let sq = b(&mut f, Op::Mul, vec![cg, cg]);
    let l = f
        .build(Op::Sum, vec![sq], Attr::Axes(vec![0, 1]), None)
        .unwrap();
    f.outputs.push(l);
    nnc_ir::verify_func(&f).unwrap();
    f
}

#[test]
fn custom_grad_with_the_true_derivative_passes_the_check() {
    let f = custom_grad_model(true);
    let mut rng = Rng::new(3);
    let x = draw(Gen::Any, &t(&[2, 3]), None, &mut rng);
    let w = draw(Gen::Any, &t(&[3]), None, &mut rng);
    let r = check(&f, &[x], &[w], &Options::default()).unwrap();
    assert!(r[0].worst < 1e-6, "{r:?}");
    let rule = r[0].rule.as_ref().expect("a model with a rule");
    assert!(rule.worst < 1e-12, "the block is the derivative: {rule:?}");
}

/// The rule's gradient is what its block says (computed here independently: dL/dy = 2y,
/// so dw = sum over rows of 2 y x), and the check reports how it differs.
#[test]
fn custom_grad_gives_the_blocks_adjoint() {
    let f = custom_grad_model(false);
    let mut rng = Rng::new(4);
    let x = draw(Gen::Any, &t(&[2, 3]), None, &mut rng);
    let w = draw(Gen::Any, &t(&[3]), None, &mut rng);
    let g = grad(&f).unwrap();
    nnc_ir::verify_func(&g).unwrap();
    let outs = eval(&g, std::slice::from_ref(&x), std::slice::from_ref(&w)).unwrap();
    for j in 0..3 {
        let want: f64 = (0..2)
            .map(|i| {
                let xv = x.data[i * 3 + j];
                2.0 * (xv * w.data[j]).tanh() * xv
            })
            .sum();
        assert!(
            (outs[1].data[j] - want).abs() < 1e-12,
            "{j}: {} vs {want}",
            outs[1].data[j]
        );
    }
    let r = check(&f, &[x], &[w], &Options::default()).unwrap();
    assert!(r[0].worst < 1e-6, "the derivative itself is right: {r:?}");
    assert!(r[0].rule.as_ref().unwrap().worst > 1e-3, "{r:?}");
    // After the passes the backward's stand-ins are gone.
    let opt = nnc_compiler::passes::optimize(&g, &mut |_, _| {}).unwrap();
    assert!(
        opt.nodes
            .iter()
            .all(|n| n.op.info().lowering != nnc_ir::Lowering::Erased)
    );
}
