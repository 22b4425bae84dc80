//! What the IR crate reports. Each variant holds the message nnc prints.

use std::fmt;

use crate::parse::ParseError;

/// An error of the IR crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// An op's type rule refuses its operands or attribute (`matmul` of `f32[2, 3]` and
    /// `f32[4, 5]`), or a body does not fit where it is inlined.
    Type(String),
    /// A function breaks an invariant: the IR text with `; error:` after the offending
    /// lines (a bug in whatever made it).
    Invalid(String),
    /// IR text that does not parse.
    Parse(ParseError),
    /// A loop body cannot be outlined from the nodes given.
    Outline(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Type(m) | Error::Invalid(m) | Error::Outline(m) => f.write_str(m),
            Error::Parse(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Error {
        Error::Parse(e)
    }
}

/// For callers that report errors as text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
