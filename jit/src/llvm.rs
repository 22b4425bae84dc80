//! The LLVM backend (cargo feature `llvm`): the same program as the Cranelift backend
//! (`program::program`: kernel calls with their descriptors, fused loops) emitted as LLVM IR
//! through inkwell, optimized at O3 and compiled by MCJIT for the host CPU.
//!
//! Fused loops are written with explicit vectors as wide as the host's registers (16 lanes
//! with AVX-512), then the same body on one-lane vectors for the tail, so every value is a
//! `VectorValue` and one emitter serves both; exp, ln and tanh are the Cephes polynomials
//! of `emit.rs`, which both backends share. Products are not contracted into
//! fused multiply-adds (LLVM's default), so a loop rounds as the interpreter does.
//!
//! Every function carries the host's `target-cpu` and `target-features`: without them
//! MCJIT emits SSE2 only.

use crate::Error;

use std::collections::HashMap;

use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::types::{BasicMetadataTypeEnum, VectorType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::{AddressSpace, FloatPredicate, OptimizationLevel};
use nnc_ir::{Attr, Func, Op, Value};

use crate::aot::ObjectSpec;
use crate::emit;
use crate::kernel::{Code, Entry, Kernel};
use crate::plan::{Loc, invariant_divisor, member_of, sizes_text};
use crate::program::{Arg, Instr, KernelFn, LoopSpec, Program, program};

/// What keeps compiled code alive: the engine owns the machine code, the context the
/// module. Fields drop in order, so the engine goes before the context it borrows.
pub(crate) struct LlvmCode {
    _engine: ExecutionEngine<'static>,
    _context: Box<Context>,
}

// The engine and context are used by no other thread than the one dropping them, and the
// entry point they keep alive is plain machine code.
unsafe impl Send for LlvmCode {}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Codegen(format!("LLVM: {e}"))
}

fn machine() -> Result<TargetMachine, Error> {
    Target::initialize_native(&InitializationConfig::default()).map_err(err)?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(err)?;
    let cpu = TargetMachine::get_host_cpu_name().to_string();
    let features = TargetMachine::get_host_cpu_features().to_string();
    target
        .create_target_machine(
            &triple,
            &cpu,
            &features,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::JITDefault,
        )
        .ok_or_else(|| err("no target machine for the host"))
}

/// Lanes of the widest float vector the host has.
fn lanes() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 16;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return 8;
        }
    }
    4
}

/// The program's function in LLVM IR, as generated (before optimization), and after O3.
pub(crate) fn ir_text(f: &Func, prog: &Program) -> Result<(String, String), Error> {
    let context = Context::create();
    let tm = machine()?;
    let module = emit(&context, &tm, f, prog)?;
    let before = module.print_to_string().to_string();
    optimize(&module, &tm)?;
    Ok((before, module.print_to_string().to_string()))
}

fn optimize(module: &Module, tm: &TargetMachine) -> Result<(), Error> {
    module
        .run_passes("default<O3>", tm, PassBuilderOptions::create())
        .map_err(err)
}

/// Compiles the program; the entry point has the Cranelift backend's signature.
pub(crate) fn compile_program(f: &Func, prog: &Program) -> Result<(Entry, LlvmCode), Error> {
    let context = Box::new(Context::create());
    // The context lives in its box as long as the returned `LlvmCode`, which drops the
    // engine (and the module it owns) first.
    let ctx: &'static Context = unsafe { &*(context.as_ref() as *const Context) };
    let tm = machine()?;
    let module = emit(ctx, &tm, f, prog)?;
    optimize(&module, &tm)?;
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(err)?;
    for (name, addr) in kernel_addresses() {
        if let Some(fv) = module.get_function(name) {
            engine.add_global_mapping(&fv, addr);
        }
    }
    let addr = engine.get_function_address(ENTRY).map_err(err)?;
    // The function was emitted with exactly this signature.
    let entry: Entry = unsafe { std::mem::transmute::<usize, Entry>(addr) };
    Ok((
        entry,
        LlvmCode {
            _engine: engine,
            _context: context,
        },
    ))
}

const ENTRY: &str = "nnc_entry";

fn kernel_addresses() -> impl Iterator<Item = (&'static str, usize)> {
    crate::kernels::KERNELS.iter().map(|k| (k.name, (k.addr)()))
}

