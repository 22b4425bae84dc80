//! nnc's middle and back end: the reference interpreter (the oracle every later stage is
//! checked against), reverse-mode autodiff as an IR-to-IR transform, and gradient checks
//! against finite differences.

#![warn(missing_docs)]

pub mod autodiff;
mod error;
pub mod gradcheck;
pub mod interp;
pub mod passes;
pub mod pipeline;
pub mod random_graph;
pub mod rows;

pub use error::Error;
