//! The elementwise functions, written once for every backend and for nnc-rt's own
//! kernels.
//!
//! An implementation of [`Lanes`] provides float, integer and mask values of one vector
//! width (or one lane) and the handful of instructions a fused loop needs: Cranelift and
//! LLVM emit instructions (nnc-jit's `emit.rs`), [`Scalar`] computes on one f32 (the
//! compiler vectorizes its loops, `unary.rs`). Over that trait this module defines the
//! transcendental functions as polynomials (`exp`, `log`, `tanh`, `sigmoid`, `sin`,
//! `cos`, `erf`), so every implementation computes the same operations in the same order
//! and the same numbers, bit for bit. Products are never contracted into fused
//! multiply-adds here (`madd` rounds twice, as the interpreter does).
//!
//! The polynomials are Cephes-style: a range reduction, a short polynomial, special values
//! selected at the end (NaN stays NaN). Their errors against f64 are measured in
//! nnc-jit's `tests/math.rs`.

/// A float comparison: ordered (false on NaN) except `Ne` and `Unordered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    /// Not equal, or unordered (true on NaN, as `x != y` in the interpreter).
    Ne,
    /// Either operand is NaN.
    Unordered,
}

/// What a backend provides to emit elementwise code: f32 lanes (`F`), i32 lanes of the
/// same width (`I`) and comparison masks (`M`).
pub trait Lanes {
    type F: Copy;
    type I: Copy;
    type M: Copy;
    /// What emitting an instruction can fail with (`Infallible` when computing).
    type E;

    fn konst(&mut self, v: f32) -> Result<Self::F, Self::E>;
    fn iconst(&mut self, v: i32) -> Result<Self::I, Self::E>;
    fn add(&mut self, x: Self::F, y: Self::F) -> Result<Self::F, Self::E>;
    fn sub(&mut self, x: Self::F, y: Self::F) -> Result<Self::F, Self::E>;
    fn mul(&mut self, x: Self::F, y: Self::F) -> Result<Self::F, Self::E>;
    fn div(&mut self, x: Self::F, y: Self::F) -> Result<Self::F, Self::E>;
    fn neg(&mut self, x: Self::F) -> Result<Self::F, Self::E>;
    fn abs(&mut self, x: Self::F) -> Result<Self::F, Self::E>;
    fn sqrt(&mut self, x: Self::F) -> Result<Self::F, Self::E>;
    fn cmp(&mut self, c: Cmp, x: Self::F, y: Self::F) -> Result<Self::M, Self::E>;
    /// `x` where `m`, else `y`.
    fn select(&mut self, m: Self::M, x: Self::F, y: Self::F) -> Result<Self::F, Self::E>;
    /// 1.0 where `m`, else 0.0.
    fn indicator(&mut self, m: Self::M) -> Result<Self::F, Self::E>;
    /// The bits of `x` as integers.
    fn bits(&mut self, x: Self::F) -> Result<Self::I, Self::E>;
    /// Integers' bits as floats (the inverse of `bits`).
    fn float_bits(&mut self, x: Self::I) -> Result<Self::F, Self::E>;
    /// The integers' values as floats.
    fn int_to_float(&mut self, x: Self::I) -> Result<Self::F, Self::E>;
    fn iadd(&mut self, x: Self::I, y: Self::I) -> Result<Self::I, Self::E>;
    fn isub(&mut self, x: Self::I, y: Self::I) -> Result<Self::I, Self::E>;
    fn and(&mut self, x: Self::I, y: Self::I) -> Result<Self::I, Self::E>;
    fn or(&mut self, x: Self::I, y: Self::I) -> Result<Self::I, Self::E>;
    fn shl(&mut self, x: Self::I, by: u32) -> Result<Self::I, Self::E>;
    fn ushr(&mut self, x: Self::I, by: u32) -> Result<Self::I, Self::E>;
}

/// `x * y + z`, rounded twice.
#[inline(always)]
pub fn madd<L: Lanes>(l: &mut L, x: L::F, y: L::F, z: L::F) -> Result<L::F, L::E> {
    let p = l.mul(x, y)?;
    l.add(p, z)
}

