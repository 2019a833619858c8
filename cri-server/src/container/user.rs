//! Resolving the user a container runs as, from the CRI security context or the image's USER,
//! through the image's own `/etc/passwd` and `/etc/group`.
//!
//! Those files are read with `openat2(RESOLVE_IN_ROOT)` on the container's rootfs: a hostile
//! image can make `/etc/passwd` a symlink to `/../../host/file`, and it must resolve inside the
//! rootfs, never on the host.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub username: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// Reads a file of the container's rootfs, resolving every symlink inside that root.
pub fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::FromRawFd;
    let root = std::fs::File::open(rootfs).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(std::os::fd::AsRawFd::as_raw_fd(&root), rel, how).ok()?;
    // SAFETY: openat2 returned a fresh fd that nothing else owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    // Cap what a hostile image can make us read.
    (&mut f).take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    read_in_root(rootfs, "etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members)
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_in_root(rootfs, "etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

/// What the request and image ask for.
pub struct UserRequest<'a> {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: &'a str,
    pub supplemental_groups: &'a [i64],
    /// `SupplementalGroupsPolicy::Strict`: only the requested supplemental groups, none of the
    /// image's `/etc/group` memberships (Merge, the default, adds both).
    pub strict_groups: bool,
    pub image_user: &'a str,
}

fn id32(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument(format!("{what} {v} is out of range")))
}

pub fn resolve(rootfs: &Path, req: &UserRequest<'_>) -> Result<ResolvedUser> {
    // As containerd: a group on its own would silently pair with the image's user.
    if let Some(g) = req.run_as_group {
        if req.run_as_user.is_none() && req.run_as_username.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "run_as_group {g} is set without run_as_user or run_as_username"
            )));
        }
    }
    let users = passwd(rootfs);
    let by_name = |n: &str| users.iter().find(|u| u.name == n);
    let (mut uid, mut gid, mut username): (u32, Option<u32>, Option<String>);
    if let Some(u) = req.run_as_user {
        uid = id32("run_as_user", u)?;
        let e = users.iter().find(|e| e.uid == uid);
        gid = e.map(|e| e.gid);
        username = e.map(|e| e.name.clone());
    } else if !req.run_as_username.is_empty() {
        let e = by_name(req.run_as_username).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "user {:?} not found in the image's /etc/passwd",
                req.run_as_username
            ))
        })?;
        uid = e.uid;
        gid = Some(e.gid);
        username = Some(e.name.clone());
    } else {
        let (u, g) = match req.image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (req.image_user, None),
        };
        uid = 0;
        gid = None;
        username = None;
        if !u.is_empty() {
            if let Ok(n) = u.parse::<u32>() {
                uid = n;
                let e = users.iter().find(|e| e.uid == n);
                gid = e.map(|e| e.gid);
                username = e.map(|e| e.name.clone());
            } else {
                let e = by_name(u).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "image user {u:?} not found in the image's /etc/passwd"
                    ))
                })?;
                uid = e.uid;
                gid = Some(e.gid);
                username = Some(e.name.clone());
            }
        }
        if let Some(g) = g.filter(|g| !g.is_empty()) {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups(rootfs)
                    .into_iter()
                    .find(|(n, _, _)| n == g)
                    .map(|(_, id, _)| id)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "image group {g:?} not found in the image's /etc/group"
                        ))
                    })?,
            });
        }
    }
    if let Some(g) = req.run_as_group {
        gid = Some(id32("run_as_group", g)?);
    }
    let gid = gid.unwrap_or(0);
    let mut additional: Vec<u32> = Vec::new();
    if let Some(name) = username.as_ref().filter(|_| !req.strict_groups) {
        for (_, g, members) in groups(rootfs) {
            if members.iter().any(|m| m == name) && g != gid && !additional.contains(&g) {
                additional.push(g);
            }
        }
    }
    for g in req.supplemental_groups {
        let g = id32("supplemental group", *g)?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    username = username.filter(|n| !n.is_empty());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:50:app\n",
        )
        .unwrap();
        d
    }

    fn req(image_user: &str) -> UserRequest<'_> {
        UserRequest {
            run_as_user: None,
            run_as_group: None,
            run_as_username: "",
            supplemental_groups: &[],
            strict_groups: false,
            image_user,
        }
    }

    #[test]
    fn image_user_forms() {
        let r = rootfs();
        assert_eq!(resolve(r.path(), &req("")).unwrap().uid, 0);
        let app = resolve(r.path(), &req("app")).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1000, vec![50])
        );
        let n = resolve(r.path(), &req("1000:50")).unwrap();
        assert_eq!((n.uid, n.gid), (1000, 50));
        let ng = resolve(r.path(), &req("app:extra")).unwrap();
        assert_eq!((ng.uid, ng.gid), (1000, 50));
        assert!(resolve(r.path(), &req("nobody-here")).is_err());
    }

    #[test]
    fn cri_overrides_image() {
        let r = rootfs();
        let mut q = req("app");
        q.run_as_user = Some(1234);
        q.run_as_group = Some(77);
        q.supplemental_groups = &[5, 6];
        let u = resolve(r.path(), &q).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1234, 77, vec![5, 6]));
    }

    #[test]
    fn run_as_group_needs_a_user() {
        let r = rootfs();
        let mut q = req("app");
        q.run_as_group = Some(77);
        assert!(matches!(
            resolve(r.path(), &q),
            Err(Error::InvalidArgument(_))
        ));
        q.run_as_username = "app";
        assert_eq!(resolve(r.path(), &q).unwrap().gid, 77);
    }

    #[test]
    fn strict_groups_leave_out_the_images() {
        let r = rootfs();
        let mut q = req("app");
        q.supplemental_groups = &[1234];
        assert_eq!(
            resolve(r.path(), &q).unwrap().additional_gids,
            vec![50, 1234]
        );
        q.strict_groups = true;
        assert_eq!(resolve(r.path(), &q).unwrap().additional_gids, vec![1234]);
    }

    #[test]
    fn symlinked_passwd_stays_inside_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            "/../../../etc/hostname-not-here",
            r.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(read_in_root(r.path(), "etc/passwd").is_none());
    }
}
