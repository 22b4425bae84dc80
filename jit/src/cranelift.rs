//! Cranelift: a `Program` as one CLIF function (f32x4 loops with a scalar tail, calls to
//! the kernels of `nnc-rt`), in a JIT module or an object module.

use crate::Error;

use crate::kernel::{Code, Entry, Kernel};
use crate::plan::{Loc, invariant_divisor, member_of, sizes_text};
use crate::program::{Arg, Instr, Program, program};
use crate::{emit, kernels};
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlot, StackSlotData, StackSlotKind, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use nnc_ir::{Attr, DType, Func, Op, Value};
use std::collections::HashMap;

/// The run-time kernels declared in a module, in `KernelFn` order.
pub(crate) struct Helpers(Vec<FuncId>);

/// The host's ISA (every feature it reports, so `fma` where it exists) and whether it has
/// FMA. Objects are position-independent, so they link into PIE executables.
pub(crate) fn host_isa(
    pic: bool,
) -> Result<(std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, bool), Error> {
    let mut fb = settings::builder();
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v).map_err(|e| Error::Codegen(e.to_string()))
    };
    set(&mut fb, "opt_level", "speed")?;
    set(&mut fb, "use_colocated_libcalls", "false")?;
    set(&mut fb, "is_pic", if pic { "true" } else { "false" })?;
    let ib = cranelift_native::builder().map_err(|e| Error::Codegen(e.to_string()))?;
    let isa = ib
        .finish(settings::Flags::new(fb))
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let has_fma = isa
        .isa_flags()
        .iter()
        .any(|v| v.name == "has_fma" && v.as_bool() == Some(true));
    Ok((isa, has_fma))
}

/// Declares the run-time kernels (`nnc-rt`'s ABI table) as imported functions of
/// `module`.
pub(crate) fn declare_kernels<M: Module>(module: &mut M) -> Result<Helpers, Error> {
    let mut ids = Vec::new();
    for k in &kernels::KERNELS {
        let mut sig = module.make_signature();
        for _ in k.params {
            sig.params.push(AbiParam::new(types::I64));
        }
        ids.push(
            module
                .declare_function(k.name, Linkage::Import, &sig)
                .map_err(|e| Error::Codegen(e.to_string()))?,
        );
    }
    Ok(Helpers(ids))
}

/// A JIT module for the host with the kernels' symbols registered by address.
pub(crate) fn new_module() -> Result<(JITModule, Helpers, bool), Error> {
    let (isa, has_fma) = host_isa(false)?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for k in &kernels::KERNELS {
        jb.symbol(k.name, (k.addr)() as *const u8);
    }
    let mut module = JITModule::new(jb);
    let helpers = declare_kernels(&mut module)?;
    Ok((module, helpers, has_fma))
}

/// The Cranelift IR of the compiled function, as text.
pub fn clif_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, Error> {
    let names: Vec<String> = kernels::KERNELS
        .iter()
        .enumerate()
        .map(|(i, k)| format!("fn{i} = {}", k.name))
        .collect();
    let head = format!(
        "; @{} for {}\n; {}\n",
        f.name,
        sizes_text(dims),
        names.join(", ")
    );
    compile_inner(f, dims, true).map(|(_, t)| head + &t.unwrap_or_default())
}

pub fn compile(f: &Func, dims: &HashMap<String, usize>) -> Result<Kernel, Error> {
    compile_inner(f, dims, false).map(|(k, _)| k)
}

fn compile_inner(
    f: &Func,
    dims: &HashMap<String, usize>,
    text: bool,
) -> Result<(Kernel, Option<String>), Error> {
    let (mut module, helpers, has_fma) = new_module()?;
    let name = format!("nnc_{}", f.name.replace('.', "_"));
    let mut descs = if text {
        Descs::Numbered(Vec::new())
    } else {
        Descs::Addresses(Vec::new())
    };
    let l = lower_into(
        &mut module,
        &helpers,
        has_fma,
        f,
        dims,
        &name,
        Linkage::Export,
        &mut descs,
    )?;
    module
        .finalize_definitions()
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let code = module.get_finalized_function(l.id);
    // The function was declared with exactly this signature.
    let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
    let descs = match descs {
        Descs::Addresses(d) | Descs::Numbered(d) => d,
        Descs::Data => Vec::new(),
    };
    Ok((
        Kernel {
            module: Some(Code::Cranelift(Box::new(module))),
            entry,
            scratch_len: l.scratch,
            unshared_len: l.unshared,
            outputs: l.outputs,
            in_place: l.in_place,
            _descs: descs,
        },
        l.clif,
    ))
}

