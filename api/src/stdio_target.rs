//! Where the shim connects a container's stdio. containerd passes FIFO paths in
//! `CreateTaskRequest.stdin/stdout`; crispd instead asks the shim to write the CRI log file itself
//! (so nothing is lost while crispd is down) with a `crilog://` URI, and to keep stdin for attach
//! clients with `attach://`.

use std::path::PathBuf;

const CRI_LOG_SCHEME: &str = "crilog://";
const ATTACH_STDIN: &str = "attach://";
const ATTACH_STDIN_ONCE: &str = "attach://once";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioTarget {
    /// Discard the stream.
    Null,
    /// Write the CRI log format (timestamp, stream, tag, line) to this file.
    CriLog(PathBuf),
    /// Copy raw bytes to this path (a FIFO or file created by the caller).
    Raw(PathBuf),
    /// Stdin only: the shim keeps the container's stdin open and feeds it from attach clients
    /// (CRI `stdin`); `once` closes it when the first client's input ends (CRI `stdin_once`).
    Attach { once: bool },
}

impl StdioTarget {
    pub fn parse(s: &str) -> StdioTarget {
        if s.is_empty() {
            StdioTarget::Null
        } else if s == ATTACH_STDIN_ONCE {
            StdioTarget::Attach { once: true }
        } else if s == ATTACH_STDIN {
            StdioTarget::Attach { once: false }
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
            StdioTarget::Attach { once: true } => ATTACH_STDIN_ONCE.to_string(),
            StdioTarget::Attach { once: false } => ATTACH_STDIN.to_string(),
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
            StdioTarget::Attach { once: true },
            StdioTarget::Attach { once: false },
        ] {
            assert_eq!(StdioTarget::parse(&t.to_uri()), t);
        }
    }
}
