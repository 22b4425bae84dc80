//! nnc's run-time kernels: what generated code calls for the work it does not inline:
//! matrix products (the `gemm` crate), the layout ops (broadcast, transpose, reductions,
//! one-hot, windows, slices) as strided loops, and the integer and power functions.
//!
//! The JIT registers these functions with Cranelift by address; an object file written
//! by `nnc build` refers to them by name (`nnc_matmul`, ...), so a C program links
//! `libnnc_rt.a` and a Rust program this crate. Nothing else of nnc is needed at run time.
//!
//! Every kernel takes raw pointers and sizes that the compiler computed from the graph's
//! shapes (specialized per batch size); the descriptors are arrays of `i64` owned by the
//! compiled code (or, in an object file, its read-only data), so they outlive every call.

pub mod attention;
pub mod forward;
pub mod lanes;
pub mod mm;
mod take;
pub mod unary;
pub mod weights;

pub use take::{IndexError, nnc_rt_index_error, nnc_take, take_index_error};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

static THREADS: AtomicUsize = AtomicUsize::new(1);
static PROFILE: AtomicBool = AtomicBool::new(false);
static PROFILED: Mutex<Vec<MatmulCall>> = Mutex::new(Vec::new());

/// One call of `nnc_matmul`, as recorded while profiling: the product's sizes, whether each
/// operand was read transposed (its column stride is not 1), and the wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulCall {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a_transposed: bool,
    pub b_transposed: bool,
    pub seconds: f64,
}

/// Starts or stops recording every matrix product (`nnc bench --only gemm`); off by
/// default, when it costs one relaxed load per product.
pub fn profile_matmuls(on: bool) {
    PROFILE.store(on, Ordering::Relaxed);
}

