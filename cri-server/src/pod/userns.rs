//! User namespaces for pods (CRI `NamespaceOption.userns_options`, Kubernetes `hostUsers: false`).
//!
//! The pod gets one user namespace with kubelet's mappings, pinned at `<pod dir>/ns/user`; its
//! network, IPC, UTS (and shared PID) namespaces are made inside it, so they belong to it (see
//! `crisp-shim __pod-userns` for why). Every container of the pod joins it. Files reach the
//! containers through idmapped mounts (the image layers and the bind-mounted host paths), so
//! nothing is chowned.

use super::namespaces::{self, Pinned, Wanted};
use crate::error::{Error, Result};
use crisp_cri_api::v1::{IdMapping, NamespaceMode, UserNamespace};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// One line of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A pod's uid and gid mappings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// The pod's user namespace from its CRI options: `None` for the host's (mode NODE, or no
    /// options at all, which the CRI defines as POD without mappings: what kubelets before user
    /// namespaces meant).
    pub fn from_cri(opts: Option<&UserNamespace>) -> Result<Option<IdMap>> {
        let Some(o) = opts else { return Ok(None) };
        match NamespaceMode::try_from(o.mode) {
            Ok(NamespaceMode::Node) => {
                if !o.uids.is_empty() || !o.gids.is_empty() {
                    return Err(Error::InvalidArgument(format!(
                        "user namespace mode NODE takes no mappings (got {} uid and {} gid \
                         mappings)",
                        o.uids.len(),
                        o.gids.len()
                    )));
                }
                Ok(None)
            }
            Ok(NamespaceMode::Pod) => {
                if o.uids.is_empty() && o.gids.is_empty() {
                    return Ok(None);
                }
                let map = IdMap {
                    uids: ranges("uid", &o.uids)?,
                    gids: ranges("gid", &o.gids)?,
                };
                map.root().ok_or_else(|| {
                    Error::InvalidArgument(
                        "user namespace mappings must map container uid 0 and gid 0 (the image's \
                         files are owned by them)"
                            .into(),
                    )
                })?;
                Ok(Some(map))
            }
            Ok(mode @ (NamespaceMode::Container | NamespaceMode::Target)) => {
                Err(Error::InvalidArgument(format!(
                    "user namespace mode {} is not supported: only POD and NODE",
                    mode.as_str_name()
                )))
            }
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown user namespace mode {}",
                o.mode
            ))),
        }
    }

    /// The host uid and gid of the namespace's root.
    pub fn root(&self) -> Option<(u32, u32)> {
        Some((to_host(&self.uids, 0)?, to_host(&self.gids, 0)?))
    }

    pub fn maps_uid(&self, id: u32) -> bool {
        to_host(&self.uids, id).is_some()
    }

    pub fn maps_gid(&self, id: u32) -> bool {
        to_host(&self.gids, id).is_some()
    }

    fn proc_lines(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
            .collect()
    }
}

/// `None` for an id outside the ranges, or one whose host id would overflow (`from_cri` refuses
/// such ranges; a record edited on disk could still hold one).
fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.len)
        .and_then(|r| r.host.checked_add(id - r.container))
}

fn ranges(kind: &str, cri: &[IdMapping]) -> Result<Vec<IdRange>> {
    let bad =
        |why: String| Error::InvalidArgument(format!("user namespace {kind} mappings: {why}"));
    // One line, as kubelet sends and containerd accepts (critest checks that more is refused).
    let [m] = cri else {
        return Err(bad(if cri.is_empty() {
            "none given (mode POD needs both uid and gid mappings)".into()
        } else {
            format!("only one mapping line is supported, got {}", cri.len())
        }));
    };
    let r = IdRange {
        container: m.container_id,
        host: m.host_id,
        len: m.length,
    };
    if r.len == 0 {
        return Err(bad(format!(
            "container {} → host {} has length 0",
            r.container, r.host
        )));
    }
    let end = |start: u32| start.checked_add(r.len - 1);
    if end(r.container).is_none() || end(r.host).is_none() {
        return Err(bad(format!(
            "container {} → host {} length {} runs past the largest id",
            r.container, r.host, r.len
        )));
    }
    Ok(vec![r])
}

