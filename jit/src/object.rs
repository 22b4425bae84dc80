//! Ahead-of-time code: a model's forward pass as a relocatable object file with its
//! weights embedded (or read at run time from a safetensors file by `<name>_load`), and
//! the C header that declares it.
//!
//! The same lowering as the JIT (`cranelift::lower_into`) writes the kernel into a Cranelift
//! `ObjectModule` (or `llvm::object` into an LLVM module, with the same wrapper in LLVM
//! IR); descriptors and weights become read-only data, the run-time kernels
//! stay undefined symbols (`nnc_matmul`, ...) that `libnnc_rt.a` or the `nnc-rt` crate
//! provides, and scratch memory comes from `malloc`. Around the kernels sits one exported
//! function written in CLIF:
//!
//! ```c
//! int <name>_forward(const float *x, float *y, size_t batch);
//! ```
//!
//! It checks its arguments, then runs the kernel compiled for `chunk` rows on as many
//! chunks as fit and the one compiled for a single row on the rest, which is exact only
//! because the caller has checked that each output row depends on its own input row alone
//! (`nnc_compiler::rows`). With a fixed batch, one kernel, and any other batch is refused.

use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use nnc_ir::DType;

pub use crate::aot::{
    Batch, Built, EINDEX, EINVAL, EIO, ENOMEM, ENOWEIGHTS, EWEIGHTS, OK, ObjectSpec, Weights,
    c_ident, snake_case,
};
use crate::aot::{gathers, header, io_shape, row_bytes};
use crate::cranelift::{self, Descs, Lowered};

/// Compiles `spec` into an object file and writes its header.
pub fn build(spec: &ObjectSpec) -> Result<Built, String> {
    let f = spec.func;
    for a in &f.inputs {
        if a.ty.dtype != DType::F32 {
            return Err(format!(
                "`nnc build` takes f32 inputs; `{}` is {}",
                a.name, a.ty
            ));
        }
    }
    for (k, ty) in f.output_types().iter().enumerate() {
        if ty.dtype != DType::F32 {
            return Err(format!("`nnc build` gives f32 outputs; output {k} is {ty}"));
        }
    }
    if spec.params.len() != f.params.len() {
        return Err(format!(
            "{} parameter values for {} parameters",
            spec.params.len(),
            f.params.len()
        ));
    }
    let sizes: Vec<(usize, Option<String>)> = match &spec.batch {
        Batch::Any { dim, chunk } => vec![(*chunk, Some(dim.clone())), (1, Some(dim.clone()))],
        Batch::Fixed { dim, n } => vec![(*n, dim.clone())],
    };
    let dims_for = |rows: usize, dim: &Option<String>| {
        let mut dims = spec.dims.clone();
        if let Some(d) = dim {
            dims.insert(d.clone(), rows);
        }
        dims
    };
    for (p, values) in f.params.iter().zip(spec.params) {
        let want: usize = io_shape(&p.ty, &spec.batch, &spec.dims)?.1.iter().product();
        if values.len() != want {
            return Err(format!(
                "parameter `{}` has {} values for {}",
                p.name,
                values.len(),
                p.ty
            ));
        }
    }
    if spec.codegen == crate::Codegen::Llvm {
        #[cfg(feature = "llvm")]
        {
            let programs = sizes
                .iter()
                .map(|(rows, dim)| Ok((*rows, crate::program::program(f, &dims_for(*rows, dim))?)))
                .collect::<Result<Vec<_>, String>>()?;
            let (ins, outs) = row_bytes(spec)?;
            let object = crate::llvm::object(spec, &programs, &ins, &outs)?;
            return Ok(Built {
                object,
                header: header(spec)?,
                scratch_bytes: programs
                    .iter()
                    .map(|(_, p)| 4 * p.scratch)
                    .max()
                    .unwrap_or(0),
                weight_bytes: match spec.weights {
                    Weights::Embedded => spec.params.iter().map(|p| 4 * p.len()).sum(),
                    Weights::File => 0,
                },
            });
        }
        #[cfg(not(feature = "llvm"))]
        return Err(crate::NO_LLVM.into());
    }
    let (isa, has_fma) = cranelift::host_isa(true)?;
    let builder = ObjectBuilder::new(
        isa,
        spec.symbol.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| e.to_string())?;
    let mut module = ObjectModule::new(builder);
    let helpers = cranelift::declare_kernels(&mut module)?;

    // One kernel per batch size: (rows per call, kernel).
    let mut kernels: Vec<(usize, Lowered)> = Vec::new();
    for (rows, dim) in &sizes {
        let dims = dims_for(*rows, dim);
        let name = format!("{}_kernel_{rows}", spec.symbol);
        let l = cranelift::lower_into(
            &mut module,
            &helpers,
            has_fma,
            f,
            &dims,
            &name,
            Linkage::Local,
            &mut Descs::Data,
        )?;
        kernels.push((*rows, l));
    }

    // The weights, and the table of their addresses the kernels take as `params`: filled
    // by relocations when the weights are inside, by `<symbol>_load` when they are not.
    let mut weight_bytes = 0;
    let mut weights: Vec<DataId> = Vec::new();
    if spec.weights == Weights::Embedded {
        for (k, values) in spec.params.iter().enumerate() {
            let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            if bytes.is_empty() {
                bytes.push(0);
            }
            weight_bytes += bytes.len();
            weights.push(data(
                &mut module,
                &format!("{}_weight_{k}", spec.symbol),
                bytes,
                64,
                false,
            )?);
        }
    }
    // Writable: `<symbol>_load` fills it when the weights come from a file.
    let table = address_table(
        &mut module,
        &format!("{}_weights", spec.symbol),
        &weights,
        f.params.len(),
        true,
    )?;
    if spec.weights == Weights::File {
        loader(&mut module, spec, table)?;
    }

    let scratch_bytes = kernels
        .iter()
        .map(|(_, l)| 4 * l.scratch)
        .max()
        .unwrap_or(0);
    wrapper(&mut module, spec, &kernels, table, scratch_bytes)?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| format!("writing the object file: {e}"))?;
    Ok(Built {
        object,
        header: header(spec)?,
        scratch_bytes,
        weight_bytes,
    })
}

