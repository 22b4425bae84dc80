//! nnc's runtime: host tensors, the seeded random source and initializers, data loading.
//!
//! **Invariant:** the runtime does not depend on the language front end; it sees only the IR.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod csv;
pub mod data;
mod error;
pub mod init;
pub mod npy;
pub mod rng;
pub mod tensor;

pub use checkpoint::Checkpoint;
pub use error::Error;
pub use init::init_param;
pub use rng::Rng;
pub use tensor::Tensor;
