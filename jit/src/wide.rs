//! Fused loops on wide vectors: a `LoopSpec` assembled into machine code with
//! `iced-x86`'s assembler, sixteen lanes (zmm) on hosts with AVX-512F, eight (ymm) on
//! hosts with AVX2 and FMA.
//!
//! Cranelift's vectors are 128 bits wide, and a loop bound by its divider or its square
//! root (an optimizer's update) runs at the four-lane unit's rate. Here the same loop runs
//! on wide registers: one function per loop, `fn(bases: *const *mut f32)`, that walks its
//! rows and, in each, a vector of elements per trip with a masked last trip. The
//! Cranelift function calls it with the operands' addresses (`cranelift.rs`).
//!
//! The ops are computed exactly as the Cranelift loop computes them: the same
//! `lanes::compute` over a recording `Lanes`, the same fused multiply-adds
//! (`emit::mul_add`) and the same reciprocals of loop-invariant divisors, so both give the
//! same bits (`tests/wide.rs` checks it). The body is recorded on virtual registers and
//! allocated to the vector and mask registers with no spills (zmm0-31 and k2-k7; ymm0-14,
//! masks included, ymm15 holding the last trip's lanes): a loop that needs more
//! registers, or more than 14 operand streams, stays on Cranelift (`assemble` returns
//! `None`). JIT functions only: objects and printed CLIF keep Cranelift's loops.

use crate::emit;
use crate::plan::{invariant_divisor, member_of};
use crate::program::LoopSpec;
use iced_x86::code_asm::asm_traits::*;
use iced_x86::code_asm::*;
use nnc_ir::{Attr, Func, Op, Value};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: the host decides (the widest it has), 1: wide loops off, 2: on where the host has
/// them, 3: eight lanes where the host has AVX2 (tests run them on AVX-512 hosts).
static CHOICE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static LOCAL: Cell<Option<u8>> = const { Cell::new(None) };
    static ASSEMBLED: Cell<usize> = const { Cell::new(0) };
}

/// How many fused loops this thread has compiled to wide vectors (tests check that the
/// path they compare was taken).
pub fn wide_loops_assembled() -> usize {
    ASSEMBLED.with(|c| c.get())
}

/// The lanes fused loops take, for `nnc bench --lanes`, to measure each in one run:
/// `None` the host's widest, `Some(4)` Cranelift's own f32x4 loops, `Some(8)` eight
/// (where the host has AVX2), anything else the widest.
pub fn set_loop_lanes(lanes: Option<usize>) {
    CHOICE.store(
        match lanes {
            None => 0,
            Some(4) => 1,
            Some(8) => 3,
            Some(_) => 2,
        },
        Ordering::Relaxed,
    );
}

fn with_choice<T>(choice: u8, f: impl FnOnce() -> T) -> T {
    nnc_rt::scoped(&LOCAL, Some(choice), f)
}

/// Runs `f` with wide loops on or off for kernels this thread compiles (tests compare
/// both).
pub fn with_wide_loops<T>(on: bool, f: impl FnOnce() -> T) -> T {
    with_choice(if on { 2 } else { 1 }, f)
}

/// Runs `f` with eight-lane (AVX2) loops for kernels this thread compiles, on hosts with
/// AVX2 and FMA, AVX-512 ones included (tests).
pub fn with_eight_lane_loops<T>(f: impl FnOnce() -> T) -> T {
    with_choice(3, f)
}

/// The vectors a fused loop's machine code uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// AVX-512F: sixteen lanes, masks in k registers.
    Zmm,
    /// AVX2 and FMA: eight lanes, masks in ymm registers.
    Ymm,
}

impl Width {
    fn lanes(self) -> usize {
        match self {
            Width::Zmm => 16,
            Width::Ymm => 8,
        }
    }
}

/// The width loops compiled now take, if any.
pub(crate) fn width() -> Option<Width> {
    let choice = LOCAL
        .with(|c| c.get())
        .unwrap_or(CHOICE.load(Ordering::Relaxed));
    let (avx512, avx2) = host();
    match choice {
        1 => None,
        3 => avx2.then_some(Width::Ymm),
        _ if avx512 => Some(Width::Zmm),
        _ => avx2.then_some(Width::Ymm),
    }
}

