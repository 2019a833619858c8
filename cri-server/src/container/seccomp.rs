//! Seccomp profiles from the CRI security context: `RuntimeDefault` (crisp's built-in
//! profile), `Unconfined`, and `Localhost` (a JSON profile file on the node).
//!
//! The built-in profile follows the spirit of Docker's default: everything a normal workload
//! needs is allowed, while syscalls that reach around the container's isolation (kernel
//! modules, kexec, mounts, namespace changes, keyrings, ptrace of other processes, clock and
//! swap changes, BPF, perf, userfaultfd, ...) fail with EPERM. It is a deny-list rather than
//! Docker's allow-list so it stays short and reviewable here; the capabilities a container
//! lacks already stop most of these, the filter makes the kernel attack surface smaller still.

use crate::error::{Error, Result};
use crisp_cri_api::v1::security_profile::ProfileType;
use crisp_cri_api::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::LinuxSeccomp;

const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// The built-in RuntimeDefault profile.
pub fn runtime_default() -> Result<LinuxSeccomp> {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
    });
    serde_json::from_value(profile)
        .map_err(|e| Error::internal("building the default seccomp profile", e))
}

/// The profile a container asks for; `None` is unconfined. Privileged containers run
/// unconfined, as in containerd.
#[allow(deprecated)] // older kubelets still send `seccomp_profile_path`
pub fn for_container(sc: &LinuxContainerSecurityContext) -> Result<Option<LinuxSeccomp>> {
    if sc.privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => runtime_default().map(Some),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref).map(Some),
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown seccomp profile type {}",
                p.profile_type
            ))),
        };
    }
    // The deprecated string form.
    match sc.seccomp_profile_path.as_str() {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => runtime_default().map(Some),
        s => match s.strip_prefix("localhost/") {
            Some(path) => localhost(path).map(Some),
            None => Err(Error::InvalidArgument(format!(
                "unknown seccomp profile {s:?}"
            ))),
        },
    }
}

/// A profile file on the node, in the OCI/Docker JSON form.
fn localhost(path: &str) -> Result<LinuxSeccomp> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "seccomp profile path {path:?} must be absolute"
        )));
    }
    // A regular file of bounded size: a FIFO or a device named here must not hang or fill
    // crispd (Docker's default profile is about 20 KiB).
    const MAX_PROFILE: u64 = 4 << 20;
    let bad = |why: String| Error::InvalidArgument(format!("seccomp profile {path}: {why}"));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_PROFILE {
        return Err(bad(format!("larger than {MAX_PROFILE} bytes")));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PROFILE), &mut text)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("invalid seccomp profile {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_cri_api::v1::SecurityProfile;

    fn sc(profile_type: ProfileType, r: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn profiles() {
        let d = for_container(&sc(ProfileType::RuntimeDefault, ""))
            .unwrap()
            .unwrap();
        assert!(d.syscalls().as_ref().is_some_and(|s| !s.is_empty()));
        assert!(for_container(&sc(ProfileType::Unconfined, ""))
            .unwrap()
            .is_none());
        assert!(for_container(&LinuxContainerSecurityContext::default())
            .unwrap()
            .is_none());
        assert!(for_container(&sc(ProfileType::Localhost, "/nonexistent.json")).is_err());
        assert!(for_container(&sc(ProfileType::Localhost, "relative.json")).is_err());
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
        let l = for_container(&sc(ProfileType::Localhost, f.path().to_str().unwrap())).unwrap();
        assert!(l.is_some());
        // Not a regular file: refused without reading (a FIFO would block, /dev/zero never ends).
        let e = for_container(&sc(ProfileType::Localhost, "/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