#[inline(always)]
fn horner<L: Lanes>(l: &mut L, x: L::F, coeffs: &[f32]) -> Result<L::F, L::E> {
    let mut acc = l.konst(coeffs[0])?;
    for &c in &coeffs[1..] {
        let k = l.konst(c)?;
        acc = madd(l, acc, x, k)?;
    }
    Ok(acc)
}

/// Pseudo-min and -max (one `minps`/`maxps` each).
#[inline(always)]
fn clamp<L: Lanes>(l: &mut L, x: L::F, lo: f32, hi: f32) -> Result<L::F, L::E> {
    let (lo, hi) = (l.konst(lo)?, l.konst(hi)?);
    let c = l.cmp(Cmp::Lt, x, lo)?;
    let x = l.select(c, lo, x)?;
    let c = l.cmp(Cmp::Gt, x, hi)?;
    l.select(c, hi, x)
}

/// `v` where `c(x, k)`, else `y`.
#[inline(always)]
fn replace<L: Lanes>(l: &mut L, c: Cmp, x: L::F, k: f32, v: L::F, y: L::F) -> Result<L::F, L::E> {
    let k = l.konst(k)?;
    let m = l.cmp(c, x, k)?;
    l.select(m, v, y)
}

/// NaN stays NaN: `x` where it is NaN, else `y`.
#[inline(always)]
fn keep_nan<L: Lanes>(l: &mut L, x: L::F, y: L::F) -> Result<L::F, L::E> {
    let m = l.cmp(Cmp::Unordered, x, x)?;
    l.select(m, x, y)
}

// The polynomials, highest degree first: e^r - 1 - r = r^2 p(r) on the reduced argument,
// ln(1 + m) on the mantissa, tanh x = x + x^3 p(x^2) below 0.625.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
const LOG_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// e^x: range reduction by ln 2 (Cody-Waite), a degree-7 polynomial, and 2^n built in the
/// exponent bits. Below -87.3 it flushes to 0 (as f32 nearly does); above 88.7, +inf.
#[inline(always)]
pub fn exp<L: Lanes>(l: &mut L, x0: L::F) -> Result<L::F, L::E> {
    let x = clamp(l, x0, -87.336_54, 88.0)?;
    let log2e = l.konst(std::f32::consts::LOG2_E)?;
    let magic = l.konst(12_582_912.0)?; // 1.5 * 2^23: adding it rounds to an integer
    let t = madd(l, x, log2e, magic)?;
    let fx = l.sub(t, magic)?;
    let c1 = l.konst(-0.693_359_4)?;
    let r = madd(l, fx, c1, x)?;
    let c2 = l.konst(2.121_944_4e-4)?;
    let r = madd(l, fx, c2, r)?;
    let p = horner(l, r, &EXP_POLY)?;
    let rr = l.mul(r, r)?;
    let p = madd(l, p, rr, r)?;
    let one = l.konst(1.0)?;
    let p = l.add(p, one)?;
    let ti = l.bits(t)?;
    let bias = l.iconst(127 - 0x4B40_0000)?;
    let e = l.iadd(ti, bias)?;
    let e = l.shl(e, 23)?;
    let pow2 = l.float_bits(e)?;
    let y = l.mul(p, pow2)?;
    // Overflow to +inf past the clamp, and NaN stays NaN.
    let big = l.konst(88.722_84)?;
    let over = l.cmp(Cmp::Gt, x0, big)?;
    let inf = l.konst(f32::INFINITY)?;
    let y = l.select(over, inf, y)?;
    // Flush to zero where e^x is below the normal range.
    let low = l.konst(-87.336_54)?;
    let under = l.cmp(Cmp::Lt, x0, low)?;
    let zero = l.konst(0.0)?;
    let y = l.select(under, zero, y)?;
    keep_nan(l, x0, y)
}

