//! nnc's tensor IR: element types and shapes, the one table of primitive ops, functions of
//! SSA nodes, and their text form (printer and parser side by side), plus the verifier.
//!
//! Every crate of the pipeline speaks this vocabulary: the front end lowers to it, the
//! interpreter evaluates it, and later autodiff, passes and backends transform it.

#![warn(missing_docs)]

mod error;
pub mod graph;
pub mod limits;
pub mod op;
pub mod outline;
pub mod parse;
pub mod print;
pub mod role;
pub mod types;
pub mod verify;

pub use error::Error;
pub use graph::{Arg, Func, Init, Loop, Module, Node, Param, ParamKind, Value};
pub use op::{
    Attr, AttrKind, Class, DTypes, Lowering, Op, OpInfo, Scalar, Sig, TABLE, im2col_type,
};
pub use parse::{ParseError, parse_module};
pub use role::{Outputs, Role};
pub use types::{DType, Dim, Shape, TensorType};
pub use verify::{verify_func, verify_module};