/// The products recorded since the last call, in call order.
pub fn take_matmul_profile() -> Vec<MatmulCall> {
    std::mem::take(&mut *PROFILED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// GFLOP/s of one `[n, n] x [n, n]` gemm on this thread count, now: the yardstick the
/// profile's products are compared with in the same run.
pub fn reference_gflops(n: usize) -> f64 {
    let a = vec![1.0f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let desc = [1, n, n, n, n, 1, n, 1, 0, 0].map(|v| v as i64);
    let run = |c: &mut [f32]| unsafe {
        nnc_matmul(a.as_ptr(), a.as_ptr(), c.as_mut_ptr(), desc.as_ptr())
    };
    run(&mut c);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        run(&mut c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// Sets how many threads matrix products may use (1 = the calling thread only); the
/// training step also splits its batch over this many threads where that pays.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// Multiply-adds below which a product runs on one thread whatever `set_threads` says
/// (512 x 512 x 512).
const PARALLEL_MIN_WORK: f64 = 134_217_728.0;

/// The threads `set_threads` allows.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

thread_local! {
    /// Set while this thread computes one piece of a batch split over threads: its matrix
    /// products then use this thread only.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's matrix products on this thread only (one piece of a batch
/// that other threads compute the rest of).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    scoped(&SERIAL, true, f)
}

/// Runs `f` with the thread-local `key` set to `value`, and puts the value before back
/// afterwards, also when `f` panics.
pub fn scoped<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let (key, before) = (self.0, self.1);
            key.with(|c| c.set(before));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(value)));
    f()
}

/// `c[b] = a[b] @ b[b]` for each of `batch` products of `[m, k] x [k, n]`. `a` and `b` are
/// read through row and column strides (elements), so a transposed operand costs nothing;
/// their batch strides are given too (0 for a matrix shared by the batch).
///
/// # Safety
/// The pointers must address buffers of the sizes the strides describe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_matmul(a: *const f32, b: *const f32, c: *mut f32, desc: *const i64) {
    // desc: batch, m, k, n, a_rs, a_cs, b_rs, b_cs, a_bs, b_bs
    let d = unsafe { std::slice::from_raw_parts(desc, 10) };
    let (batch, m, k, n) = (d[0] as usize, d[1] as usize, d[2] as usize, d[3] as usize);
    let (a_bs, b_bs) = (d[8] as usize, d[9] as usize);
    let started = PROFILE.load(Ordering::Relaxed).then(Instant::now);
    unsafe { matmul(a, b, c, d, batch, m, k, n, a_bs, b_bs) };
    record(started, d);
}

/// Under `profile`, the product of descriptor `d` that started at `started`.
fn record(started: Option<Instant>, d: &[i64]) {
    if let Some(t) = started {
        let call = MatmulCall {
            batch: d[0] as usize,
            m: d[1] as usize,
            k: d[2] as usize,
            n: d[3] as usize,
            a_transposed: d[5] != 1,
            b_transposed: d[7] != 1,
            seconds: t.elapsed().as_secs_f64(),
        };
        PROFILED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

/// What [`nnc_matmul_epilogue`] applies to the product, as bits of its descriptor's
/// eleventh entry: `+ bias[j]`, then `max(0, .)`, then zero where `mask[i, j] <= 0`.
pub const EPILOGUE_BIAS: i64 = 1;
pub const EPILOGUE_RELU: i64 = 2;
pub const EPILOGUE_MASK: i64 = 4;

/// `c = epilogue(a @ b)` for one `[m, k] x [k, n]` product (`desc` as [`nnc_matmul`]'s,
/// batch 1, then the epilogue's bits): a dense layer's bias and ReLU, or a ReLU's
/// derivative applied to a backward product (`mask` the layer's output), computed on
/// nnc's packed kernel's register tile before its one store where it takes the product,
/// else as a pass after it. The numbers are those of the separate ops: `x + b` is one
/// rounding, `max` is the op table's (`x` where not `x < 0`), and a dropped element is
/// `+0`.
///
/// # Safety
/// As for `nnc_matmul`; `bias` holds `n` floats when its bit is set, `mask` `m * n`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_matmul_epilogue(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    desc: *const i64,
    bias: *const f32,
    mask: *const f32,
) {
    let d = unsafe { std::slice::from_raw_parts(desc, 11) };
    let (m, k, n) = (d[1] as usize, d[2] as usize, d[3] as usize);
    let flags = d[10];
    let ep = mm::Epilogue {
        scale: 1.0,
        bias: if flags & EPILOGUE_BIAS != 0 {
            bias
        } else {
            std::ptr::null()
        },
        relu: flags & EPILOGUE_RELU != 0,
        mask: if flags & EPILOGUE_MASK != 0 {
            mask
        } else {
            std::ptr::null()
        },
    };
    // Wherever the packed kernel takes the shape (its epilogue is the point), on one
    // thread; else gemm and the epilogue as a pass after it.
    let serial = SERIAL.with(|s| s.get()) || THREADS.load(Ordering::Relaxed) <= 1;
    let work = m as f64 * k as f64 * n as f64;
    if (serial || work < PARALLEL_MIN_WORK) && use_packed(m, k, n, true) {
        let started = PROFILE.load(Ordering::Relaxed).then(Instant::now);
        let (sa, sb) = operands(a, b, d);
        unsafe { mm::matmul(sa, sb, c, m, k, n, &ep) };
        record(started, d);
        return;
    }
    unsafe { nnc_matmul(a, b, c, desc) };
    // The epilogue as passes over rows the compiler vectorizes (the tile's order: bias,
    // ReLU, mask).
    let out = unsafe { std::slice::from_raw_parts_mut(c, m * n) };
    for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate() {
        if !ep.bias.is_null() {
            let bias = unsafe { std::slice::from_raw_parts(ep.bias, n) };
            row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
        }
        if ep.relu {
            row.iter_mut()
                .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
        }
        if !ep.mask.is_null() {
            let mask = unsafe { std::slice::from_raw_parts(ep.mask.add(i * n), n) };
            row.iter_mut()
                .zip(mask)
                .for_each(|(v, &k)| *v = if k > 0.0 { *v } else { 0.0 });
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    d: &[i64],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a_bs: usize,
    b_bs: usize,
) {
    // Threads inside one product pay only for large ones: inside a training step the
    // 128x784x256 products ran slower on 2 threads than on 1 (rayon's wake-ups and the
    // shared cache); the step splits its batch over threads instead (nnc-train).
    let work = batch as f64 * m as f64 * k as f64 * n as f64;
    let par = match THREADS.load(Ordering::Relaxed) {
        _ if SERIAL.with(|s| s.get()) => gemm::Parallelism::None,
        t if t > 1 && work >= PARALLEL_MIN_WORK => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    };
    if m <= 4 || (n <= NARROW && has_avx512()) {
        // Matrix-vector shapes: gemm's packing of `b` would cost more than the product.
        // At most 16 columns: gemm's register tiles are mostly idle (a 10-column product ran
        // at a quarter of its rate, and 1.3-1.7x slower than the AVX-512 loop).
        for i in 0..batch {
            unsafe {
                small_matmul(
                    a.add(i * a_bs),
                    b.add(i * b_bs),
                    c.add(i * m * n),
                    m,
                    k,
                    n,
                    d,
                )
            };
        }
        return;
    }
    if matches!(par, gemm::Parallelism::None)
        && use_packed(m, k, n, d[7] != 1 || mm::is_loop_constant(b))
    {
        for i in 0..batch {
            let (sa, sb) = unsafe { operands(a.add(i * a_bs), b.add(i * b_bs), d) };
            unsafe { mm::matmul(sa, sb, c.add(i * m * n), m, k, n, &mm::Epilogue::NONE) };
        }
        return;
    }
    for i in 0..batch {
        unsafe {
            let (ap, bp, cp) = (a.add(i * a_bs), b.add(i * b_bs), c.add(i * m * n));
            if k == 0 {
                std::ptr::write_bytes(cp, 0, m * n);
                continue;
            }
            gemm::gemm(
                m,
                n,
                k,
                cp,
                1,
                n as isize,
                false,
                ap,
                d[5] as isize,
                d[4] as isize,
                bp,
                d[7] as isize,
                d[6] as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            );
        }
    }
}

/// A product's operands as its descriptor reads them (row and column strides).
fn operands(a: *const f32, b: *const f32, d: &[i64]) -> (mm::Strided, mm::Strided) {
    let sa = mm::Strided {
        ptr: a,
        rs: d[4] as usize,
        cs: d[5] as usize,
    };
    let sb = mm::Strided {
        ptr: b,
        rs: d[6] as usize,
        cs: d[7] as usize,
    };
    (sa, sb)
}

/// Whether a single-threaded product takes nnc's packed kernel (`mm`) rather than gemm:
/// where `b` is read transposed (a backward pass's `dy @ w^T`). Measured on one thread
/// (`cargo run --release -p nnc-rt --example mm_vs_gemm` and `nnc bench --only gemm
/// --matmul ...`): `b` transposed 1.17-1.22x gemm's rate on mlp784's `[128, 256] x
/// [256, 256]^T`, 3.6x on an LSTM's per-step `[32, 1024] x [1024, 256]^T`; plain layouts
/// 0.93-0.96x, and `a` transposed 1.01-1.04x at depth 128 but 0.5-0.8x at depth 2048 (an
/// LSTM's weight gradient), so gemm keeps those. A structured loop's constant `b` (a
/// recurrent weight) is packed once per loop, not per step as gemm packs it: an LSTM's
/// per-step `[32, 64] x [64, 256]` ran at 218 GFLOP/s against gemm's 194 (same run).
/// A short inner dimension (`[128, 10] x [10, 256]`) ran at a third of gemm's rate: the
/// tile's loads and stores outweigh ten multiply-adds. `wanted`: the product is one of
/// those it wins on (or has an epilogue to run on the tile); the shape decides the rest.
fn use_packed(m: usize, k: usize, n: usize, wanted: bool) -> bool {
    let force = FORCE_PACKED.load(Ordering::Relaxed);
    force != 2 && (force == 1 || wanted) && m >= mm::MR && k >= 32 && n > NARROW && mm::available()
}

/// 0: `use_packed` decides; 1: every product it can take goes to the packed kernel; 2:
/// none does (tests and benchmarks compare the two).
static FORCE_PACKED: AtomicUsize = AtomicUsize::new(0);

/// Routes products to the packed kernel always (`Some(true)`), never (`Some(false)`) or as
/// measured best (`None`).
pub fn force_packed(on: Option<bool>) {
    FORCE_PACKED.store(
        match on {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        Ordering::Relaxed,
    );
}

/// Products no wider than this take the AVX-512 loop instead of gemm.
const NARROW: usize = 16;

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = a @ b` for few rows, compiled for the widest vectors the CPU has (the rest of nnc
/// is built for baseline x86-64).
///
/// # Safety
/// As for `nnc_matmul`.
unsafe fn small_matmul(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    d: &[i64],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            if n <= NARROW {
                return unsafe { narrow_matmul_avx512(a, b, c, m, k, n, d) };
            }
            if m <= 4 && d[7] == 1 && FORCE_PACKED.load(Ordering::Relaxed) != 2 {
                let (sa, sb) = operands(a, b, d);
                return unsafe { mm::few_rows(sa, sb, c, m, k, n) };
            }
            return unsafe { small_matmul_avx512(a, b, c, m, k, n, d) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return unsafe { small_matmul_avx2(a, b, c, m, k, n, d) };
        }
    }
    unsafe { small_matmul_body(a, b, c, m, k, n, d) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_matmul_avx512(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    d: &[i64],
) {
    unsafe { small_matmul_body(a, b, c, m, k, n, d) }
}

/// `c = a @ b` with at most 16 columns, in AVX-512: `b` packed into rows of 16 lanes
/// (zero-padded), eight rows of `c` accumulated in eight registers at a time (eight
/// independent multiply-add chains cover the instruction's latency), stored through a mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn narrow_matmul_avx512(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    d: &[i64],
) {
    use std::arch::x86_64::*;
    let (a_rs, a_cs, b_rs, b_cs) = (d[4] as usize, d[5] as usize, d[6] as usize, d[7] as usize);
    let mut packed = vec![0.0f32; k * NARROW];
    for (p, row) in packed.chunks_exact_mut(NARROW).enumerate() {
        for (j, v) in row[..n].iter_mut().enumerate() {
            *v = unsafe { *b.add(p * b_rs + j * b_cs) };
        }
    }
    let mask: __mmask16 = ((1u32 << n) - 1) as u16;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(8);
        let mut acc = [_mm512_setzero_ps(); 8];
        let a_row = unsafe { a.add(i * a_rs) };
        for p in 0..k {
            let bv = unsafe { _mm512_loadu_ps(packed.as_ptr().add(p * NARROW)) };
            let ap = unsafe { a_row.add(p * a_cs) };
            if rows == 8 {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(unsafe { *ap.add(r * a_rs) });
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            } else {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let av = _mm512_set1_ps(unsafe { *ap.add(r * a_rs) });
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            unsafe { _mm512_mask_storeu_ps(c.add((i + r) * n), mask, *acc) };
        }
        i += rows;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_matmul_avx2(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    d: &[i64],
) {
    unsafe { small_matmul_body(a, b, c, m, k, n, d) }
}

/// Rows of `b` accumulated (`b` row-major) or dot products with its columns (`b`
/// transposed), in f32.
#[inline(always)]
unsafe fn small_matmul_body(
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    d: &[i64],
) {
    let (a_rs, a_cs, b_rs, b_cs) = (d[4] as usize, d[5] as usize, d[6] as usize, d[7] as usize);
    for i in 0..m {
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * n), n) };
        row.fill(0.0);
        if b_cs == 1 {
            for p in 0..k {
                let av = unsafe { *a.add(i * a_rs + p * a_cs) };
                let brow = unsafe { std::slice::from_raw_parts(b.add(p * b_rs), n) };
                for (y, &bv) in row.iter_mut().zip(brow) {
                    *y += av * bv;
                }
            }
        } else {
            for (j, y) in row.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc += unsafe { *a.add(i * a_rs + p * a_cs) * *b.add(p * b_rs + j * b_cs) };
                }
                *y = acc;
            }
        }
    }
}

/// The layout kernels of windows and slices: `kind` 0 im2col, 1 col2im, 2 slice, 3 pad,
/// 4 iota, 5 random (`x` is the key).
///
/// # Safety
/// `desc` is, for im2col/col2im, `[planes, h, w, kh, kw, oh, ow, sh, sw, ph, pw]`; for
/// slice/pad, `[outer, big, small, inner, start]` (the sliced axis has `big` elements in
/// the larger tensor, `small` in the smaller); for iota, `[outer, len, inner]`; for
/// random, `[n, stream]`. The buffers fit it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_layout(kind: i64, x: *const f32, y: *mut f32, desc: *const i64) {
    // Descriptor lengths, by `LayoutKind`.
    let len = [11, 11, 5, 5, 3, 2, 5][kind as usize];
    let d: Vec<usize> = unsafe { std::slice::from_raw_parts(desc, len) }
        .iter()
        .map(|&v| v as usize)
        .collect();
    match kind {
        0 | 1 => {
            let [planes, h, w, kh, kw, oh, ow, sh, sw, ph, pw] = d[..] else {
                return;
            };
            let cols = planes * kh * kw * oh * ow;
            let (xs, ys) = if kind == 0 {
                (planes * h * w, cols)
            } else {
                (cols, planes * h * w)
            };
            let x = unsafe { std::slice::from_raw_parts(x, xs) };
            let y = unsafe { std::slice::from_raw_parts_mut(y, ys) };
            if kind == 1 {
                y.fill(0.0);
            }
            // The output columns ox whose input column ox * sw + j - pw is inside the image.
            let valid = |j: usize| {
                let lo = pw.saturating_sub(j).div_ceil(sw).min(ow);
                let hi = if w + pw > j {
                    ((w + pw - j - 1) / sw + 1).min(ow)
                } else {
                    0
                };
                (lo, hi.max(lo))
            };
            let mut col = 0;
            for p in 0..planes {
                for i in 0..kh {
                    for j in 0..kw {
                        let (lo, hi) = valid(j);
                        for oy in 0..oh {
                            let iy = (oy * sh + i) as isize - ph as isize;
                            let c0 = col;
                            col += ow;
                            if iy < 0 || iy as usize >= h || hi == lo {
                                if kind == 0 {
                                    y[c0..c0 + ow].fill(0.0);
                                }
                                continue;
                            }
                            // Input column of output column lo.
                            let first = (p * h + iy as usize) * w + lo * sw + j - pw;
                            let n = hi - lo;
                            if kind == 0 {
                                y[c0..c0 + lo].fill(0.0);
                                y[c0 + hi..c0 + ow].fill(0.0);
                                let dst = &mut y[c0 + lo..c0 + hi];
                                if sw == 1 {
                                    dst.copy_from_slice(&x[first..first + n]);
                                } else {
                                    let src = &x[first..first + (n - 1) * sw + 1];
                                    for (d, s) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                                        *d = *s;
                                    }
                                }
                            } else {
                                let src = &x[c0 + lo..c0 + hi];
                                if sw == 1 {
                                    for (d, s) in y[first..first + n].iter_mut().zip(src) {
                                        *d += *s;
                                    }
                                } else {
                                    let dst = &mut y[first..first + (n - 1) * sw + 1];
                                    for (d, s) in dst.iter_mut().step_by(sw).zip(src) {
                                        *d += *s;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        2 | 3 | 6 => {
            let [outer, big, small, inner, start] = d[..] else {
                return;
            };
            let (xs, ys) = if kind == 2 {
                (outer * big * inner, outer * small * inner)
            } else {
                (outer * small * inner, outer * big * inner)
            };
            let x = unsafe { std::slice::from_raw_parts(x, xs) };
            let y = unsafe { std::slice::from_raw_parts_mut(y, ys) };
            if kind == 3 {
                y.fill(0.0);
            }
            // 6 (place) writes the operand like pad, leaving the rest of `y` as it is.
            let run = small * inner;
            for o in 0..outer {
                let b = (o * big + start) * inner;
                let s = o * run;
                if kind == 2 {
                    y[s..s + run].copy_from_slice(&x[b..b + run]);
                } else {
                    y[b..b + run].copy_from_slice(&x[s..s + run]);
                }
            }
        }
        5 => {
            let [n, stream] = d[..] else {
                return;
            };
            // Keys are integers stored as f32 (exact below 2^24).
            let key = unsafe { *x } as i64 as u64;
            let y = unsafe { std::slice::from_raw_parts_mut(y, n) };
            for (i, v) in y.iter_mut().enumerate() {
                *v = counter_uniform(key, stream as u64, i as u64);
            }
        }
        _ => {
            let [outer, len, inner] = d[..] else {
                return;
            };
            let y = unsafe { std::slice::from_raw_parts_mut(y, outer * len * inner) };
            for (i, v) in y.iter_mut().enumerate() {
                *v = ((i / inner) % len) as f32;
            }
        }
    }
}

/// Copies `x` into `y` (shape `out`), reading element `sum(idx[k] * stride[k])` of `x`
/// for each output index: broadcast (stride 0) and transpose (permuted strides).
///
/// # Safety
/// `desc` is `[rank, out_shape..., x_strides...]`, and the buffers fit it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_gather(x: *const f32, y: *mut f32, desc: *const i64) {
    let rank = unsafe { *desc } as usize;
    let d = unsafe { std::slice::from_raw_parts(desc.add(1), 2 * rank) };
    let (shape, strides) = d.split_at(rank);
    let n: i64 = shape.iter().product();
    if rank == 0 {
        unsafe { *y = *x };
        return;
    }
    let inner = shape[rank - 1] as usize;
    let inner_stride = strides[rank - 1] as usize;
    let mut idx = vec![0i64; rank];
    let mut out = 0usize;
    while (out as i64) < n {
        let base: i64 = idx.iter().zip(strides).map(|(i, s)| i * s).sum();
        unsafe {
            let yrow = std::slice::from_raw_parts_mut(y.add(out), inner);
            match inner_stride {
                0 => yrow.fill(*x.add(base as usize)),
                1 => yrow.copy_from_slice(std::slice::from_raw_parts(x.add(base as usize), inner)),
                s => {
                    for (j, v) in yrow.iter_mut().enumerate() {
                        *v = *x.add(base as usize + j * s);
                    }
                }
            }
        }
        out += inner;
        // Advance the odometer over all but the innermost axis.
        let mut a = rank - 1;
        while a > 0 {
            a -= 1;
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Reduces `x` (shape `x_shape`) into `y`: element `i` of `x` goes to `y[sum(idx[k] *
/// out_stride[k])]`, with stride 0 on reduced axes. `kind`: 0 sum, 1 mean, 2 max.
///
/// # Safety
/// `desc` is `[rank, kind, count, out_len, x_shape..., out_strides...]`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_reduce(x: *const f32, y: *mut f32, desc: *const i64) {
    let h = unsafe { std::slice::from_raw_parts(desc, 4) };
    let (rank, kind, count, out_len) = (h[0] as usize, h[1], h[2], h[3] as usize);
    let d = unsafe { std::slice::from_raw_parts(desc.add(4), 2 * rank) };
    let (shape, ostr) = d.split_at(rank);
    let ys = unsafe { std::slice::from_raw_parts_mut(y, out_len) };
    ys.fill(if kind == 2 { f32::NEG_INFINITY } else { 0.0 });
    let n: i64 = shape.iter().product();
    if rank == 0 {
        ys[0] = unsafe { *x };
        return;
    }
    let inner = shape[rank - 1] as usize;
    let inner_stride = ostr[rank - 1] as usize;
    let mut idx = vec![0i64; rank];
    let mut i = 0usize;
    while (i as i64) < n {
        let base = idx.iter().zip(ostr).map(|(a, s)| a * s).sum::<i64>() as usize;
        let xrow = unsafe { std::slice::from_raw_parts(x.add(i), inner) };
        match (kind, inner_stride) {
            (2, 0) => ys[base] = max_nan(ys[base], row_max(xrow)),
            (2, 1) => rows_max(&mut ys[base..base + inner], xrow),
            (2, s) => {
                for (j, &v) in xrow.iter().enumerate() {
                    let o = &mut ys[base + j * s];
                    if v > *o || v.is_nan() {
                        *o = v;
                    }
                }
            }
            (_, 0) => ys[base] += row_sum(xrow),
            (_, 1) => rows_add(&mut ys[base..base + inner], xrow),
            (_, s) => {
                for (j, &v) in xrow.iter().enumerate() {
                    ys[base + j * s] += v;
                }
            }
        }
        i += inner;
        let mut a = rank - 1;
        while a > 0 {
            a -= 1;
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    if kind == 1 {
        let c = count as f32;
        ys.iter_mut().for_each(|v| *v /= c);
    }
}

/// The larger of two values, NaN if either is (the interpreter's `reduce_max`).
#[inline(always)]
fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() { v } else { m }
}

/// Lanes of the row reductions: one 512-bit register of partial results.
const LANES: usize = 16;

/// A row's sum in sixteen interleaved partial sums, so the loop vectorizes (f32 addition
/// is not associative, so a plain fold stays one add at a time), on 512-bit registers
/// where the CPU has them.
fn row_sum(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { row_sum_avx512(xs) };
    }
    row_sum_lanes(xs)
}

/// A row's maximum (NaN if any element is), in sixteen interleaved partial maxima.
fn row_max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { row_max_avx512(xs) };
    }
    row_max_lanes(xs)
}

/// `acc[j] += xs[j]`: a reduction over a leading axis, one row at a time.
fn rows_add(acc: &mut [f32], xs: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { rows_add_avx512(acc, xs) };
    }
    acc.iter_mut().zip(xs).for_each(|(a, v)| *a += v);
}

/// `acc[j] = max(acc[j], xs[j])`, NaN kept.
fn rows_max(acc: &mut [f32], xs: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { rows_max_avx512(acc, xs) };
    }
    acc.iter_mut()
        .zip(xs)
        .for_each(|(a, &v)| *a = max_nan(*a, v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_add_avx512(acc: &mut [f32], xs: &[f32]) {
    acc.iter_mut().zip(xs).for_each(|(a, v)| *a += v);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_max_avx512(acc: &mut [f32], xs: &[f32]) {
    acc.iter_mut()
        .zip(xs)
        .for_each(|(a, &v)| *a = max_nan(*a, v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_sum_avx512(xs: &[f32]) -> f32 {
    row_sum_lanes(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_max_avx512(xs: &[f32]) -> f32 {
    row_max_lanes(xs)
}

#[inline(always)]
fn row_sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn row_max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = max_nan(*a, v);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v))
}

/// `y[i, c] = 1` where `labels[i] == c`, else 0; labels outside `0..classes` give zeros.
///
/// # Safety
/// `labels` holds `n` values and `y` holds `n * classes`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_one_hot(labels: *const f32, y: *mut f32, n: i64, classes: i64) {
    let (n, c) = (n as usize, classes as usize);
    let ys = unsafe { std::slice::from_raw_parts_mut(y, n * c) };
    ys.fill(0.0);
    let ls = unsafe { std::slice::from_raw_parts(labels, n) };
    for (i, &l) in ls.iter().enumerate() {
        if l >= 0.0 && (l as usize) < c {
            ys[i * c + l as usize] = 1.0;
        }
    }
}

/// Elementwise functions the generated loops do not compute (exp, ln and tanh are
/// polynomials in the loops). `kind`: 3 trunc (float to int), 4 pow (with `b`), 5 integer
/// division (with `b`).
///
/// # Safety
/// The buffers hold `n` values (`b` only for the binary kinds).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_math(kind: i64, a: *const f32, b: *const f32, y: *mut f32, n: i64) {
    let n = n as usize;
    let xs = unsafe { std::slice::from_raw_parts(a, n) };
    let ys = unsafe { std::slice::from_raw_parts_mut(y, n) };
    match kind {
        3 => ys
            .iter_mut()
            .zip(xs)
            .for_each(|(y, x)| *y = (*x as i32) as f32),
        _ => {
            let bs = unsafe { std::slice::from_raw_parts(b, n) };
            for ((y, x), z) in ys.iter_mut().zip(xs).zip(bs) {
                *y = if kind == 4 {
                    x.powf(*z)
                } else if *z == 0.0 {
                    0.0
                } else {
                    (x / z).trunc()
                };
            }
        }
    }
}

/// `y[..n] = x[..n]` (the buffers may be the same).
///
/// # Safety
/// Both buffers hold `n` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_copy(y: *mut f32, x: *const f32, n: i64) {
    // A value written back over itself (a buffer the step leaves unchanged): nothing to do.
    if std::ptr::eq(y, x) {
        return;
    }
    unsafe { std::ptr::copy(x, y, n as usize) };
}

/// A compiled function's entry: pointers to its inputs, parameters and outputs, and its
/// scratch arena.
pub type Entry =
    unsafe extern "C" fn(*const *const f32, *const *const f32, *const *mut f32, *mut f32);

/// The descriptor of [`nnc_scan`]: counts, then the element count of each carry, of one
/// step of each sequence and of one step of each output.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanDesc {
    /// Carries.
    pub carries: Vec<usize>,
    /// Sequences (one step each).
    pub sequences: Vec<usize>,
    /// Constants (passed through).
    pub constants: usize,
    /// Outputs (one step each).
    pub outputs: Vec<usize>,
    /// Steps.
    pub steps: usize,
    /// Last step first.
    pub reverse: bool,
    /// Per output, the carry whose incoming value it is (the body returns that carry's
    /// operand), if any: that carry then lives in the output's stacked steps, so neither
    /// the body nor the loop copies it.
    pub passthrough: Vec<Option<usize>>,
}

impl ScanDesc {
    /// As the `i64` array compiled code passes.
    pub fn encode(&self) -> Vec<i64> {
        let mut d = vec![
            self.carries.len() as i64,
            self.sequences.len() as i64,
            self.constants as i64,
            self.outputs.len() as i64,
            self.steps as i64,
            self.reverse as i64,
        ];
        for v in [&self.carries, &self.sequences, &self.outputs] {
            d.extend(v.iter().map(|&n| n as i64));
        }
        d.extend(self.passthrough.iter().map(|c| c.map_or(-1, |c| c as i64)));
        d
    }
}

/// A structured loop: runs `body` once per step, carrying the carries. `ptrs` holds the
/// carries' initial values, the sequences, the constants, then the results (the final
/// carries, the stacked outputs), a second buffer per carry, and the body's scratch arena.
/// Each step reads the carries the step before wrote (the first, their initial values)
/// and one step of each sequence in place, and writes the new carries into the other of
/// their two buffers and its outputs in place in the stacked ones. A carry the body
/// returns as an output lives in that output's steps instead (see `passthrough`).
///
/// # Safety
/// `desc` is a [`ScanDesc`] encoding; every pointer holds what the descriptor says, the
/// results do not overlap the operands, and `body` was compiled for these sizes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_scan(desc: *const i64, ptrs: *const *mut f32, body: *const u8) {
    unsafe {
        let head = std::slice::from_raw_parts(desc, 6);
        let [nc, ns, nk, ny, steps] = [0, 1, 2, 3, 4].map(|k| head[k] as usize);
        let reverse = head[5] != 0;
        let sizes = std::slice::from_raw_parts(desc.add(6), nc + ns + ny);
        let (csz, rest) = sizes.split_at(nc);
        let (ssz, ysz) = rest.split_at(ns);
        let through = std::slice::from_raw_parts(desc.add(6 + nc + ns + ny), ny);
        let p = std::slice::from_raw_parts(ptrs, 2 * nc + ns + nk + ny + nc + 1);
        let (init, p) = p.split_at(nc);
        let (seqs, p) = p.split_at(ns);
        let (consts, p) = p.split_at(nk);
        let (finals, p) = p.split_at(nc);
        let (stacked, p) = p.split_at(ny);
        let (cur, p) = p.split_at(nc);
        let scratch = p[0];
        let body: Entry = std::mem::transmute::<*const u8, Entry>(body);
        // A carry the body also returns as an output (its incoming value, stacked: a
        // recurrence's previous state, kept for the backward pass) lives in that output's
        // steps: step t reads it from step t's slot and writes the next value into the
        // next step's, so the body's copy of it is a copy onto itself (skipped).
        let home: Vec<Option<(*mut f32, usize)>> = (0..nc)
            .map(|c| {
                through
                    .iter()
                    .position(|&k| k == c as i64)
                    .filter(|&j| ysz[j] == csz[c])
                    .map(|j| (stacked[j], ysz[j] as usize))
            })
            .collect();
        let order = |k: usize| if reverse { steps - 1 - k } else { k };
        // The other carries ping-pong between the result buffers and `cur`, arranged so
        // the last step writes the results: no copy per step. The first step reads the
        // initial values where they are.
        let mut ins: Vec<*const f32> = Vec::with_capacity(nc + ns + nk);
        let mut outs: Vec<*mut f32> = Vec::with_capacity(nc + ny);
        let mut read: Vec<*const f32> = init.iter().map(|&c| c as *const f32).collect();
        let mut write: Vec<*mut f32> = vec![std::ptr::null_mut(); nc];
        let constants: Vec<*const f32> = consts.iter().map(|&c| c as *const f32).collect();
        if steps > 0 {
            for (c, h) in home.iter().enumerate() {
                if let Some((y, n)) = *h {
                    let first = y.add(order(0) * n);
                    std::ptr::copy(init[c], first, n);
                    read[c] = first;
                }
            }
        }
        mm::with_loop_constants(&constants, || {
            for k in 0..steps {
                let t = order(k);
                let last = k + 1 == steps;
                for c in 0..nc {
                    write[c] = match home[c] {
                        Some((y, n)) if !last => y.add(order(k + 1) * n),
                        Some(_) => finals[c],
                        None if (steps - 1 - k) % 2 == 0 => finals[c],
                        None => cur[c],
                    };
                }
                ins.clear();
                ins.extend_from_slice(&read);
                for (s, &n) in seqs.iter().zip(ssz) {
                    ins.push(s.add(t * n as usize));
                }
                ins.extend(consts.iter().map(|&c| c as *const f32));
                outs.clear();
                outs.extend_from_slice(&write);
                for (y, &n) in stacked.iter().zip(ysz) {
                    outs.push(y.add(t * n as usize));
                }
                body(ins.as_ptr(), std::ptr::null(), outs.as_ptr(), scratch);
                read.clear();
                read.extend(write.iter().map(|&c| c as *const f32));
            }
        });
        if steps == 0 {
            for c in 0..nc {
                std::ptr::copy(init[c], finals[c], csz[c] as usize);
            }
        }
    }
}

/// Uniform noise in [0, 1) with 24 random bits (exact in f32), a pure function of a key
/// (the training step's), a stream (one per `random` call site) and an element index: the
/// `random` op's definition, shared by the interpreter and the JIT so both draw the same
/// numbers.
pub fn counter_uniform(key: u64, stream: u64, index: u64) -> f32 {
    // SplitMix64's finalizer over the three words.
    let mut z = key
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// The kinds of [`nnc_math`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum MathKind {
    /// Float to int, truncating toward zero.
    Trunc = 3,
    /// `a ^ b`.
    Pow = 4,
    /// Integer division, truncating; `x / 0 = 0`.
    IntDiv = 5,
}

/// The kinds of [`nnc_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum LayoutKind {
    Im2col = 0,
    Col2im = 1,
    Slice = 2,
    Pad = 3,
    Iota = 4,
    Random = 5,
    /// Pad without the zeros: writes the operand at its offset, nothing else (concat).
    Place = 6,
}

/// The kinds of [`nnc_take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum TakeKind {
    Gather = 0,
    ScatterAdd = 1,
}

/// A parameter of a kernel's C signature (both are 64 bits wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A buffer or descriptor address.
    Ptr,
    /// An integer: a kind or a count.
    I64,
}

