//! The transcendental functions over arrays, for loops that Cranelift would run four
//! lanes at a time: the polynomials of [`crate::lanes`] on one f32 ([`Scalar`]), in loops
//! the Rust compiler vectorizes to the widest registers the CPU has (AVX-512: sixteen
//! lanes; AVX2: eight), chosen at run time. The numbers are the fused loops' own, bit for
//! bit: the same operations in the same order, each rounded once, no contraction.

use crate::lanes::{self, Cmp, Lanes};
use std::convert::Infallible;

/// One lane of f32: the [`Lanes`] the kernels compute with.
pub struct Scalar;

impl Lanes for Scalar {
    type F = f32;
    type I = i32;
    type M = bool;
    type E = Infallible;

    #[inline(always)]
    fn konst(&mut self, v: f32) -> Result<f32, Infallible> {
        Ok(v)
    }
    #[inline(always)]
    fn iconst(&mut self, v: i32) -> Result<i32, Infallible> {
        Ok(v)
    }
    #[inline(always)]
    fn add(&mut self, x: f32, y: f32) -> Result<f32, Infallible> {
        Ok(x + y)
    }
    #[inline(always)]
    fn sub(&mut self, x: f32, y: f32) -> Result<f32, Infallible> {
        Ok(x - y)
    }
    #[inline(always)]
    fn mul(&mut self, x: f32, y: f32) -> Result<f32, Infallible> {
        Ok(x * y)
    }
    #[inline(always)]
    fn div(&mut self, x: f32, y: f32) -> Result<f32, Infallible> {
        Ok(x / y)
    }
    #[inline(always)]
    fn neg(&mut self, x: f32) -> Result<f32, Infallible> {
        Ok(-x)
    }
    #[inline(always)]
    fn abs(&mut self, x: f32) -> Result<f32, Infallible> {
        Ok(x.abs())
    }
    #[inline(always)]
    fn sqrt(&mut self, x: f32) -> Result<f32, Infallible> {
        Ok(x.sqrt())
    }
    #[inline(always)]
    fn cmp(&mut self, c: Cmp, x: f32, y: f32) -> Result<bool, Infallible> {
        Ok(match c {
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Unordered => x.is_nan() || y.is_nan(),
        })
    }
    #[inline(always)]
    fn select(&mut self, m: bool, x: f32, y: f32) -> Result<f32, Infallible> {
        Ok(if m { x } else { y })
    }
    #[inline(always)]
    fn indicator(&mut self, m: bool) -> Result<f32, Infallible> {
        Ok(if m { 1.0 } else { 0.0 })
    }
    #[inline(always)]
    fn bits(&mut self, x: f32) -> Result<i32, Infallible> {
        Ok(x.to_bits() as i32)
    }
    #[inline(always)]
    fn float_bits(&mut self, x: i32) -> Result<f32, Infallible> {
        Ok(f32::from_bits(x as u32))
    }
    #[inline(always)]
    fn int_to_float(&mut self, x: i32) -> Result<f32, Infallible> {
        Ok(x as f32)
    }
    #[inline(always)]
    fn iadd(&mut self, x: i32, y: i32) -> Result<i32, Infallible> {
        Ok(x.wrapping_add(y))
    }
    #[inline(always)]
    fn isub(&mut self, x: i32, y: i32) -> Result<i32, Infallible> {
        Ok(x.wrapping_sub(y))
    }
    #[inline(always)]
    fn and(&mut self, x: i32, y: i32) -> Result<i32, Infallible> {
        Ok(x & y)
    }
    #[inline(always)]
    fn or(&mut self, x: i32, y: i32) -> Result<i32, Infallible> {
        Ok(x | y)
    }
    #[inline(always)]
    fn shl(&mut self, x: i32, by: u32) -> Result<i32, Infallible> {
        Ok(x.wrapping_shl(by))
    }
    #[inline(always)]
    fn ushr(&mut self, x: i32, by: u32) -> Result<i32, Infallible> {
        Ok(((x as u32) >> by) as i32)
    }
}

/// The functions of [`nnc_unary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum UnaryKind {
    Exp = 0,
    Log = 1,
    Tanh = 2,
    Sigmoid = 3,
    Erf = 4,
    Sin = 5,
    Cos = 6,
}

impl UnaryKind {
    fn from_i64(k: i64) -> Option<UnaryKind> {
        use UnaryKind::*;
        [Exp, Log, Tanh, Sigmoid, Erf, Sin, Cos]
            .into_iter()
            .find(|u| *u as i64 == k)
    }
}

/// `Ok` of a computation that cannot fail.
#[inline(always)]
fn run(r: Result<f32, Infallible>) -> f32 {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

/// `ys[i] = f(xs[i])`, a loop the compiler vectorizes (`f` inlined).
#[inline(always)]
fn map<F: Fn(f32) -> f32>(f: F, xs: &[f32], ys: &mut [f32]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = f(x);
    }
}

macro_rules! kernels {
    ($name:ident $(, $feature:literal)?) => {
        /// Every row of `x` (`rows` of `count` elements, `step` apart) through `kind`'s
        /// function into `y`, row after row.
        $(#[target_feature(enable = $feature)])?
        unsafe fn $name(kind: UnaryKind, x: *const f32, y: *mut f32, rows: usize, count: usize, step: usize) {
            macro_rules! each {
                ($f:expr) => {
                    for r in 0..rows {
                        let xs = unsafe { std::slice::from_raw_parts(x.add(r * step), count) };
                        let ys = unsafe { std::slice::from_raw_parts_mut(y.add(r * count), count) };
                        map($f, xs, ys);
                    }
                };
            }
            match kind {
                UnaryKind::Exp => each!(|x| run(lanes::exp(&mut Scalar, x))),
                UnaryKind::Log => each!(|x| run(lanes::log(&mut Scalar, x))),
                UnaryKind::Tanh => each!(|x| run(lanes::tanh(&mut Scalar, x))),
                UnaryKind::Sigmoid => each!(|x| run(lanes::sigmoid(&mut Scalar, x))),
                UnaryKind::Erf => each!(|x| run(lanes::erf(&mut Scalar, x))),
                UnaryKind::Sin => each!(|x| run(lanes::sin(&mut Scalar, x))),
                UnaryKind::Cos => each!(|x| run(lanes::cos(&mut Scalar, x))),
            }
        }
    };
}

kernels!(portable);
#[cfg(target_arch = "x86_64")]
kernels!(avx2, "avx2");
#[cfg(target_arch = "x86_64")]
kernels!(avx512, "avx512f");

/// `y = f(x)` for one of the [`UnaryKind`] functions over `desc = [rows, count, step,
/// offset]`: `rows` rows of `count` elements, the first at `x + offset`, each `step`
/// after the last (a slice's columns read in place), written to `y` contiguously.
///
/// # Safety
/// `x` holds `offset + (rows - 1) * step + count` floats, `y` `rows * count`, and `desc`
/// four integers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_unary(kind: i64, x: *const f32, y: *mut f32, desc: *const i64) {
    let d = unsafe { std::slice::from_raw_parts(desc, 4) };
    let [rows, count, step, offset] = [d[0], d[1], d[2], d[3]].map(|v| v.max(0) as usize);
    let Some(kind) = UnaryKind::from_i64(kind) else {
        return;
    };
    let x = unsafe { x.add(offset) };
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return unsafe { avx512(kind, x, y, rows, count, step) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return unsafe { avx2(kind, x, y, rows, count, step) };
        }
    }
    unsafe { portable(kind, x, y, rows, count, step) }
}
