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

use crate::Error;

use cranelift_codegen::Context;
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
use crate::aot::{Descriptor, Word, descriptor, header, io_shape, row_bytes};
use crate::cranelift::{self, Descs, Lowered};

/// Compiles `spec` into an object file and writes its header.
pub fn build(spec: &ObjectSpec) -> Result<Built, Error> {
    let f = spec.func;
    for a in &f.inputs {
        if a.ty.dtype != DType::F32 {
            return Err(Error::Unsupported(format!(
                "`nnc build` takes f32 inputs; `{}` is {}",
                a.name, a.ty
            )));
        }
    }
    for (k, ty) in f.output_types().iter().enumerate() {
        if ty.dtype != DType::F32 {
            return Err(Error::Unsupported(format!(
                "`nnc build` gives f32 outputs; output {k} is {ty}"
            )));
        }
    }
    if spec.params.len() != f.params.len() {
        return Err(Error::Input(format!(
            "{} parameter values for {} parameters",
            spec.params.len(),
            f.params.len()
        )));
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
            return Err(Error::Input(format!(
                "parameter `{}` has {} values for {}",
                p.name,
                values.len(),
                p.ty
            )));
        }
    }
    if spec.codegen == crate::Codegen::Llvm {
        #[cfg(feature = "llvm")]
        {
            let programs = sizes
                .iter()
                .map(|(rows, dim)| Ok((*rows, crate::program::program(f, &dims_for(*rows, dim))?)))
                .collect::<Result<Vec<_>, Error>>()?;
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
        return Err(Error::NoLlvm);
    }
    let (isa, has_fma) = cranelift::host_isa(true)?;
    let builder = ObjectBuilder::new(
        isa,
        spec.symbol.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| Error::Codegen(e.to_string()))?;
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
    let names_lens = if spec.weights == Weights::File {
        Some(names_and_lens(&mut module, spec)?)
    } else {
        None
    };

    let scratch_bytes = kernels
        .iter()
        .map(|(_, l)| 4 * l.scratch)
        .max()
        .unwrap_or(0);
    let rows: Vec<usize> = kernels.iter().map(|(r, _)| *r).collect();
    let d = descriptor(spec, &rows, scratch_bytes)?;
    let desc = descriptor_data(&mut module, spec, &d, &kernels, table, names_lens)?;
    let (ins, outs) = row_bytes(spec)?;
    trampolines(&mut module, spec, desc, ins.len() + outs.len())?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| Error::Codegen(format!("writing the object file: {e}")))?;
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
) -> Result<FuncId, Error> {
    let mut sig = module.make_signature();
    for _ in 0..params {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.extend(returns.map(AbiParam::new));
    module
        .declare_function(name, Linkage::Import, &sig)
        .map_err(|e| Error::Codegen(e.to_string()))
}

/// A local data object holding `bytes`.
fn data(
    module: &mut ObjectModule,
    name: &str,
    bytes: Vec<u8>,
    align: u64,
    writable: bool,
) -> Result<DataId, Error> {
    let id = module
        .declare_data(name, Linkage::Local, writable, false)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(align);
    module
        .define_data(id, &d)
        .map_err(|e| Error::Codegen(e.to_string()))?;
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
) -> Result<DataId, Error> {
    let id = module
        .declare_data(name, Linkage::Local, writable, false)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut d = DataDescription::new();
    d.define(vec![0u8; 8 * len.max(1)].into_boxed_slice());
    d.set_align(8);
    for (k, &t) in targets.iter().enumerate() {
        let gv = module.declare_data_in_data(t, &mut d);
        d.write_data_addr((8 * k) as u32, gv, 0);
    }
    module
        .define_data(id, &d)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    Ok(id)
}

/// The weights' names (C strings) and float counts, for `nnc_rt_load`.
fn names_and_lens(module: &mut ObjectModule, spec: &ObjectSpec) -> Result<(DataId, DataId), Error> {
    let mut name_ids = Vec::new();
    for (k, p) in spec.func.params.iter().enumerate() {
        let mut bytes = p.name.as_bytes().to_vec();
        bytes.push(0);
        let name = format!("{}_name_{k}", spec.symbol);
        name_ids.push(data(module, &name, bytes, 1, false)?);
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
    Ok((names, lens))
}

/// The descriptor `nnc_rt_forward` reads, as local data: its words, with the addresses of
/// the `rows` array, the kernels array (rows, entry per kernel), the weights' table and
/// the names and sizes filled in by relocations.
fn descriptor_data(
    module: &mut ObjectModule,
    spec: &ObjectSpec,
    desc: &Descriptor,
    kernels: &[(usize, Lowered)],
    table: DataId,
    names_lens: Option<(DataId, DataId)>,
) -> Result<DataId, Error> {
    let words = |v: &[u64]| -> Vec<u8> {
        let mut b: Vec<u8> = v.iter().flat_map(|w| w.to_le_bytes()).collect();
        b.resize(b.len().max(8), 0);
        b
    };
    let rows = data(
        module,
        &format!("{}_rows", spec.symbol),
        words(&desc.rows),
        8,
        false,
    )?;
    let kernels_id = module
        .declare_data(
            &format!("{}_kernels", spec.symbol),
            Linkage::Local,
            false,
            false,
        )
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut d = DataDescription::new();
    let pairs: Vec<u64> = desc.kernel_rows.iter().flat_map(|&r| [r, 0]).collect();
    d.define(words(&pairs).into_boxed_slice());
    d.set_align(8);
    for (k, (_, l)) in kernels.iter().enumerate() {
        let f = module.declare_func_in_data(l.id, &mut d);
        d.write_function_addr((16 * k + 8) as u32, f);
    }
    module
        .define_data(kernels_id, &d)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let id = module
        .declare_data(
            &format!("{}_desc", spec.symbol),
            Linkage::Local,
            false,
            false,
        )
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut d = DataDescription::new();
    let ints: Vec<u64> = desc
        .words
        .iter()
        .map(|w| match w {
            Word::Int(v) => *v,
            _ => 0,
        })
        .collect();
    d.define(words(&ints).into_boxed_slice());
    d.set_align(8);
    for (k, w) in desc.words.iter().enumerate() {
        let target = match (w, names_lens) {
            (Word::Int(_), _) => continue,
            (Word::Rows, _) => rows,
            (Word::Kernels, _) => kernels_id,
            (Word::Table, _) => table,
            (Word::Names, Some((n, _))) => n,
            (Word::Lens, Some((_, l))) => l,
            (Word::Names | Word::Lens, None) => {
                return Err(Error::Codegen("names without a table".into()));
            }
        };
        let gv = module.declare_data_in_data(target, &mut d);
        d.write_data_addr((8 * k) as u32, gv, 0);
    }
    module
        .define_data(id, &d)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    Ok(id)
}

/// The exported functions, as trampolines into `nnc-rt` (where the forward pass's
/// argument checks, scratch memory and chunking are written once):
/// `int <symbol>_forward(inputs..., outputs..., size_t batch)` packs its pointers into
/// an array and calls `nnc_rt_forward(&desc, io, batch)`; with file weights,
/// `int <symbol>_load(const char *path)` calls `nnc_rt_load(&desc, path)`.
fn trampolines(
    module: &mut ObjectModule,
    spec: &ObjectSpec,
    desc: DataId,
    io: usize,
) -> Result<(), Error> {
    let ptr = types::I64;
    let mut exports = vec![(
        format!("{}_forward", spec.symbol),
        io + 1,
        "nnc_rt_forward",
        3,
    )];
    if spec.weights == Weights::File {
        exports.push((format!("{}_load", spec.symbol), 1, "nnc_rt_load", 2));
    }
    for (name, params, target, target_params) in exports {
        let mut sig: Signature = module.make_signature();
        for _ in 0..params {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let id = module
            .declare_function(&name, Linkage::Export, &sig)
            .map_err(|e| Error::Codegen(e.to_string()))?;
        let rt = import(module, target, target_params, Some(types::I32))?;
        let mut ctx = Context::new();
        ctx.func.signature = sig;
        let mut fbc = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
            let rt = module.declare_func_in_func(rt, b.func);
            let desc = module.declare_data_in_func(desc, b.func);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let args = b.block_params(entry).to_vec();
            let desc = b.ins().symbol_value(ptr, desc);
            let call_args = if target_params == 3 {
                let slot = b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    (8 * io.max(1)) as u32,
                    3,
                ));
                for (j, &p) in args[..io].iter().enumerate() {
                    b.ins().stack_store(ptr, p, slot, (8 * j) as i32);
                }
                let array = b.ins().stack_addr(ptr, slot, 0);
                vec![desc, array, args[io]]
            } else {
                vec![desc, args[0]]
            };
            let call = b.ins().call(rt, &call_args);
            let r = b.inst_results(call)[0];
            b.ins().return_(&[r]);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| Error::Codegen(format!("{e:?}")))?;
        module.clear_context(&mut ctx);
    }
    Ok(())
}