/// ln x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), a degree-9 polynomial in m - 1.
/// ln 0 = -inf, ln of a negative number or NaN is NaN, ln inf = inf.
#[inline(always)]
pub fn log<L: Lanes>(l: &mut L, x0: L::F) -> Result<L::F, L::E> {
    let tiny = l.konst(f32::MIN_POSITIVE)?;
    let c = l.cmp(Cmp::Lt, x0, tiny)?;
    let x = l.select(c, tiny, x0)?;
    let xi = l.bits(x)?;
    let ei = l.ushr(xi, 23)?;
    let bias = l.iconst(126)?;
    let ei = l.isub(ei, bias)?;
    let mant_mask = l.iconst(!0x7F80_0000u32 as i32)?;
    let mi = l.and(xi, mant_mask)?;
    let half = l.iconst(0x3F00_0000)?;
    let mi = l.or(mi, half)?;
    let m = l.float_bits(mi)?; // in [0.5, 1)
    let e = l.int_to_float(ei)?;
    let sqrthf = l.konst(std::f32::consts::FRAC_1_SQRT_2)?;
    let small = l.cmp(Cmp::Lt, m, sqrthf)?;
    let one = l.konst(1.0)?;
    let e_minus = l.sub(e, one)?;
    let e = l.select(small, e_minus, e)?;
    let m2 = l.add(m, m)?;
    let m_small = l.sub(m2, one)?;
    let m_big = l.sub(m, one)?;
    let m = l.select(small, m_small, m_big)?;
    let z = l.mul(m, m)?;
    let p = horner(l, m, &LOG_POLY)?;
    let y = l.mul(p, m)?;
    let y = l.mul(y, z)?;
    let c2 = l.konst(-2.121_944_4e-4)?;
    let y = madd(l, e, c2, y)?;
    let mhalf = l.konst(-0.5)?;
    let y = madd(l, z, mhalf, y)?;
    let y = l.add(m, y)?;
    let c1 = l.konst(0.693_359_4)?;
    let y = madd(l, e, c1, y)?;
    // Special values.
    let zero = l.konst(0.0)?;
    let is_zero = l.cmp(Cmp::Eq, x0, zero)?;
    let ninf = l.konst(f32::NEG_INFINITY)?;
    let y = l.select(is_zero, ninf, y)?;
    let neg = l.cmp(Cmp::Lt, x0, zero)?;
    let nan = l.konst(f32::NAN)?;
    let y = l.select(neg, nan, y)?;
    let inf = l.konst(f32::INFINITY)?;
    let is_inf = l.cmp(Cmp::Eq, x0, inf)?;
    let y = l.select(is_inf, inf, y)?;
    keep_nan(l, x0, y)
}

/// 1 / (1 + e^-x): e^-x overflows to inf below -88.7, which gives 0; NaN stays NaN.
#[inline(always)]
pub fn sigmoid<L: Lanes>(l: &mut L, x: L::F) -> Result<L::F, L::E> {
    let nx = l.neg(x)?;
    let e = exp(l, nx)?;
    let one = l.konst(1.0)?;
    let d = l.add(one, e)?;
    l.div(one, d)
}

/// tanh x: an odd polynomial below |x| = 0.625 (no cancellation near 0), else
/// sign(x) (1 - 2 / (e^(2|x|) + 1)).
#[inline(always)]
pub fn tanh<L: Lanes>(l: &mut L, x: L::F) -> Result<L::F, L::E> {
    let z = l.mul(x, x)?;
    let p = horner(l, z, &TANH_POLY)?;
    let xz = l.mul(x, z)?;
    let small_y = madd(l, xz, p, x)?;
    let ax = l.abs(x)?;
    let two_ax = l.add(ax, ax)?;
    let e = exp(l, two_ax)?;
    let one = l.konst(1.0)?;
    let two = l.konst(2.0)?;
    let d = l.add(e, one)?;
    let q = l.div(two, d)?;
    let big_abs = l.sub(one, q)?;
    let neg_big = l.neg(big_abs)?;
    let big_y = replace(l, Cmp::Lt, x, 0.0, neg_big, big_abs)?;
    let y = replace(l, Cmp::Lt, ax, 0.625, small_y, big_y)?;
    keep_nan(l, x, y)
}