/// The kernels generated code calls, in [`KERNELS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFn {
    Matmul,
    Gather,
    Reduce,
    OneHot,
    Math,
    Copy,
    Layout,
    Take,
    Scan,
    Attention,
    Unary,
    MatmulEpilogue,
}

/// One kernel of the ABI: its symbol, its C parameters, its address.
pub struct KernelSym {
    /// The kernel.
    pub kernel: KernelFn,
    /// The unmangled symbol objects name.
    pub name: &'static str,
    /// Its parameters, in order; kernels return nothing.
    pub params: &'static [Param],
    /// Its address, for JIT modules.
    pub addr: fn() -> usize,
}

impl KernelFn {
    /// This kernel's row of [`KERNELS`].
    pub fn sym(self) -> &'static KernelSym {
        &KERNELS[self as usize]
    }
}

use Param::{I64, Ptr};

/// The kernel ABI: every backend declares, registers and calls the kernels from this one
/// table.
pub static KERNELS: [KernelSym; 12] = [
    KernelSym {
        kernel: KernelFn::Matmul,
        name: "nnc_matmul",
        params: &[Ptr, Ptr, Ptr, Ptr],
        addr: || nnc_matmul as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Gather,
        name: "nnc_gather",
        params: &[Ptr, Ptr, Ptr],
        addr: || nnc_gather as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Reduce,
        name: "nnc_reduce",
        params: &[Ptr, Ptr, Ptr],
        addr: || nnc_reduce as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::OneHot,
        name: "nnc_one_hot",
        params: &[Ptr, Ptr, I64, I64],
        addr: || nnc_one_hot as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Math,
        name: "nnc_math",
        params: &[I64, Ptr, Ptr, Ptr, I64],
        addr: || nnc_math as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Copy,
        name: "nnc_copy",
        params: &[Ptr, Ptr, I64],
        addr: || nnc_copy as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Layout,
        name: "nnc_layout",
        params: &[I64, Ptr, Ptr, Ptr],
        addr: || nnc_layout as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Take,
        name: "nnc_take",
        params: &[I64, Ptr, Ptr, Ptr, Ptr],
        addr: || nnc_take as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Scan,
        name: "nnc_scan",
        params: &[Ptr, Ptr, Ptr],
        addr: || nnc_scan as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Attention,
        name: "nnc_attention",
        params: &[Ptr, Ptr],
        addr: || attention::nnc_attention as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::Unary,
        name: "nnc_unary",
        params: &[I64, Ptr, Ptr, Ptr],
        addr: || unary::nnc_unary as *const () as usize,
    },
    KernelSym {
        kernel: KernelFn::MatmulEpilogue,
        name: "nnc_matmul_epilogue",
        params: &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr],
        addr: || nnc_matmul_epilogue as *const () as usize,
    },
];

