//! The elementwise emitter, written once for every backend.
//!
//! A backend implements [`Lanes`] (nnc-rt's `lanes`, where the transcendental functions
//! are defined once as polynomials over it): float, integer and mask values of one vector
//! width (or one lane, for a loop's tail) and the handful of instructions a fused loop
//! needs. Over that trait this module defines how every fused op is computed (`compute`),
//! so Cranelift and LLVM emit the same operations in the same order and compute the same
//! numbers, bit for bit. The Cranelift loop contracts `a * b + c` itself where the ISA has
//! FMA.

use crate::Error;

use nnc_ir::Op;
pub(crate) use nnc_rt::lanes::{Cmp, Lanes, cos, erf, exp, log, sigmoid, sin, tanh};

pub(crate) type R<T> = Result<T, Error>;

/// One fused op on its operands' lanes. `Broadcast` is a scalar this loop computed;
/// constants are hoisted out of the loop by the backend and never reach here.
pub(crate) fn compute<L: Lanes<E = Error>>(l: &mut L, op: Op, xs: &[L::F]) -> R<L::F> {
    let x = xs[0];
    let y = || xs[1];
    Ok(match op {
        Op::Neg => l.neg(x)?,
        Op::Abs => l.abs(x)?,
        Op::Sqrt => l.sqrt(x)?,
        Op::Sign => {
            let zero = l.konst(0.0)?;
            let m = l.cmp(Cmp::Gt, x, zero)?;
            let pos = l.indicator(m)?;
            let m = l.cmp(Cmp::Lt, x, zero)?;
            let neg = l.indicator(m)?;
            l.sub(pos, neg)?
        }
        Op::Exp => exp(l, x)?,
        Op::Log => log(l, x)?,
        Op::Tanh => tanh(l, x)?,
        Op::Sigmoid => sigmoid(l, x)?,
        Op::Sin => sin(l, x)?,
        Op::Cos => cos(l, x)?,
        Op::Erf => erf(l, x)?,
        // An alias, not a loop; the identity wherever a loop meets it.
        Op::StopGradient => x,
        Op::Add => l.add(x, y())?,
        Op::Sub => l.sub(x, y())?,
        Op::Mul => l.mul(x, y())?,
        Op::Div => l.div(x, y())?,
        // max: y where x < y, else x (the op table's rule; one maxps-like select).
        Op::Max => {
            let m = l.cmp(Cmp::Lt, x, y())?;
            l.select(m, y(), x)?
        }
        Op::Min => {
            let m = l.cmp(Cmp::Lt, y(), x)?;
            l.select(m, y(), x)?
        }
        Op::Lt => indicator(l, Cmp::Lt, x, y())?,
        Op::Le => indicator(l, Cmp::Le, x, y())?,
        Op::Gt => indicator(l, Cmp::Gt, x, y())?,
        Op::Ge => indicator(l, Cmp::Ge, x, y())?,
        Op::Eq => indicator(l, Cmp::Eq, x, y())?,
        Op::Ne => indicator(l, Cmp::Ne, x, y())?,
        Op::Select => {
            let zero = l.konst(0.0)?;
            let m = l.cmp(Cmp::Ne, x, zero)?;
            l.select(m, xs[1], xs[2])?
        }
        // A broadcast scalar this loop computed (a loop over one element).
        Op::Broadcast => x,
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

fn indicator<L: Lanes<E = Error>>(l: &mut L, c: Cmp, x: L::F, y: L::F) -> R<L::F> {
    let m = l.cmp(c, x, y)?;
    l.indicator(m)
}