/// Whether the host has AVX-512F, and AVX2 with FMA.
fn host() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        (has!("avx512f"), has!("avx2") && has!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (false, false)
    }
}

/// A zmm value (float or integer lanes) and a mask value, as virtual registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Z(u32);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct K(u32);

#[derive(Clone, Copy, Debug)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    IAdd,
    ISub,
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug)]
enum Inst {
    /// A leaf's sixteen elements from stream `s` (masked in the last trip).
    Load(Z, usize),
    /// A scalar of stream `s` in every lane.
    Splat(Z, usize),
    /// A constant's bits in every lane.
    Konst(Z, u32),
    Bin(Bin, Z, Z, Z),
    Sqrt(Z, Z),
    Cvt(Z, Z),
    Shl(Z, Z, u32),
    Shr(Z, Z, u32),
    /// `d = ±(a * b) ± c`, one rounding (negate product, negate addend).
    Fma(Z, Z, Z, Z, bool, bool),
    Cmp(K, Z, Z, emit::Cmp),
    /// `d = m ? x : y`.
    Blend(Z, K, Z, Z),
    /// `d = m ? one : 0`.
    Masked(Z, K, Z),
    Store(usize, Z),
}

impl Inst {
    fn def(&self) -> Option<Reg> {
        use Inst::*;
        Some(match *self {
            Load(d, _)
            | Splat(d, _)
            | Konst(d, _)
            | Bin(_, d, _, _)
            | Sqrt(d, _)
            | Cvt(d, _)
            | Shl(d, _, _)
            | Shr(d, _, _)
            | Fma(d, ..)
            | Blend(d, ..)
            | Masked(d, ..) => Reg::Z(d),
            Cmp(k, ..) => Reg::K(k),
            Store(..) => return None,
        })
    }