/// The address of every kernel: a Rust program that links an `nnc build` object calls
/// this once (`std::hint::black_box(nnc_rt::kernels())`) so the linker keeps them all,
/// whatever order it reads the object and this library in.
pub fn kernels() -> Vec<usize> {
    let mut all: Vec<usize> = KERNELS.iter().map(|k| (k.addr)()).collect();
    all.push(weights::nnc_rt_load_weights as *const () as usize);
    all.push(weights::nnc_rt_error as *const () as usize);
    all.push(nnc_rt_index_error as *const () as usize);
    all
}

/// While it lives, subnormal f32 results are flushed to zero and subnormal operands read as
/// zero on this thread (MXCSR's FTZ and DAZ bits); dropping it restores the mode it found.
/// JIT-compiled kernels run under it, as XLA's and TensorFlow's do: a long training run's
/// Adam moments decay into subnormals, and on this machine mlp784's step then went from
/// 0.95 to 1.23 ms by step 2,000. Deployed objects run in their caller's mode.
#[must_use]
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[allow(clippy::new_without_default)] // a guard: made to be dropped, not defaulted
impl FlushDenormals {
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved = 0u32;
            // SAFETY: stmxcsr/ldmxcsr read and write only the MXCSR register and `saved`.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack));
                let flush = saved | 0x8040;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flush, options(nostack, readonly));
            }
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `new`.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, readonly));
        }
    }
}