struct Emitter<'a, 'ctx> {
    cx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: Builder<'ctx>,
    f: &'a Func,
    /// Base pointers of inputs, parameters and outputs; the scratch arena.
    ins: Vec<PointerValue<'ctx>>,
    params: Vec<PointerValue<'ctx>>,
    outs: Vec<PointerValue<'ctx>>,
    scratch: PointerValue<'ctx>,
    function: FunctionValue<'ctx>,
    descs: usize,
    /// The program's loop bodies.
    bodies: Vec<FunctionValue<'ctx>>,
}

fn emit<'ctx>(
    cx: &'ctx Context,
    tm: &TargetMachine,
    f: &Func,
    prog: &Program,
) -> Result<Module<'ctx>, Error> {
    let module = new_module(cx, tm, &f.name);
    emit_into(cx, &module, f, prog, ENTRY, None)?;
    module.verify().map_err(err)?;
    Ok(module)
}

fn new_module<'ctx>(cx: &'ctx Context, tm: &TargetMachine, name: &str) -> Module<'ctx> {
    let module = cx.create_module(name);
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
}

/// Marks `function` as compiled for the host CPU (without this, MCJIT emits SSE2 only).
fn for_host(cx: &Context, function: FunctionValue) {
    for (k, v) in [
        ("target-cpu", TargetMachine::get_host_cpu_name().to_string()),
        (
            "target-features",
            TargetMachine::get_host_cpu_features().to_string(),
        ),
    ] {
        function.add_attribute(
            inkwell::attributes::AttributeLoc::Function,
            cx.create_string_attribute(k, &v),
        );
    }
}

