//! nnc's middle and back end. For now: the reference interpreter, the oracle every later
//! stage (autodiff, fusion passes, the Cranelift and LLVM backends) is checked against.

#![warn(missing_docs)]

pub mod interp;
