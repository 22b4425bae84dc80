//! nnc's own matrix product, `c = epilogue(a @ b)`, for one thread with AVX-512 or AVX2:
//! the operands are packed into panels (so a transposed operand costs only its packing),
//! an 8 x 32 register tile accumulates in sixteen zmm registers (AVX2: two 6 x 16 tiles
//! per panel in twelve ymm registers), and the epilogue (a scale, a bias per column, ReLU,
//! a mask read from another tensor) runs on the tile in registers before its one store.
//!
//! The blocking is GotoBLAS's: a `KC`-deep, `NC`-wide slice of `b` is packed once into
//! 32-column panels (it stays in L2), except where `b` is row-major and the slice is whole
//! panels: then its rows are read in place (the copy cost more than it saved: without it
//! `[128, 256] x [256, 256]` went 0.98x -> 1.05x gemm's rate, `[32, 64] x [64, 256]`
//! 0.88x -> 1.10x, `[64, 8192]^T x [8192, 256]` 0.94x -> 0.95-1.04x, one thread, same
//! runs). `a` is read in place, eight rows at a time, each row's values broadcast (an `a`
//! panel stays in L1 while the panels of `b` pass it); packing a transposed `a` measured
//! 0.91-1.04x of reading it in place, so it is not done. Shapes are known when the JIT
//! compiles, so `nnc_matmul` picks this kernel or gemm per product (see `use_packed`).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the register tile.
pub const MR: usize = 8;
/// Columns of the register tile (two zmm registers).
pub const NR: usize = 32;
/// Depth of one packed slice: an `a` panel (8 KB) and a `b` panel (32 KB) fit in L1.
const KC: usize = 256;
/// Rows of `a` taken at a time.
const MC: usize = 128;
/// Rows of the AVX2 register tile, and of `a` taken at a time there (a multiple of it).
const MR2: usize = 6;
const MC2: usize = 120;
/// Columns of `b` packed at a time: a packed slice of 256 x 256 (256 KB) stays in L2.
/// Without this bound `[16, 2048] x [2048, 1024]` ran at 0.7x gemm's rate.
const NC: usize = 256;

/// What runs on a finished tile before it is stored, in this order: `* scale`,
/// `+ bias[j]`, `max(0, .)`, `* (mask[i, j] > 0)`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    pub scale: f32,
    /// One value per column of `c`.
    pub bias: *const f32,
    pub relu: bool,
    /// A row-major `[m, n]` tensor: where it is not positive, `c` is zero (a ReLU's
    /// derivative applied to a product in the backward pass).
    pub mask: *const f32,
}

impl Epilogue {
    /// The plain product.
    pub const NONE: Epilogue = Epilogue {
        scale: 1.0,
        bias: std::ptr::null(),
        relu: false,
        mask: std::ptr::null(),
    };

    fn is_none(&self) -> bool {
        self.scale == 1.0 && self.bias.is_null() && !self.relu && self.mask.is_null()
    }
}

/// An operand read through strides (elements): `x[i, j] = ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

thread_local! {
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The constants of the structured loops running on this thread (innermost last), and
    /// the `b` operands packed from them: a loop's constants do not change while it runs,
    /// so a recurrent weight is packed once per loop, not once per step.
    static LOOPS: RefCell<Vec<LoopFrame>> = const { RefCell::new(Vec::new()) };
}

/// What identifies a packed `b`: its pointer, strides, depth and width.
type PackKey = (usize, usize, usize, usize, usize);

struct LoopFrame {
    consts: Vec<*const f32>,
    /// `b` packed whole, every slice in the kernel's order.
    packed: Vec<(PackKey, Vec<f32>)>,
}

/// Runs `f` as the body of a structured loop whose constants start at `consts`: products
/// reading one of them as `b` pack it once for the whole of `f`.
pub fn with_loop_constants<R>(consts: &[*const f32], f: impl FnOnce() -> R) -> R {
    LOOPS.with(|l| {
        l.borrow_mut().push(LoopFrame {
            consts: consts.to_vec(),
            packed: Vec::new(),
        })
    });
    let r = f();
    LOOPS.with(|l| l.borrow_mut().pop());
    r
}

