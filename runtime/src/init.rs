//! Fills parameters and optimizer states as their IR declarations say.

use crate::Error;

use nnc_ir::{Init, Param};

use crate::rng::Rng;
use crate::tensor::Tensor;

/// Creates a parameter's initial value. Each parameter draws from its own stream, named
/// after it, so its values depend only on the seed and its name.
pub fn init_param(p: &Param, seed: u64) -> Result<Tensor, Error> {
    let shape: Option<Vec<usize>> =
        p.ty.shape
            .dims()
            .iter()
            .map(|d| d.known().map(|n| n as usize))
            .collect();
    let Some(shape) = shape else {
        return Err(Error::Init(format!(
            "parameter `{}` has a symbolic shape {}",
            p.name, p.ty
        )));
    };
    let n: usize = shape.iter().product();
    let mut rng = Rng::stream(seed, &p.name);
    let data = match p.init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Fill(v) => vec![v; n],
        Init::Normal { mean, std } => (0..n).map(|_| mean + std * rng.normal()).collect(),
        Init::Uniform { lo, hi } => (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect(),
    };
    Ok(Tensor::new(p.ty.dtype, shape, data))
}
