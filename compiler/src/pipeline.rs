//! The pipeline driver: from a checked module to one model's functions, each through the
//! optimization passes — the forward pass, and with a train block the loss, the
//! inference-mode loss (for models that read `training`), the gradient function (autodiff
//! of the loss) and the optimizer rule. The training session, the `ir` stages and
//! everything else that needs a model's functions take them from here.

use crate::Error;

use nnc_ir::{Func, Module, Role};

/// One model's functions, optimized (`source_loss` as checked, before the passes).
#[derive(Clone, Debug)]
pub struct ModelFuncs {
    /// `@M`.
    pub forward: Func,
    /// `@M.loss`, with a train block.
    pub loss: Option<Func>,
    /// `@M.eval`, for models that read `training`.
    pub eval: Option<Func>,
    /// `@M.grad`: autodiff of the checked loss, then the passes.
    pub grad: Option<Func>,
    /// `@M.update`.
    pub update: Option<Func>,
    /// `@M.loss` as checked (node numbers match the checker's source lines).
    pub source_loss: Option<Func>,
}

/// Model `name`'s functions out of `module`, each through `optimize` (the pass pipeline;
/// a caller may watch it). With `train`, the loss, gradient and update functions must
/// exist.
pub fn model_funcs(
    module: &Module,
    name: &str,
    train: bool,
    optimize: &mut dyn FnMut(&Func) -> Result<Func, Error>,
) -> Result<ModelFuncs, Error> {
    let checked = module
        .func(name)
        .ok_or_else(|| Error::Missing(format!("there is no model `{name}`")))?;
    let forward = optimize(checked)?;
    let mut out = ModelFuncs {
        forward,
        loss: None,
        eval: None,
        grad: None,
        update: None,
        source_loss: None,
    };
    if !train {
        return Ok(out);
    }
    let l = module
        .func(&Role::Loss.name(name))
        .ok_or_else(|| Error::Missing(format!("`{name}` has no loss function")))?;
    let names = |f: &Func| f.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if names(l) != names(checked) {
        return Err(Error::Missing(format!(
            "`{}` and `{name}` disagree on parameters",
            Role::Loss.name(name)
        )));
    }
    out.grad = Some(optimize(&crate::autodiff::grad(l)?)?);
    out.update = Some(optimize(
        module
            .func(&Role::Update.name(name))
            .ok_or_else(|| Error::Missing(format!("`{name}` has no update rule")))?,
    )?);
    out.loss = Some(optimize(l)?);
    if let Some(e) = module.func(&Role::Eval.name(name)) {
        out.eval = Some(optimize(e)?);
    }
    out.source_loss = Some(l.clone());
    Ok(out)
}
