//! Scaled dot-product attention without its scores: `softmax(q k^T / sqrt(d)) v` and its
//! adjoint, one query row at a time, so the `[Tq, Tk]` scores and probabilities of a batch
//! slice are never stored (memory O(T), not O(T^2)), and a causal row stops at its own
//! position instead of computing the masked half.
//!
//! A row's scores are 16-lane chunks over keys (`k` and `v` transposed once per slice into
//! rows padded to a whole chunk), summed over the head width in registers; the padding's
//! scores are `-inf`, so their probabilities are exactly 0 and every chunk is whole. The
//! backward recomputes each row's probabilities from its scores (FlashAttention's trade:
//! one more product instead of keeping the `[Tq, Tk]` probabilities). Written once over
//! 16-wide arrays (`LANES`), compiled for AVX-512 with fused multiply-adds where the CPU
//! has them, and for baseline x86-64 otherwise.

/// Lanes of one chunk of keys.
const LANES: usize = 16;

/// What one call computes: `desc` is `[kind, batch, tq, tk, d, causal]`, kind 0 the
/// forward (`ptrs` = q, k, v, o) and kind 1 the adjoint (`ptrs` = q, k, v, o, dy, out with
/// dq, dk and dv joined along axis -2).
///
/// # Safety
/// `desc` holds 6 values; `ptrs` holds 4 (kind 0) or 6 (kind 1) pointers to buffers of the
/// sizes the descriptor gives, the last one not overlapping the others.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_attention(desc: *const i64, ptrs: *const *mut f32) {
    let d = unsafe { std::slice::from_raw_parts(desc, 6) };
    let [kind, batch, tq, tk, dh, causal] = [d[0], d[1], d[2], d[3], d[4], d[5]];
    let (batch, tq, tk, dh) = (batch as usize, tq as usize, tk as usize, dh as usize);
    let p = unsafe { std::slice::from_raw_parts(ptrs, if kind == 0 { 4 } else { 6 }) };
    let a = Attention {
        tq,
        tk,
        d: dh,
        causal: causal != 0,
    };
    let sl = |k: usize, len: usize| unsafe { std::slice::from_raw_parts(p[k], len) };
    let (q, k, v) = (
        sl(0, batch * tq * dh),
        sl(1, batch * tk * dh),
        sl(2, batch * tk * dh),
    );
    if kind == 0 {
        let o = unsafe { std::slice::from_raw_parts_mut(p[3], batch * tq * dh) };
        a.forward(q, k, v, o);
    } else {
        let (o, dy) = (sl(3, batch * tq * dh), sl(4, batch * tq * dh));
        let out = unsafe { std::slice::from_raw_parts_mut(p[5], batch * (tq + 2 * tk) * dh) };
        a.backward(q, k, v, o, dy, out);
    }
}

/// The sizes of one batch slice.
#[derive(Clone, Copy)]
pub struct Attention {
    /// Queries.
    pub tq: usize,
    /// Keys (and values).
    pub tk: usize,
    /// The head width.
    pub d: usize,
    /// Query i sees keys j <= i only.
    pub causal: bool,
}