/// Adds the program as the function `name(ins, params, outs, scratch)` to `module`.
fn emit_into<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    f: &Func,
    prog: &Program,
    name: &str,
    linkage: Option<inkwell::module::Linkage>,
) -> Result<FunctionValue<'ctx>, Error> {
    // Loop bodies first, as private functions the scan kernel is given.
    let mut bodies = Vec::new();
    for (k, (bf, bp)) in prog.bodies.iter().enumerate() {
        let bname = format!("{name}_loop{k}");
        let private = Some(inkwell::module::Linkage::Private);
        bodies.push(emit_into(cx, module, bf, bp, &bname, private)?);
    }
    let ptr = cx.ptr_type(AddressSpace::default());
    let fn_ty = cx.void_type().fn_type(&[ptr.into(); 4], false);
    let function = module.add_function(name, fn_ty, linkage);
    for_host(cx, function);
    let entry = cx.append_basic_block(function, "entry");
    let b = cx.create_builder();
    b.position_at_end(entry);
    let arg = |k: u32| function.get_nth_param(k).map(|p| p.into_pointer_value());
    let (Some(ins), Some(pars), Some(outs), Some(scratch)) = (arg(0), arg(1), arg(2), arg(3))
    else {
        return Err(err("entry parameters"));
    };
    let load_ptrs =
        |base: PointerValue<'ctx>, n: usize| -> Result<Vec<PointerValue<'ctx>>, Error> {
            (0..n)
                .map(|k| {
                    let at = unsafe {
                        b.build_in_bounds_gep(
                            ptr,
                            base,
                            &[cx.i64_type().const_int(k as u64, false)],
                            "",
                        )
                    }
                    .map_err(err)?;
                    Ok(b.build_load(ptr, at, "").map_err(err)?.into_pointer_value())
                })
                .collect()
        };
    let ins = load_ptrs(ins, f.inputs.len())?;
    let params = load_ptrs(pars, f.params.len())?;
    let outs = load_ptrs(outs, f.outputs.len())?;
    let mut e = Emitter {
        cx,
        module,
        b,
        f,
        ins,
        params,
        outs,
        scratch,
        function,
        descs: 0,
        bodies,
    };
    for instr in &prog.instrs {
        match instr {
            Instr::Call(k, args) => e.call(*k, args)?,
            Instr::Loop(spec) => e.fused_loop(spec)?,
        }
    }
    e.b.build_return(None).map_err(err)?;
    Ok(function)
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    fn i64(&self, v: i64) -> IntValue<'ctx> {
        self.cx.i64_type().const_int(v as u64, true)
    }

    fn addr(&self, l: Loc) -> Result<PointerValue<'ctx>, Error> {
        Ok(match l {
            Loc::Input(i) => self.ins[i],
            Loc::Param(i) => self.params[i],
            Loc::Output(k) => self.outs[k],
            Loc::Scratch(o) => unsafe {
                self.b
                    .build_in_bounds_gep(
                        self.cx.f32_type(),
                        self.scratch,
                        &[self.i64(o as i64)],
                        "",
                    )
                    .map_err(err)?
            },
        })
    }

    fn kernel(&self, k: KernelFn) -> FunctionValue<'ctx> {
        let p: BasicMetadataTypeEnum = self.cx.ptr_type(AddressSpace::default()).into();
        let i: BasicMetadataTypeEnum = self.cx.i64_type().into();
        let sym = k.sym();
        let (name, params): (&str, Vec<BasicMetadataTypeEnum>) = (
            sym.name,
            sym.params
                .iter()
                .map(|q| match q {
                    crate::kernels::Param::Ptr => p,
                    crate::kernels::Param::I64 => i,
                })
                .collect(),
        );
        self.module.get_function(name).unwrap_or_else(|| {
            let ty = self.cx.void_type().fn_type(&params, false);
            self.module.add_function(name, ty, None)
        })
    }

    fn call(&mut self, k: KernelFn, args: &[Arg]) -> Result<(), Error> {
        let mut vals: Vec<BasicMetadataValueEnum> = Vec::with_capacity(args.len());
        for a in args {
            vals.push(match a {
                Arg::Loc(l) => self.addr(*l)?.into(),
                Arg::Imm(v) => self.i64(*v).into(),
                Arg::Desc(d) => {
                    let ty = self.cx.i64_type().array_type(d.len() as u32);
                    let g = self
                        .module
                        .add_global(ty, None, &format!("desc{}", self.descs));
                    self.descs += 1;
                    let items: Vec<IntValue> = d.iter().map(|&v| self.i64(v)).collect();
                    g.set_initializer(&self.cx.i64_type().const_array(&items));
                    g.set_constant(true);
                    g.set_linkage(inkwell::module::Linkage::Private);
                    g.as_pointer_value().into()
                }
                Arg::Ptrs(ls) => {
                    let p = self.cx.ptr_type(AddressSpace::default());
                    let ty = p.array_type(ls.len() as u32);
                    let slot = self.b.build_alloca(ty, "ptrs").map_err(err)?;
                    for (j, &l) in ls.iter().enumerate() {
                        let at = unsafe {
                            self.b
                                .build_in_bounds_gep(p, slot, &[self.i64(j as i64)], "")
                                .map_err(err)?
                        };
                        self.b.build_store(at, self.addr(l)?).map_err(err)?;
                    }
                    slot.into()
                }
                Arg::Body(k) => self.bodies[*k].as_global_value().as_pointer_value().into(),
            });
        }
        let kf = self.kernel(k);
        self.b.build_call(kf, &vals, "").map_err(err)?;
        Ok(())
    }

    /// One loop over `spec.count` elements in vectors of the host's width, then a loop
    /// of one-lane vectors for the rest.
    /// Over rows (`spec.rows`), the row's operands found by their steps.
    fn fused_loop(&mut self, spec: &LoopSpec) -> Result<(), Error> {
        if spec.rows == 1 {
            return self.row_loops(spec, None);
        }
        let i64t = self.cx.i64_type();
        let pre = self.b.get_insert_block().ok_or_else(|| err("no block"))?;
        let head = self.cx.append_basic_block(self.function, "rows");
        let body = self.cx.append_basic_block(self.function, "row");
        let exit = self.cx.append_basic_block(self.function, "rows_done");
        self.b.build_unconditional_branch(head).map_err(err)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(i64t, "r").map_err(err)?;
        let r = phi.as_basic_value().into_int_value();
        let more = self
            .b
            .build_int_compare(
                inkwell::IntPredicate::ULT,
                r,
                self.i64(spec.rows as i64),
                "",
            )
            .map_err(err)?;
        self.b
            .build_conditional_branch(more, body, exit)
            .map_err(err)?;
        self.b.position_at_end(body);
        self.row_loops(spec, Some(r))?;
        let next = self.b.build_int_add(r, self.i64(1), "").map_err(err)?;
        let latch = self.b.get_insert_block().ok_or_else(|| err("no block"))?;
        self.b.build_unconditional_branch(head).map_err(err)?;
        phi.add_incoming(&[(&self.i64(0), pre), (&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    /// One loop over a row's `spec.count` elements in vectors of the host's width, then a
    /// loop of one-lane vectors for the rest.
    fn row_loops(&mut self, spec: &LoopSpec, row: Option<IntValue<'ctx>>) -> Result<(), Error> {
        let w = lanes() as usize;
        let main = spec.count / w * w;
        if main > 0 {
            self.counted_loop(spec, 0, main, w as u32, row)?;
        }
        if main < spec.count {
            self.counted_loop(spec, main, spec.count, 1, row)?;
        }
        Ok(())
    }

    /// The address of `l`, `step` elements on per row.
    fn at(
        &self,
        l: Loc,
        row: Option<IntValue<'ctx>>,
        step: usize,
        offset: usize,
    ) -> Result<PointerValue<'ctx>, Error> {
        let base = self.addr(l)?;
        let base = if offset > 0 {
            unsafe {
                self.b
                    .build_in_bounds_gep(self.cx.f32_type(), base, &[self.i64(offset as i64)], "")
            }
            .map_err(err)?
        } else {
            base
        };
        match row {
            Some(r) if step > 0 => {
                let off = self
                    .b
                    .build_int_mul(r, self.i64(step as i64), "")
                    .map_err(err)?;
                unsafe {
                    self.b
                        .build_in_bounds_gep(self.cx.f32_type(), base, &[off], "")
                }
                .map_err(err)
            }
            _ => Ok(base),
        }
    }

    fn counted_loop(
        &mut self,
        spec: &LoopSpec,
        from: usize,
        to: usize,
        lanes: u32,
        row: Option<IntValue<'ctx>>,
    ) -> Result<(), Error> {
        let vt = self.cx.f32_type().vec_type(lanes);
        // Loop-invariant values: constants and broadcast scalars.
        let mut invariant: HashMap<usize, VectorValue<'ctx>> = HashMap::new();
        let mut reciprocals: HashMap<usize, VectorValue<'ctx>> = HashMap::new();
        for &j in &spec.order {
            let n = &self.f.nodes[j];
            match (n.op, &n.attr) {
                (Op::Const, Attr::Value(v)) => {
                    invariant.insert(j, splat_const(vt, *v as f32));
                }
                (Op::Broadcast, _) if member_of(self.f, n.args[0], &spec.members).is_none() => {
                    if let Some(k) = spec.scalars.iter().position(|(k, _)| *k == j) {
                        let p = self.at(spec.scalars[k].1, row, spec.scalar_step[k], 0)?;
                        let s = self.b.build_load(self.cx.f32_type(), p, "").map_err(err)?;
                        let v = self.splat(vt, s.into_float_value())?;
                        invariant.insert(j, v);
                    }
                }
                _ => {}
            }
            // A division by a loop-invariant value: a product with its reciprocal.
            if let Some(&y) = invariant_divisor(self.f, j, |k| invariant.get(&k)) {
                let r = self
                    .b
                    .build_float_div(splat_const(vt, 1.0), y, "")
                    .map_err(err)?;
                reciprocals.insert(j, r);
            }
        }
        let leaves: Vec<(Value, PointerValue<'ctx>)> = spec
            .leaves
            .iter()
            .zip(spec.leaf_step.iter().zip(&spec.leaf_offset))
            .map(|(&(v, l), (&step, &off))| Ok((v, self.at(l, row, step, off)?)))
            .collect::<Result<_, Error>>()?;
        let stores: Vec<(usize, PointerValue<'ctx>)> = spec
            .stores
            .iter()
            .zip(spec.store_step.iter().zip(&spec.store_offset))
            .map(|(&(m, l), (&step, &off))| Ok((m, self.at(l, row, step, off)?)))
            .collect::<Result<_, Error>>()?;
        let pre = self.b.get_insert_block().ok_or_else(|| err("no block"))?;
        let head = self.cx.append_basic_block(self.function, "loop");
        let body = self.cx.append_basic_block(self.function, "body");
        let exit = self.cx.append_basic_block(self.function, "exit");
        self.b.build_unconditional_branch(head).map_err(err)?;
        self.b.position_at_end(head);
        let i64t = self.cx.i64_type();
        let phi = self.b.build_phi(i64t, "i").map_err(err)?;
        let i = phi.as_basic_value().into_int_value();
        let more = self
            .b
            .build_int_compare(inkwell::IntPredicate::ULT, i, self.i64(to as i64), "")
            .map_err(err)?;
        self.b
            .build_conditional_branch(more, body, exit)
            .map_err(err)?;
        self.b.position_at_end(body);
        let mut memo: HashMap<Value, VectorValue<'ctx>> = HashMap::new();
        for &(v, base) in &leaves {
            let p = unsafe {
                self.b
                    .build_in_bounds_gep(self.cx.f32_type(), base, &[i], "")
            }
            .map_err(err)?;
            let x = self.b.build_load(vt, p, "").map_err(err)?;
            if let Some(inst) = x.as_instruction_value() {
                inst.set_alignment(4).map_err(err)?;
            }
            memo.insert(v, x.into_vector_value());
        }
        for &j in &spec.order {
            let n = &self.f.nodes[j];
            let y = match invariant.get(&j) {
                Some(&v) => v,
                None => {
                    let xs: Vec<VectorValue<'ctx>> = n
                        .args
                        .iter()
                        .map(|&a| match memo.get(&a) {
                            Some(&v) => Ok(v),
                            None => {
                                let m = member_of(self.f, a, &spec.members)
                                    .ok_or_else(|| err("an operand neither leaf nor member"))?;
                                Ok(memo[&Value::Node(m as u32)])
                            }
                        })
                        .collect::<Result<_, Error>>()?;
                    match reciprocals.get(&j) {
                        Some(&r) => self.b.build_float_mul(xs[0], r, "").map_err(err)?,
                        None => emit::compute(&mut Lanes { e: self, vt }, n.op, &xs)?,
                    }
                }
            };
            memo.insert(Value::Node(j as u32), y);
        }
        for &(m, base) in &stores {
            let p = unsafe {
                self.b
                    .build_in_bounds_gep(self.cx.f32_type(), base, &[i], "")
            }
            .map_err(err)?;
            let st = self
                .b
                .build_store(p, memo[&Value::Node(m as u32)])
                .map_err(err)?;
            st.set_alignment(4).map_err(err)?;
        }
        let next = self
            .b
            .build_int_add(i, self.i64(lanes as i64), "")
            .map_err(err)?;
        let latch = self.b.get_insert_block().ok_or_else(|| err("no block"))?;
        self.b.build_unconditional_branch(head).map_err(err)?;
        phi.add_incoming(&[(&self.i64(from as i64), pre), (&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    fn splat(
        &self,
        vt: VectorType<'ctx>,
        s: inkwell::values::FloatValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, Error> {
        let i32t = self.cx.i32_type();
        let v = self
            .b
            .build_insert_element(vt.get_poison(), s, i32t.const_zero(), "")
            .map_err(err)?;
        let mask = i32t.vec_type(vt.get_size()).const_zero();
        self.b
            .build_shuffle_vector(v, vt.get_poison(), mask, "")
            .map_err(err)
    }

    fn intrinsic(&self, name: &str, x: VectorValue<'ctx>) -> Result<VectorValue<'ctx>, Error> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[x.get_type().into()]))
            .ok_or_else(|| err(format!("no intrinsic {name}")))?;
        let r = self.b.build_call(decl, &[x.into()], "").map_err(err)?;
        match r.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v.into_vector_value()),
            inkwell::values::ValueKind::Instruction(_) => {
                Err(err(format!("{name} returned nothing")))
            }
        }
    }
}

/// LLVM's `Lanes`: vectors of type `vt` (the host's width in a loop's body, one lane in
/// its tail); constants are constant vectors.
struct Lanes<'e, 'a, 'ctx> {
    e: &'e Emitter<'a, 'ctx>,
    vt: VectorType<'ctx>,
}

impl<'ctx> Lanes<'_, '_, 'ctx> {
    fn ints(&self) -> VectorType<'ctx> {
        self.e.cx.i32_type().vec_type(self.vt.get_size())
    }
    fn cast(&self, x: VectorValue<'ctx>, to: VectorType<'ctx>) -> emit::R<VectorValue<'ctx>> {
        Ok(self
            .e
            .b
            .build_bit_cast(x, to, "")
            .map_err(err)?
            .into_vector_value())
    }
}

impl<'ctx> emit::Lanes for Lanes<'_, '_, 'ctx> {
    type F = VectorValue<'ctx>;
    type I = VectorValue<'ctx>;
    type M = VectorValue<'ctx>;
    type E = Error;

    fn konst(&mut self, v: f32) -> emit::R<Self::F> {
        Ok(splat_const(self.vt, v))
    }
    fn iconst(&mut self, v: i32) -> emit::R<Self::I> {
        let it = self.e.cx.i32_type();
        let items: Vec<IntValue> = (0..self.vt.get_size())
            .map(|_| it.const_int(v as u32 as u64, false))
            .collect();
        Ok(VectorType::const_vector(&items))
    }
    fn add(&mut self, x: Self::F, y: Self::F) -> emit::R<Self::F> {
        self.e.b.build_float_add(x, y, "").map_err(err)
    }
    fn sub(&mut self, x: Self::F, y: Self::F) -> emit::R<Self::F> {
        self.e.b.build_float_sub(x, y, "").map_err(err)
    }
    fn mul(&mut self, x: Self::F, y: Self::F) -> emit::R<Self::F> {
        self.e.b.build_float_mul(x, y, "").map_err(err)
    }
    fn div(&mut self, x: Self::F, y: Self::F) -> emit::R<Self::F> {
        self.e.b.build_float_div(x, y, "").map_err(err)
    }
    fn neg(&mut self, x: Self::F) -> emit::R<Self::F> {
        self.e.b.build_float_neg(x, "").map_err(err)
    }
    fn abs(&mut self, x: Self::F) -> emit::R<Self::F> {
        self.e.intrinsic("llvm.fabs", x)
    }
    fn sqrt(&mut self, x: Self::F) -> emit::R<Self::F> {
        self.e.intrinsic("llvm.sqrt", x)
    }
    fn cmp(&mut self, c: emit::Cmp, x: Self::F, y: Self::F) -> emit::R<Self::M> {
        let p = match c {
            emit::Cmp::Lt => FloatPredicate::OLT,
            emit::Cmp::Le => FloatPredicate::OLE,
            emit::Cmp::Gt => FloatPredicate::OGT,
            emit::Cmp::Ge => FloatPredicate::OGE,
            emit::Cmp::Eq => FloatPredicate::OEQ,
            emit::Cmp::Ne => FloatPredicate::UNE,
            emit::Cmp::Unordered => FloatPredicate::UNO,
        };
        self.e.b.build_float_compare(p, x, y, "").map_err(err)
    }
    fn select(&mut self, m: Self::M, x: Self::F, y: Self::F) -> emit::R<Self::F> {
        Ok(self
            .e
            .b
            .build_select(m, x, y, "")
            .map_err(err)?
            .into_vector_value())
    }
    fn indicator(&mut self, m: Self::M) -> emit::R<Self::F> {
        let (one, zero) = (splat_const(self.vt, 1.0), splat_const(self.vt, 0.0));
        self.select(m, one, zero)
    }
    fn bits(&mut self, x: Self::F) -> emit::R<Self::I> {
        self.cast(x, self.ints())
    }
    fn float_bits(&mut self, x: Self::I) -> emit::R<Self::F> {
        self.cast(x, self.vt)
    }
    fn int_to_float(&mut self, x: Self::I) -> emit::R<Self::F> {
        self.e
            .b
            .build_signed_int_to_float(x, self.vt, "")
            .map_err(err)
    }
    fn iadd(&mut self, x: Self::I, y: Self::I) -> emit::R<Self::I> {
        self.e.b.build_int_add(x, y, "").map_err(err)
    }
    fn isub(&mut self, x: Self::I, y: Self::I) -> emit::R<Self::I> {
        self.e.b.build_int_sub(x, y, "").map_err(err)
    }
    fn and(&mut self, x: Self::I, y: Self::I) -> emit::R<Self::I> {
        self.e.b.build_and(x, y, "").map_err(err)
    }
    fn or(&mut self, x: Self::I, y: Self::I) -> emit::R<Self::I> {
        self.e.b.build_or(x, y, "").map_err(err)
    }
    fn shl(&mut self, x: Self::I, by: u32) -> emit::R<Self::I> {
        let k = self.iconst(by as i32)?;
        self.e.b.build_left_shift(x, k, "").map_err(err)
    }
    fn ushr(&mut self, x: Self::I, by: u32) -> emit::R<Self::I> {
        let k = self.iconst(by as i32)?;
        self.e.b.build_right_shift(x, k, false, "").map_err(err)
    }
}

fn splat_const<'ctx>(vt: VectorType<'ctx>, v: f32) -> VectorValue<'ctx> {
    let ft = vt.get_element_type().into_float_type();
    let items: Vec<_> = (0..vt.get_size())
        .map(|_| ft.const_float(v as f64))
        .collect();
    VectorType::const_vector(&items)
}