    fn uses(&self) -> Vec<Reg> {
        use Inst::*;
        match *self {
            Load(..) | Splat(..) | Konst(..) => vec![],
            Bin(_, _, a, b) => vec![Reg::Z(a), Reg::Z(b)],
            Sqrt(_, a) | Cvt(_, a) | Shl(_, a, _) | Shr(_, a, _) => vec![Reg::Z(a)],
            Fma(_, a, b, c, ..) => vec![Reg::Z(a), Reg::Z(b), Reg::Z(c)],
            Cmp(_, a, b, _) => vec![Reg::Z(a), Reg::Z(b)],
            Blend(_, m, x, y) => vec![Reg::K(m), Reg::Z(x), Reg::Z(y)],
            Masked(_, m, x) => vec![Reg::K(m), Reg::Z(x)],
            Store(_, v) => vec![Reg::Z(v)],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reg {
    Z(Z),
    K(K),
}

/// Records a loop's instructions on virtual registers (the `Lanes` of `lanes::compute`).
#[derive(Default)]
struct Rec {
    insts: Vec<Inst>,
    next: u32,
}

impl Rec {
    fn z(&mut self) -> Z {
        self.next += 1;
        Z(self.next)
    }
    fn k(&mut self) -> K {
        self.next += 1;
        K(self.next)
    }
    fn bin(&mut self, op: Bin, a: Z, b: Z) -> Z {
        let d = self.z();
        self.insts.push(Inst::Bin(op, d, a, b));
        d
    }
    fn konst_bits(&mut self, bits: u32) -> Z {
        let d = self.z();
        self.insts.push(Inst::Konst(d, bits));
        d
    }
}

/// Recording never fails: a loop that does not fit fails at allocation.
type R<T> = Result<T, std::convert::Infallible>;

impl emit::Lanes for Rec {
    type F = Z;
    type I = Z;
    type M = K;
    type E = std::convert::Infallible;

    fn konst(&mut self, v: f32) -> R<Z> {
        Ok(self.konst_bits(v.to_bits()))
    }
    fn iconst(&mut self, v: i32) -> R<Z> {
        Ok(self.konst_bits(v as u32))
    }
    fn add(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::Add, x, y))
    }
    fn sub(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::Sub, x, y))
    }
    fn mul(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::Mul, x, y))
    }
    fn div(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::Div, x, y))
    }
    fn neg(&mut self, x: Z) -> R<Z> {
        let s = self.konst_bits(0x8000_0000);
        Ok(self.bin(Bin::Xor, x, s))
    }
    fn abs(&mut self, x: Z) -> R<Z> {
        let s = self.konst_bits(0x7fff_ffff);
        Ok(self.bin(Bin::And, x, s))
    }
    fn sqrt(&mut self, x: Z) -> R<Z> {
        let d = self.z();
        self.insts.push(Inst::Sqrt(d, x));
        Ok(d)
    }
    fn cmp(&mut self, c: emit::Cmp, x: Z, y: Z) -> R<K> {
        let d = self.k();
        self.insts.push(Inst::Cmp(d, x, y, c));
        Ok(d)
    }
    fn select(&mut self, m: K, x: Z, y: Z) -> R<Z> {
        let d = self.z();
        self.insts.push(Inst::Blend(d, m, x, y));
        Ok(d)
    }
    fn indicator(&mut self, m: K) -> R<Z> {
        let one = self.konst_bits(1f32.to_bits());
        let d = self.z();
        self.insts.push(Inst::Masked(d, m, one));
        Ok(d)
    }
    fn bits(&mut self, x: Z) -> R<Z> {
        Ok(x)
    }
    fn float_bits(&mut self, x: Z) -> R<Z> {
        Ok(x)
    }
    fn int_to_float(&mut self, x: Z) -> R<Z> {
        let d = self.z();
        self.insts.push(Inst::Cvt(d, x));
        Ok(d)
    }
    fn iadd(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::IAdd, x, y))
    }
    fn isub(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::ISub, x, y))
    }
    fn and(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::And, x, y))
    }
    fn or(&mut self, x: Z, y: Z) -> R<Z> {
        Ok(self.bin(Bin::Or, x, y))
    }
    fn shl(&mut self, x: Z, by: u32) -> R<Z> {
        let d = self.z();
        self.insts.push(Inst::Shl(d, x, by));
        Ok(d)
    }
    fn ushr(&mut self, x: Z, by: u32) -> R<Z> {
        let d = self.z();
        self.insts.push(Inst::Shr(d, x, by));
        Ok(d)
    }
}

/// The operand streams, in the order of the function's `bases` array: the leaves, the
/// scalars, then the stores, each with its step per row in elements.
fn streams(spec: &LoopSpec) -> Vec<usize> {
    spec.leaf_step
        .iter()
        .chain(&spec.scalar_step)
        .chain(&spec.store_step)
        .copied()
        .collect()
}

/// The recorded loop: what runs once per row before the elements (the reciprocals of
/// loop-invariant divisors) and what runs on each sixteen elements.
struct Recorded {
    pre: Vec<Inst>,
    body: Vec<Inst>,
}