/// Where the kernels' descriptors live: boxed arrays whose addresses are baked into the
/// code (JIT), the same numbered instead of addressed (printed CLIF, stable text), or
/// read-only data objects of the module (object files).
pub(crate) enum Descs {
    Addresses(Vec<Box<[i64]>>),
    Numbered(Vec<Box<[i64]>>),
    Data,
}

/// One IR function lowered into a module: its id and what the caller must know to run it.
pub(crate) struct Lowered {
    pub id: FuncId,
    /// f32 elements of scratch memory it needs.
    pub scratch: usize,
    pub unshared: usize,
    pub outputs: Vec<(DType, Vec<usize>)>,
    pub in_place: bool,
    pub clif: Option<String>,
}

/// Lowers `f`, specialized to `dims`, into `module` as the function `name` with the entry
/// signature `(inputs, params, outputs, scratch)`, each an array of pointers except the
/// scratch arena.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lower_into<M: Module>(
    module: &mut M,
    helpers: &Helpers,
    has_fma: bool,
    f: &Func,
    dims: &HashMap<String, usize>,
    name: &str,
    linkage: Linkage,
    descs: &mut Descs,
) -> Result<Lowered, Error> {
    let prog = program(f, dims)?;
    lower_program(module, helpers, has_fma, f, &prog, name, linkage, descs)
}