impl Attention {
    /// `o = softmax(q k^T / sqrt(d)) v` for every batch slice of q, k, v.
    pub fn forward(&self, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F and FMA.
            return unsafe { self.forward_avx512(q, k, v, o) };
        }
        self.forward_lanes::<false, 0>(q, k, v, o);
    }

    /// The adjoints dq, dk, dv (joined along axis -2 in `out`) of the forward pass whose
    /// result was `o`, for the adjoint `dy` of `o`.
    pub fn backward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        dy: &[f32],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F and FMA.
            return unsafe { self.backward_avx512(q, k, v, o, dy, out) };
        }
        self.backward_lanes::<false, 0>(q, k, v, o, dy, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn forward_avx512(&self, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) {
        // Common head widths get their own copy, with the loops over the width unrolled.
        match self.d {
            8 => self.forward_lanes::<true, 8>(q, k, v, o),
            16 => self.forward_lanes::<true, 16>(q, k, v, o),
            32 => self.forward_lanes::<true, 32>(q, k, v, o),
            64 => self.forward_lanes::<true, 64>(q, k, v, o),
            _ => self.forward_lanes::<true, 0>(q, k, v, o),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn backward_avx512(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        dy: &[f32],
        out: &mut [f32],
    ) {
        match self.d {
            8 => self.backward_lanes::<true, 8>(q, k, v, o, dy, out),
            16 => self.backward_lanes::<true, 16>(q, k, v, o, dy, out),
            32 => self.backward_lanes::<true, 32>(q, k, v, o, dy, out),
            64 => self.backward_lanes::<true, 64>(q, k, v, o, dy, out),
            _ => self.backward_lanes::<true, 0>(q, k, v, o, dy, out),
        }
    }

    /// The head width: `D` where it is known when compiled (not 0), else the run's.
    #[inline(always)]
    fn width<const D: usize>(&self) -> usize {
        if D == 0 { self.d } else { D }
    }

    /// Keys per transposed row: `tk` rounded up to whole chunks.
    fn padded(&self) -> usize {
        self.tk.div_ceil(LANES) * LANES
    }

    /// How many keys query `i` sees.
    fn seen(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.tk)
        } else {
            self.tk
        }
    }

    #[inline(always)]
    fn forward_lanes<const F: bool, const D: usize>(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
    ) {
        let (tq, tk, d) = (self.tq, self.tk, self.width::<D>());
        let tp = self.padded();
        let mut kt = vec![0.0f32; d * tp];
        let mut vt = vec![0.0f32; d * tp];
        let mut s = vec![0.0f32; tp];
        let batch = o.len().checked_div(tq * d).unwrap_or(0);
        for b in 0..batch {
            let qs = &q[b * tq * d..][..tq * d];
            transpose_into(&k[b * tk * d..][..tk * d], tk, d, tp, &mut kt);
            transpose_into(&v[b * tk * d..][..tk * d], tk, d, tp, &mut vt);
            let os = &mut o[b * tq * d..][..tq * d];
            for i in 0..tq {
                let n = self.seen(i);
                let np = n.div_ceil(LANES) * LANES;
                let inv = self.probabilities::<F, D>(&qs[i * d..][..d], &kt, n, &mut s[..np]);
                let oi = &mut os[i * d..][..d];
                project::<F, D>(&s[..np], &vt, tp, oi);
                oi.iter_mut().for_each(|x| *x *= inv);
            }
        }
    }

    /// Query row `qi`'s probabilities over its first `n` keys into `s` (a whole number of
    /// chunks; beyond `n`, zeros), unnormalized; returns 1 / their sum.
    #[inline(always)]
    fn probabilities<const F: bool, const D: usize>(
        &self,
        qi: &[f32],
        kt: &[f32],
        n: usize,
        s: &mut [f32],
    ) -> f32 {
        let tp = self.padded();
        let scale = 1.0 / (self.width::<D>() as f32).sqrt();
        combine::<F>(qi, kt, tp, s);
        for (j, x) in s.iter_mut().enumerate() {
            *x = if j < n { *x * scale } else { f32::NEG_INFINITY };
        }
        let m = row_max(s);
        let mut sum = [0.0f32; LANES];
        for ch in s.chunks_exact_mut(LANES) {
            for l in 0..LANES {
                ch[l] = exp_nonpositive::<F>(ch[l] - m);
                sum[l] += ch[l];
            }
        }
        1.0 / sum.iter().sum::<f32>()
    }

    #[inline(always)]
    fn backward_lanes<const F: bool, const D: usize>(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        dy: &[f32],
        out: &mut [f32],
    ) {
        let (tq, tk, d) = (self.tq, self.tk, self.width::<D>());
        let tp = self.padded();
        let scale = 1.0 / (d as f32).sqrt();
        let mut kt = vec![0.0f32; d * tp];
        let mut vt = vec![0.0f32; d * tp];
        // A block of query rows: their probabilities and score adjoints, and copies of
        // their q and dy rows (zero past the last query), so that each key's dk and dv
        // rows are read and written once per block.
        let mut s = vec![0.0f32; BLOCK * tp];
        let mut ds = vec![0.0f32; BLOCK * tp];
        let mut qb = vec![0.0f32; BLOCK * d];
        let mut dyb = vec![0.0f32; BLOCK * d];
        let per = (tq + 2 * tk) * d;
        let batch = out.len().checked_div(per).unwrap_or(0);
        for b in 0..batch {
            let (qs, os, dys) = (
                &q[b * tq * d..][..tq * d],
                &o[b * tq * d..][..tq * d],
                &dy[b * tq * d..][..tq * d],
            );
            transpose_into(&k[b * tk * d..][..tk * d], tk, d, tp, &mut kt);
            transpose_into(&v[b * tk * d..][..tk * d], tk, d, tp, &mut vt);
            let (dq, rest) = out[b * per..][..per].split_at_mut(tq * d);
            let (dk, dv) = rest.split_at_mut(tk * d);
            dk.fill(0.0);
            dv.fill(0.0);
            for i0 in (0..tq).step_by(BLOCK) {
                let rows = BLOCK.min(tq - i0);
                // Keys the block's last row sees (rows see more keys as i grows).
                let n_all = self.seen(i0 + rows - 1);
                let np = n_all.div_ceil(LANES) * LANES;
                qb.fill(0.0);
                dyb.fill(0.0);
                qb[..rows * d].copy_from_slice(&qs[i0 * d..][..rows * d]);
                dyb[..rows * d].copy_from_slice(&dys[i0 * d..][..rows * d]);
                for r in 0..BLOCK {
                    let (sr, dsr) = (&mut s[r * tp..][..np], &mut ds[r * tp..][..np]);
                    if r >= rows {
                        sr.fill(0.0);
                        dsr.fill(0.0);
                        continue;
                    }
                    let i = i0 + r;
                    let (qi, dyi) = (&qb[r * d..][..d], &dyb[r * d..][..d]);
                    let inv = self.probabilities::<F, D>(qi, &kt, self.seen(i), sr);
                    sr.iter_mut().for_each(|p| *p *= inv);
                    // D = dy_i . o_i = sum_j p_j (dy_i . v_j).
                    let big_d = dyi
                        .iter()
                        .zip(&os[i * d..][..d])
                        .map(|(a, b)| a * b)
                        .sum::<f32>();
                    // ds_j = p_j (dy_i . v_j - D), times the scale.
                    combine::<F>(dyi, &vt, tp, dsr);
                    for (x, &p) in dsr.iter_mut().zip(sr.iter()) {
                        *x = scale * p * (*x - big_d);
                    }
                    project::<F, D>(dsr, &kt, tp, &mut dq[i * d..][..d]);
                }
                // dk_j += sum_r ds_rj q_r and dv_j += sum_r p_rj dy_r, in registers
                // (slices of at most 16 columns) and stored once per block.
                #[cfg(target_arch = "x86_64")]
                if F {
                    // SAFETY: as in `combine`; the rows j < n_all <= tk of dk and dv exist.
                    assert!(n_all <= tk && n_all <= tp);
                    unsafe {
                        avx512::accumulate(&ds, &qb, tp, d, n_all, dk);
                        avx512::accumulate(&s, &dyb, tp, d, n_all, dv);
                    }
                    continue;
                }
                for c0 in (0..d).step_by(LANES) {
                    let w = LANES.min(d - c0);
                    for j in 0..n_all {
                        let mut ak = [0.0f32; LANES];
                        let mut av = [0.0f32; LANES];
                        for r in 0..BLOCK {
                            let (a, p) = (ds[r * tp + j], s[r * tp + j]);
                            let (qr, dyr) = (&qb[r * d + c0..][..w], &dyb[r * d + c0..][..w]);
                            for c in 0..w {
                                ak[c] = madd::<F>(a, qr[c], ak[c]);
                                av[c] = madd::<F>(p, dyr[c], av[c]);
                            }
                        }
                        let (dkj, dvj) = (&mut dk[j * d + c0..][..w], &mut dv[j * d + c0..][..w]);
                        for c in 0..w {
                            dkj[c] += ak[c];
                            dvj[c] += av[c];
                        }
                    }
                }
            }
        }
    }
}