/// Whether `p` is a constant of a structured loop running on this thread (a `b` read from
/// it is packed once for the loop).
pub fn is_loop_constant(p: *const f32) -> bool {
    LOOPS.with(|l| l.borrow().iter().any(|f| f.consts.contains(&p)))
}

/// `b` packed whole (slices of depth `kc_even` and width `NC`, in the kernel's order) when
/// it is a running loop's constant, packed now or before in this loop.
unsafe fn loop_packed(b: Strided, k: usize, n: usize, kc_even: usize) -> Option<*const f32> {
    LOOPS.with(|l| {
        let mut frames = l.borrow_mut();
        let frame = frames
            .iter_mut()
            .rev()
            .find(|f| f.consts.contains(&b.ptr))?;
        let key = (b.ptr as usize, b.rs, b.cs, k, n);
        if let Some((_, v)) = frame.packed.iter().find(|(k2, _)| *k2 == key) {
            return Some(v.as_ptr());
        }
        let mut all = Vec::new();
        for jc in (0..n).step_by(NC) {
            let nc = (n - jc).min(NC);
            let b_block = Strided {
                ptr: unsafe { b.ptr.add(jc * b.cs) },
                ..b
            };
            let mut pc = 0;
            while pc < k {
                let kc = (k - pc).min(kc_even);
                let at = all.len();
                all.resize(at + kc * nc.next_multiple_of(NR), 0.0);
                unsafe { pack_b(b_block, pc, kc, nc, &mut all[at..]) };
                pc += kc;
            }
        }
        let ptr = all.as_ptr();
        frame.packed.push((key, all));
        Some(ptr)
    })
}

/// The instruction sets the packed kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// An 8 x 32 tile in sixteen zmm registers.
    Avx512,
    /// A 6 x 16 tile in twelve ymm registers, twice per 32-column panel.
    Avx2,
}