/// Lowers a planned function, and first each of its loop bodies (as local functions
/// `{name}_loop{k}`, whose CLIF follows its own in text).
#[allow(clippy::too_many_arguments)]
fn lower_program<M: Module>(
    module: &mut M,
    helpers: &Helpers,
    has_fma: bool,
    f: &Func,
    prog: &Program,
    name: &str,
    linkage: Linkage,
    descs: &mut Descs,
) -> Result<Lowered, Error> {
    let mut bodies = Vec::new();
    let mut body_text = String::new();
    for (k, (bf, bp)) in prog.bodies.iter().enumerate() {
        let bname = format!("{name}_loop{k}");
        let l = lower_program(
            module,
            helpers,
            has_fma,
            bf,
            bp,
            &bname,
            Linkage::Local,
            descs,
        )?;
        if let Some(t) = l.clif {
            body_text.push('\n');
            body_text.push_str(&t);
        }
        bodies.push(l.id);
    }
    let text = matches!(descs, Descs::Numbered(_));
    let ptr = types::I64;
    let mut sig: Signature = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(ptr));
    }
    let id = module
        .declare_function(name, linkage, &sig)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut ctx = Context::new();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();

    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let [ins, pars, outs, scr] = [0, 1, 2, 3].map(|k| b.block_params(entry)[k]);
        let out_ptrs: Vec<_> = (0..f.outputs.len())
            .map(|k| {
                b.ins()
                    .load(ptr, MemFlagsData::new().with_notrap(), outs, (8 * k) as i32)
            })
            .collect();
        let flags = MemFlagsData::new().with_notrap();
        let in_ptrs: Vec<_> = (0..f.inputs.len())
            .map(|i| b.ins().load(ptr, flags, ins, (8 * i) as i32))
            .collect();
        let par_ptrs: Vec<_> = (0..f.params.len())
            .map(|i| b.ins().load(ptr, flags, pars, (8 * i) as i32))
            .collect();
        let refs: Vec<_> = helpers
            .0
            .iter()
            .map(|&h| module.declare_func_in_func(h, b.func))
            .collect();
        let body_refs: Vec<_> = bodies
            .iter()
            .map(|&id| module.declare_func_in_func(id, b.func))
            .collect();

        // Fused loops on wide vectors (JIT functions on AVX-512 or AVX2 hosts), each its
        // own function called with its streams' addresses; `None` keeps Cranelift's loop.
        let width = crate::wide::width().filter(|_| matches!(descs, Descs::Addresses(_)));
        let mut wide = Vec::new();
        for (k, instr) in prog.instrs.iter().enumerate() {
            let Instr::Loop(spec) = instr else { continue };
            let Some(bytes) = width.and_then(|w| crate::wide::assemble(f, spec, has_fma, w)) else {
                continue;
            };
            if let Some(d) = std::env::var_os("NNC_WIDE_DUMP") {
                let _ = std::fs::write(
                    format!("{}/{name}_wide{k}.bin", d.to_string_lossy()),
                    &bytes,
                );
            }
            let mut sig = module.make_signature();
            sig.params.push(AbiParam::new(ptr));
            let err = |e: cranelift_module::ModuleError| Error::Codegen(e.to_string());
            let id = module
                .declare_function(&format!("{name}_wide{k}"), Linkage::Local, &sig)
                .map_err(err)?;
            module
                .define_function_bytes(id, 64, &bytes, &[])
                .map_err(err)?;
            wide.push((k, module.declare_func_in_func(id, b.func)));
        }

        let addr = |b: &mut FunctionBuilder, l: Loc| match l {
            Loc::Input(i) => in_ptrs[i],
            Loc::Param(i) => par_ptrs[i],
            Loc::Scratch(o) => b.ins().iadd_imm_s(scr, (o * 4) as i64),
            Loc::Output(k) => out_ptrs[k],
        };
        // Descriptors are baked in as addresses; in printed CLIF, as their index, so the
        // text does not change from run to run; in objects, as read-only data.
        let mut desc_ptr = |b: &mut FunctionBuilder, d: Vec<i64>| -> Result<_, Error> {
            Ok(match descs {
                Descs::Addresses(v) => {
                    let boxed = d.into_boxed_slice();
                    let p = boxed.as_ptr() as i64;
                    v.push(boxed);
                    b.ins().iconst(ptr, p)
                }
                Descs::Numbered(v) => {
                    let p = v.len() as i64;
                    v.push(d.into_boxed_slice());
                    b.ins().iconst(ptr, p)
                }
                Descs::Data => {
                    let id = module
                        .declare_anonymous_data(false, false)
                        .map_err(|e| Error::Codegen(e.to_string()))?;
                    let mut data = cranelift_module::DataDescription::new();
                    data.define(d.iter().flat_map(|v| v.to_le_bytes()).collect());
                    data.set_align(8);
                    module
                        .define_data(id, &data)
                        .map_err(|e| Error::Codegen(e.to_string()))?;
                    let gv = module.declare_data_in_func(id, b.func);
                    b.ins().symbol_value(ptr, gv)
                }
            })
        };

        for (k, instr) in prog.instrs.iter().enumerate() {
            match instr {
                Instr::Loop(spec) if wide.iter().any(|&(w, _)| w == k) => {
                    let fref = wide.iter().find(|&&(w, _)| w == k).map(|&(_, r)| r);
                    let n = spec.leaves.len() + spec.scalars.len() + spec.stores.len();
                    let slot = b.create_sized_stack_slot(StackSlotData::new(
                        StackSlotKind::ExplicitSlot,
                        (8 * n) as u32,
                        3,
                    ));
                    let at = |b: &mut FunctionBuilder, l: Loc, off: usize| {
                        let base = addr(b, l);
                        if off > 0 {
                            b.ins().iadd_imm_s(base, 4 * off as i64)
                        } else {
                            base
                        }
                    };
                    let bases = spec
                        .leaves
                        .iter()
                        .zip(&spec.leaf_offset)
                        .map(|(&(_, l), &o)| (l, o))
                        .chain(spec.scalars.iter().map(|&(_, l)| (l, 0)))
                        .chain(
                            spec.stores
                                .iter()
                                .zip(&spec.store_offset)
                                .map(|(&(_, l), &o)| (l, o)),
                        );
                    for (j, (l, o)) in bases.enumerate() {
                        let a = at(&mut b, l, o);
                        b.ins().stack_store(ptr, a, slot, (8 * j) as i32);
                    }
                    let p = b.ins().stack_addr(ptr, slot, 0);
                    b.ins().call(fref.expect("found above"), &[p]);
                }
                Instr::Call(k, args) => {
                    let mut vals = Vec::with_capacity(args.len());
                    for a in args {
                        vals.push(match a {
                            Arg::Loc(l) => addr(&mut b, *l),
                            Arg::Imm(v) => b.ins().iconst(ptr, *v),
                            Arg::Desc(d) => desc_ptr(&mut b, d.clone())?,
                            Arg::Ptrs(ls) => {
                                let slot = b.create_sized_stack_slot(StackSlotData::new(
                                    StackSlotKind::ExplicitSlot,
                                    (8 * ls.len()) as u32,
                                    3,
                                ));
                                for (j, &l) in ls.iter().enumerate() {
                                    let a = addr(&mut b, l);
                                    b.ins().stack_store(ptr, a, slot, (8 * j) as i32);
                                }
                                b.ins().stack_addr(ptr, slot, 0)
                            }
                            Arg::Body(k) => b.ins().func_addr(ptr, body_refs[*k]),
                        });
                    }
                    let h = refs[*k as usize];
                    b.ins().call(h, &vals);
                }
                Instr::Loop(spec) => {
                    // Over rows: a block parameter counts them, and each row's operands
                    // are found by their steps.
                    let mut row = None;
                    let mut blocks = None;
                    if spec.rows > 1 {
                        let header = b.create_block();
                        let body = b.create_block();
                        let exit = b.create_block();
                        b.append_block_param(header, types::I64);
                        let zero = b.ins().iconst(types::I64, 0);
                        b.ins().jump(header, &[zero.into()]);
                        b.switch_to_block(header);
                        let r = b.block_params(header)[0];
                        let more = b
                            .ins()
                            .icmp_imm_s(IntCC::SignedLessThan, r, spec.rows as i64);
                        b.ins().brif(more, body, &[], exit, &[]);
                        b.switch_to_block(body);
                        b.seal_block(body);
                        row = Some(r);
                        blocks = Some((header, exit));
                    }
                    let at = |b: &mut FunctionBuilder, l: Loc, step: usize, offset: usize| {
                        let base = addr(b, l);
                        let base = if offset > 0 {
                            b.ins().iadd_imm_s(base, 4 * offset as i64)
                        } else {
                            base
                        };
                        match row {
                            Some(r) if step > 0 => {
                                let off = b.ins().imul_imm_s(r, 4 * step as i64);
                                b.ins().iadd(base, off)
                            }
                            _ => base,
                        }
                    };
                    let tree = Tree {
                        order: spec.order.clone(),
                        leaves: spec
                            .leaves
                            .iter()
                            .zip(spec.leaf_step.iter().zip(&spec.leaf_offset))
                            .map(|(&(v, l), (&step, &off))| (v, at(&mut b, l, step, off)))
                            .collect(),
                        scalars: spec
                            .scalars
                            .iter()
                            .zip(&spec.scalar_step)
                            .map(|(&(j, l), &step)| (j, at(&mut b, l, step, 0)))
                            .collect(),
                        stores: spec
                            .stores
                            .iter()
                            .zip(spec.store_step.iter().zip(&spec.store_offset))
                            .map(|(&(m, l), (&step, &off))| (m, at(&mut b, l, step, off)))
                            .collect(),
                        members: spec.members.clone(),
                    };
                    fused_loop(&mut b, f, &tree, spec.count, has_fma)?;
                    if let (Some(r), Some((header, exit))) = (row, blocks) {
                        let next = b.ins().iadd_imm_s(r, 1);
                        b.ins().jump(header, &[next.into()]);
                        b.seal_block(header);
                        b.switch_to_block(exit);
                        b.seal_block(exit);
                    }
                }
            }
        }
        b.ins().return_(&[]);
        b.finalize(module.target_config());
        let clif = text.then(|| ctx.func.display().to_string() + &body_text);
        ctx.set_disasm(std::env::var_os("NNC_DISASM").is_some());
        module
            .define_function(id, &mut ctx)
            .map_err(|e| Error::Codegen(format!("{e:?}")))?;
        if let Some(c) = ctx.compiled_code()
            && let Some(v) = &c.vcode
        {
            eprintln!("DISASM {name}\n{v}");
        }
        module.clear_context(&mut ctx);
        Ok(Lowered {
            id,
            scratch: prog.scratch,
            unshared: prog.unshared,
            outputs: prog.outputs.clone(),
            in_place: prog.in_place,
            clif,
        })
    }
}

