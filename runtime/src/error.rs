//! What the runtime reports. Each variant holds the message nnc prints, which names the
//! file, row, column or tensor concerned; the variant says what kind of problem it is.

use std::fmt;

/// An error of the runtime crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A file cannot be read or written: its path and the system's reason.
    Io(String),
    /// A data file or data set is not what the model needs: a CSV cell, an NPY header, a
    /// feature that does not fit in f32, a split without rows, statistics that do not fit.
    Data(String),
    /// A checkpoint is not a valid nnc checkpoint: its bytes, checksum or tensor types.
    Checkpoint(String),
    /// A parameter or optimizer state cannot be initialized as declared.
    Init(String),
}

impl Error {
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Io(m) | Error::Data(m) | Error::Checkpoint(m) | Error::Init(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// For callers that report errors as text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.message().to_string()
    }
}