// sin and cos on r in [-pi/4, pi/4] (Cephes sinf/cosf): sin r = r + r^3 p(r^2),
// cos r = 1 - r^2 / 2 + r^4 q(r^2).
const SIN_POLY: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
const COS_POLY: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

/// sin x (`quarter` = 0) or cos x (`quarter` = 1, as sin(x + pi/2)): x = q pi/2 + r with
/// q the nearest integer (Cody-Waite in three parts, exact for |q| < 2^16), then the
/// quadrant q + quarter picks sin r or cos r and the sign. Accurate to a few ulp for |x|
/// up to 8192 (as Cephes); the reduction loses bits beyond, and inf or NaN gives NaN.
#[inline(always)]
fn sin_quadrant<L: Lanes>(l: &mut L, x: L::F, quarter: i32) -> Result<L::F, L::E> {
    let two_over_pi = l.konst(std::f32::consts::FRAC_2_PI)?;
    let magic = l.konst(12_582_912.0)?; // 1.5 * 2^23: adding it rounds to an integer
    let t = madd(l, x, two_over_pi, magic)?;
    let q = l.sub(t, magic)?;
    let mut r = x;
    for part in [-1.570_312_5, -4.837_513e-4, -7.549_79e-8] {
        let c = l.konst(part)?;
        r = madd(l, q, c, r)?;
    }
    let z = l.mul(r, r)?;
    let p = horner(l, z, &SIN_POLY)?;
    let rz = l.mul(r, z)?;
    let sin_r = madd(l, rz, p, r)?;
    let p = horner(l, z, &COS_POLY)?;
    let zz = l.mul(z, z)?;
    let mhalf = l.konst(-0.5)?;
    let one = l.konst(1.0)?;
    let c = madd(l, z, mhalf, one)?;
    let cos_r = madd(l, zz, p, c)?;
    // The low bits of t's mantissa are q mod 4 (for negative q too: t - 2^23 = 2^22 + q).
    let qi = l.bits(t)?;
    let k = l.iconst(quarter)?;
    let qi = l.iadd(qi, k)?;
    let zero = l.konst(0.0)?;
    let one_i = l.iconst(1)?;
    let odd = l.and(qi, one_i)?;
    let odd = l.int_to_float(odd)?;
    let odd = l.cmp(Cmp::Ne, odd, zero)?;
    let two_i = l.iconst(2)?;
    let half = l.and(qi, two_i)?;
    let half = l.int_to_float(half)?;
    let half = l.cmp(Cmp::Ne, half, zero)?;
    let v = l.select(odd, cos_r, sin_r)?;
    let nv = l.neg(v)?;
    let y = l.select(half, nv, v)?;
    // inf - inf is NaN already; a NaN operand stays NaN.
    keep_nan(l, x, y)
}

#[inline(always)]
pub fn sin<L: Lanes>(l: &mut L, x: L::F) -> Result<L::F, L::E> {
    sin_quadrant(l, x, 0)
}

#[inline(always)]
pub fn cos<L: Lanes>(l: &mut L, x: L::F) -> Result<L::F, L::E> {
    sin_quadrant(l, x, 1)
}