#[cfg(test)]
mod tests {
    /// Row reductions on every length from 0 to 40 (whole registers and remainders): the
    /// maximum exact and NaN wherever one element is, the sum within rounding of f64's.
    #[test]
    fn row_reductions_match_their_definitions() {
        for n in 0..=40usize {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 23) as f32 - 11.5).collect();
            let want = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(super::row_max(&xs), want, "max of {n}");
            let sum: f64 = xs.iter().map(|&v| f64::from(v)).sum();
            assert!(
                (f64::from(super::row_sum(&xs)) - sum).abs() < 1e-4,
                "sum of {n}"
            );
            for k in 0..n {
                let mut ys = xs.clone();
                ys[k] = f32::NAN;
                assert!(super::row_max(&ys).is_nan(), "NaN at {k} of {n}");
                let mut acc = vec![0.0f32; n];
                super::rows_max(&mut acc, &ys);
                assert!(acc[k].is_nan() && acc.iter().filter(|v| v.is_nan()).count() == 1);
            }
            let mut acc = vec![1.0f32; n];
            super::rows_add(&mut acc, &xs);
            assert!(acc.iter().zip(&xs).all(|(a, x)| *a == 1.0 + x));
        }
    }

    #[test]
    fn the_kernel_table_is_in_kernel_order() {
        for (i, k) in super::KERNELS.iter().enumerate() {
            assert_eq!(k.kernel as usize, i, "{}", k.name);
        }
    }

    /// Gather reads rows by id; scatter-add sums back, repeated ids included; an id
    /// outside the table is recorded and gives zeros, never a read outside.
    #[test]
    fn take_gathers_scatters_and_refuses_bad_ids() {
        let table = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
        let ids = [2.0f32, 0.0, 2.0];
        let desc = [1i64, 3, 2, 3, 9];
        let mut g = [0.0f32; 6];
        unsafe {
            super::nnc_take(
                0,
                ids.as_ptr(),
                table.as_ptr(),
                g.as_mut_ptr(),
                desc.as_ptr(),
            )
        };
        assert_eq!(g, [5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        let mut s = [7.0f32; 6];
        unsafe { super::nnc_take(1, ids.as_ptr(), g.as_ptr(), s.as_mut_ptr(), desc.as_ptr()) };
        assert_eq!(s, [1.0, 2.0, 0.0, 0.0, 10.0, 12.0]);
        assert_eq!(super::take_index_error(), None);
        let bad = [1.0f32, 3.0, f32::NAN];
        unsafe {
            super::nnc_take(
                0,
                bad.as_ptr(),
                table.as_ptr(),
                g.as_mut_ptr(),
                desc.as_ptr(),
            )
        };
        assert_eq!(g, [3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
        let e = super::take_index_error().unwrap();
        assert_eq!((e.gather, e.line, e.id, e.rows), (true, 9, 3.0, 3));
        assert_eq!(super::take_index_error(), None);
    }

    /// Every matmul path (few rows, few columns, short inner dimension, the packed kernel,
    /// gemm) against a naive product, with plain and transposed operands.
    #[test]
    fn matmul_paths_agree_with_a_naive_product() {
        for (m, k, n) in [1usize, 3, 4, 5, 9, 33].into_iter().flat_map(|m| {
            [
                (37, 19),
                (37, 10),
                (10, 37),
                (300, 16),
                (5, 3),
                (17, 17),
                (300, 40),
                (7, 67),
            ]
            .map(|(k, n)| (m, k, n))
        }) {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
                    .collect();
                // Logical A[i][p], B[p][j]; stored transposed when asked.
                let (a_rs, a_cs) = if ta { (1, m as i64) } else { (k as i64, 1) };
                let (b_rs, b_cs) = if tb { (1, k as i64) } else { (n as i64, 1) };
                let at = |i: usize, p: usize| a[i * a_rs as usize + p * a_cs as usize];
                let bt = |p: usize, j: usize| b[p * b_rs as usize + j * b_cs as usize];
                let d = [
                    1, m as i64, k as i64, n as i64, a_rs, a_cs, b_rs, b_cs, 0, 0,
                ];
                for force in [None, Some(true), Some(false)] {
                    let mut c = vec![0.0f32; m * n];
                    super::force_packed(force);
                    unsafe {
                        super::nnc_matmul(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), d.as_ptr())
                    };
                    super::force_packed(None);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                            let got = c[i * n + j];
                            assert!(
                                (got - want).abs() < 1e-4,
                                "m={m} ta={ta} tb={tb} {force:?} ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
