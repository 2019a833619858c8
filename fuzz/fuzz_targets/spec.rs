//! The CRI → OCI spec builder (`cri-server/src/container/spec.rs`) on arbitrary container and
//! pod configs. The CRI prost types do not derive `Arbitrary`, so the input is a mirror of the
//! fields the builder reads, mapped onto them.
//!
//! What touches the host is pinned to a fixture directory: mount sources (the builder creates a
//! missing one, as containerd does) and seccomp profile files are chosen among fixture paths, or
//! are relative (refused before any file access). The rootfs is a fixture with its own
//! /etc/passwd and /etc/group.
//!
//! Checked on every spec it returns: the process is well-formed (command, absolute cwd, `K=V`
//! env with unique keys and a PATH), mount destinations are absolute, an unprivileged container
//! never gets a capability beyond Docker's default set unless it asked for one, devices are
//! deny-by-default, sysctls are namespaced, and the spec survives the JSON round trip through
//! config.json that the shim reads.
#![no_main]

use arbitrary::Arbitrary;
use crisp_cri_api::v1 as cri;
use crisp_cri_server::container::spec::{self, SpecInput, DEFAULT_CAPS};
use crisp_cri_server::pod::userns::{IdMap, IdRange};
use crisp_cri_server::pod::{SandboxRecord, SandboxState};
use crisp_snapshotter::ImageConfig;
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{Capability, Spec};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    command: Vec<String>,
    args: Vec<String>,
    working_dir: String,
    /// Values as bytes, as the CRI sends them (not necessarily UTF-8).
    envs: Vec<(String, Vec<u8>)>,
    mounts: Vec<MountIn>,
    tty: bool,
    linux: Option<LinuxIn>,
    image: ImageIn,
    pod_sysctls: Vec<(String, String)>,
    pod_pidns: bool,
    /// A pod with its own user namespace: (host base, length) of its one mapping.
    pod_userns: Option<(u32, u32)>,
    pod_netns: bool,
    pod_ipcns: bool,
    pod_utsns: bool,
    target_pidns: bool,
    cgroups_path: String,
}

#[derive(Arbitrary, Debug)]
struct ImageIn {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
}

#[derive(Arbitrary, Debug)]
struct LinuxIn {
    resources: Option<ResourcesIn>,
    security: Option<SecurityIn>,
}

#[derive(Arbitrary, Debug)]
struct ResourcesIn {
    cpu_period: i64,
    cpu_quota: i64,
    cpu_shares: i64,
    memory_limit_in_bytes: i64,
    memory_swap_limit_in_bytes: i64,
    oom_score_adj: i64,
    cpuset_cpus: String,
    cpuset_mems: String,
    hugepage_limits: Vec<(String, u64)>,
    unified: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
enum CapName {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Enum {
    Known(u8),
    Raw(i32),
}

#[derive(Arbitrary, Debug)]
enum SeccompRef {
    Valid,
    Invalid,
    Missing,
    Relative(String),
}

#[derive(Arbitrary, Debug)]
struct ProfileIn {
    profile_type: Enum,
    seccomp_ref: SeccompRef,
    apparmor_name: String,
}

#[derive(Arbitrary, Debug)]
enum LegacyProfile {
    Empty,
    Known(u8),
    Localhost(SeccompRef),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct SecurityIn {
    add: Option<Vec<CapName>>,
    drop: Vec<CapName>,
    privileged: bool,
    pid_mode: Option<Enum>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_username: String,
    readonly_rootfs: bool,
    supplemental_groups: Vec<i64>,
    no_new_privs: bool,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
    seccomp: Option<ProfileIn>,
    apparmor: Option<ProfileIn>,
    seccomp_profile_path: LegacyProfile,
    apparmor_profile: LegacyProfile,
}

#[derive(Arbitrary, Debug)]
enum HostPath {
    Dir,
    File,
    /// A path under the fixture that does not exist yet (the builder creates it).
    Missing(Vec<u8>),
    DanglingSymlink,
    Relative(String),
}

#[derive(Arbitrary, Debug)]
struct MountIn {
    container_path: String,
    host_path: HostPath,
    readonly: bool,
    recursive_read_only: bool,
    propagation: Enum,
}

const CAPS: &[&str] = &[
    "ALL",
    "all",
    "NET_ADMIN",
    "net_raw",
    "CAP_SYS_ADMIN",
    "cap_chown",
    "KILL",
    "BPF",
    "",
    "CAP_",
    "SETUID",
    "AUDIT_READ",
];
const LEGACY: &[&str] = &[
    "unconfined",
    "runtime/default",
    "docker/default",
    "localhost/",
    "localhost/x",
];

struct Fixture {
    dir: PathBuf,
    rootfs: PathBuf,
    pod: PathBuf,
    mounts: PathBuf,
}

/// One directory per process, under `$CRISP_FUZZ_TMP` or the temp dir.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = std::env::var_os("CRISP_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tmp.join(format!("crisp-fuzz-spec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        let pod = dir.join("pod");
        std::fs::create_dir_all(rootfs.join("etc")).expect("fixture");
        std::fs::create_dir_all(&pod).expect("fixture");
        std::fs::create_dir_all(dir.join("dir")).expect("fixture");
        std::fs::write(dir.join("file"), "x").expect("fixture");
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).expect("fixture");
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbad:x:-1:zz\n",
        )
        .expect("fixture");
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:50:app,root\n",
        )
        .expect("fixture");
        std::fs::write(
            dir.join("seccomp.json"),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .expect("fixture");
        std::fs::write(dir.join("bad.json"), "{").expect("fixture");
        Fixture {
            mounts: dir.join("mounts"),
            dir,
            rootfs,
            pod,
        }
    })
}

