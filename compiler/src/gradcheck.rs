//! Gradient checks: the autodiff gradient of a loss against central finite differences,
//! both computed in f64 by the reference interpreter.
//!
//! For each trained parameter, each checked element `w` is nudged by `±eps` and the
//! numerical derivative `(L(w + eps) - L(w - eps)) / 2 eps` is compared with the analytic
//! one. The error reported is `|analytic - numeric| / max(|analytic|, |numeric|, floor)`:
//! relative where the derivative is large, absolute (scaled by `1/floor`) near zero, where
//! the rounding error of the loss (about `1e-16 * |L| / eps`) dominates finite differences.
//!
//! A model that learns by a rule of its own (a layer's `grad` block, `stop_gradient`) does
//! not follow the loss's derivative by design. For it, the check is of autodiff's
//! derivative of the same loss with the rules taken out (`without_rules`), and the rule's
//! gradient is reported beside it: how far it is from the derivative.

use nnc_ir::{DType, Func, Op, ParamKind};
use nnc_runtime::{Rng, Tensor};

use crate::autodiff;
use crate::interp::{EvalError, eval};

/// How to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// The finite-difference step.
    pub eps: f64,
    /// The denominator's floor in the error.
    pub floor: f64,
    /// At most this many elements per parameter are checked (chosen at random, seeded);
    /// `None` checks them all.
    pub max_elems: Option<usize>,
    /// Seed for choosing elements.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            eps: 1e-6,
            floor: 1e-4,
            max_elems: Some(64),
            seed: 0,
        }
    }
}

/// The result for one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamReport {
    /// The parameter's name.
    pub name: String,
    /// How many elements were checked.
    pub checked: usize,
    /// The largest error found.
    pub worst: f64,
    /// Where (flat index), with both derivatives there.
    pub worst_at: usize,
    /// The autodiff derivative at `worst_at`.
    pub analytic: f64,
    /// The finite-difference derivative at `worst_at`.
    pub numeric: f64,
    /// For a model with a learning rule: how its gradient differs from the derivative.
    pub rule: Option<RuleDiff>,
}

/// How a learning rule's gradient of one parameter differs from the loss's derivative,
/// over the checked elements (the same error measure).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDiff {
    /// The largest difference.
    pub worst: f64,
    /// The rule's gradient where it is largest.
    pub rule: f64,
    /// The derivative there.
    pub derivative: f64,
}

/// Whether `f` learns by a rule other than its loss's derivative.
pub fn has_rules(f: &Func) -> bool {
    f.nodes.iter().any(|n| match &n.attr {
        nnc_ir::Attr::Loop(l) => has_rules(&l.body),
        _ => matches!(n.op, Op::CustomGrad | Op::StopGradient),
    })
}

/// `f` with every learning rule taken out (`custom_grad` and `stop_gradient` are their
/// operand): the same values, differentiated as the loss's derivative.
pub fn without_rules(f: &Func) -> Func {
    crate::passes::nested(strip_rules, f)
}

fn strip_rules(f: &Func) -> Func {
    crate::passes::rebuild(f, |_, n| match n.op {
        Op::CustomGrad | Op::StopGradient => crate::passes::Rewrite::Value(n.args[0]),
        _ => crate::passes::Rewrite::Node(n),
    })
}

/// Checks the gradient of `loss_func`'s first output (a scalar) with respect to each of its
/// trained parameters, at the given inputs and parameter values. The function is run in
/// f64 whatever its declared float type.
pub fn check(
    loss_func: &Func,
    inputs: &[Tensor],
    params: &[Tensor],
    opts: &Options,
) -> Result<Vec<ParamReport>, EvalError> {
    let f = loss_func.with_float_type(DType::F64);
    let rules = has_rules(&f);
    let g = autodiff::grad(&without_rules(&f)).map_err(|e| EvalError(e.to_string()))?;
    let ruled = if rules {
        Some(autodiff::grad(&f).map_err(|e| EvalError(e.to_string()))?)
    } else {
        None
    };
    let to64 = |t: &Tensor| {
        if t.dtype.is_float() {
            Tensor::new(DType::F64, t.shape.clone(), t.data.clone())
        } else {
            t.clone()
        }
    };
    let inputs: Vec<Tensor> = inputs.iter().map(to64).collect();
    let mut params: Vec<Tensor> = params.iter().map(to64).collect();
    let outs = eval(&g, &inputs, &params)?;
    let grads = &outs[f.outputs.len()..];
    let rule_outs = match &ruled {
        Some(r) => eval(r, &inputs, &params)?,
        None => Vec::new(),
    };
    let rule_grads = rule_outs.get(f.outputs.len()..).unwrap_or(&[]);
    let loss_at =
        |params: &[Tensor]| -> Result<f64, EvalError> { Ok(eval(&f, &inputs, params)?[0].data[0]) };
    let mut rng = Rng::stream(opts.seed, "gradcheck");
    let mut reports = Vec::new();
    let trained = f
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == ParamKind::Param);
    for (k, (i, p)) in trained.enumerate() {
        let n = params[i].len();
        let mut elems: Vec<usize> = (0..n).collect();
        if let Some(m) = opts.max_elems
            && m < n
        {
            rng.shuffle(&mut elems);
            elems.truncate(m);
            elems.sort_unstable();
        }
        let mut report = ParamReport {
            name: p.name.clone(),
            checked: elems.len(),
            worst: 0.0,
            worst_at: 0,
            analytic: 0.0,
            numeric: 0.0,
            rule: rules.then_some(RuleDiff {
                worst: 0.0,
                rule: 0.0,
                derivative: 0.0,
            }),
        };
        for &j in &elems {
            let w = params[i].data[j];
            params[i].data[j] = w + opts.eps;
            let up = loss_at(&params)?;
            params[i].data[j] = w - opts.eps;
            let down = loss_at(&params)?;
            params[i].data[j] = w;
            let numeric = (up - down) / (2.0 * opts.eps);
            let analytic = grads[k].data[j];
            let err = error(analytic, numeric, opts.floor);
            if err > report.worst || err.is_nan() {
                report.worst = err;
                report.worst_at = j;
                report.analytic = analytic;
                report.numeric = numeric;
            }
            if let (Some(d), Some(r)) = (&mut report.rule, rule_grads.get(k)) {
                let rule = r.data[j];
                let diff = error(rule, analytic, opts.floor);
                if diff > d.worst || diff.is_nan() {
                    *d = RuleDiff {
                        worst: diff,
                        rule,
                        derivative: analytic,
                    };
                }
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// `|a - n| / max(|a|, |n|, floor)`; NaN if either is not finite.
pub fn error(analytic: f64, numeric: f64, floor: f64) -> f64 {
    if !analytic.is_finite() || !numeric.is_finite() {
        return f64::NAN;
    }
    (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(floor)
}