thread_local! {
    /// Tests run the AVX2 kernel on an AVX-512 host.
    static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the packed kernel's AVX2 tile even where AVX-512 exists (tests).
pub fn with_avx2_tile<R>(f: impl FnOnce() -> R) -> R {
    crate::scoped(&FORCE_AVX2, true, f)
}

fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && !FORCE_AVX2.with(|c| c.get()) {
            Some(Isa::Avx512)
        } else if avx2 {
            Some(Isa::Avx2)
        } else {
            None
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether this CPU runs the packed kernel (AVX-512F, or AVX2 with FMA).
pub fn available() -> bool {
    isa().is_some()
}

/// Whether this CPU runs `few_rows` (AVX-512F).
pub fn has_avx512() -> bool {
    isa() == Some(Isa::Avx512)
}

/// `c[m, n] = epilogue(a[m, k] @ b[k, n])`, `c` row-major with row stride `n`.
///
/// # Safety
/// `available()` is true; the operands address buffers of the sizes their strides describe;
/// a bias has `n` values and a mask `m * n`.
pub unsafe fn matmul(
    a: Strided,
    b: Strided,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    ep: &Epilogue,
) {
    #[cfg(target_arch = "x86_64")]
    let (isa, mr, mc_max) = match isa() {
        Some(Isa::Avx512) => (Isa::Avx512, MR, MC),
        _ => (Isa::Avx2, MR2, MC2),
    };
    #[cfg(target_arch = "x86_64")]
    PACKED.with(|packed| {
        let pb = &mut *packed.borrow_mut();
        let kc_max = k.clamp(1, KC);
        pb.resize(kc_max * n.min(NC).next_multiple_of(NR), 0.0);
        if k == 0 {
            // No products to sum: the epilogue of zero.
            for i in 0..m {
                for j in 0..n {
                    unsafe { *c.add(i * n + j) = scalar_epilogue(0.0, i, j, n, ep) };
                }
            }
            return;
        }
        // Slices of equal depth (784 = 4 x 196, not 3 x 256 + 16).
        let kc_even = k.div_ceil(k.div_ceil(KC));
        let whole = unsafe { loop_packed(b, k, n, kc_even) };
        let mut offset = 0;
        for jc in (0..n).step_by(NC) {
            let nc = (n - jc).min(NC);
            let b_block = Strided {
                ptr: unsafe { b.ptr.add(jc * b.cs) },
                ..b
            };
            let mut pc = 0;
            while pc < k {
                let kc = (k - pc).min(kc_even);
                let last = pc + kc == k;
                // A row-major `b` whose block is whole panels is read in place.
                let in_place_b = whole.is_none() && b.cs == 1 && nc.is_multiple_of(NR);
                let (slice, ldb, panel_step) = match whole {
                    Some(all) => (unsafe { all.add(offset) }, NR, kc * NR),
                    None if in_place_b => (unsafe { b_block.ptr.add(pc * b.rs) }, b.rs, NR),
                    None => {
                        unsafe { pack_b(b_block, pc, kc, nc, pb) };
                        (pb.as_ptr(), NR, kc * NR)
                    }
                };
                offset += kc * nc.next_multiple_of(NR);
                let mut ic = 0;
                while ic < m {
                    let mc = (m - ic).min(mc_max);
                    for jp in 0..nc.div_ceil(NR) {
                        let j0 = jc + jp * NR;
                        let bp = unsafe { slice.add(jp * panel_step) };
                        for ip in 0..mc.div_ceil(mr) {
                            let i0 = ic + ip * mr;
                            let ap = Strided {
                                ptr: unsafe { a.ptr.add(i0 * a.rs + pc * a.cs) },
                                ..a
                            };
                            let tile = Tile {
                                c,
                                ldc: n,
                                i0,
                                j0,
                                rows: (ic + mc - i0).min(mr),
                                cols: (jc + nc - j0).min(NR),
                            };
                            let ep = if last { Some(ep) } else { None };
                            match isa {
                                Isa::Avx512 => unsafe {
                                    kernel(kc, ap, bp, ldb, &tile, pc > 0, ep)
                                },
                                Isa::Avx2 => unsafe {
                                    kernel_avx2(kc, ap, bp, ldb, &tile, pc > 0, ep)
                                },
                            }
                        }
                    }
                    ic += mc;
                }
                pc += kc;
            }
        }
    });
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, m, k, n, ep);
        unreachable!("the packed kernel is only called where `available()`");
    }
}

/// The epilogue on one element (`relu` as the op table's `max(v, 0)`: `v` unless `v < 0`,
/// so a NaN stays NaN).
///
/// # Safety
/// The epilogue's bias holds `j + 1` floats and its mask `i * n + j + 1`.
unsafe fn scalar_epilogue(mut v: f32, i: usize, j: usize, n: usize, ep: &Epilogue) -> f32 {
    v *= ep.scale;
    if !ep.bias.is_null() {
        v += unsafe { *ep.bias.add(j) };
    }
    if ep.relu && v < 0.0 {
        v = 0.0;
    }
    if !ep.mask.is_null() && unsafe { *ep.mask.add(i * n + j) } <= 0.0 {
        v = 0.0;
    }
    v
}

/// Where a register tile goes in `c`: its first row and column and how many of its
/// `MR x NR` entries are inside `c`.
struct Tile {
    c: *mut f32,
    ldc: usize,
    i0: usize,
    j0: usize,
    rows: usize,
    cols: usize,
}