/// A private constant global of `module` holding `value`; its address.
fn constant<'ctx>(
    module: &Module<'ctx>,
    name: &str,
    value: impl inkwell::values::BasicValue<'ctx>,
) -> PointerValue<'ctx> {
    let value = value.as_basic_value_enum();
    let g = module.add_global(value.get_type(), None, name);
    g.set_initializer(&value);
    g.set_constant(true);
    g.set_linkage(inkwell::module::Linkage::Private);
    g.as_pointer_value()
}

/// The value a call of a function returning `i32` returned.
fn returned(call: inkwell::values::CallSiteValue) -> Result<inkwell::values::IntValue, Error> {
    match call.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Ok(v.into_int_value()),
        inkwell::values::ValueKind::Instruction(_) => Err(err("the call returned nothing")),
    }
}

/// An object file for `nnc build` (see `object.rs`): each `(rows, program)` as a private
/// kernel, the weights, their address table and the descriptor `nnc_rt_forward` reads as
/// private constants, and the exported `<symbol>_forward` (and `_load`) as trampolines
/// into `nnc-rt`.
pub(crate) fn object(
    spec: &ObjectSpec,
    kernels: &[(usize, Program)],
    rows: &[(bool, usize)],
    outs: &[(bool, usize)],
) -> Result<Vec<u8>, Error> {
    use inkwell::module::Linkage;
    let cx = Context::create();
    Target::initialize_native(&InitializationConfig::default()).map_err(err)?;
    let triple = TargetMachine::get_default_triple();
    let tm = Target::from_triple(&triple)
        .map_err(err)?
        .create_target_machine(
            &triple,
            &TargetMachine::get_host_cpu_name().to_string(),
            &TargetMachine::get_host_cpu_features().to_string(),
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| err("no target machine for the host"))?;
    let module = new_module(&cx, &tm, &spec.symbol);
    let mut fns = Vec::new();
    for (r, prog) in kernels {
        let name = format!("{}_kernel_{r}", spec.symbol);
        fns.push((
            *r,
            emit_into(&cx, &module, spec.func, prog, &name, Some(Linkage::Private))?,
        ));
    }
    let ptr = cx.ptr_type(AddressSpace::default());
    let f32t = cx.f32_type();
    let i64t = cx.i64_type();
    let i32t = cx.i32_type();
    let file = spec.weights == crate::aot::Weights::File;
    let mut weights = Vec::new();
    if !file {
        for (k, values) in spec.params.iter().enumerate() {
            let items: Vec<_> = values.iter().map(|&v| f32t.const_float(v as f64)).collect();
            let g = module.add_global(
                f32t.array_type(values.len() as u32),
                None,
                &format!("{}_weight_{k}", spec.symbol),
            );
            g.set_initializer(&f32t.const_array(&items));
            g.set_constant(true);
            g.set_linkage(Linkage::Private);
            g.set_alignment(64);
            weights.push(g.as_pointer_value());
        }
    }
    let count = spec.params.len();
    let table = module.add_global(
        ptr.array_type(count as u32),
        None,
        &format!("{}_weights", spec.symbol),
    );
    if file {
        // Filled by `<symbol>_load`.
        table.set_initializer(&ptr.array_type(count as u32).const_zero());
    } else {
        table.set_initializer(&ptr.const_array(&weights));
        table.set_constant(true);
    }
    table.set_linkage(Linkage::Private);
    let names_lens = if file {
        let names: Vec<_> = spec
            .func
            .params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let text = cx.const_string(p.name.as_bytes(), true);
                let g =
                    module.add_global(text.get_type(), None, &format!("{}_name_{k}", spec.symbol));
                g.set_initializer(&text);
                g.set_constant(true);
                g.set_linkage(Linkage::Private);
                g.as_pointer_value()
            })
            .collect();
        let lens: Vec<_> = spec
            .params
            .iter()
            .map(|v| i64t.const_int(v.len() as u64, false))
            .collect();
        let names = constant(&module, "names", ptr.const_array(&names));
        let lens = constant(&module, "lens", i64t.const_array(&lens));
        Some((names, lens))
    } else {
        None
    };

    // The descriptor `nnc_rt_forward` reads (see `aot::descriptor`).
    let scratch_bytes = kernels
        .iter()
        .map(|(_, p)| 4 * p.scratch)
        .max()
        .unwrap_or(0);
    let kernel_rows: Vec<usize> = kernels.iter().map(|(r, _)| *r).collect();
    let d = crate::aot::descriptor(spec, &kernel_rows, scratch_bytes)?;
    let ints = |v: &[u64]| -> Vec<_> { v.iter().map(|&w| i64t.const_int(w, false)).collect() };
    let rows_g = constant(&module, "rows", i64t.const_array(&ints(&d.rows)));
    let pair = cx.struct_type(&[i64t.into(), ptr.into()], false);
    let pairs: Vec<_> = fns
        .iter()
        .map(|(r, f)| {
            let entry = f.as_global_value().as_pointer_value();
            pair.const_named_struct(&[i64t.const_int(*r as u64, false).into(), entry.into()])
        })
        .collect();
    let kernels_g = constant(&module, "kernels", pair.const_array(&pairs));
    let fields: Vec<inkwell::values::BasicValueEnum> = d
        .words
        .iter()
        .map(|w| {
            use crate::aot::Word;
            let p = match (w, names_lens) {
                (Word::Int(v), _) => return i64t.const_int(*v, false).into(),
                (Word::Rows, _) => rows_g,
                (Word::Kernels, _) => kernels_g,
                (Word::Table, _) => table.as_pointer_value(),
                (Word::Names, Some((n, _))) => n,
                (Word::Lens, Some((_, l))) => l,
                (Word::Names | Word::Lens, None) => ptr.const_null(),
            };
            p.into()
        })
        .collect();
    let desc = constant(&module, "desc", cx.const_struct(&fields, false));

    // The exported functions are trampolines into `nnc-rt`, which checks the arguments,
    // allocates scratch and runs the kernels over the batch (written once, for both
    // backends).
    let io = rows.len() + outs.len();
    let mut params: Vec<BasicMetadataTypeEnum> = vec![ptr.into(); io];
    params.push(i64t.into());
    let forward = module.add_function(
        &format!("{}_forward", spec.symbol),
        i32t.fn_type(&params, false),
        None,
    );
    let rt_forward = module.add_function(
        "nnc_rt_forward",
        i32t.fn_type(&[ptr.into(), ptr.into(), i64t.into()], false),
        None,
    );
    let b = cx.create_builder();
    b.position_at_end(cx.append_basic_block(forward, "entry"));
    let args: Vec<_> = forward.get_param_iter().collect();
    let array = b
        .build_array_alloca(ptr, i64t.const_int(io.max(1) as u64, false), "io")
        .map_err(err)?;
    for (j, a) in args[..io].iter().enumerate() {
        let slot =
            unsafe { b.build_in_bounds_gep(ptr, array, &[i64t.const_int(j as u64, false)], "") }
                .map_err(err)?;
        b.build_store(slot, a.into_pointer_value()).map_err(err)?;
    }
    let call = b
        .build_call(
            rt_forward,
            &[desc.into(), array.into(), args[io].into_int_value().into()],
            "",
        )
        .map_err(err)?;
    b.build_return(Some(&returned(call)?)).map_err(err)?;
    if file {
        let rt_load = module.add_function(
            "nnc_rt_load",
            i32t.fn_type(&[ptr.into(), ptr.into()], false),
            None,
        );
        let load = module.add_function(
            &format!("{}_load", spec.symbol),
            i32t.fn_type(&[ptr.into()], false),
            None,
        );
        b.position_at_end(cx.append_basic_block(load, "entry"));
        let path = load
            .get_nth_param(0)
            .ok_or_else(|| err("load's parameter"))?;
        let call = b
            .build_call(rt_load, &[desc.into(), path.into()], "")
            .map_err(err)?;
        b.build_return(Some(&returned(call)?)).map_err(err)?;
    }
    module.verify().map_err(err)?;
    optimize(&module, &tm)?;
    let buf = tm
        .write_to_memory_buffer(&module, inkwell::targets::FileType::Object)
        .map_err(err)?;
    Ok(buf.as_slice().to_vec())
}
/// Compiles `f` with LLVM: the same program, another code generator.
pub fn compile_llvm(f: &Func, dims: &HashMap<String, usize>) -> Result<Kernel, Error> {
    let prog = program(f, dims)?;
    let (entry, code) = compile_program(f, &prog)?;
    Ok(Kernel {
        module: Some(Code::Llvm(code)),
        entry,
        scratch_len: prog.scratch,
        unshared_len: prog.unshared,
        outputs: prog.outputs,
        in_place: prog.in_place,
        _descs: Vec::new(),
    })
}

/// The LLVM IR of `f` for these sizes: as generated, then after LLVM's O3 pipeline.
pub fn llvm_text(f: &Func, dims: &HashMap<String, usize>) -> Result<String, Error> {
    let prog = program(f, dims)?;
    let (before, after) = ir_text(f, &prog)?;
    Ok(format!(
        "; @{} for {}: as generated\n{before}\n; after O3 for the host CPU\n{after}",
        f.name,
        sizes_text(dims)
    ))
}