/// One value of an elementwise op, on vectors (`ty` = F32X4) or scalars (F32).
/// A fused elementwise expression: the root node and the inlined nodes under it, in an
/// order where operands come first, and what its leaves read.
struct Tree {
    /// Inlined nodes (operands before users), the root last.
    order: Vec<usize>,
    /// Values read from memory, one element per index, with their base addresses.
    leaves: Vec<(Value, cranelift_codegen::ir::Value)>,
    /// Scalars broadcast to every element (a `broadcast` of a rank-0 value), with the
    /// address of the scalar.
    scalars: Vec<(usize, cranelift_codegen::ir::Value)>,
    /// The nodes the loop stores, with their buffers.
    stores: Vec<(usize, cranelift_codegen::ir::Value)>,
    /// The step's nodes (read in registers by later members, also through aliases).
    members: Vec<usize>,
}

/// Per node of a fused loop, a value computed before the loop, as a scalar and as a vector.
type Hoisted = HashMap<usize, (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value)>;

/// `dst[i] = tree(i)` for `i < count`: one f32x4 loop with a scalar tail, every inlined
/// node computed in registers.
/// Emits one loop computing `tree` over `count` elements, f32x4 then a scalar tail. With
/// `fma` (the ISA reports it), `a * b + c` and `a * b - c` computed in the loop become one
/// fused multiply-add (one rounding instead of two; the unused product is dead code).
fn fused_loop(
    b: &mut FunctionBuilder,
    f: &Func,
    tree: &Tree,
    count: usize,
    fma: bool,
) -> Result<(), Error> {
    let flags = MemFlagsData::new().with_notrap();
    // Loop-invariant values, computed once before the loop: constants and broadcast
    // scalars, as scalars and as vectors.
    let mut invariant: Hoisted = HashMap::new();
    // A division by a loop-invariant value is a product with its reciprocal, computed once
    // (a division costs 3-5 times a product; the result may differ by one rounding).
    let mut reciprocals: Hoisted = HashMap::new();
    for &j in &tree.order {
        let n = &f.nodes[j];
        let scalar = match (n.op, &n.attr) {
            (Op::Const, Attr::Value(v)) => Some(b.ins().f32const(*v as f32)),
            // Not a broadcast of a value this loop computes (read in the loop instead).
            (Op::Broadcast, _) if member_of(f, n.args[0], &tree.members).is_none() => tree
                .scalars
                .iter()
                .find(|(k, _)| *k == j)
                .map(|&(_, addr)| b.ins().load(types::F32, flags, addr, 0)),
            _ => None,
        };
        if let Some(s) = scalar {
            let v = b.ins().splat(types::F32X4, s);
            invariant.insert(j, (s, v));
        }
        if let Some(&(s, _)) = invariant_divisor(f, j, |k| invariant.get(&k)) {
            let one = b.ins().f32const(1.0);
            let r = b.ins().fdiv(one, s);
            let v = b.ins().splat(types::F32X4, r);
            reciprocals.insert(j, (r, v));
        }
    }
    let body = |b: &mut FunctionBuilder,
                off: cranelift_codegen::ir::Value,
                ty: types::Type,
                reciprocals: &Hoisted| {
        let vector = ty.is_vector();
        let mut memo: HashMap<Value, cranelift_codegen::ir::Value> = HashMap::new();
        for &(v, base) in &tree.leaves {
            let p = b.ins().iadd(base, off);
            memo.insert(v, b.ins().load(ty, flags, p, 0));
        }
        for &j in &tree.order {
            let n = &f.nodes[j];
            let y = match invariant.get(&j) {
                Some(&(s, v)) => {
                    if vector {
                        v
                    } else {
                        s
                    }
                }
                None => {
                    let get = |memo: &HashMap<Value, cranelift_codegen::ir::Value>, a: Value| {
                        match memo.get(&a) {
                            Some(&v) => v,
                            // An earlier member of this loop, read through an alias.
                            None => {
                                let m = member_of(f, a, &tree.members).expect("a leaf or a member");
                                memo[&Value::Node(m as u32)]
                            }
                        }
                    };
                    let xs: Vec<_> = n.args.iter().map(|&a| get(&memo, a)).collect();
                    let fused = fma
                        .then(|| emit::mul_add(f, &tree.order, j, |m| invariant.contains_key(&m)))
                        .flatten();
                    match fused {
                        Some(c) => {
                            let a = &f.nodes[c.mul].args;
                            let (mut p, q) = (get(&memo, a[0]), get(&memo, a[1]));
                            let mut z = xs[c.addend];
                            if c.neg_product {
                                p = b.ins().fneg(p);
                            }
                            if c.neg_addend {
                                z = b.ins().fneg(z);
                            }
                            b.ins().fma(p, q, z)
                        }
                        None if reciprocals.contains_key(&j) => {
                            let (s, v) = reciprocals[&j];
                            b.ins().fmul(xs[0], if vector { v } else { s })
                        }
                        None => emit::compute(&mut Clif { b: &mut *b, ty }, n.op, &xs)?,
                    }
                }
            };
            memo.insert(Value::Node(j as u32), y);
        }
        let flags = MemFlagsData::new().with_notrap();
        for &(m, dst) in &tree.stores {
            let p = b.ins().iadd(dst, off);
            b.ins().store(flags, memo[&Value::Node(m as u32)], p, 0);
        }
        Ok::<(), Error>(())
    };
    // Two vectors per trip: the second's work overlaps the first's latency chain.
    let vec_end = (count / 8 * 8) as i64;
    if vec_end > 0 {
        let header = b.create_block();
        let body_block = b.create_block();
        let exit = b.create_block();
        b.append_block_param(header, types::I64);
        // The loop reads the reciprocals from stack slots written before it: Cranelift
        // places a pure value at its uses, so it would divide again on every trip (and it
        // drops a header parameter that is passed on unchanged).
        let slots: Vec<(usize, StackSlot)> = tree
            .order
            .iter()
            .filter_map(|j| reciprocals.get(j).map(|&(_, v)| (*j, v)))
            .map(|(j, v)| {
                let slot = b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    16,
                    4,
                ));
                b.ins().stack_store(types::I64, v, slot, 0);
                (j, slot)
            })
            .collect();
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(header, &[zero.into()]);
        b.switch_to_block(header);
        let i = b.block_params(header)[0];
        let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, i, vec_end);
        b.ins().brif(more, body_block, &[], exit, &[]);
        b.switch_to_block(body_block);
        b.seal_block(body_block);
        let in_loop: Hoisted = slots
            .iter()
            .map(|&(j, slot)| {
                let v = b.ins().stack_load(types::I64, types::F32X4, slot, 0);
                (j, (reciprocals[&j].0, v))
            })
            .collect();
        let off = b.ins().ishl_imm_u(i, 2);
        body(b, off, types::F32X4, &in_loop)?;
        let off = b.ins().iadd_imm_s(off, 16);
        body(b, off, types::F32X4, &in_loop)?;
        let next = b.ins().iadd_imm_s(i, 8);
        b.ins().jump(header, &[next.into()]);
        b.seal_block(header);
        b.switch_to_block(exit);
        b.seal_block(exit);
    }
    let mut j = vec_end as usize;
    if count - j >= 4 {
        let off = b.ins().iconst(types::I64, (4 * j) as i64);
        body(b, off, types::F32X4, &reciprocals)?;
        j += 4;
    }
    for j in j..count {
        let off = b.ins().iconst(types::I64, (4 * j) as i64);
        body(b, off, types::F32, &reciprocals)?;
    }
    Ok(())
}