/// Creates the pod's user namespace with `map` and the wanted namespaces owned by it (hostname
/// set, loopback up), pinned under `dir/ns/`. On failure nothing stays pinned and the helper
/// process is gone.
pub fn create(
    shim: &Path,
    dir: &Path,
    want: Wanted,
    hostname: &str,
    map: &IdMap,
) -> Result<Pinned> {
    let ns_dir = dir.join("ns");
    let mut cmd = Command::new(shim);
    cmd.arg("__pod-userns");
    for (w, flag) in [
        (want.net, "--net"),
        (want.ipc, "--ipc"),
        (want.uts, "--uts"),
    ] {
        if w {
            cmd.arg(flag);
        }
    }
    if want.uts {
        cmd.arg(format!("--hostname={hostname}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("starting {} __pod-userns", shim.display()), e))?;
    let pid = child.id();
    let mut pinned = Pinned::default();
    let result = (|| -> Result<()> {
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Internal(
                "the user namespace helper has no pipes".into(),
            ));
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut expect = |word: &str| match lines.next() {
            Some(Ok(l)) if l == word => Ok(()),
            other => Err(Error::Internal(format!(
                "the user namespace helper did not say {word:?} (got {other:?})"
            ))),
        };
        expect("user")?;
        for (file, ranges) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, IdMap::proc_lines(ranges))
                .map_err(|e| Error::internal(format!("writing {path}"), e))?;
        }
        pinned.user = Some(namespaces::pin_of_process(&ns_dir, "user", pid)?);
        stdin
            .write_all(b"go\n")
            .map_err(|e| Error::internal("talking to the user namespace helper", e))?;
        expect("ready")?;
        namespaces::pin_wanted(&ns_dir, &want, &pid.to_string(), &mut pinned)
    })();
    // Closing stdin lets the helper exit; on failure it may be stuck before that.
    drop(child.stdin.take());
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait_with_output();
    if let Err(e) = result {
        namespaces::remove(&pinned);
        let stderr = status
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        return Err(match e {
            Error::Internal(m) if !stderr.is_empty() => Error::Internal(format!("{m}: {stderr}")),
            e => e,
        });
    }
    if let Some(net) = &pinned.net {
        if let Err(e) = namespaces::loopback_up(net) {
            namespaces::remove(&pinned);
            return Err(e);
        }
    }
    Ok(pinned)
}

/// Whether pods can have user namespaces here: a throwaway user namespace (made as a pod's
/// would be, under `scratch`) idmaps `layer_dir` and overlayfs takes it as a layer by fd.
pub fn probe(shim: &Path, scratch: &Path, layer_dir: &Path) -> bool {
    let map = IdMap {
        uids: vec![IdRange {
            container: 0,
            host: 0x7000_0000,
            len: 65536,
        }],
        gids: vec![IdRange {
            container: 0,
            host: 0x7000_0000,
            len: 65536,
        }],
    };
    let supported = match create(shim, scratch, Wanted::default(), "probe", &map) {
        Ok(pinned) => {
            let ok = pinned
                .user
                .as_ref()
                .and_then(|p| std::fs::File::open(p).ok())
                .is_some_and(|u| {
                    use std::os::fd::AsFd;
                    crisp_snapshotter::overlay::idmapped_layers_supported(layer_dir, u.as_fd())
                });
            namespaces::remove(&pinned);
            ok
        }
        Err(e) => {
            tracing::info!(error = %e, "user namespaces unavailable");
            false
        }
    };
    let _ = std::fs::remove_dir_all(scratch);
    supported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, l: u32) -> IdMapping {
        IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    fn pod(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }
    }

    #[test]
    fn kubelet_mapping() {
        let map = IdMap::from_cri(Some(&pod(
            vec![m(0, 65536, 65536)],
            vec![m(0, 65536, 65536)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(map.root(), Some((65536, 65536)));
        assert!(map.maps_uid(65535));
        assert!(!map.maps_uid(65536));
    }

    #[test]
    fn overflowing_ranges_map_nothing() {
        let r = vec![IdRange {
            container: 0,
            host: u32::MAX,
            len: 10,
        }];
        let map = IdMap {
            uids: r.clone(),
            gids: r,
        };
        assert!(map.maps_uid(0));
        assert!(!map.maps_uid(5));
    }

    #[test]
    fn modes() {
        assert_eq!(IdMap::from_cri(None).unwrap(), None);
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(IdMap::from_cri(Some(&node)).unwrap(), None);
        let node_with_maps = UserNamespace {
            mode: NamespaceMode::Node as i32,
            uids: vec![m(0, 1000, 1)],
            gids: vec![],
        };
        assert!(IdMap::from_cri(Some(&node_with_maps)).is_err());
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let o = UserNamespace {
                mode: mode as i32,
                ..Default::default()
            };
            let e = IdMap::from_cri(Some(&o)).unwrap_err().to_string();
            assert!(e.contains("not supported"), "{e}");
        }
        let o = UserNamespace {
            mode: 42,
            ..Default::default()
        };
        assert!(IdMap::from_cri(Some(&o)).is_err());
    }

    #[test]
    fn bad_mappings() {
        for (uids, gids, want) in [
            (vec![m(0, 1000, 10)], vec![], "gid mappings: none"),
            (vec![m(0, 1000, 0)], vec![m(0, 1000, 1)], "length 0"),
            (
                vec![m(0, u32::MAX - 1, 10)],
                vec![m(0, 1000, 1)],
                "past the largest id",
            ),
            (
                vec![m(0, 1000, 10), m(10, 5000, 10)],
                vec![m(0, 1000, 1)],
                "only one mapping line",
            ),
            (vec![m(1, 1000, 10)], vec![m(0, 1000, 1)], "uid 0"),
        ] {
            let e = IdMap::from_cri(Some(&pod(uids, gids)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }
}
