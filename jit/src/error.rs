//! What the JIT reports. Each variant holds the message nnc prints; the variant says who
//! can fix it: the graph (`Unsupported`), the sizes asked for (`TooLarge`, `Input`), the
//! data at run time (`Index`), the build (`NoLlvm`), or nnc itself (`Codegen`).

use std::fmt;

/// An error of the JIT crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The graph uses what the JIT does not compile (f64, an op it cannot lower), or
    /// `nnc build` refuses it (non-f32 inputs or outputs).
    Unsupported(String),
    /// A value or the scratch arena at these sizes exceeds the memory limit.
    TooLarge(String),
    /// The values or sizes given do not fit the function (a symbolic dimension without a
    /// size, a wrong number or type of inputs or parameters).
    Input(String),
    /// At run time, an id a gather or scatter read is outside its table (worded as the
    /// interpreter words it, with the user's source line).
    Index(String),
    /// This build has no LLVM backend.
    NoLlvm,
    /// Cranelift or LLVM failed, or a plan was inconsistent: a bug in nnc.
    Codegen(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported(m)
            | Error::TooLarge(m)
            | Error::Input(m)
            | Error::Index(m)
            | Error::Codegen(m) => f.write_str(m),
            Error::NoLlvm => f.write_str(crate::NO_LLVM),
        }
    }
}

impl std::error::Error for Error {}

/// For callers that report errors as text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