fn record(f: &Func, spec: &LoopSpec, fma: bool) -> Recorded {
    let nleaves = spec.leaves.len();
    let nscalars = spec.scalars.len();
    let mut rec = Rec::default();
    // Loop-invariant values (constants, scalars read from memory), as the Cranelift loop
    // finds them; the reciprocals of invariant divisors are computed once per row.
    let mut invariant: HashMap<usize, Inst> = HashMap::new();
    let mut reciprocals: HashMap<usize, Z> = HashMap::new();
    let mut pre = Vec::new();
    for &j in &spec.order {
        let n = &f.nodes[j];
        let made = match (n.op, &n.attr) {
            (Op::Const, Attr::Value(v)) => Some(Inst::Konst(rec.z(), (*v as f32).to_bits())),
            (Op::Broadcast, _) if member_of(f, n.args[0], &spec.members).is_none() => spec
                .scalars
                .iter()
                .position(|(k, _)| *k == j)
                .map(|s| Inst::Splat(rec.z(), nleaves + s)),
            _ => None,
        };
        if let Some(i) = made {
            invariant.insert(j, i);
        }
        if let Some(&i) = invariant_divisor(f, j, |k| invariant.get(&k)) {
            let one = rec.z();
            let r = rec.z();
            let d2 = rec.z();
            // A fresh copy of the divisor for the row's prologue.
            pre.push(match i {
                Inst::Konst(_, bits) => Inst::Konst(d2, bits),
                Inst::Splat(_, s) => Inst::Splat(d2, s),
                _ => unreachable!("invariants are constants and scalars"),
            });
            pre.push(Inst::Konst(one, 1f32.to_bits()));
            pre.push(Inst::Bin(Bin::Div, r, one, d2));
            reciprocals.insert(j, r);
        }
    }
    // Leaves are loaded where first read, so a loop's registers hold only what is live.
    let mut memo: HashMap<Value, Z> = HashMap::new();
    let get = |rec: &mut Rec, memo: &mut HashMap<Value, Z>, a: Value| {
        if let Some(&v) = memo.get(&a) {
            return v;
        }
        if let Some(s) = spec.leaves.iter().position(|&(v, _)| v == a) {
            let d = rec.z();
            rec.insts.push(Inst::Load(d, s));
            memo.insert(a, d);
            return d;
        }
        // An earlier member of this loop, read through an alias.
        let m = member_of(f, a, &spec.members).expect("a leaf or a member");
        memo[&Value::Node(m as u32)]
    };
    for &j in &spec.order {
        let n = &f.nodes[j];
        let y = if let Some(&i) = invariant.get(&j) {
            rec.insts.push(i);
            match i.def() {
                Some(Reg::Z(d)) => d,
                _ => unreachable!("an invariant is a vector"),
            }
        } else {
            let xs: Vec<Z> = n
                .args
                .iter()
                .map(|&a| get(&mut rec, &mut memo, a))
                .collect();
            let fused = fma
                .then(|| emit::mul_add(f, &spec.order, j, |m| invariant.contains_key(&m)))
                .flatten();
            match fused {
                Some(c) => {
                    let a = &f.nodes[c.mul].args;
                    let (p, q) = (
                        get(&mut rec, &mut memo, a[0]),
                        get(&mut rec, &mut memo, a[1]),
                    );
                    let d = rec.z();
                    rec.insts.push(Inst::Fma(
                        d,
                        p,
                        q,
                        xs[c.addend],
                        c.neg_product,
                        c.neg_addend,
                    ));
                    d
                }
                None if reciprocals.contains_key(&j) => rec.bin(Bin::Mul, xs[0], reciprocals[&j]),
                None => match emit::elem(n.op) {
                    Ok(e) => match nnc_rt::lanes::compute(&mut rec, e, &xs) {
                        Ok(v) => v,
                        Err(never) => match never {},
                    },
                    // Not an elementwise op: the planner never puts one here; Cranelift
                    // reports it.
                    Err(_) => return Recorded { pre, body: vec![] },
                },
            }
        };
        memo.insert(Value::Node(j as u32), y);
    }
    for (s, &(m, _)) in spec.stores.iter().enumerate() {
        let v = get(&mut rec, &mut memo, Value::Node(m as u32));
        rec.insts.push(Inst::Store(nleaves + nscalars + s, v));
    }
    Recorded {
        pre,
        body: dead_code_removed(rec.insts),
    }
}

/// Drops instructions whose values nothing reads (a product contracted into a fused
/// multiply-add).
fn dead_code_removed(insts: Vec<Inst>) -> Vec<Inst> {
    let mut live: std::collections::HashSet<Reg> = Default::default();
    let mut keep = vec![false; insts.len()];
    for (i, inst) in insts.iter().enumerate().rev() {
        let needed = match inst.def() {
            None => true,
            Some(d) => live.contains(&d),
        };
        if needed {
            keep[i] = true;
            live.extend(inst.uses());
        }
    }
    insts
        .into_iter()
        .zip(keep)
        .filter_map(|(i, k)| k.then_some(i))
        .collect()
}

