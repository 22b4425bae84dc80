//! nnc: a compiler for neural networks.
//!
//! A model and how it learns are described in a small declarative language (`.nn` files);
//! nnc parses and checks it with errors that point at the source, lowers it to a typed
//! tensor IR that prints as text at every stage, and evaluates it with a reference
//! interpreter. This crate is the facade over the pipeline's crates and the home of the
//! `nnc` command line.
//!
//! ```
//! let src = "model M(x: f32[B, 4]) -> f32[B, 2] { return dense(x, 2) }";
//! let ir = nnc::stage_text(src, nnc::Stage::Ir).unwrap();
//! assert!(ir.starts_with("func @M(%x: f32[B, 4]) -> f32[B, 2] {"));
//! ```

pub use nnc_compiler as compiler;
pub use nnc_ir as ir;
pub use nnc_lang as lang;
pub use nnc_runtime as runtime;
pub use nnc_train as train;

mod net;

pub use net::{Error, Net, Result, Tensor};
pub use nnc_macros::{include_model, model};
pub use nnc_runtime::data::Dataset;
pub use nnc_train::Metrics;

use nnc_ir::Role;
use nnc_lang::Diagnostic;

/// A stage of the pipeline whose program prints as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The syntax tree, printed as canonical source.
    Ast,
    /// The typed tensor IR after lowering, with the prelude inlined.
    Ir,
    /// The training graph of each trained model: `@M.grad` (forward and backward, from
    /// reverse-mode autodiff of `@M.loss`) and `@M.update` (the optimizer rule).
    Grad,
    /// What the backends compile: each model's forward pass and training graph after the
    /// optimization pipeline (simplify, CSE, DCE).
    Opt,
    /// The optimized functions with the JIT's plan as notes: fused loops, kernel calls,
    /// buffers (for the train block's batch size; the update rule for all parameters).
    Fused,
    /// The Cranelift IR the JIT compiles them to.
    Clif,
    /// The LLVM IR of the LLVM backend, as generated and after O3 (builds with the `llvm`
    /// feature; not in `ALL`: it names the host CPU, so it is not snapshotted).
    Llvm,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Ast,
        Stage::Ir,
        Stage::Grad,
        Stage::Opt,
        Stage::Fused,
        Stage::Clif,
    ];

    /// The stage's name on the command line and in snapshot names.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ast => "ast",
            Stage::Ir => "ir",
            Stage::Grad => "grad",
            Stage::Opt => "opt",
            Stage::Fused => "fused",
            Stage::Clif => "clif",
            Stage::Llvm => "llvm",
        }
    }

    /// Parses a stage name.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .chain([Stage::Llvm])
            .find(|s| s.name() == name)
    }
}

/// The program at a stage, as text; or the diagnostics that stop it getting there.
pub fn stage_text(src: &str, stage: Stage) -> std::result::Result<String, Vec<Diagnostic>> {
    match stage {
        Stage::Ast => nnc_lang::parse(src).map(|p| nnc_lang::print::program(&p)),
        Stage::Ir => nnc_lang::check(src).map(|c| c.module.to_string()),
        Stage::Grad => {
            let checked = nnc_lang::check(src)?;
            training_module(&checked.module)
                .map(|m| m.to_string())
                .map_err(|e| vec![nnc_lang::internal(e)])
        }
        Stage::Opt => {
            let checked = nnc_lang::check(src)?;
            optimized_module(&checked.module, None)
                .map(|m| m.to_string())
                .map_err(|e| vec![nnc_lang::internal(e)])
        }
        Stage::Fused | Stage::Clif | Stage::Llvm => {
            let checked = nnc_lang::check(src)?;
            native_text(&checked, stage).map_err(|e| vec![nnc_lang::internal(e)])
        }
    }
}