fn enum_value(e: &Enum, known: i32) -> i32 {
    match e {
        // One past the known values too: the first unknown one.
        Enum::Known(i) => i32::from(*i) % (known + 1),
        Enum::Raw(v) => *v,
    }
}

fn cap(c: &CapName) -> String {
    match c {
        CapName::Known(i) => CAPS[usize::from(*i) % CAPS.len()].to_string(),
        CapName::Raw(s) => s.clone(),
    }
}

fn seccomp_path(f: &Fixture, r: &SeccompRef) -> String {
    let p = match r {
        SeccompRef::Valid => f.dir.join("seccomp.json"),
        SeccompRef::Invalid => f.dir.join("bad.json"),
        SeccompRef::Missing => f.dir.join("missing.json"),
        // Relative paths are refused before they are read.
        SeccompRef::Relative(s) => return s.trim_start_matches('/').to_string(),
    };
    p.to_string_lossy().into_owned()
}

fn legacy(f: &Fixture, l: &LegacyProfile) -> String {
    match l {
        LegacyProfile::Empty => String::new(),
        LegacyProfile::Known(i) => LEGACY[usize::from(*i) % LEGACY.len()].to_string(),
        LegacyProfile::Localhost(r) => format!("localhost/{}", seccomp_path(f, r)),
        // Anything but `localhost/…`, which would be read as a file.
        LegacyProfile::Raw(s) if s.starts_with("localhost/") => String::new(),
        LegacyProfile::Raw(s) => s.clone(),
    }
}

fn host_path(f: &Fixture, h: &HostPath) -> String {
    let p: PathBuf = match h {
        HostPath::Dir => f.dir.join("dir"),
        HostPath::File => f.dir.join("file"),
        HostPath::DanglingSymlink => f.dir.join("dangling"),
        HostPath::Missing(name) => {
            // Plain names only, so that it stays under the fixture.
            let name: String = name
                .iter()
                .map(|b| char::from(b'a' + b % 26))
                .take(16)
                .collect();
            f.mounts
                .join(if name.is_empty() { "m".into() } else { name })
        }
        HostPath::Relative(s) => return s.trim_start_matches('/').to_string(),
    };
    p.to_string_lossy().into_owned()
}

fn profile(f: &Fixture, p: &ProfileIn, seccomp: bool) -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: enum_value(&p.profile_type, 3),
        localhost_ref: if seccomp {
            seccomp_path(f, &p.seccomp_ref)
        } else {
            p.apparmor_name.clone()
        },
    }
}

fn config(f: &Fixture, i: &Input) -> cri::ContainerConfig {
    let linux = i.linux.as_ref().map(|l| cri::LinuxContainerConfig {
        resources: l.resources.as_ref().map(|r| cri::LinuxContainerResources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            hugepage_limits: r
                .hugepage_limits
                .iter()
                .map(|(page_size, limit)| cri::HugepageLimit {
                    page_size: page_size.clone(),
                    limit: *limit,
                })
                .collect(),
            unified: r.unified.iter().cloned().collect(),
        }),
        security_context: l.security.as_ref().map(|s| {
            #[allow(deprecated)] // the string forms older kubelets send
            cri::LinuxContainerSecurityContext {
                capabilities: s.add.as_ref().map(|add| cri::Capability {
                    add_capabilities: add.iter().map(cap).collect(),
                    drop_capabilities: s.drop.iter().map(cap).collect(),
                    ..Default::default()
                }),
                privileged: s.privileged,
                namespace_options: s.pid_mode.as_ref().map(|m| cri::NamespaceOption {
                    pid: enum_value(m, 4),
                    ..Default::default()
                }),
                run_as_user: s.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: s.run_as_group.map(|value| cri::Int64Value { value }),
                run_as_username: s.run_as_username.clone(),
                readonly_rootfs: s.readonly_rootfs,
                supplemental_groups: s.supplemental_groups.clone(),
                no_new_privs: s.no_new_privs,
                masked_paths: s.masked_paths.clone(),
                readonly_paths: s.readonly_paths.clone(),
                seccomp: s.seccomp.as_ref().map(|p| profile(f, p, true)),
                apparmor: s.apparmor.as_ref().map(|p| profile(f, p, false)),
                seccomp_profile_path: legacy(f, &s.seccomp_profile_path),
                apparmor_profile: legacy(f, &s.apparmor_profile),
                ..Default::default()
            }
        }),
    });
    cri::ContainerConfig {
        command: i.command.clone(),
        args: i.args.clone(),
        working_dir: i.working_dir.clone(),
        envs: i
            .envs
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: i
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: host_path(f, &m.host_path),
                readonly: m.readonly,
                recursive_read_only: m.recursive_read_only,
                propagation: enum_value(&m.propagation, 3),
                ..Default::default()
            })
            .collect(),
        tty: i.tty,
        linux,
        ..Default::default()
    }
}

