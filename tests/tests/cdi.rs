//! CDI devices (`ContainerConfig.CDI_devices`, and the `cdi.k8s.io/` annotations of older
//! kubelets) resolved against crispd's spec dirs: the device node with its cgroup rule, the
//! spec's and the device's env, mounts, additional groups and a hook; a later spec dir wins;
//! an unknown device is refused by name.

use anyhow::Context;
use crisp_tests::cri::CdiDevice;
use crisp_tests::{require_root, sh, Crispd, TestPod, BUSYBOX};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi() {
    if !require_root() {
        return;
    }
    let crispd = Crispd::start_with_config(|dir| {
        format!(
            "[cdi]\nspec_dirs = [\"{}\", \"{}\"]\n",
            dir.join("cdi-etc").display(),
            dir.join("cdi-run").display()
        )
    })
    .await
    .expect("starting crispd");
    crispd.expect_ok(check(&crispd).await);
}

fn write_specs(dir: &Path) -> anyhow::Result<()> {
    let etc = dir.join("cdi-etc");
    let run = dir.join("cdi-run");
    for d in [&etc, &run] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let shared = dir.join("cdi-shared.txt");
    std::fs::write(&shared, "from the host\n")?;
    let marker = dir.join("cdi-hook-ran");
    // YAML, as nvidia-ctk writes them.
    std::fs::write(
        etc.join("crisp-test.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: crisp.test/dev
containerEdits:
  env:
  - CDI_SPEC=spec-wide
devices:
- name: null0
  containerEdits:
    env:
    - CDI_DEVICE=null0-etc
    deviceNodes:
    - path: /dev/crisp-null
      hostPath: /dev/null
      permissions: rw
    mounts:
    - hostPath: {shared}
      containerPath: /cdi/shared.txt
      options: [ro, nosuid, nodev]
    additionalGIDs: [4242]
    hooks:
    - hookName: createRuntime
      path: /bin/sh
      args: [sh, -c, "echo ran > {marker}"]
- name: other
  containerEdits:
    env:
    - CDI_OTHER=1
"#,
            shared = shared.display(),
            marker = marker.display()
        ),
    )?;
    // The same device in the later dir (JSON): its edits win.
    std::fs::write(
        run.join("crisp-test.json"),
        r#"{"cdiVersion":"0.6.0","kind":"crisp.test/late","devices":[{"name":"x","containerEdits":{"env":["CDI_LATE=run"]}}]}"#,
    )?;
    std::fs::write(
        etc.join("late.json"),
        r#"{"cdiVersion":"0.6.0","kind":"crisp.test/late","devices":[{"name":"x","containerEdits":{"env":["CDI_LATE=etc"]}}]}"#,
    )?;
    Ok(())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    write_specs(crispd.dir())?;
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "cdi").await?;

    let mut c = pod.container("gpu", &["sleep", "3600"])?;
    c.cdi_devices = vec![
        CdiDevice {
            name: "crisp.test/dev=null0".into(),
        },
        CdiDevice {
            name: "crisp.test/late=x".into(),
        },
    ];
    // What a kubelet before CDI_devices sent.
    c.annotations
        .insert("cdi.k8s.io/other".into(), "crisp.test/dev=other".into());
    let id = pod.create(&mut client, c).await?;
    client.start_container(&id).await?;
    assert!(
        crispd.dir().join("cdi-hook-ran").exists(),
        "the createRuntime hook did not run"
    );
    let (code, out) = sh(
        &mut client,
        &id,
        "echo $CDI_SPEC $CDI_DEVICE $CDI_LATE $CDI_OTHER; stat -c '%F %t:%T' /dev/crisp-null; \
         echo written > /dev/crisp-null && echo writable; cat /cdi/shared.txt; \
         grep -q 4242 /proc/self/status && echo gid; touch /cdi/shared.txt 2>&1 || echo ro",
    )
    .await?;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "spec-wide null0-etc run 1", "env: {out}");
    assert_eq!(lines[1], "character special file 1:3", "{out}");
    assert_eq!(lines[2], "writable", "{out}");
    assert_eq!(lines[3], "from the host", "{out}");
    assert_eq!(lines[4], "gid", "{out}");
    assert_eq!(lines.last().copied(), Some("ro"), "{out}");

    let mut unknown = pod.container("nogpu", &["true"])?;
    unknown.cdi_devices = vec![CdiDevice {
        name: "crisp.test/dev=missing".into(),
    }];
    let e = pod
        .create(&mut client, unknown)
        .await
        .expect_err("an unknown CDI device must be refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("NotFound") && e.contains("crisp.test/dev=missing"),
        "{e}"
    );
    let mut malformed = pod.container("badname", &["true"])?;
    malformed.cdi_devices = vec![CdiDevice {
        name: "no-kind".into(),
    }];
    let e = pod
        .create(&mut client, malformed)
        .await
        .expect_err("a malformed CDI name must be refused");
    assert!(format!("{e:#}").contains("InvalidArgument"), "{e:#}");

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
