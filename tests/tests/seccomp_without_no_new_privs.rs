//! Seccomp profiles for a pod that does not set `allowPrivilegeEscalation: false`: default
//! capabilities (no CAP_SYS_ADMIN) and no_new_privs off, as root and as another user. The
//! filter must be loaded while the process still holds its capabilities (as runc does);
//! libcontainer loaded it after dropping them and every such create failed with "failed to
//! load seccomp context".

use crisp_client::cri::{Int64Value, LinuxContainerSecurityContext, SecurityProfile};
use crisp_tests::{crispd_test, sh, with_sc, Crispd, TestPod, BUSYBOX};

crispd_test!(seccomp_without_no_new_privs, check);

/// Allows everything but chmod, as critest's Localhost profile.
const BLOCK_CHMOD: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]
}"#;

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let profile = crispd.dir().join("block-chmod.json");
    std::fs::write(&profile, BLOCK_CHMOD)?;
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "seccomp").await?;

    let runtime_default = SecurityProfile {
        profile_type: 0,
        localhost_ref: String::new(),
    };
    let localhost = SecurityProfile {
        profile_type: 2,
        localhost_ref: profile.display().to_string(),
    };
    for (name, uid, seccomp) in [
        ("default-root", 0, runtime_default.clone()),
        ("default-user", 1000, runtime_default),
        ("local-root", 0, localhost.clone()),
        ("local-user", 1000, localhost),
    ] {
        let c = with_sc(
            pod.container(name, &["sleep", "1000"])?,
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: uid }),
                no_new_privs: false,
                seccomp: Some(seccomp.clone()),
                ..Default::default()
            },
        );
        let id = pod
            .create(&mut client, c)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        client.start_container(&id).await?;
        let (_, status) = sh(&mut client, &id, "cat /proc/1/status").await?;
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{name}: {status}");
        assert_eq!(
            status_field(&status, "NoNewPrivs:"),
            "0",
            "{name}: {status}"
        );
        if uid == 0 {
            // Root keeps the default capability set (CAP_CHOWN .. CAP_SETFCAP, no SYS_ADMIN).
            assert_ne!(
                status_field(&status, "CapEff:"),
                "0000000000000000",
                "{name}"
            );
        }
        let (code, out) = sh(&mut client, &id, "touch /tmp/f && chmod 400 /tmp/f").await?;
        if seccomp.profile_type == 2 {
            assert_ne!(code, 0, "{name}: chmod was not blocked");
            assert!(out.contains("Operation not permitted"), "{name}: {out}");
        } else {
            assert_eq!(code, 0, "{name}: {out}");
        }
    }
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
