//! crispd hands the node's cgroup v1 mount points to each shim in its environment, read once
//! from crispd's mountinfo at start.
//!
//! libcgroups' v1 manager otherwise parses mountinfo each time one is built (each container
//! create, exec, stats read and update), and mountinfo grows with every pod on the node (four
//! mounts or more each). The shim and its runtime helpers inherit the variable and pin the
//! list in libcgroups; without it (a shim started by containerd, or standalone) they read
//! mountinfo as before. On a cgroup v2 node the list is empty.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// The variable's name.
pub const ENV: &str = "CRISP_CGROUP_V1_MOUNTS";

/// The mount points, newline-separated (mountinfo escapes a newline in a path as `\012`).
pub fn encode(points: &[PathBuf]) -> OsString {
    let mut out = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(p.as_os_str().as_bytes());
    }
    OsString::from_vec(out)
}

pub fn decode(value: &OsStr) -> Vec<PathBuf> {
    value
        .as_bytes()
        .split(|&b| b == b'\n')
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .collect()
}

/// The list crispd passed, if it passed one.
pub fn from_env() -> Option<Vec<PathBuf>> {
    std::env::var_os(ENV).map(|v| decode(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let points = vec![
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
            PathBuf::from("/sys/fs/cgroup/memory"),
        ];
        assert_eq!(decode(&encode(&points)), points);
        assert_eq!(decode(&encode(&[])), Vec::<PathBuf>::new());
    }
}
