//! What the compiler crate reports. Each variant holds the message nnc prints.

use std::fmt;

use crate::interp::EvalError;

/// An error of the compiler crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The interpreter could not run: the values do not fit the function, or an id is
    /// outside its table.
    Eval(EvalError),
    /// The module lacks what was asked for: no model of that name, no loss function, a
    /// loss whose parameters are not the model's.
    Missing(String),
    /// Autodiff cannot differentiate the function.
    Autodiff(String),
    /// The IR is invalid after a pass: the verifier's annotated text (a bug in nnc).
    Invalid(String),
    /// The IR crate refused a node or a function it was asked to build (a type rule, the
    /// verifier): in a transform, a bug in its rules.
    Ir(nnc_ir::Error),
    /// A value mixes the batch's rows (`rows::independent`), so the function cannot run in
    /// pieces of the batch.
    Rows(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eval(e) => write!(f, "{e}"),
            Error::Ir(e) => write!(f, "{e}"),
            Error::Missing(m) | Error::Autodiff(m) | Error::Invalid(m) | Error::Rows(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<EvalError> for Error {
    fn from(e: EvalError) -> Error {
        Error::Eval(e)
    }
}

impl From<nnc_ir::Error> for Error {
    fn from(e: nnc_ir::Error) -> Error {
        Error::Ir(e)
    }
}

/// For callers that report errors as text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
