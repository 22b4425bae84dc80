//! nnc's training driver: a train block resolved into settings, learning-rate schedules,
//! the training loop over the compiled functions (`@M.grad`, `@M.update`), evaluation and
//! prediction, checkpoints, and a run's files (metrics and curves).
//!
//! The loop calls the reference interpreter today; the native backends will replace the
//! calls without changing a result.

#![warn(missing_docs)]

pub mod config;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod session;

pub use config::{Overrides, TrainConfig};
pub use run::{Observer, Quiet, RunOptions, Summary};
pub use schedule::Schedule;
pub use session::{Metrics, Model, Session, TrainError};
