//! kubelet's `cgroupDriver`: how a pod's cgroup is named and who makes the cgroups below it.
//!
//! With `cgroupfs` a pod's cgroup parent is a path (`/kubepods/besteffort/pod<uid>`) and
//! libcontainer makes each container's directory below it. With `systemd` it is a slice, which
//! kubelet made and sends as systemd's path of it (`/kubepods.slice/kubepods-besteffort.slice/
//! kubepods-besteffort-pod<uid>.slice`) or a client as its bare name; each container runs in a
//! transient scope `crisp-<id>.scope` in it that systemd makes and removes (over D-Bus, in the
//! shim's libcgroups), as containerd's `SystemdCgroup` and CRI-O do, which likewise take the
//! path's last part as the slice. A pod's record keeps the slice's name, a cgroupfs parent as
//! given: its shape says which driver it was made with ([`PodCgroup::of`]), so the pods of a
//! crispd restarted with the other driver are still found and removed.

use crisp_api::cgroups_path::{self, CgroupsPath, SCOPE_PREFIX};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// The parent of the pods whose config names none (crictl's), when the config names none.
    pub fn default_parent(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "/crisp",
            CgroupDriver::Systemd => "crisp.slice",
        }
    }

    /// Checks a cgroup parent (the config's or a pod's) against this driver and gives the
    /// form a pod's record keeps: a cgroupfs path, or a slice's bare name.
    pub fn parent(self, p: &str) -> Result<String, String> {
        self.check_parent(p)?;
        Ok(match self {
            CgroupDriver::Cgroupfs => p.to_string(),
            CgroupDriver::Systemd => slice_name(p).to_string(),
        })
    }

    /// Checks a cgroup parent (the config's or a pod's) against this driver.
    pub fn check_parent(self, p: &str) -> Result<(), String> {
        match self {
            CgroupDriver::Cgroupfs => {
                if p.ends_with(".slice") && !p.contains('/') {
                    return Err(format!(
                        "cgroup parent {p:?} is a systemd slice, but crispd runs the cgroupfs \
                         driver (set `cgroup_driver = \"systemd\"` in crispd's config, or \
                         kubelet's cgroupDriver to cgroupfs)"
                    ));
                }
                if !p.starts_with('/') {
                    return Err(format!(
                        "cgroup parent {p:?} must be an absolute cgroupfs path"
                    ));
                }
                if p.split('/').any(|c| c == ".." || c == ".") {
                    return Err(format!("cgroup parent {p:?} must not contain . or .."));
                }
                Ok(())
            }
            CgroupDriver::Systemd => {
                let name = slice_name(p);
                if !name.ends_with(".slice") {
                    return Err(format!(
                        "cgroup parent {p:?} is no systemd slice, but crispd runs the systemd \
                         driver: give a slice such as kubepods-besteffort-pod<uid>.slice (or \
                         set kubelet's cgroupDriver to cgroupfs and crispd's cgroup_driver too)"
                    ));
                }
                let expanded = cgroups_path::slice_path(name)
                    .map_err(|e| format!("cgroup parent {p:?}: {e}"))?;
                // A path must be where systemd has that slice, or the pod's stats, limits and
                // containers would be in different places.
                if p.contains('/') && p.trim_end_matches('/') != expanded {
                    return Err(format!(
                        "cgroup parent {p:?}: systemd keeps the slice {name} at {expanded}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The cgroup parent of a pod crispd makes itself (its config named none), below `base`.
    pub fn owned_pod_parent(self, base: &str, pod_id: &str) -> String {
        let short = pod_id.get(..12).unwrap_or(pod_id);
        match self {
            CgroupDriver::Cgroupfs => format!("{}/pod-{short}", base.trim_end_matches('/')),
            // A slice's name carries its ancestors: `crisp.slice` holds `crisp-pod<id>.slice`.
            CgroupDriver::Systemd => match slice_name(base).strip_suffix(".slice") {
                Some("-") | None => format!("pod{short}.slice"),
                Some(stem) => format!("{stem}-pod{short}.slice"),
            },
        }
    }
}

/// The slice a systemd parent names: its last path component (the whole of a bare name).
fn slice_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// A pod's cgroup parent, as its record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCgroup<'a> {
    /// A cgroupfs path.
    Fs(&'a str),
    /// A systemd slice name.
    Slice(&'a str),
}

impl<'a> PodCgroup<'a> {
    pub fn of(parent: &'a str) -> PodCgroup<'a> {
        if !parent.starts_with('/') && parent.ends_with(".slice") {
            PodCgroup::Slice(parent)
        } else {
            PodCgroup::Fs(parent)
        }
    }

    /// The pod's cgroup directory, below the cgroup mount.
    pub fn dir(self) -> String {
        match self {
            PodCgroup::Fs(p) => p.to_string(),
            // Checked when the pod was made; a record edited since is refused by the empty
            // path, which no cgroup read or removal accepts.
            PodCgroup::Slice(s) => cgroups_path::slice_path(s).unwrap_or_default(),
        }
    }

    /// The `linux.cgroupsPath` of the process `id` (a container, or a pod's pause) in the pod.
    pub fn child(self, id: &str) -> CgroupsPath {
        match self {
            PodCgroup::Fs(p) => CgroupsPath::Fs(format!("{}/{id}", p.trim_end_matches('/'))),
            PodCgroup::Slice(s) => CgroupsPath::Systemd {
                slice: s.to_string(),
                prefix: SCOPE_PREFIX.into(),
                name: id.to_string(),
            },
        }
    }

    /// The cgroup directory of the process `id` in the pod, below the cgroup mount.
    pub fn child_dir(self, id: &str) -> String {
        self.child(id).dir().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_match_their_driver() {
        let fs = CgroupDriver::Cgroupfs;
        let sd = CgroupDriver::Systemd;
        assert!(fs.check_parent("/kubepods/besteffort/pod1").is_ok());
        assert!(fs.check_parent("relative").is_err());
        assert!(fs.check_parent("/kubepods/../x").is_err());
        let slice = fs
            .check_parent("kubepods-besteffort-pod1.slice")
            .unwrap_err();
        assert!(slice.contains("cgroup_driver"), "{slice}");
        assert!(sd.check_parent("kubepods-besteffort-pod1.slice").is_ok());
        // What kubelet sends: systemd's path of the slice.
        assert_eq!(
            sd.parent("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice")
                .unwrap(),
            "kubepods-besteffort-pod1.slice"
        );
        assert_eq!(sd.parent("/test.slice").unwrap(), "test.slice");
        assert!(sd
            .check_parent("/kubepods.slice/kubepods-pod1.slice/x.slice")
            .is_err());
        assert!(sd.check_parent("/kubepods/pod1").is_err());
        assert!(sd.check_parent("kubepods--x.slice").is_err());
        assert!(sd.check_parent("../x.slice").is_err());
    }

    #[test]
    fn names_pods_and_containers() {
        let id = "0123456789abcdef0123";
        assert_eq!(
            CgroupDriver::Cgroupfs.owned_pod_parent("/crisp/", id),
            "/crisp/pod-0123456789ab"
        );
        assert_eq!(
            CgroupDriver::Systemd.owned_pod_parent("crisp.slice", id),
            "crisp-pod0123456789ab.slice"
        );
        assert_eq!(
            CgroupDriver::Systemd.owned_pod_parent("/crisp.slice", id),
            "crisp-pod0123456789ab.slice"
        );
        assert_eq!(
            CgroupDriver::Systemd.owned_pod_parent("-.slice", id),
            "pod0123456789ab.slice"
        );
        let pod = PodCgroup::of("kubepods-besteffort-pod1.slice");
        assert_eq!(
            pod.dir(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
        );
        assert_eq!(
            pod.child("abc").to_string(),
            "kubepods-besteffort-pod1.slice:crisp:abc"
        );
        assert_eq!(
            pod.child_dir("abc"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crisp-abc.scope"
        );
        let pod = PodCgroup::of("/crisp/pod-1/");
        assert_eq!(pod.child("abc").to_string(), "/crisp/pod-1/abc");
        assert_eq!(pod.child_dir("abc"), "/crisp/pod-1/abc");
    }
}