fn pod(f: &Fixture, i: &Input) -> SandboxRecord {
    let ns = |on: bool, name: &str| on.then(|| f.pod.join(name));
    SandboxRecord {
        id: "0123456789abcdef".into(),
        config: cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                sysctls: i.pod_sysctls.iter().cloned().collect(),
                ..Default::default()
            }),
            ..Default::default()
        },
        state: SandboxState::Ready,
        created_at_ns: 0,
        runtime_handler: String::new(),
        dir: f.pod.clone(),
        netns: ns(i.pod_netns, "net"),
        ipcns: ns(i.pod_ipcns, "ipc"),
        utsns: ns(i.pod_utsns, "uts"),
        pidns: ns(i.pod_pidns, "pid"),
        pause_pid: 0,
        userns: i.pod_userns.and_then(|_| ns(true, "user")),
        idmap: i.pod_userns.map(|(host, len)| {
            let r = vec![IdRange {
                container: 0,
                host,
                len: len.max(1),
            }];
            IdMap {
                uids: r.clone(),
                gids: r,
            }
        }),
        cgroup_parent: "/crisp-fuzz".into(),
        owns_cgroup: false,
        ips: Vec::new(),
    }
}

fn check(c: &cri::ContainerConfig, s: &Spec) {
    let p = s.process().as_ref().expect("a process");
    assert!(!p.args().as_ref().is_none_or(|a| a.is_empty()), "no args");
    assert!(p.cwd().is_absolute(), "cwd {:?}", p.cwd());
    for a in p.args().as_deref().unwrap_or_default() {
        assert!(!a.contains('\0'), "arg {a:?} has a NUL");
    }
    let env = p.env().clone().unwrap_or_default();
    let mut keys = HashSet::new();
    for e in &env {
        // An image's Env entry may be a bare name, as in Docker.
        let (k, _) = e.split_once('=').unwrap_or((e, ""));
        // What the container's init (std's set_var) would panic on.
        assert!(!k.is_empty() && !e.contains('\0'), "env {e:?}");
        assert!(keys.insert(k.to_string()), "env key {k:?} twice in {env:?}");
    }
    assert!(keys.contains("PATH"), "no PATH in {env:?}");

    for m in s.mounts().as_deref().unwrap_or_default() {
        assert!(
            m.destination().is_absolute(),
            "mount to {:?}",
            m.destination()
        );
    }

    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    assert_eq!(
        p.no_new_privileges().unwrap_or(false),
        sc.is_some_and(|s| s.no_new_privs)
    );
    let asked_for_more = sc
        .and_then(|s| s.capabilities.as_ref())
        .is_some_and(|c| !c.add_capabilities.is_empty());
    if !privileged && !asked_for_more {
        let caps = p.capabilities().as_ref().expect("capabilities");
        let default: HashSet<Capability> = DEFAULT_CAPS.iter().copied().collect();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.clone().unwrap_or_default();
            assert!(
                set.is_subset(&default),
                "more than the default caps: {set:?}"
            );
        }
    }
    let caps = p.capabilities().as_ref().expect("capabilities");
    assert!(caps.ambient().as_ref().is_none_or(|a| a.is_empty()));
    assert!(caps.inheritable().as_ref().is_none_or(|a| a.is_empty()));

    let linux = s.linux().as_ref().expect("linux");
    let devices = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let first = devices.first().expect("device rules");
    assert_eq!(first.allow(), privileged, "first device rule {first:?}");
    for k in linux
        .sysctl()
        .as_ref()
        .map(HashMap::keys)
        .into_iter()
        .flatten()
    {
        assert!(spec::check_sysctl(k).is_ok(), "sysctl {k:?}");
    }
    if !privileged {
        assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
    }
    let json = serde_json::to_string(s).expect("spec to JSON");
    let back: Spec = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the spec's JSON does not read back: {e}\n{json}"));
    assert_eq!(&back, s, "the spec changes through JSON");
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let config = config(f, &input);
    let pod = pod(f, &input);
    let image = ImageConfig {
        entrypoint: input.image.entrypoint.clone(),
        cmd: input.image.cmd.clone(),
        env: input.image.env.clone(),
        working_dir: input.image.working_dir.clone(),
        user: input.image.user.clone(),
        ..Default::default()
    };
    let target = f.pod.join("target-pid");
    let built = spec::build(&SpecInput {
        config: &config,
        pod: &pod,
        image: &image,
        rootfs: &f.rootfs,
        cgroups_path: input.cgroups_path.clone(),
        target_pidns: input.target_pidns.then_some(target),
        image_volumes: &HashMap::new(),
    });
    if let Ok(s) = &built {
        check(&config, s);
    }
    // Mount sources the builder created: gone for the next input.
    let _ = std::fs::remove_dir_all(&f.mounts);
});