/// Query rows per block of the backward.
const BLOCK: usize = 8;

/// The three inner loops on AVX-512 registers: LLVM's vectorizer keeps the lanes code's
/// accumulators of `project` and the block sums in memory, one float at a time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, LANES};
    use std::arch::x86_64::*;

    /// `out[j] = sum_c x[c] mt[c * tp + j]`, four registers of `j` at a time.
    ///
    /// # Safety
    /// AVX-512F; `out.len()` a multiple of 16; `mt` holds `(x.len() - 1) * tp + out.len()`.
    #[inline(always)]
    pub unsafe fn combine(x: &[f32], mt: &[f32], tp: usize, out: &mut [f32]) {
        let (m, o, np) = (mt.as_ptr(), out.as_mut_ptr(), out.len());
        let mut j = 0;
        unsafe {
            while j + 4 * LANES <= np {
                let mut a = [_mm512_setzero_ps(); 4];
                for (c, &xc) in x.iter().enumerate() {
                    let b = _mm512_set1_ps(xc);
                    let r = m.add(c * tp + j);
                    for (g, ag) in a.iter_mut().enumerate() {
                        *ag = _mm512_fmadd_ps(b, _mm512_loadu_ps(r.add(g * LANES)), *ag);
                    }
                }
                for (g, ag) in a.iter().enumerate() {
                    _mm512_storeu_ps(o.add(j + g * LANES), *ag);
                }
                j += 4 * LANES;
            }
            while j < np {
                let mut a = _mm512_setzero_ps();
                for (c, &xc) in x.iter().enumerate() {
                    a = _mm512_fmadd_ps(_mm512_set1_ps(xc), _mm512_loadu_ps(m.add(c * tp + j)), a);
                }
                _mm512_storeu_ps(o.add(j), a);
                j += LANES;
            }
        }
    }

    /// `out[c] = sum_j s[j] mt[c * tp + j]` for every `c < out.len()`, eight rows at a time.
    ///
    /// # Safety
    /// AVX-512F; `s.len()` a multiple of 16; `mt` holds `(out.len() - 1) * tp + s.len()`.
    #[inline(always)]
    pub unsafe fn project(s: &[f32], mt: &[f32], tp: usize, out: &mut [f32]) {
        let (m, sp, np, d) = (mt.as_ptr(), s.as_ptr(), s.len(), out.len());
        let mut c0 = 0;
        unsafe {
            while c0 + 8 <= d {
                let mut a = [_mm512_setzero_ps(); 8];
                for j in (0..np).step_by(LANES) {
                    let sv = _mm512_loadu_ps(sp.add(j));
                    for (c, ac) in a.iter_mut().enumerate() {
                        *ac = _mm512_fmadd_ps(sv, _mm512_loadu_ps(m.add((c0 + c) * tp + j)), *ac);
                    }
                }
                for (c, ac) in a.iter().enumerate() {
                    out[c0 + c] = _mm512_reduce_add_ps(*ac);
                }
                c0 += 8;
            }
            while c0 < d {
                let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut j = 0;
                while j + 2 * LANES <= np {
                    let r = m.add(c0 * tp + j);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(sp.add(j)), _mm512_loadu_ps(r), a0);
                    a1 = _mm512_fmadd_ps(
                        _mm512_loadu_ps(sp.add(j + LANES)),
                        _mm512_loadu_ps(r.add(LANES)),
                        a1,
                    );
                    j += 2 * LANES;
                }
                if j < np {
                    let r = m.add(c0 * tp + j);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(sp.add(j)), _mm512_loadu_ps(r), a0);
                }
                out[c0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
                c0 += 1;
            }
        }
    }

    /// `acc[j, :] += sum_r w[r * tp + j] x[r, :]` for `j < n`: the block's rows `x`
    /// ([BLOCK, d]) in registers, sixteen columns at a time (the last ones masked).
    ///
    /// # Safety
    /// AVX-512F; `w` holds `BLOCK` rows of `tp >= n`, `x` holds `BLOCK * d`, `acc` `n * d`.
    #[inline(always)]
    pub unsafe fn accumulate(w: &[f32], x: &[f32], tp: usize, d: usize, n: usize, acc: &mut [f32]) {
        assert!(w.len() >= BLOCK * tp && x.len() >= BLOCK * d && acc.len() >= n * d);
        let (wp, xp, ap) = (w.as_ptr(), x.as_ptr(), acc.as_mut_ptr());
        unsafe {
            for c0 in (0..d).step_by(LANES) {
                let k: __mmask16 = if d - c0 >= LANES {
                    0xFFFF
                } else {
                    (1u16 << (d - c0)) - 1
                };
                let mut rows = [_mm512_setzero_ps(); BLOCK];
                for (r, xr) in rows.iter_mut().enumerate() {
                    *xr = _mm512_maskz_loadu_ps(k, xp.add(r * d + c0));
                }
                for j in 0..n {
                    let at = ap.add(j * d + c0);
                    let mut a = _mm512_maskz_loadu_ps(k, at);
                    for (r, xr) in rows.iter().enumerate() {
                        a = _mm512_fmadd_ps(_mm512_set1_ps(*wp.add(r * tp + j)), *xr, a);
                    }
                    _mm512_mask_storeu_ps(at, k, a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    })
}

/// `a * b + c`, fused where the target has it (`F`), else two roundings.
#[inline(always)]
fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// `x` [rows, cols] into `xt` [cols, stride], the columns past `rows` zero.
#[inline(always)]
fn transpose_into(x: &[f32], rows: usize, cols: usize, stride: usize, xt: &mut [f32]) {
    for c in 0..cols {
        let out = &mut xt[c * stride..][..stride];
        for (j, o) in out[..rows].iter_mut().enumerate() {
            *o = x[j * cols + c];
        }
        out[rows..].fill(0.0);
    }
}

/// `out[j] = sum_c x[c] mt[c][j]` over whole chunks of `out` (`mt` holds rows of `tp`):
/// four chunks at a time, so four sums are under way at once.
#[inline(always)]
fn combine<const F: bool>(x: &[f32], mt: &[f32], tp: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if F {
        // SAFETY: F is only set inside functions compiled for AVX-512F; `mt` holds every
        // row `c < x.len()` up to `out.len()` (checked here).
        assert!(x.is_empty() || (x.len() - 1) * tp + out.len() <= mt.len());
        return unsafe { avx512::combine(x, mt, tp, out) };
    }
    const G: usize = 4 * LANES;
    let whole = out.len() / G * G;
    let (head, tail) = out.split_at_mut(whole);
    for (g, o) in head.chunks_exact_mut(G).enumerate() {
        let mut acc = [0.0f32; G];
        for (c, &xc) in x.iter().enumerate() {
            let row = &mt[c * tp + g * G..][..G];
            for l in 0..G {
                acc[l] = madd::<F>(xc, row[l], acc[l]);
            }
        }
        o.copy_from_slice(&acc);
    }
    for (h, o) in tail.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [0.0f32; LANES];
        for (c, &xc) in x.iter().enumerate() {
            let row = &mt[c * tp + whole + h * LANES..][..LANES];
            for l in 0..LANES {
                acc[l] = madd::<F>(xc, row[l], acc[l]);
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// `out[c] = sum_j s[j] mt[c][j]` over whole chunks of `s`, for every row `c` of `mt`
/// (rows of `tp`): sixteen rows at a time, one register of partial sums each, then the
/// rows left one at a time.
#[inline(always)]
fn project<const F: bool, const D: usize>(s: &[f32], mt: &[f32], tp: usize, out: &mut [f32]) {
    let d = if D == 0 { out.len() } else { D };
    #[cfg(target_arch = "x86_64")]
    if F {
        // SAFETY: as in `combine`.
        assert!(d == 0 || (d - 1) * tp + s.len() <= mt.len());
        return unsafe { avx512::project(s, mt, tp, &mut out[..d]) };
    }
    let full = d / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; LANES];
        for (ch, sc) in s.chunks_exact(LANES).enumerate() {
            for (c, a) in acc.iter_mut().enumerate() {
                let row = &mt[(c0 + c) * tp + ch * LANES..][..LANES];
                for l in 0..LANES {
                    a[l] = madd::<F>(sc[l], row[l], a[l]);
                }
            }
        }
        for (o, a) in out[c0..c0 + LANES].iter_mut().zip(&acc) {
            *o = a.iter().sum();
        }
    }
    for c in full..d {
        out[c] = dot::<F>(s, &mt[c * tp..][..s.len()]);
    }
}

/// The dot product of two whole numbers of chunks, in sixteen partial sums.
#[inline(always)]
fn dot<const F: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = madd::<F>(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum()
}

/// The maximum of whole chunks, NaN if any element is.
#[inline(always)]
fn row_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    for ch in xs.chunks_exact(LANES) {
        for l in 0..LANES {
            let v = ch[l];
            acc[l] = if v > acc[l] || v.is_nan() { v } else { acc[l] };
        }
    }
    acc.iter().fold(
        f32::NEG_INFINITY,
        |m, &v| if v > m || v.is_nan() { v } else { m },
    )
}

/// `e^x` for `x <= 0` (Cephes' expf: `x = n ln 2 + r`, a degree-5 polynomial in `r`, then
/// `2^n` in the exponent bits; within 2 ulp); exactly 0 below -87.3 (and for `-inf`), NaN
/// for NaN. Only integer and float arithmetic, so it vectorizes on any target.
#[inline(always)]
fn exp_nonpositive<const F: bool>(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer, held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let small = x < -87.3;
    let t = madd::<F>(x, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = madd::<F>(n, -0.693_359_4, x);
    let r = madd::<F>(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = madd::<F>(p, r, c);
    }
    let y = madd::<F>(p, r * r, r) + 1.0;
    let scale = f32::from_bits((bits.wrapping_add(127) << 23) as u32);
    if small { 0.0 } else { y * scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_on_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive::<false>(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.001_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive::<false>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive::<false>(-100.0), 0.0);
        assert!(exp_nonpositive::<false>(f32::NAN).is_nan());
        assert_eq!(exp_nonpositive::<false>(0.0), 1.0);
    }
}

#[cfg(test)]
mod oracle {
    use super::*;

    /// Softmax attention and its adjoints in f64, scores stored: the textbook definition.
    fn reference(
        a: &Attention,
        batch: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let (tq, tk, d) = (a.tq, a.tk, a.d);
        let scale = 1.0 / (d as f64).sqrt();
        let mut o = vec![0.0; batch * tq * d];
        let mut out = vec![0.0; batch * (tq + 2 * tk) * d];
        for b in 0..batch {
            let (qb, kb, vb) = (&q[b * tq * d..], &k[b * tk * d..], &v[b * tk * d..]);
            let grads = &mut out[b * (tq + 2 * tk) * d..(b + 1) * (tq + 2 * tk) * d];
            for i in 0..tq {
                let n = a.seen(i);
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d)
                            .map(|c| qb[i * d + c] as f64 * kb[j * d + c] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / z).collect();
                let g = &dy[(b * tq + i) * d..(b * tq + i + 1) * d];
                for c in 0..d {
                    o[(b * tq + i) * d + c] = (0..n).map(|j| p[j] * vb[j * d + c] as f64).sum();
                }
                // dp_j = dy . v_j; ds_j = p_j (dp_j - sum_l p_l dp_l).
                let dp: Vec<f64> = (0..n)
                    .map(|j| (0..d).map(|c| g[c] as f64 * vb[j * d + c] as f64).sum())
                    .collect();
                let mean: f64 = (0..n).map(|j| p[j] * dp[j]).sum();
                for j in 0..n {
                    let ds = p[j] * (dp[j] - mean) * scale;
                    for c in 0..d {
                        grads[i * d + c] += ds * kb[j * d + c] as f64;
                        grads[(tq + j) * d + c] += ds * qb[i * d + c] as f64;
                        grads[(tq + tk + j) * d + c] += p[j] * g[c] as f64;
                    }
                }
            }
        }
        (o, out)
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: {g} against {w}"
            );
        }
    }

    /// Both builds of the kernel (the portable lanes and, where the CPU has it, AVX-512 with
    /// the head widths it specialises) against the reference, over odd and even shapes,
    /// causal or not, queries fewer or more than keys.
    #[test]
    fn every_build_matches_the_reference() {
        let shapes = [
            (1, 1, 1, 1),
            (2, 5, 5, 3),
            (1, 17, 17, 8),
            (3, 7, 19, 16),
            (1, 33, 9, 5),
            (2, 40, 40, 64),
            (1, 20, 37, 32),
        ];
        for (n, &(batch, tq, tk, d)) in shapes.iter().enumerate() {
            for causal in [false, true] {
                let a = Attention { tq, tk, d, causal };
                let q = data(batch * tq * d, 3 * n as u32 + 1);
                let k = data(batch * tk * d, 3 * n as u32 + 2);
                let v = data(batch * tk * d, 3 * n as u32 + 3);
                let dy = data(batch * tq * d, 3 * n as u32 + 4);
                let (o_want, grads_want) = reference(&a, batch, &q, &k, &v, &dy);
                let what = format!("batch {batch} tq {tq} tk {tk} d {d} causal {causal}");
                let mut o = vec![0.0; o_want.len()];
                let mut grads = vec![0.0; grads_want.len()];
                a.forward_lanes::<false, 0>(&q, &k, &v, &mut o);
                close(&o, &o_want, &format!("portable forward, {what}"));
                a.backward_lanes::<false, 0>(&q, &k, &v, &o, &dy, &mut grads);
                close(&grads, &grads_want, &format!("portable adjoint, {what}"));
                o.fill(f32::NAN);
                grads.fill(f32::NAN);
                a.forward(&q, &k, &v, &mut o);
                close(&o, &o_want, &format!("forward, {what}"));
                a.backward(&q, &k, &v, &o, &dy, &mut grads);
                close(&grads, &grads_want, &format!("adjoint, {what}"));
            }
        }
    }
}