/// Declares a C function the object calls (a libc or `nnc-rt` symbol): `params` pointer
/// or size arguments, and its return type.
fn import(
    module: &mut ObjectModule,
    name: &str,
    params: usize,
    returns: Option<types::Type>,
) -> Result<FuncId, String> {
    let mut sig = module.make_signature();
    for _ in 0..params {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.extend(returns.map(AbiParam::new));
    module
        .declare_function(name, Linkage::Import, &sig)
        .map_err(|e| e.to_string())
}

/// A local data object holding `bytes`.
fn data(
    module: &mut ObjectModule,
    name: &str,
    bytes: Vec<u8>,
    align: u64,
    writable: bool,
) -> Result<DataId, String> {
    let id = module
        .declare_data(name, Linkage::Local, writable, false)
        .map_err(|e| e.to_string())?;
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(align);
    module.define_data(id, &d).map_err(|e| e.to_string())?;
    Ok(id)
}

/// A local array of `len` pointers, the first ones the addresses of `targets` (the rest
/// null).
fn address_table(
    module: &mut ObjectModule,
    name: &str,
    targets: &[DataId],
    len: usize,
    writable: bool,
) -> Result<DataId, String> {
    let id = module
        .declare_data(name, Linkage::Local, writable, false)
        .map_err(|e| e.to_string())?;
    let mut d = DataDescription::new();
    d.define(vec![0u8; 8 * len.max(1)].into_boxed_slice());
    d.set_align(8);
    for (k, &t) in targets.iter().enumerate() {
        let gv = module.declare_data_in_data(t, &mut d);
        d.write_data_addr((8 * k) as u32, gv, 0);
    }
    module.define_data(id, &d).map_err(|e| e.to_string())?;
    Ok(id)
}

/// `int <symbol>_load(const char *path)`: `nnc_rt_load_weights` with the weights' names
/// and sizes, into the table the kernels read.
fn loader(module: &mut ObjectModule, spec: &ObjectSpec, table: DataId) -> Result<(), String> {
    let ptr = types::I64;
    let f = spec.func;
    let mut name_ids = Vec::new();
    for (k, p) in f.params.iter().enumerate() {
        let mut bytes = p.name.as_bytes().to_vec();
        bytes.push(0);
        name_ids.push(data(
            module,
            &format!("{}_name_{k}", spec.symbol),
            bytes,
            1,
            false,
        )?);
    }
    let names = address_table(
        module,
        &format!("{}_names", spec.symbol),
        &name_ids,
        name_ids.len(),
        false,
    )?;
    let lens: Vec<u8> = spec
        .params
        .iter()
        .flat_map(|v| (v.len() as u64).to_le_bytes())
        .chain(std::iter::repeat_n(0, 8))
        .collect();
    let lens = data(module, &format!("{}_lens", spec.symbol), lens, 8, false)?;

    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(types::I32));
    let id = module
        .declare_function(&format!("{}_load", spec.symbol), Linkage::Export, &sig)
        .map_err(|e| e.to_string())?;
    let rt = import(module, "nnc_rt_load_weights", 5, Some(types::I32))?;
    let mut ctx = Context::new();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let rt = module.declare_func_in_func(rt, b.func);
        let [names, lens, table] =
            [names, lens, table].map(|d| module.declare_data_in_func(d, b.func));
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let path = b.block_params(entry)[0];
        let count = b.ins().iconst(ptr, f.params.len() as i64);
        let [names, lens, table] = [names, lens, table].map(|g| b.ins().symbol_value(ptr, g));
        let call = b.ins().call(rt, &[path, count, names, lens, table]);
        let r = b.inst_results(call)[0];
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(())
}