/// Physical registers of each virtual one, or `None` when the body needs more than the
/// width has (no spills): a linear scan in body order, a register freed after its value's
/// last use. The prologue's values (the reciprocals, live through the body) are taken
/// first and never freed.
fn allocate(pre: &[Inst], body: &[Inst], width: Width) -> Option<HashMap<Reg, u8>> {
    let mut last: HashMap<Reg, usize> = HashMap::new();
    for (i, inst) in body.iter().enumerate() {
        for u in inst.uses() {
            last.insert(u, i);
        }
    }
    // zmm: k1 masks the last trip, k2..k7 hold comparisons. ymm: comparisons are vectors
    // too (one pool), and ymm15 holds the last trip's lanes.
    let (mut zfree, mut kfree): (Vec<u8>, Vec<u8>) = match width {
        Width::Zmm => ((0..32).rev().collect(), (2..8).rev().collect()),
        Width::Ymm => ((0..15).rev().collect(), Vec::new()),
    };
    let shared = width == Width::Ymm;
    let mut map: HashMap<Reg, u8> = HashMap::new();
    // The prologue's values: its results (the reciprocals) live through the body; its
    // temporaries die in it, but are simply kept (a handful of registers).
    for inst in pre {
        if let Some(Reg::Z(d)) = inst.def() {
            map.insert(Reg::Z(d), zfree.pop()?);
        }
    }
    for (i, inst) in body.iter().enumerate() {
        let mut uses = inst.uses();
        // An operand read twice (`select(m, x, x)`) is freed once.
        uses.sort_by_key(|r| match r {
            Reg::Z(z) => z.0,
            Reg::K(k) => k.0,
        });
        uses.dedup();
        for u in uses {
            if last.get(&u) == Some(&i) && !pre.iter().any(|p| p.def() == Some(u)) {
                match u {
                    Reg::K(_) if !shared => kfree.push(map[&u]),
                    _ => zfree.push(map[&u]),
                }
            }
        }
        if let Some(d) = inst.def() {
            // Every value gets a register when defined; one nothing reads (none survive
            // dead-code removal) is freed at once.
            let r = match d {
                Reg::K(_) if !shared => kfree.pop()?,
                _ => zfree.pop()?,
            };
            map.insert(d, r);
            if !last.contains_key(&d) {
                match d {
                    Reg::K(_) if !shared => kfree.push(r),
                    _ => zfree.push(r),
                }
            }
        }
    }
    Some(map)
}

const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];
const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const KREG: [AsmRegisterK; 8] = [k0, k1, k2, k3, k4, k5, k6, k7];
/// The registers holding the streams' addresses; `rdi` (the `bases` argument) is loaded
/// last. `rax` is the element index; the rows are counted on the stack.
const STREAM: [AsmRegister64; 14] = [
    rsi, rdx, rcx, r8, r9, r10, r11, rbx, rbp, r12, r13, r14, r15, rdi,
];
const SAVED: [AsmRegister64; 6] = [rbx, rbp, r12, r13, r14, r15];

/// The loop `spec` as a function `fn(bases: *const *mut f32)` (System V), or `None` when
/// it does not fit this path (too many streams or live values): the caller emits
/// Cranelift's loop instead. `bases` holds each stream's address at row 0 (`streams`).
pub(crate) fn assemble(f: &Func, spec: &LoopSpec, fma: bool, width: Width) -> Option<Vec<u8>> {
    let steps = streams(spec);
    if steps.len() > STREAM.len()
        || spec.count == 0
        || spec.rows == 0
        || spec.count > i32::MAX as usize / 4
        || spec.rows > i32::MAX as usize
    {
        return None;
    }
    let Recorded { pre, body } = record(f, spec, fma);
    if body.is_empty() {
        return None;
    }
    // The eight-lane code contracts products itself: it needs the FMA the host has.
    if width == Width::Ymm && !fma {
        return None;
    }
    let map = allocate(&pre, &body, width)?;
    let code = emit_function(&steps, spec, &pre, &body, &map, width).ok()?;
    ASSEMBLED.with(|c| c.set(c.get() + 1));
    Some(code)
}