/// The JIT's plan (or its Cranelift or LLVM IR) for every optimized function, at the train
/// block's batch size (32 without one) and, for update rules, all of the model's parameters.
fn native_text(checked: &nnc_lang::Checked, stage: Stage) -> std::result::Result<String, String> {
    let module = optimized_module(&checked.module, None)?;
    let mut out = String::new();
    for f in &module.funcs {
        if !nnc_jit::supports(f) {
            out.push_str(&format!(
                "; @{} uses f64: it runs on the interpreter\n\n",
                f.name
            ));
            continue;
        }
        let model = f.name.split('.').next().unwrap_or_default();
        let batch = checked
            .trains
            .iter()
            .find(|t| t.model == model)
            .map_or(32, |t| t.batch as usize);
        let params: u64 = module
            .func(model)
            .map(|m| m.params.iter().map(|p| p.ty.shape.volume().0 as u64).sum())
            .unwrap_or(1);
        let mut dims = std::collections::HashMap::new();
        let all = f
            .inputs
            .iter()
            .map(|a| &a.ty)
            .chain(f.params.iter().map(|p| &p.ty));
        for ty in all {
            for d in ty.shape.dims() {
                if let nnc_ir::Dim::Sym(s) = d {
                    let size = if Role::of(&f.name).1 == Role::Update {
                        params as usize
                    } else {
                        batch
                    };
                    dims.insert(s.clone(), size);
                }
            }
        }
        let text = match stage {
            Stage::Clif => nnc_jit::clif_text(f, &dims)?,
            Stage::Llvm => nnc_jit::llvm_text(f, &dims)?,
            _ => nnc_jit::plan_text(f, &dims)?,
        };
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

/// Every model's forward pass and training graph (`@M`, `@M.grad`, `@M.update`) through
/// the optimization pipeline. With `print_after`, returns the module as it was right after
/// that pass instead.
pub fn optimized_module(
    module: &nnc_ir::Module,
    print_after: Option<&str>,
) -> std::result::Result<nnc_ir::Module, String> {
    if let Some(p) = print_after
        && !nnc_compiler::passes::PIPELINE.iter().any(|q| q.name == p)
    {
        let names: Vec<&str> = nnc_compiler::passes::PIPELINE
            .iter()
            .map(|q| q.name)
            .collect();
        return Err(format!(
            "no pass `{p}`; the pipeline is: {}",
            names.join(", ")
        ));
    }
    let mut out = nnc_ir::Module::default();
    for f in &module.funcs {
        let (name, Role::Forward) = Role::of(&f.name) else {
            continue;
        };
        let train = module.func(&Role::Loss.name(name)).is_some();
        let mut optimize =
            |g: &nnc_ir::Func| -> std::result::Result<nnc_ir::Func, nnc_compiler::Error> {
                let mut snapshot = None;
                let opt = nnc_compiler::passes::optimize(g, &mut |pass, h| {
                    if Some(pass) == print_after {
                        snapshot = Some(h.clone());
                    }
                })?;
                Ok(snapshot.unwrap_or(opt))
            };
        let funcs = nnc_compiler::pipeline::model_funcs(module, name, train, &mut optimize)?;
        out.funcs.push(funcs.forward);
        out.funcs.extend(funcs.grad);
        out.funcs.extend(funcs.update);
    }
    Ok(out)
}

/// The training graphs of a checked module: for every `@M.loss`, its gradient function
/// `@M.grad` followed by `@M.update`.
pub fn training_module(module: &nnc_ir::Module) -> std::result::Result<nnc_ir::Module, String> {
    let mut out = nnc_ir::Module::default();
    for f in &module.funcs {
        let (base, Role::Loss) = Role::of(&f.name) else {
            continue;
        };
        out.funcs.push(nnc_compiler::autodiff::grad(f)?);
        if let Some(u) = module.func(&Role::Update.name(base)) {
            out.funcs.push(u.clone());
        }
    }
    Ok(out)
}

/// Reads a source file's bytes as text; invalid UTF-8 is a diagnostic, not a panic.
pub fn source_from_bytes(bytes: &[u8]) -> std::result::Result<&str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        nnc_lang::not_utf8(nnc_lang::Span::new(nnc_lang::diagnostics::USER, at, at), at)
    })
}

/// Renders diagnostics for a file, without colors (as tests snapshot them).
pub fn render_plain(name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let sources = nnc_lang::Sources {
        user: (name, src),
        prelude: nnc_lang::PRELUDE_SRC,
    };
    nnc_lang::render(diags, &sources, false)
}
