use std::time::Duration;

/// Everything that can go wrong talking to a CRI server through this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause is left to the source chain (print with `{:#}`), since
    /// tonic's own message is just "transport error".
    #[error("cannot connect to {socket}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },

    /// Not a source chain: the status is the whole story, shown once.
    #[error("{op} failed: {:?}: {}", status.code(), status.message())]
    Rpc {
        op: &'static str,
        status: tonic::Status,
    },

    /// The server answered but left out a field the CRI says it must fill.
    #[error("{op} answered without {field}")]
    MissingField {
        op: &'static str,
        field: &'static str,
    },

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

impl Error {
    /// The gRPC status when the server rejected a call, so callers can check
    /// the code without matching on the variant.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    pub(crate) fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Rpc { op, status }
    }
}