/// `b[pc..pc + kc, ..]` as 32-column panels, each `kc` rows of 32 (zero-padded past `n`).
unsafe fn pack_b(b: Strided, pc: usize, kc: usize, n: usize, out: &mut [f32]) {
    for jp in 0..n.div_ceil(NR) {
        let j0 = jp * NR;
        let cols = (n - j0).min(NR);
        let panel = &mut out[jp * kc * NR..(jp + 1) * kc * NR];
        if b.cs == 1 {
            for p in 0..kc {
                let src =
                    unsafe { std::slice::from_raw_parts(b.ptr.add((pc + p) * b.rs + j0), cols) };
                let dst = &mut panel[p * NR..p * NR + NR];
                dst[..cols].copy_from_slice(src);
                dst[cols..].fill(0.0);
            }
        } else if b.rs == 1 && cols == NR && NR * b.cs < i32::MAX as usize && gathers() {
            // A transposed `b` (each column contiguous): sixteen columns' elements at one
            // depth gathered into one vector.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                gather_panel(b, pc, kc, j0, panel)
            };
        } else {
            if cols < NR {
                panel.fill(0.0);
            }
            for j in 0..cols {
                let col = unsafe { b.ptr.add((j0 + j) * b.cs + pc * b.rs) };
                for p in 0..kc {
                    panel[p * NR + j] = unsafe { *col.add(p * b.rs) };
                }
            }
        }
    }
}

fn gathers() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Panel `j0..j0 + 32` of a `b` stored by columns (`b.rs == 1`), depths `pc..pc + kc`.
///
/// # Safety
/// AVX-512F; the 32 columns hold `pc + kc` elements each; `panel` holds `kc * 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_panel(b: Strided, pc: usize, kc: usize, j0: usize, panel: &mut [f32]) {
    let cs = b.cs as i32;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(cs),
    );
    let base = unsafe { b.ptr.add(j0 * b.cs + pc) };
    let out = panel.as_mut_ptr();
    for p in 0..kc {
        unsafe {
            let lo = _mm512_i32gather_ps::<4>(idx, base.add(p));
            let hi = _mm512_i32gather_ps::<4>(idx, base.add(16 * b.cs + p));
            _mm512_storeu_ps(out.add(p * NR), lo);
            _mm512_storeu_ps(out.add(p * NR + 16), hi);
        }
    }
}

/// One `MR x NR` tile over a packed slice of depth `kc`: the sum added to what `c` holds
/// when `accumulate`, and the epilogue applied when this is the last slice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel(
    kc: usize,
    a: Strided,
    b: *const f32,
    ldb: usize,
    t: &Tile,
    accumulate: bool,
    ep: Option<&Epilogue>,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // The tile's rows of `a`, read in place (a row past `c`'s last repeats the first; its
    // sums are not stored).
    let rows: [*const f32; MR] =
        std::array::from_fn(|r| unsafe { a.ptr.add(if r < t.rows { r * a.rs } else { 0 }) });
    for p in 0..kc {
        let (b0, b1) = unsafe {
            (
                _mm512_loadu_ps(b.add(p * ldb)),
                _mm512_loadu_ps(b.add(p * ldb + 16)),
            )
        };
        let off = p * a.cs;
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(unsafe { *rows[r].add(off) });
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    // Lanes of each half inside `c`.
    let lanes = |h: usize| -> __mmask16 {
        let cols = t.cols.saturating_sub(16 * h).min(16);
        ((1u32 << cols) - 1) as u16
    };
    let masks = [lanes(0), lanes(1)];
    let zero = _mm512_setzero_ps();
    let ep = ep.filter(|e| !e.is_none());
    let (scale, bias) = match ep {
        Some(e) => {
            let bias = if e.bias.is_null() {
                [zero; 2]
            } else {
                let bp = unsafe { e.bias.add(t.j0) };
                unsafe {
                    [
                        _mm512_maskz_loadu_ps(masks[0], bp),
                        _mm512_maskz_loadu_ps(masks[1], bp.add(16)),
                    ]
                }
            };
            (_mm512_set1_ps(e.scale), bias)
        }
        None => (zero, [zero; 2]),
    };
    for (r, acc) in acc.iter().enumerate().take(t.rows) {
        let row = t.i0 + r;
        let cp = unsafe { t.c.add(row * t.ldc + t.j0) };
        for h in 0..2 {
            let m = masks[h];
            if m == 0 {
                continue;
            }
            let ch = unsafe { cp.add(16 * h) };
            let mut v = acc[h];
            if accumulate {
                v = _mm512_add_ps(v, unsafe { _mm512_maskz_loadu_ps(m, ch) });
            }
            if let Some(e) = ep {
                v = _mm512_fmadd_ps(v, scale, bias[h]);
                if e.relu {
                    // `zero > v ? zero : v`: a NaN stays NaN, -0 stays -0 (the op
                    // table's `max(v, 0)`).
                    v = _mm512_max_ps(zero, v);
                }
                if !e.mask.is_null() {
                    let mp = unsafe { e.mask.add(row * t.ldc + t.j0 + 16 * h) };
                    let mv = unsafe { _mm512_maskz_loadu_ps(m, mp) };
                    let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(mv, zero);
                    v = _mm512_maskz_mov_ps(keep, v);
                }
            }
            unsafe { _mm512_mask_storeu_ps(ch, m, v) };
        }
    }
}

