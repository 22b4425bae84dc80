//! nnc's training driver: a train block resolved into settings, learning-rate schedules,
//! the training loop over the compiled functions (`@M.grad`, `@M.update`), evaluation and
//! prediction, checkpoints, and a run's files (metrics and curves).
//!
//! The loop runs the functions on the Cranelift JIT by default, or on the reference
//! interpreter (`Backend::Interp`), the oracle the JIT is tested against.

#![warn(missing_docs)]

pub mod config;
pub mod dist;
mod engine;
pub mod fused;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod session;

pub use config::{Backend, Overrides, TrainConfig};
pub use fused::FusedStep;
pub use run::{Observer, Quiet, RunOptions, Summary};
pub use schedule::Schedule;
pub use session::{Metrics, Model, Session, TrainError};
