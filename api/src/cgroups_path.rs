//! The OCI `linux.cgroupsPath` of a container, in the two shapes crispd writes and the shim reads
//! back: a cgroupfs path (`/crisp/pod-…/<id>`, the `cgroupfs` driver) or systemd's
//! `slice:prefix:name` (the `systemd` driver: a transient `prefix-name.scope` in `slice`, as
//! runc and containerd name it). The shim has no other way to learn which driver made a bundle,
//! and a standalone bundle says it the same way to runc.

use std::fmt;

/// The prefix of the scopes crispd's containers and pauses run in (`crisp-<id>.scope`).
pub const SCOPE_PREFIX: &str = "crisp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupsPath {
    /// A path below the cgroup mount (absolute, or relative to it).
    Fs(String),
    /// A transient scope `<prefix>-<name>.scope` in the systemd slice `slice`.
    Systemd {
        slice: String,
        prefix: String,
        name: String,
    },
}

impl CgroupsPath {
    /// Reads a spec's `cgroupsPath`. runc's rule: three `:`-separated parts, none with a `/`,
    /// is the systemd form; anything else is a cgroupfs path.
    pub fn parse(s: &str) -> CgroupsPath {
        let parts: Vec<&str> = s.split(':').collect();
        match parts[..] {
            [slice, prefix, name]
                if !s.contains('/')
                    && !name.is_empty()
                    && (slice.is_empty() || slice.ends_with(".slice")) =>
            {
                CgroupsPath::Systemd {
                    slice: slice.to_string(),
                    prefix: prefix.to_string(),
                    name: name.to_string(),
                }
            }
            _ => CgroupsPath::Fs(s.to_string()),
        }
    }

    pub fn is_systemd(&self) -> bool {
        matches!(self, CgroupsPath::Systemd { .. })
    }

    /// The cgroup directory below the cgroup mount. A systemd scope's is found from its slice
    /// (systemd's own cgroup being the root of the cgroup namespace, as on a node, where
    /// systemd is PID 1); an empty slice is runc's default, `system.slice`.
    pub fn dir(&self) -> Result<String, InvalidSlice> {
        match self {
            CgroupsPath::Fs(p) => Ok(p.clone()),
            CgroupsPath::Systemd {
                slice,
                prefix,
                name,
            } => {
                let slice = if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                };
                let parent = slice_path(slice)?;
                Ok(format!(
                    "{}/{prefix}-{name}.scope",
                    parent.trim_end_matches('/')
                ))
            }
        }
    }
}

impl fmt::Display for CgroupsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupsPath::Fs(p) => f.write_str(p),
            CgroupsPath::Systemd {
                slice,
                prefix,
                name,
            } => write!(f, "{slice}:{prefix}:{name}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a systemd slice name (`<a>-<b>.slice`: no `/`, no empty part)")]
pub struct InvalidSlice(pub String);

/// Where systemd puts the slice `slice` below its own root cgroup: every `-` is a level,
/// `kubepods-besteffort-pod1.slice` is `/kubepods.slice/kubepods-besteffort.slice/
/// kubepods-besteffort-pod1.slice` (systemd.slice(5)); `-.slice` is the root.
pub fn slice_path(slice: &str) -> Result<String, InvalidSlice> {
    let bad = || InvalidSlice(slice.to_string());
    let stem = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if stem.is_empty() || slice.contains('/') || slice.contains(':') {
        return Err(bad());
    }
    if stem == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad());
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(part);
        path.push_str(".slice");
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_shapes() {
        let p = CgroupsPath::parse("kubepods-besteffort-pod1.slice:crisp:abc");
        assert!(p.is_systemd());
        assert_eq!(p.to_string(), "kubepods-besteffort-pod1.slice:crisp:abc");
        assert!(CgroupsPath::parse(":crisp:abc").is_systemd());
        assert_eq!(
            CgroupsPath::parse("/crisp/pod-1/abc"),
            CgroupsPath::Fs("/crisp/pod-1/abc".into())
        );
        // A cgroupfs path that happens to hold colons is still one.
        assert!(!CgroupsPath::parse("/a:b:c").is_systemd());
        assert!(!CgroupsPath::parse("a:b:").is_systemd());
        assert_eq!(
            CgroupsPath::parse("a-b.slice:crisp:x").dir().unwrap(),
            "/a.slice/a-b.slice/crisp-x.scope"
        );
        assert_eq!(
            CgroupsPath::parse(":crisp:x").dir().unwrap(),
            "/system.slice/crisp-x.scope"
        );
        assert_eq!(
            CgroupsPath::parse("-.slice:crisp:x").dir().unwrap(),
            "/crisp-x.scope"
        );
    }

    #[test]
    fn expands_slices() {
        assert_eq!(
            slice_path("kubepods-besteffort-pod1.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
        );
        assert_eq!(slice_path("crisp.slice").unwrap(), "/crisp.slice");
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        for bad in [
            "",
            ".slice",
            "a--b.slice",
            "a/b.slice",
            "a",
            "-a.slice",
            "a:b.slice",
        ] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }
}
