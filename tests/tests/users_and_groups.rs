//! Who a container runs as, as kubelet asks and critest checks: `RunAsGroup` needs a user,
//! `SupplementalGroupsPolicy` Merge (the image's `/etc/group` memberships plus the requested
//! groups) and Strict (only the requested ones), the identity reported in
//! `ContainerStatus.user`, and the feature advertised in `Status`.

use crisp_client::cri::{Int64Value, LinuxContainerSecurityContext};
use crisp_tests::{crispd_test, expect_code, sh, with_sc, Crispd, TestPod, BUSYBOX};
use tonic::Code;

crispd_test!(users_and_groups, check);

fn sorted_ids(s: &str) -> Vec<i64> {
    let mut v: Vec<i64> = s
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let status = client.status().await?;
    assert!(
        status
            .features
            .is_some_and(|f| f.supplemental_groups_policy),
        "Status does not advertise supplemental_groups_policy"
    );

    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "groups").await?;
    let sleep = ["sleep", "1000"];

    let group_alone = with_sc(
        pod.container("groupalone", &sleep)?,
        LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 5 }),
            ..Default::default()
        },
    );
    let status = expect_code(
        client
            .runtime
            .create_container(crisp_client::cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(group_alone),
                sandbox_config: Some(pod.config.clone()),
            })
            .await,
        Code::InvalidArgument,
        "RunAsGroup without a user",
    )?;
    assert!(status.message().contains("run_as_group"), "{status:?}");

    let unknown_policy = with_sc(
        pod.container("badpolicy", &sleep)?,
        LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..Default::default()
        },
    );
    let e = pod
        .create(&mut client, unknown_policy)
        .await
        .expect_err("an unknown SupplementalGroupsPolicy");
    assert!(e.to_string().contains("supplemental_groups_policy"), "{e}");

    // The test image's root belongs to wheel (10) in its /etc/group.
    for (name, policy, want) in [
        ("merge", 0, vec![0, 10, 1234]),
        ("strict", 1, vec![0, 1234]),
    ] {
        let c = with_sc(
            pod.container(name, &sleep)?,
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 0 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy,
                ..Default::default()
            },
        );
        let id = pod.create(&mut client, c).await?;
        client.start_container(&id).await?;
        let (code, out) = sh(&mut client, &id, "id -G").await?;
        assert_eq!(
            (code, sorted_ids(&out)),
            (0, want.clone()),
            "{name}: id -G {out}"
        );
        let (_, own) = sh(&mut client, &id, "grep Groups: /proc/1/status").await?;
        let mut first: Vec<i64> = sorted_ids(own.trim_start_matches("Groups:"));
        first.push(0);
        first.sort_unstable();
        first.dedup();
        assert_eq!(first, want, "{name}: the first process's {own}");
        let user = client
            .container_status(&id)
            .await?
            .user
            .and_then(|u| u.linux)
            .ok_or_else(|| anyhow::anyhow!("{name}: no user in ContainerStatus"))?;
        let mut groups = user.supplemental_groups.clone();
        groups.sort_unstable();
        assert_eq!(
            (user.uid, user.gid, groups),
            (0, 0, want),
            "{name}: {user:?}"
        );
    }

    // A named user's primary group comes from the image's passwd.
    let nobody = with_sc(
        pod.container("nobody", &sleep)?,
        LinuxContainerSecurityContext {
            run_as_username: "nobody".into(),
            ..Default::default()
        },
    );
    let id = pod.create(&mut client, nobody).await?;
    let user = client
        .container_status(&id)
        .await?
        .user
        .and_then(|u| u.linux);
    assert_eq!(
        user.map(|u| (u.uid, u.gid, u.supplemental_groups)),
        Some((65534, 65534, vec![65534]))
    );

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