/// The AVX2 tile: `kernel`'s contract, computed as two 6 x 16 halves of the 32-column
/// panel (twelve ymm accumulators each; AVX2 has sixteen registers), the epilogue the
/// same ops in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(
    kc: usize,
    a: Strided,
    b: *const f32,
    ldb: usize,
    t: &Tile,
    accumulate: bool,
    ep: Option<&Epilogue>,
) {
    let rows: [*const f32; MR2] =
        std::array::from_fn(|r| unsafe { a.ptr.add(if r < t.rows { r * a.rs } else { 0 }) });
    let ep = ep.filter(|e| !e.is_none());
    let zero = _mm256_setzero_ps();
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for half in 0..2 {
        let cols = t.cols.saturating_sub(16 * half).min(16);
        if cols == 0 {
            break;
        }
        let bh = unsafe { b.add(16 * half) };
        let mut acc = [[zero; 2]; MR2];
        for p in 0..kc {
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(bh.add(p * ldb)),
                    _mm256_loadu_ps(bh.add(p * ldb + 8)),
                )
            };
            let off = p * a.cs;
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(unsafe { *rows[r].add(off) });
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        // Lanes of each quarter inside `c`, as masks for maskload/maskstore.
        let masks: [__m256i; 2] = std::array::from_fn(|q| {
            let n = cols.saturating_sub(8 * q).min(8) as i32;
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota)
        });
        let j0 = t.j0 + 16 * half;
        let (scale, bias) = match ep {
            Some(e) => {
                let bias = if e.bias.is_null() {
                    [zero; 2]
                } else {
                    let bp = unsafe { e.bias.add(j0) };
                    unsafe {
                        [
                            _mm256_maskload_ps(bp, masks[0]),
                            _mm256_maskload_ps(bp.add(8), masks[1]),
                        ]
                    }
                };
                (_mm256_set1_ps(e.scale), bias)
            }
            None => (zero, [zero; 2]),
        };
        for (r, acc) in acc.iter().enumerate().take(t.rows) {
            let row = t.i0 + r;
            let cp = unsafe { t.c.add(row * t.ldc + j0) };
            for q in 0..2 {
                if 8 * q >= cols {
                    continue;
                }
                let m = masks[q];
                let cq = unsafe { cp.add(8 * q) };
                let mut v = acc[q];
                if accumulate {
                    v = _mm256_add_ps(v, unsafe { _mm256_maskload_ps(cq, m) });
                }
                if let Some(e) = ep {
                    v = _mm256_fmadd_ps(v, scale, bias[q]);
                    if e.relu {
                        // `zero > v ? zero : v`: NaN and -0 kept, as `kernel` does.
                        v = _mm256_max_ps(zero, v);
                    }
                    if !e.mask.is_null() {
                        let mp = unsafe { e.mask.add(row * t.ldc + j0 + 8 * q) };
                        let mv = unsafe { _mm256_maskload_ps(mp, m) };
                        let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(mv, zero);
                        v = _mm256_and_ps(v, keep);
                    }
                }
                unsafe { _mm256_maskstore_ps(cq, m, v) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _kc: usize,
    _a: Strided,
    _b: *const f32,
    _ldb: usize,
    _t: &Tile,
    _accumulate: bool,
    _ep: Option<&Epilogue>,
) {
}

/// `c[m, n] = a[m, k] @ b[k, n]` for a few rows (`m <= 4`) and `b` row-major: each block of
/// columns accumulates in registers over the whole depth, so `b` streams through once per
/// block, row after row, and `c` is stored once (a batch-1 forward pass reads each weight
/// once, at the speed memory gives it).
///
/// # Safety
/// `has_avx512()`; `b.cs == 1`; the operands fit their strides; `c` holds `m * n`.
pub unsafe fn few_rows(a: Strided, b: Strided, c: *mut f32, m: usize, k: usize, n: usize) {
    debug_assert!((1..=4).contains(&m) && b.cs == 1);
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let mut j = 0;
        while j < n {
            let cols = match m {
                1 => (n - j).min(256),
                2 => (n - j).min(128),
                _ => (n - j).min(64),
            };
            match m {
                1 => block::<1, 16>(a, b, c, m, k, n, j, cols),
                2 => block::<2, 8>(a, b, c, m, k, n, j, cols),
                _ => block::<4, 4>(a, b, c, m, k, n, j, cols),
            }
            j += cols;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, m, k, n);
        unreachable!("only called where `has_avx512()`");
    }
}

/// Columns `j0..j0 + cols` (at most `16 * V`) of `c` for its `m <= R` rows, in `R x V`
/// registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, const V: usize>(
    a: Strided,
    b: Strided,
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    j0: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let masks: [__mmask16; V] = std::array::from_fn(|v| {
        let c = cols.saturating_sub(16 * v).min(16);
        ((1u32 << c) - 1) as u16
    });
    let rows: [*const f32; R] =
        std::array::from_fn(|r| unsafe { a.ptr.add(if r < m { r * a.rs } else { 0 }) });
    let full = cols == 16 * V;
    for p in 0..k {
        let bp = unsafe { b.ptr.add(p * b.rs + j0) };
        let bv: [__m512; V] = std::array::from_fn(|v| unsafe {
            if full {
                _mm512_loadu_ps(bp.add(16 * v))
            } else {
                _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v))
            }
        });
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(unsafe { *rows[r].add(p * a.cs) });
            for v in 0..V {
                acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(m) {
        for v in 0..V {
            if masks[v] != 0 {
                unsafe { _mm512_mask_storeu_ps(c.add(r * n + j0 + 16 * v), masks[v], acc[v]) };
            }
        }
    }
}

