//! Mount propagation of CRI bind mounts, as critest checks it: PRIVATE sees nothing of later
//! mounts either way, HOST_TO_CONTAINER (rslave) sees the host's, BIDIRECTIONAL (rshared) also
//! shows the container's mounts to the host.

use crisp_tests::cri::{
    LinuxContainerSecurityContext, Mount, MountPropagation, StopContainerRequest,
};
use crisp_tests::{crispd_test, sh, with_sc, Crispd, TestPod, BUSYBOX};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

crispd_test!(mount_propagation, check);

/// A host directory made a shared mount point of its own (as a kubelet volume dir under a
/// shared / is), unmounted with everything below it however the test ends.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(at: &Path) -> anyhow::Result<SharedDir> {
        std::fs::create_dir_all(at)?;
        mount(Some(at), at, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        let dir = SharedDir(at.to_path_buf());
        mount(
            None::<&str>,
            at,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )?;
        Ok(dir)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // Submounts (ours and propagated ones) first, then the bind itself.
        for _ in 0..8 {
            let _ = umount2(&self.0.join("fromhost"), MntFlags::MNT_DETACH);
            let _ = umount2(&self.0.join("fromcontainer"), MntFlags::MNT_DETACH);
        }
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn host_mounted(path: &Path) -> anyhow::Result<bool> {
    let want = path.display().to_string();
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_str())))
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "propagation").await?;

    for (name, mode, host_to_container, container_to_host) in [
        (
            "private",
            MountPropagation::PropagationPrivate,
            false,
            false,
        ),
        (
            "slave",
            MountPropagation::PropagationHostToContainer,
            true,
            false,
        ),
        (
            "shared",
            MountPropagation::PropagationBidirectional,
            true,
            true,
        ),
    ] {
        let host = crispd.dir().join(format!("prop-{name}"));
        let shared = SharedDir::new(&host)?;
        std::fs::create_dir_all(host.join("fromhost"))?;
        std::fs::create_dir_all(host.join("fromcontainer"))?;
        // Privileged, as critest's: mounting inside needs CAP_SYS_ADMIN.
        let mut c = with_sc(
            pod.container(name, &["sleep", "3600"])?,
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        );
        c.mounts.push(Mount {
            container_path: "/mnt/prop".into(),
            host_path: host.display().to_string(),
            propagation: mode as i32,
            ..Default::default()
        });
        let id = pod.create(&mut client, c).await?;
        client.start_container(&id).await?;

        mount(
            Some("tmpfs"),
            &host.join("fromhost"),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )?;
        let (_, seen) = sh(
            &mut client,
            &id,
            "grep -c ' /mnt/prop/fromhost ' /proc/self/mountinfo; \
             mount -t tmpfs -o size=1m none /mnt/prop/fromcontainer && echo mounted",
        )
        .await?;
        let mut lines = seen.lines();
        let seen_in_container = lines.next().unwrap_or("0").trim() != "0";
        assert!(
            lines.next() == Some("mounted"),
            "{name}: mount in the container: {seen}"
        );
        assert_eq!(
            seen_in_container, host_to_container,
            "{name}: the host's new mount seen in the container"
        );
        assert_eq!(
            host_mounted(&host.join("fromcontainer"))?,
            container_to_host,
            "{name}: the container's new mount seen on the host"
        );
        client
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await?;
        drop(shared);
    }
    client.stop_and_remove_pod(&pod.id).await?;
    Ok(())
}