// erf: (2 / sqrt(pi)) x (1 - x^2/3 + x^4/10 - ...) below |x| = 0.5 (no cancellation near
// 0), and 1 - erfc(|x|) above with the Chebyshev fit of Numerical Recipes' erfcc
// (fractional error of erfc below 1.2e-7): erfc z = t exp(-z^2 + p(t)), t = 1 / (1 + z/2).
const ERF_SERIES: [f32; 6] = [
    -1.0 / 1320.0,
    1.0 / 216.0,
    -1.0 / 42.0,
    1.0 / 10.0,
    -1.0 / 3.0,
    1.0,
];
const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// The error function; erf(±inf) = ±1, NaN stays NaN.
#[inline(always)]
pub fn erf<L: Lanes>(l: &mut L, x: L::F) -> Result<L::F, L::E> {
    let z = l.mul(x, x)?;
    let p = horner(l, z, &ERF_SERIES)?;
    let c = l.konst(std::f32::consts::FRAC_2_SQRT_PI)?;
    let cx = l.mul(c, x)?;
    let small_y = l.mul(cx, p)?;
    let ax = l.abs(x)?;
    let half = l.konst(0.5)?;
    let one = l.konst(1.0)?;
    let d = madd(l, ax, half, one)?;
    let t = l.div(one, d)?;
    let p = horner(l, t, &ERFC_POLY)?;
    let arg = l.sub(p, z)?;
    let e = exp(l, arg)?;
    let erfc = l.mul(t, e)?;
    let big_abs = l.sub(one, erfc)?;
    let neg_big = l.neg(big_abs)?;
    let big_y = replace(l, Cmp::Lt, x, 0.0, neg_big, big_abs)?;
    let y = replace(l, Cmp::Lt, ax, 0.5, small_y, big_y)?;
    keep_nan(l, x, y)
}

/// The elementwise ops of a fused loop. What each computes is defined once, by
/// [`compute`], for Cranelift's and LLVM's loops alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Neg,
    Abs,
    Sqrt,
    Sign,
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Sin,
    Cos,
    Erf,
    /// The identity (a stop-gradient, a broadcast scalar the loop computed).
    Id,
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// `x != 0 ? y : z`.
    Select,
}

/// One elementwise op on its operands' lanes.
#[inline(always)]
pub fn compute<L: Lanes>(l: &mut L, op: Elem, xs: &[L::F]) -> Result<L::F, L::E> {
    let x = xs[0];
    let y = || xs[1];
    let indicator = |l: &mut L, c: Cmp, x: L::F, y: L::F| {
        let m = l.cmp(c, x, y)?;
        l.indicator(m)
    };
    Ok(match op {
        Elem::Neg => l.neg(x)?,
        Elem::Abs => l.abs(x)?,
        Elem::Sqrt => l.sqrt(x)?,
        Elem::Sign => {
            let zero = l.konst(0.0)?;
            let pos = indicator(l, Cmp::Gt, x, zero)?;
            let neg = indicator(l, Cmp::Lt, x, zero)?;
            l.sub(pos, neg)?
        }
        Elem::Exp => exp(l, x)?,
        Elem::Log => log(l, x)?,
        Elem::Tanh => tanh(l, x)?,
        Elem::Sigmoid => sigmoid(l, x)?,
        Elem::Sin => sin(l, x)?,
        Elem::Cos => cos(l, x)?,
        Elem::Erf => erf(l, x)?,
        Elem::Id => x,
        Elem::Add => l.add(x, y())?,
        Elem::Sub => l.sub(x, y())?,
        Elem::Mul => l.mul(x, y())?,
        Elem::Div => l.div(x, y())?,
        // max: y where x < y, else x (the op table's rule; one maxps-like select).
        Elem::Max => {
            let m = l.cmp(Cmp::Lt, x, y())?;
            l.select(m, y(), x)?
        }
        Elem::Min => {
            let m = l.cmp(Cmp::Lt, y(), x)?;
            l.select(m, y(), x)?
        }
        Elem::Lt => indicator(l, Cmp::Lt, x, y())?,
        Elem::Le => indicator(l, Cmp::Le, x, y())?,
        Elem::Gt => indicator(l, Cmp::Gt, x, y())?,
        Elem::Ge => indicator(l, Cmp::Ge, x, y())?,
        Elem::Eq => indicator(l, Cmp::Eq, x, y())?,
        Elem::Ne => indicator(l, Cmp::Ne, x, y())?,
        Elem::Select => {
            let zero = l.konst(0.0)?;
            let m = l.cmp(Cmp::Ne, x, zero)?;
            l.select(m, xs[1], xs[2])?
        }
    })
}