/// This core's f32 multiply-add peak, measured now (GFLOP/s): twelve independent chains of
/// 512-bit FMAs (256-bit where AVX-512 is missing), the best of five runs. The yardstick
/// `nnc bench --only gemm` puts every product against, in the same run.
pub fn peak_gflops() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        let fmas = 1usize << 22;
        let run = || -> Option<f64> {
            let t = std::time::Instant::now();
            let lanes = if has_avx512() {
                unsafe { fma_chains_avx512(fmas) };
                16
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                unsafe { fma_chains_avx2(fmas) };
                8
            } else {
                return None;
            };
            Some(2.0 * (fmas * 12 * lanes) as f64 / t.elapsed().as_secs_f64() / 1e9)
        };
        (0..5).filter_map(|_| run()).fold(0.0, f64::max)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(n: usize) {
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    std::hint::black_box(acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(n: usize) {
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape from 1 to 67 rows and columns (tile edges on both sides), depths
    /// across a slice boundary, both operands plain or transposed, every epilogue: against
    /// the product summed in f64.
    #[test]
    fn packed_kernel_matches_the_f64_product_on_odd_shapes() {
        if !available() {
            return;
        }
        check_packed_kernel();
    }

    /// The AVX2 tile (6 x 16, masked loads and stores) on the same shapes, wherever the
    /// host has AVX2 (an AVX-512 host runs it as well).
    #[test]
    fn the_avx2_tile_matches_the_f64_product_on_odd_shapes() {
        let avx2 = with_avx2_tile(|| isa() == Some(Isa::Avx2));
        if avx2 {
            with_avx2_tile(check_packed_kernel);
        }
    }

    fn check_packed_kernel() {
        let mut seed = 1u32;
        let mut draw = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // A few rows, as `few_rows` takes them (b row-major; AVX-512 only).
        let few: &[(usize, usize, usize)] = if has_avx512() {
            &[
                (1, 784, 256),
                (2, 37, 300),
                (3, 5, 67),
                (4, 64, 17),
                (1, 3, 600),
            ]
        } else {
            &[]
        };
        for &(m, k, n) in few {
            let a: Vec<f32> = (0..m * k).map(|_| draw()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| draw()).collect();
            let mut c = vec![f32::NAN; m * n];
            let sa = Strided {
                ptr: a.as_ptr(),
                rs: k,
                cs: 1,
            };
            let sb = Strided {
                ptr: b.as_ptr(),
                rs: n,
                cs: 1,
            };
            unsafe { few_rows(sa, sb, c.as_mut_ptr(), m, k, n) };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                        .sum();
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + k as f64).sqrt(),
                        "few rows [{m}x{k}]@[{k}x{n}] c[{i},{j}] = {got}, want {want}"
                    );
                }
            }
        }
        let shapes = (1..=67)
            .step_by(3)
            .flat_map(|m| [1usize, 16, 31, 33, 67].map(move |n| (m, n)))
            .chain([(128, 256), (9, 300)]);
        for (m, n) in shapes {
            for k in [1usize, 7, 255, 300] {
                let a: Vec<f32> = (0..m * k).map(|_| draw()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| draw()).collect();
                let bias: Vec<f32> = (0..n).map(|_| draw()).collect();
                let mask: Vec<f32> = (0..m * n).map(|_| draw()).collect();
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    // The same values, stored transposed when asked.
                    let at: Vec<f32> = (0..m * k).map(|x| a[(x % m) * k + x / m]).collect();
                    let bt: Vec<f32> = (0..k * n).map(|x| b[(x % k) * n + x / k]).collect();
                    let sa = if ta {
                        Strided {
                            ptr: at.as_ptr(),
                            rs: 1,
                            cs: m,
                        }
                    } else {
                        Strided {
                            ptr: a.as_ptr(),
                            rs: k,
                            cs: 1,
                        }
                    };
                    let sb = if tb {
                        Strided {
                            ptr: bt.as_ptr(),
                            rs: 1,
                            cs: k,
                        }
                    } else {
                        Strided {
                            ptr: b.as_ptr(),
                            rs: n,
                            cs: 1,
                        }
                    };
                    let eps = [
                        Epilogue::NONE,
                        Epilogue {
                            scale: 0.5,
                            bias: bias.as_ptr(),
                            relu: true,
                            ..Epilogue::NONE
                        },
                        Epilogue {
                            mask: mask.as_ptr(),
                            ..Epilogue::NONE
                        },
                    ];
                    for ep in &eps {
                        let mut c = vec![f32::NAN; m * n];
                        unsafe { matmul(sa, sb, c.as_mut_ptr(), m, k, n, ep) };
                        for i in 0..m {
                            for j in 0..n {
                                let dot: f64 = (0..k)
                                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                                    .sum();
                                let mut want = dot * ep.scale as f64;
                                if !ep.bias.is_null() {
                                    want += bias[j] as f64;
                                }
                                if ep.relu {
                                    want = want.max(0.0);
                                }
                                if !ep.mask.is_null() && mask[i * n + j] <= 0.0 {
                                    want = 0.0;
                                }
                                let got = c[i * n + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + k as f64).sqrt(),
                                    "[{m}x{k}]@[{k}x{n}] ta={ta} tb={tb} {ep:?}: \
                                     c[{i},{j}] = {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
