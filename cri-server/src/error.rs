//! The runtime's error type. Each variant is one gRPC status code, so a service can never
//! answer with the wrong one by accident; messages name the object and the cause.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    /// Registry credentials missing or rejected.
    #[error("{0}")]
    Unauthenticated(String),
    /// Registry credentials valid but not allowed this image.
    #[error("{0}")]
    PermissionDenied(String),
    /// A registry (or other remote service) could not be reached or answered 5xx/429.
    #[error("{0}")]
    Unavailable(String),
    /// Content did not match its digest or size.
    #[error("{0}")]
    DataLoss(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For the calls the CRI makes idempotent (stop and remove, since 1.31): an object that is
/// gone, or went away while the call ran, is already where the caller wants it.
pub fn ok_if_gone(r: Result<()>) -> Result<()> {
    match r {
        Err(Error::NotFound(_)) => Ok(()),
        r => r,
    }
}

impl Error {
    pub fn internal(context: impl std::fmt::Display, cause: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{context}: {cause}"))
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DataLoss(_) => Code::DataLoss,
        }
    }
}

/// gRPC carries the message in a header, and clients cap header size (16 KiB in Go and hyper):
/// an error echoing a hostile megabyte-long id would break the connection instead of failing
/// the call.
const MAX_MESSAGE: usize = 2048;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let mut msg = e.to_string();
        if msg.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push_str("… (truncated)");
        }
        Status::new(e.code(), msg)
    }
}

/// Adds what was being done to an I/O error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut() {
        let s: Status = Error::NotFound(format!("pod {} not found", "é".repeat(10_000))).into();
        assert!(s.message().len() < MAX_MESSAGE + 32);
        assert_eq!(s.code(), Code::NotFound);
    }
}