fn emit_function(
    steps: &[usize],
    spec: &LoopSpec,
    pre: &[Inst],
    body: &[Inst],
    map: &HashMap<Reg, u8>,
    width: Width,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut pool: Vec<(u32, CodeLabel)> = Vec::new();
    for r in SAVED {
        a.push(r)?;
    }
    for (s, _) in steps.iter().enumerate() {
        a.mov(STREAM[s], qword_ptr(rdi + 8 * s as i32))?;
    }
    let lanes = width.lanes();
    let (vec_end, rem) = (spec.count / lanes * lanes, spec.count % lanes);
    // The last trip's lanes: k1, or ymm15 read from after the code.
    let mut tail_lanes = None;
    if rem > 0 {
        match width {
            Width::Zmm => {
                a.mov(eax, ((1u32 << rem) - 1) as i32)?;
                a.kmovw(k1, eax)?;
            }
            Width::Ymm => {
                let l = a.create_label();
                a.vmovdqu(ymm15, ymmword_ptr(l))?;
                tail_lanes = Some(l);
            }
        }
    }
    a.push(spec.rows as i32)?;
    let mut row = a.create_label();
    a.set_label(&mut row)?;
    emit_insts(&mut a, pre, map, false, &mut pool, width)?;
    a.xor(eax, eax)?;
    if vec_end > 0 {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        emit_insts(&mut a, body, map, false, &mut pool, width)?;
        a.add(rax, lanes as i32)?;
        a.cmp(rax, vec_end as i32)?;
        a.jb(top)?;
    }
    if rem > 0 {
        emit_insts(&mut a, body, map, true, &mut pool, width)?;
    }
    if spec.rows > 1 {
        for (s, &step) in steps.iter().enumerate() {
            if step > 0 {
                a.add(STREAM[s], (4 * step) as i32)?;
            }
        }
    }
    a.dec(qword_ptr(rsp))?;
    a.jnz(row)?;
    a.add(rsp, 8)?;
    a.vzeroupper()?;
    for r in SAVED.iter().rev() {
        a.pop(*r)?;
    }
    a.ret()?;
    for (bits, mut l) in pool {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    if let Some(mut l) = tail_lanes {
        a.set_label(&mut l)?;
        let m: Vec<u32> = (0..8).map(|i| if i < rem { u32::MAX } else { 0 }).collect();
        a.dd(&m)?;
    }
    a.assemble(0)
}

fn emit_insts(
    a: &mut CodeAssembler,
    insts: &[Inst],
    map: &HashMap<Reg, u8>,
    masked: bool,
    pool: &mut Vec<(u32, CodeLabel)>,
    width: Width,
) -> Result<(), IcedError> {
    let reg = |r: Reg| map[&r] as usize;
    for inst in insts {
        match width {
            Width::Zmm => {
                let z = |r: Z| ZMM[reg(Reg::Z(r))];
                if !common(a, inst, z, pool)? {
                    zmm_only(a, inst, map, masked)?;
                }
            }
            Width::Ymm => {
                let y = |r: Z| YMM[reg(Reg::Z(r))];
                if !common(a, inst, y, pool)? {
                    ymm_only(a, inst, map, masked)?;
                }
            }
        }
    }
    Ok(())
}

/// The instructions both widths write alike, on registers of type `R`; false for the
/// others (memory, masks, bitwise ops).
fn common<R: Copy + PartialEq>(
    a: &mut CodeAssembler,
    inst: &Inst,
    z: impl Fn(Z) -> R,
    pool: &mut Vec<(u32, CodeLabel)>,
) -> Result<bool, IcedError>
where
    CodeAssembler: CodeAsmVbroadcastss<R, AsmMemoryOperand>
        + CodeAsmVaddps<R, R, R>
        + CodeAsmVsubps<R, R, R>
        + CodeAsmVmulps<R, R, R>
        + CodeAsmVdivps<R, R, R>
        + CodeAsmVpaddd<R, R, R>
        + CodeAsmVpsubd<R, R, R>
        + CodeAsmVsqrtps<R, R>
        + CodeAsmVcvtdq2ps<R, R>
        + CodeAsmVpslld<R, R, u32>
        + CodeAsmVpsrld<R, R, u32>
        + CodeAsmVmovaps<R, R>
        + CodeAsmVfmadd213ps<R, R, R>
        + CodeAsmVfmadd231ps<R, R, R>
        + CodeAsmVfmsub213ps<R, R, R>
        + CodeAsmVfmsub231ps<R, R, R>
        + CodeAsmVfnmadd213ps<R, R, R>
        + CodeAsmVfnmadd231ps<R, R, R>
        + CodeAsmVfnmsub213ps<R, R, R>
        + CodeAsmVfnmsub231ps<R, R, R>,
{
    match *inst {
        Inst::Splat(d, s) => a.vbroadcastss(z(d), dword_ptr(STREAM[s]))?,
        Inst::Konst(d, bits) => {
            let l = match pool.iter().find(|(b, _)| *b == bits) {
                Some(&(_, l)) => l,
                None => {
                    let l = a.create_label();
                    pool.push((bits, l));
                    l
                }
            };
            a.vbroadcastss(z(d), dword_ptr(l))?;
        }
        Inst::Bin(op, d, x, y) => {
            let (d, x, y) = (z(d), z(x), z(y));
            match op {
                Bin::Add => a.vaddps(d, x, y)?,
                Bin::Sub => a.vsubps(d, x, y)?,
                Bin::Mul => a.vmulps(d, x, y)?,
                Bin::Div => a.vdivps(d, x, y)?,
                Bin::IAdd => a.vpaddd(d, x, y)?,
                Bin::ISub => a.vpsubd(d, x, y)?,
                Bin::And | Bin::Or | Bin::Xor => return Ok(false),
            }
        }
        Inst::Sqrt(d, x) => a.vsqrtps(z(d), z(x))?,
        Inst::Cvt(d, x) => a.vcvtdq2ps(z(d), z(x))?,
        Inst::Shl(d, x, by) => a.vpslld(z(d), z(x), by)?,
        Inst::Shr(d, x, by) => a.vpsrld(z(d), z(x), by)?,
        Inst::Fma(d, p, q, c, neg_p, neg_c) => {
            let (dr, pr, qr, cr) = (z(d), z(p), z(q), z(c));
            // d = ±(p * q) ± c in one of the three destructive forms.
            macro_rules! fma3 {
                ($f213:ident, $f231:ident) => {
                    if dr == pr {
                        a.$f213(dr, qr, cr)?
                    } else if dr == qr {
                        a.$f213(dr, pr, cr)?
                    } else if dr == cr {
                        a.$f231(dr, pr, qr)?
                    } else {
                        a.vmovaps(dr, pr)?;
                        a.$f213(dr, qr, cr)?
                    }
                };
            }
            match (neg_p, neg_c) {
                (false, false) => fma3!(vfmadd213ps, vfmadd231ps),
                (false, true) => fma3!(vfmsub213ps, vfmsub231ps),
                (true, false) => fma3!(vfnmadd213ps, vfnmadd231ps),
                (true, true) => fma3!(vfnmsub213ps, vfnmsub231ps),
            }
        }
        Inst::Load(..) | Inst::Store(..) | Inst::Cmp(..) | Inst::Blend(..) | Inst::Masked(..) => {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `vcmpps`'s predicate for `c`: ordered and quiet, except `Ne` and `Unordered`.
fn predicate(c: emit::Cmp) -> u32 {
    match c {
        emit::Cmp::Eq => 0x00,        // EQ_OQ
        emit::Cmp::Lt => 0x11,        // LT_OQ
        emit::Cmp::Le => 0x12,        // LE_OQ
        emit::Cmp::Unordered => 0x03, // UNORD_Q
        emit::Cmp::Ne => 0x04,        // NEQ_UQ
        emit::Cmp::Ge => 0x1d,        // GE_OQ
        emit::Cmp::Gt => 0x1e,        // GT_OQ
    }
}

/// Sixteen lanes: memory masked by k1 in the last trip, comparisons into k registers.
fn zmm_only(
    a: &mut CodeAssembler,
    inst: &Inst,
    map: &HashMap<Reg, u8>,
    masked: bool,
) -> Result<(), IcedError> {
    let z = |r: Z| ZMM[map[&Reg::Z(r)] as usize];
    match *inst {
        Inst::Load(d, s) => {
            let m = zmmword_ptr(STREAM[s] + rax * 4);
            if masked {
                a.vmovups(z(d).k1().z(), m)?;
            } else {
                a.vmovups(z(d), m)?;
            }
        }
        Inst::Store(s, v) => {
            let m = zmmword_ptr(STREAM[s] + rax * 4);
            if masked {
                a.vmovups(m.k1(), z(v))?;
            } else {
                a.vmovups(m, z(v))?;
            }
        }
        Inst::Bin(op, d, x, y) => {
            let (d, x, y) = (z(d), z(x), z(y));
            match op {
                Bin::And => a.vpandd(d, x, y)?,
                Bin::Or => a.vpord(d, x, y)?,
                _ => a.vpxord(d, x, y)?,
            }
        }
        Inst::Cmp(d, x, y, c) => {
            a.vcmpps(KREG[map[&Reg::K(d)] as usize], z(x), z(y), predicate(c))?;
        }
        Inst::Blend(d, m, x, y) => {
            // vblendmps d{m}, y, x: x where m, else y.
            let dk = with_mask(z(d), map[&Reg::K(m)]);
            a.vblendmps(dk, z(y), z(x))?;
        }
        Inst::Masked(d, m, one) => {
            let dk = with_mask(z(d), map[&Reg::K(m)]).z();
            a.vmovaps(dk, z(one))?;
        }
        _ => unreachable!("`common` emits the rest"),
    }
    Ok(())
}

/// Eight lanes: memory masked by ymm15 in the last trip, comparisons as vectors.
fn ymm_only(
    a: &mut CodeAssembler,
    inst: &Inst,
    map: &HashMap<Reg, u8>,
    masked: bool,
) -> Result<(), IcedError> {
    let y = |r: Z| YMM[map[&Reg::Z(r)] as usize];
    let k = |r: K| YMM[map[&Reg::K(r)] as usize];
    match *inst {
        Inst::Load(d, s) => {
            let m = ymmword_ptr(STREAM[s] + rax * 4);
            if masked {
                a.vmaskmovps(y(d), ymm15, m)?;
            } else {
                a.vmovups(y(d), m)?;
            }
        }
        Inst::Store(s, v) => {
            let m = ymmword_ptr(STREAM[s] + rax * 4);
            if masked {
                a.vmaskmovps(m, ymm15, y(v))?;
            } else {
                a.vmovups(m, y(v))?;
            }
        }
        Inst::Bin(op, d, x, w) => {
            let (d, x, w) = (y(d), y(x), y(w));
            match op {
                Bin::And => a.vpand(d, x, w)?,
                Bin::Or => a.vpor(d, x, w)?,
                _ => a.vpxor(d, x, w)?,
            }
        }
        Inst::Cmp(d, x, w, c) => a.vcmpps(k(d), y(x), y(w), predicate(c))?,
        // x where m, else w: vblendvps takes its second source where the mask is set.
        Inst::Blend(d, m, x, w) => a.vblendvps(y(d), y(w), y(x), k(m))?,
        Inst::Masked(d, m, one) => a.vandps(y(d), k(m), y(one))?,
        _ => unreachable!("`common` emits the rest"),
    }
    Ok(())
}

/// `r{k}` for mask register `k` (2..8).
fn with_mask(r: AsmRegisterZmm, k: u8) -> AsmRegisterZmm {
    match k {
        2 => r.k2(),
        3 => r.k3(),
        4 => r.k4(),
        5 => r.k5(),
        6 => r.k6(),
        _ => r.k7(),
    }
}