/// `int <symbol>_forward(inputs..., outputs..., size_t batch)`.
fn wrapper(
    module: &mut ObjectModule,
    spec: &ObjectSpec,
    kernels: &[(usize, Lowered)],
    table: DataId,
    scratch_bytes: usize,
) -> Result<FuncId, String> {
    let ptr = types::I64;
    let (ins, outs) = row_bytes(spec)?;
    let mut sig: Signature = module.make_signature();
    for _ in 0..ins.len() + outs.len() + 1 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let id = module
        .declare_function(&format!("{}_forward", spec.symbol), Linkage::Export, &sig)
        .map_err(|e| e.to_string())?;
    let malloc = import(module, "malloc", 1, Some(ptr))?;
    let free = import(module, "free", 1, None)?;
    let index_error = if gathers(spec.func) {
        Some(import(module, "nnc_rt_index_error", 0, Some(ptr))?)
    } else {
        None
    };

    let mut ctx = Context::new();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let malloc = module.declare_func_in_func(malloc, b.func);
        let free = module.declare_func_in_func(free, b.func);
        let index_error = index_error.map(|f| module.declare_func_in_func(f, b.func));
        let kernel_refs: Vec<_> = kernels
            .iter()
            .map(|(rows, l)| (*rows, module.declare_func_in_func(l.id, b.func)))
            .collect();
        let table = module.declare_data_in_func(table, b.func);

        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let invalid = b.create_block();
        let no_memory = b.create_block();
        b.switch_to_block(entry);
        let args = b.block_params(entry).to_vec();
        let batch = args[args.len() - 1];
        let io = &args[..args.len() - 1];
        // Null pointers and an empty or (fixed) wrong batch are refused.
        for &p in io {
            let next = b.create_block();
            b.ins().brif(p, next, &[], invalid, &[]);
            b.switch_to_block(next);
        }
        let next = b.create_block();
        match &spec.batch {
            Batch::Fixed { n, .. } => {
                let ok = b.ins().icmp_imm_u(IntCC::Equal, batch, *n as i64);
                b.ins().brif(ok, next, &[], invalid, &[]);
            }
            Batch::Any { .. } => {
                b.ins().brif(batch, next, &[], invalid, &[]);
            }
        }
        b.switch_to_block(next);
        if spec.weights == Weights::File && !spec.func.params.is_empty() {
            // Not loaded yet: the table's first pointer is still null.
            let no_weights = b.create_block();
            let t = b.ins().symbol_value(ptr, table);
            let first = b.ins().load(
                ptr,
                cranelift_codegen::ir::MemFlagsData::new().with_notrap(),
                t,
                0,
            );
            let next = b.create_block();
            b.ins().brif(first, next, &[], no_weights, &[]);
            b.switch_to_block(no_weights);
            let e = b.ins().iconst(types::I32, ENOWEIGHTS as i64);
            b.ins().return_(&[e]);
            b.switch_to_block(next);
        }
        let scratch = if scratch_bytes > 0 {
            let size = b.ins().iconst(ptr, scratch_bytes as i64);
            let call = b.ins().call(malloc, &[size]);
            let s = b.inst_results(call)[0];
            let next = b.create_block();
            b.ins().brif(s, next, &[], no_memory, &[]);
            b.switch_to_block(next);
            s
        } else {
            b.ins().iconst(ptr, 0)
        };
        let slot = |b: &mut FunctionBuilder, n: usize| {
            b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (8 * n.max(1)) as u32,
                3,
            ))
        };
        let in_slot = slot(&mut b, ins.len());
        let out_slot = slot(&mut b, outs.len());
        let params = b.ins().symbol_value(ptr, table);
        let zero = b.ins().iconst(ptr, 0);
        let done = b.create_block();
        // Each kernel in turn runs while at least its rows remain: `row` is a block
        // parameter of each loop's head.
        let mut start = zero;
        for &(rows, kernel) in &kernel_refs {
            let head = b.create_block();
            let row = b.append_block_param(head, ptr);
            let body = b.create_block();
            let exit = b.create_block();
            let exit_row = b.append_block_param(exit, ptr);
            b.ins().jump(head, &[start.into()]);
            b.switch_to_block(head);
            let left = b.ins().isub(batch, row);
            let enough = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, left, rows as i64);
            b.ins().brif(enough, body, &[], exit, &[row.into()]);
            b.switch_to_block(body);
            for (slot_, (user, list)) in [
                (in_slot, (&io[..ins.len()], &ins)),
                (out_slot, (&io[ins.len()..], &outs)),
            ] {
                for (j, (&p, &(has_rows, bytes))) in user.iter().zip(list.iter()).enumerate() {
                    let at = if has_rows {
                        let off = b.ins().imul_imm_u(row, bytes as i64);
                        b.ins().iadd(p, off)
                    } else {
                        p
                    };
                    b.ins().stack_store(ptr, at, slot_, (8 * j) as i32);
                }
            }
            let ip = b.ins().stack_addr(ptr, in_slot, 0);
            let op = b.ins().stack_addr(ptr, out_slot, 0);
            b.ins().call(kernel, &[ip, params, op, scratch]);
            let next_row = b.ins().iadd_imm_s(row, rows as i64);
            b.ins().jump(head, &[next_row.into()]);
            b.switch_to_block(exit);
            start = exit_row;
        }
        b.ins().jump(done, &[]);
        b.switch_to_block(done);
        if scratch_bytes > 0 {
            b.ins().call(free, &[scratch]);
        }
        let ok = if let Some(index_error) = index_error {
            // An id outside its table was recorded (this thread): EINDEX, else OK.
            let call = b.ins().call(index_error, &[]);
            let bad = b.inst_results(call)[0];
            let (e, ok) = (
                b.ins().iconst(types::I32, EINDEX as i64),
                b.ins().iconst(types::I32, OK as i64),
            );
            b.ins().select(bad, e, ok)
        } else {
            b.ins().iconst(types::I32, OK as i64)
        };
        b.ins().return_(&[ok]);
        b.switch_to_block(invalid);
        let e = b.ins().iconst(types::I32, EINVAL as i64);
        b.ins().return_(&[e]);
        b.switch_to_block(no_memory);
        let e = b.ins().iconst(types::I32, ENOMEM as i64);
        b.ins().return_(&[e]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(id)
}