// ---- the elementwise emitter's instructions in CLIF, on f32x4 or f32 ----

type V = cranelift_codegen::ir::Value;

/// Cranelift's `Lanes`: values of type `ty` (f32x4 in a loop's body, f32 in its tail).
struct Clif<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ty: types::Type,
}

impl Clif<'_, '_> {
    /// Four lanes of `bits`, as a constant of type `ty` (f32x4 or i32x4).
    fn vconst(&mut self, ty: types::Type, bits: u32) -> V {
        let bytes: Vec<u8> = (0..4).flat_map(|_| bits.to_le_bytes()).collect();
        let c = self
            .b
            .func
            .dfg
            .constants
            .insert(cranelift_codegen::ir::ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    fn int_ty(&self) -> types::Type {
        if self.ty.is_vector() {
            types::I32X4
        } else {
            types::I32
        }
    }
}

impl emit::Lanes for Clif<'_, '_> {
    type F = V;
    type I = V;
    type M = V;
    type E = Error;

    // A vector constant is one 16-byte constant-pool entry (`vconst`): one CLIF
    // instruction, read with one load, where `splat(f32const)` was two at each use (434 of
    // an LSTM gate loop's ~1,050). No speedup was measurable on its own (the loop's spills
    // and its four lanes dominated; `nnc_unary` took that loop off Cranelift).
    fn konst(&mut self, v: f32) -> emit::R<V> {
        Ok(if self.ty.is_vector() {
            self.vconst(types::F32X4, v.to_bits())
        } else {
            self.b.ins().f32const(v)
        })
    }
    fn iconst(&mut self, v: i32) -> emit::R<V> {
        Ok(if self.ty.is_vector() {
            self.vconst(types::I32X4, v as u32)
        } else {
            self.b.ins().iconst(types::I32, v as i64)
        })
    }
    fn add(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fadd(x, y))
    }
    fn sub(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fsub(x, y))
    }
    fn mul(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fmul(x, y))
    }
    fn div(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().fdiv(x, y))
    }
    fn neg(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fneg(x))
    }
    fn abs(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fabs(x))
    }
    fn sqrt(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().sqrt(x))
    }
    fn cmp(&mut self, c: emit::Cmp, x: V, y: V) -> emit::R<V> {
        let cc = match c {
            emit::Cmp::Lt => FloatCC::LessThan,
            emit::Cmp::Le => FloatCC::LessThanOrEqual,
            emit::Cmp::Gt => FloatCC::GreaterThan,
            emit::Cmp::Ge => FloatCC::GreaterThanOrEqual,
            emit::Cmp::Eq => FloatCC::Equal,
            emit::Cmp::Ne => FloatCC::NotEqual,
            emit::Cmp::Unordered => FloatCC::Unordered,
        };
        Ok(self.b.ins().fcmp(cc, x, y))
    }
    fn select(&mut self, m: V, x: V, y: V) -> emit::R<V> {
        Ok(if self.ty.is_vector() {
            let m = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().select(m, x, y)
        })
    }
    fn indicator(&mut self, m: V) -> emit::R<V> {
        if self.ty.is_vector() {
            // The mask's lanes are all ones or all zeros: and-ing them with 1.0 is one
            // instruction.
            let mf = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            let one = self.konst(1.0)?;
            Ok(self.b.ins().band(mf, one))
        } else {
            let one = self.konst(1.0)?;
            let zero = self.konst(0.0)?;
            Ok(self.b.ins().select(m, one, zero))
        }
    }
    fn bits(&mut self, x: V) -> emit::R<V> {
        let ity = self.int_ty();
        Ok(self.b.ins().bitcast(ity, MemFlagsData::new(), x))
    }
    fn float_bits(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().bitcast(self.ty, MemFlagsData::new(), x))
    }
    fn int_to_float(&mut self, x: V) -> emit::R<V> {
        Ok(self.b.ins().fcvt_from_sint(self.ty, x))
    }
    fn iadd(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().iadd(x, y))
    }
    fn isub(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().isub(x, y))
    }
    fn and(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().band(x, y))
    }
    fn or(&mut self, x: V, y: V) -> emit::R<V> {
        Ok(self.b.ins().bor(x, y))
    }
    fn shl(&mut self, x: V, by: u32) -> emit::R<V> {
        Ok(self.b.ins().ishl_imm_u(x, i64::from(by)))
    }
    fn ushr(&mut self, x: V, by: u32) -> emit::R<V> {
        Ok(self.b.ins().ushr_imm_u(x, i64::from(by)))
    }
}
