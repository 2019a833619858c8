//! Recursive read-only mounts (`Mount.recursive_read_only`): a submount under a read-only bind
//! mount stays writable unless the mount is recursive read-only; the CRI's rules for the flag
//! are enforced; the runtime handlers advertise the feature.

use crisp_tests::cri::{Mount, MountPropagation};
use crisp_tests::{crispd_test, sh, Crispd, TestPod, BUSYBOX};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

crispd_test!(recursive_readonly, check);

/// A tmpfs mounted for the test, unmounted however the test ends.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(at: &Path) -> anyhow::Result<TmpfsMount> {
        std::fs::create_dir_all(at)?;
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )?;
        Ok(TmpfsMount(at.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn volume(host: &Path, at: &str, recursive: bool, propagation: MountPropagation) -> Mount {
    Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        propagation: propagation as i32,
        ..Default::default()
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let status = client.status().await?;
    assert!(
        status.runtime_handlers.iter().all(|h| h
            .features
            .as_ref()
            .is_some_and(|f| f.recursive_read_only_mounts)),
        "{:?}",
        status.runtime_handlers
    );

    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "rro").await?;
    let host = crispd.dir().join("rro-volume");
    let _sub = TmpfsMount::new(&host.join("sub"))?;

    let mut c = pod.container("c", &["sleep", "3600"])?;
    c.mounts = vec![
        volume(&host, "/ro", false, MountPropagation::PropagationPrivate),
        volume(&host, "/rro", true, MountPropagation::PropagationPrivate),
    ];
    let c = pod.create(&mut client, c).await?;
    client.start_container(&c).await?;
    // Plain read-only covers only the top mount; recursive read-only covers the submount too.
    let (code, out) = sh(&mut client, &c, "echo x > /ro/sub/file").await?;
    assert_eq!(code, 0, "submount of a plain ro mount: {out}");
    let (code, out) = sh(&mut client, &c, "echo x > /rro/sub/file").await?;
    assert_ne!(code, 0, "wrote into a recursive read-only submount");
    assert!(out.contains("Read-only"), "{out}");
    let (code, _) = sh(&mut client, &c, "echo x > /rro/top").await?;
    assert_ne!(code, 0, "wrote into a recursive read-only mount");

    // The CRI's rules: readonly must be set, and propagation must be private.
    for (bad, why) in [
        (
            Mount {
                readonly: false,
                ..volume(&host, "/x", true, MountPropagation::PropagationPrivate)
            },
            "readonly",
        ),
        (
            volume(
                &host,
                "/x",
                true,
                MountPropagation::PropagationHostToContainer,
            ),
            "propagation",
        ),
    ] {
        let mut cfg = pod.container("bad", &["true"])?;
        cfg.mounts = vec![bad];
        let e = client
            .create_container(&pod.id, cfg, &pod.config)
            .await
            .expect_err(why);
        assert!(
            e.status().is_some_and(
                |s| s.code() == tonic::Code::InvalidArgument && s.message().contains(why)
            ),
            "{e}"
        );
    }

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
