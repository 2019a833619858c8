//! Where the shim sends a container's stdout/stderr. containerd passes FIFO paths in
//! `CreateTaskRequest.stdout`; crispd instead asks the shim to write the CRI log file itself (so
//! nothing is lost while crispd is down) by passing a `crilog://` URI.

use std::path::PathBuf;

const CRI_LOG_SCHEME: &str = "crilog://";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioTarget {
    /// Discard the stream.
    Null,
    /// Write the CRI log format (timestamp, stream, tag, line) to this file.
    CriLog(PathBuf),
    /// Copy raw bytes to this path (a FIFO or file created by the caller).
    Raw(PathBuf),
}

impl StdioTarget {
    pub fn parse(s: &str) -> StdioTarget {
        if s.is_empty() {
            StdioTarget::Null
        } else if let Some(p) = s.strip_prefix(CRI_LOG_SCHEME) {
            StdioTarget::CriLog(PathBuf::from(p))
        } else {
            StdioTarget::Raw(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }

    pub fn to_uri(&self) -> String {
        match self {
            StdioTarget::Null => String::new(),
            StdioTarget::CriLog(p) => format!("{CRI_LOG_SCHEME}{}", p.display()),
            StdioTarget::Raw(p) => p.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            StdioTarget::Null,
            StdioTarget::CriLog("/var/log/pods/x/0.log".into()),
            StdioTarget::Raw("/run/fifo".into()),
        ] {
            assert_eq!(StdioTarget::parse(&t.to_uri()), t);
        }
    }
}
