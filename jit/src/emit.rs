//! The elementwise emitter, written once for every backend.
//!
//! A backend implements [`Lanes`] (nnc-rt's `lanes`, where the transcendental functions
//! are defined once as polynomials over it): float, integer and mask values of one vector
//! width (or one lane, for a loop's tail) and the handful of instructions a fused loop
//! needs. Over that trait nnc-rt's `lanes::compute` defines how every fused op is
//! computed, so Cranelift and LLVM emit the same operations in the same order and compute
//! the same numbers, bit for bit. The Cranelift loop contracts `a * b + c` itself where the ISA has
//! FMA.

use crate::Error;

use nnc_ir::{Func, Op, Value};
pub(crate) use nnc_rt::lanes::{Cmp, Elem, Lanes};

pub(crate) type R<T> = Result<T, Error>;

/// One fused op on its operands' lanes (nnc-rt's `lanes::compute` defines each). `Broadcast`
/// is a scalar this loop computed; constants are hoisted out of the loop by the backend and
/// never reach here.
pub(crate) fn compute<L: Lanes<E = Error>>(l: &mut L, op: Op, xs: &[L::F]) -> R<L::F> {
    nnc_rt::lanes::compute(l, elem(op)?, xs)
}

/// A sum or difference of a product this loop computes, contracted into one fused
/// multiply-add where the ISA has FMA (one rounding instead of two; the product itself is
/// then dead code): `n = ±(p * q) ± addend`, `p * q` the node `mul`.
pub(crate) struct MulAdd {
    pub mul: usize,
    /// Which of the node's operands is added.
    pub addend: usize,
    pub neg_product: bool,
    pub neg_addend: bool,
}

/// Node `j` of a fused loop computing `order`, as a fused multiply-add, if it is one; a
/// product that is loop-invariant (`invariant`) is not contracted.
pub(crate) fn mul_add(
    f: &Func,
    order: &[usize],
    j: usize,
    invariant: impl Fn(usize) -> bool,
) -> Option<MulAdd> {
    let n = &f.nodes[j];
    let product = |k: usize| match n.args.get(k) {
        Some(&Value::Node(m))
            if f.nodes[m as usize].op == Op::Mul
                && order.contains(&(m as usize))
                && !invariant(m as usize) =>
        {
            Some(m as usize)
        }
        _ => None,
    };
    let (mul, addend, neg_product, neg_addend) = match (n.op, product(0), product(1)) {
        (Op::Add, Some(m), _) => (m, 1, false, false),
        (Op::Add, None, Some(m)) => (m, 0, false, false),
        (Op::Sub, Some(m), _) => (m, 1, false, true),
        (Op::Sub, None, Some(m)) => (m, 0, true, false),
        _ => return None,
    };
    Some(MulAdd {
        mul,
        addend,
        neg_product,
        neg_addend,
    })
}

/// The elementwise op `op` is in a fused loop.
pub(crate) fn elem(op: Op) -> R<Elem> {
    Ok(match op {
        Op::Neg => Elem::Neg,
        Op::Abs => Elem::Abs,
        Op::Sqrt => Elem::Sqrt,
        Op::Sign => Elem::Sign,
        Op::Exp => Elem::Exp,
        Op::Log => Elem::Log,
        Op::Tanh => Elem::Tanh,
        Op::Sigmoid => Elem::Sigmoid,
        Op::Sin => Elem::Sin,
        Op::Cos => Elem::Cos,
        Op::Erf => Elem::Erf,
        // An alias, not a loop; the identity wherever a loop meets it.
        Op::StopGradient => Elem::Id,
        // A broadcast scalar this loop computed (a loop over one element).
        Op::Broadcast => Elem::Id,
        Op::Add => Elem::Add,
        Op::Sub => Elem::Sub,
        Op::Mul => Elem::Mul,
        Op::Div => Elem::Div,
        Op::Max => Elem::Max,
        Op::Min => Elem::Min,
        Op::Lt => Elem::Lt,
        Op::Le => Elem::Le,
        Op::Gt => Elem::Gt,
        Op::Ge => Elem::Ge,
        Op::Eq => Elem::Eq,
        Op::Ne => Elem::Ne,
        Op::Select => Elem::Select,
        Op::Const
        | Op::Pow
        | Op::Sum
        | Op::Mean
        | Op::ReduceMax
        | Op::MatMul
        | Op::Reshape
        | Op::Transpose
        | Op::Cast
        | Op::OneHot
        | Op::Im2col
        | Op::Col2im
        | Op::Slice
        | Op::Pad
        | Op::Iota
        | Op::Random
        | Op::Gather
        | Op::ScatterAdd
        | Op::Attention
        | Op::AttentionGrad
        | Op::Concat
        | Op::Cotangent
        | Op::CustomGrad
        | Op::Scan
        | Op::ScanOut
        | Op::LoopVar => {
            return Err(Error::Codegen(format!(
                "`{}` is not computed in a fused loop",
                op.mnemonic()
            )));
        }
    })
}
