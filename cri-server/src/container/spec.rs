//! The OCI runtime spec of a container, from its CRI config, its pod and its image config.

use super::user::{self, ResolvedUser, UserRequest};
use crate::error::{Error, Result};
use crate::pod::userns::IdMap;
use crate::pod::{files, SandboxRecord};
use crisp_cri_api::v1::{
    ContainerConfig, LinuxContainerResources, MountPropagation, SupplementalGroupsPolicy,
};
use crisp_snapshotter::image::ImageConfig;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub struct SpecInput<'a> {
    pub config: &'a ContainerConfig,
    pub pod: &'a SandboxRecord,
    pub image: &'a ImageConfig,
    /// The mounted rootfs, to resolve users through the image's own files.
    pub rootfs: &'a Path,
    pub cgroups_path: String,
    /// pid mode TARGET: the target container's PID namespace.
    pub target_pidns: Option<PathBuf>,
    /// Mount points of the container's image volumes, by container path.
    pub image_volumes: &'a HashMap<String, PathBuf>,
}

/// Docker's default capability set, which containerd and CRI-O also grant.
pub const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel (6.x) knows, for `privileged` and `add: [ALL]`.
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Accepts `NET_ADMIN`, `net_admin` and `CAP_NET_ADMIN`, as Kubernetes users write them.
fn parse_cap(name: &str) -> Option<Capability> {
    let n = name.to_ascii_uppercase();
    let bare = n.strip_prefix("CAP_").unwrap_or(&n);
    Capability::from_str(bare)
        .or_else(|_| Capability::from_str(&format!("CAP_{bare}")))
        .ok()
}

fn spec_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("building the OCI spec: {e}"))
}

/// Whether a `SupplementalGroupsPolicy` is Strict; a value this CRI version does not know is
/// refused rather than read as the default.
fn strict_groups(policy: i32) -> Result<bool> {
    match SupplementalGroupsPolicy::try_from(policy) {
        Ok(SupplementalGroupsPolicy::Merge) => Ok(false),
        Ok(SupplementalGroupsPolicy::Strict) => Ok(true),
        Err(_) => Err(Error::InvalidArgument(format!(
            "supplemental_groups_policy {policy} is not supported (Merge or Strict)"
        ))),
    }
}

pub fn build(input: &SpecInput<'_>) -> Result<Spec> {
    let c = input.config;
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();

    let args = command_line(c, input.image)?;
    let env = environment(c, input.image)?;
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "working dir {cwd:?} must be absolute"
        )));
    }

    let ResolvedUser {
        uid,
        gid,
        additional_gids,
        ..
    } = user::resolve(
        input.rootfs,
        &UserRequest {
            run_as_user: sc.run_as_user.as_ref().map(|v| v.value),
            run_as_group: sc.run_as_group.as_ref().map(|v| v.value),
            run_as_username: &sc.run_as_username,
            supplemental_groups: &sc.supplemental_groups,
            strict_groups: strict_groups(sc.supplemental_groups_policy)?,
            image_user: &input.image.user,
        },
    )?;

    if let Some(map) = &input.pod.idmap {
        check_in_user_namespace(map, &sc, uid, gid, &additional_gids)?;
    }

    let caps = capabilities(sc.privileged, sc.capabilities.as_ref())?;
    // Inheritable and ambient stay empty, as in containerd: oci-spec's defaults would put
    // capabilities there, and ambient ones survive exec into non-root processes.
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_err)?;
    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .args(args)
        .env(env.entries)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(additional_gids)
                .build()
                .map_err(spec_err)?,
        )
        .capabilities(caps)
        .no_new_privileges(sc.no_new_privs)
        .build()
        .map_err(spec_err)?;
    if let Some(profile) = super::apparmor::profile_for(&sc)? {
        process.set_apparmor_profile(Some(profile));
    }
    let resources = c
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    if resources.oom_score_adj != 0 {
        process.set_oom_score_adj(Some(clamp_oom_score_adj(resources.oom_score_adj)));
    }

    let mut spec = Spec::default();
    spec.set_hostname(None);
    if !env.raw.is_empty() {
        spec.set_annotations(Some(HashMap::from([(
            crisp_api::raw_env::ANNOTATION.to_string(),
            crisp_api::raw_env::encode(&env.raw),
        )])));
    }
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(sc.readonly_rootfs)
            .build()
            .map_err(spec_err)?,
    ));
    spec.set_mounts(Some(mounts(
        c,
        input.pod,
        sc.readonly_rootfs,
        input.image_volumes,
    )?));

    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    if let Some(userns) = &input.pod.userns {
        namespaces.push(ns(LinuxNamespaceType::User, Some(userns.clone()))?);
    }
    let pid_mode = sc
        .namespace_options
        .as_ref()
        .map(|n| n.pid)
        .unwrap_or_default();
    match crisp_cri_api::v1::NamespaceMode::try_from(pid_mode) {
        Ok(crisp_cri_api::v1::NamespaceMode::Node) => {}
        // POD is the CRI's default (kubelet always says CONTAINER unless the pod shares its
        // process namespace); in a pod made without a shared one, that means a private one.
        Ok(crisp_cri_api::v1::NamespaceMode::Pod) => {
            namespaces.push(ns(LinuxNamespaceType::Pid, input.pod.pidns.clone())?);
        }
        Ok(crisp_cri_api::v1::NamespaceMode::Target) => {
            let target = input.target_pidns.clone().ok_or_else(|| {
                Error::InvalidArgument("pid namespace mode TARGET without a target".into())
            })?;
            namespaces.push(ns(LinuxNamespaceType::Pid, Some(target))?);
        }
        Ok(crisp_cri_api::v1::NamespaceMode::Container) => {
            namespaces.push(ns(LinuxNamespaceType::Pid, None)?);
        }
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "unknown pid namespace mode {pid_mode}"
            )))
        }
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &input.pod.netns),
        (LinuxNamespaceType::Ipc, &input.pod.ipcns),
        (LinuxNamespaceType::Uts, &input.pod.utsns),
    ] {
        if let Some(p) = path {
            namespaces.push(ns(typ, Some(p.clone()))?);
        }
    }
    if crate::cgroups::unified() {
        // As Docker and containerd do on v2: the container sees its own cgroup as the root.
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }

    let mut linux_resources = cgroup_resources(&resources)?;
    let requested = super::devices::requested(&c.devices)?;
    let mut rules = device_rules(sc.privileged)?;
    rules.extend(requested.rules);
    linux_resources.set_devices(Some(rules));
    let mut device_nodes = if sc.privileged {
        super::devices::all_of_host()?
    } else {
        Vec::new()
    };
    // Asked-for devices win over the host's node at the same path.
    device_nodes.retain(|n| !requested.nodes.iter().any(|r| r.path() == n.path()));
    device_nodes.extend(requested.nodes);

    let sysctls = input
        .pod
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    for key in sysctls.keys() {
        check_sysctl(key)?;
    }

    let default_linux = spec.linux().clone().unwrap_or_default();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .resources(linux_resources)
        .devices(device_nodes)
        .sysctl(sysctls.into_iter().collect::<HashMap<_, _>>())
        .build()
        .map_err(spec_err)?;
    if !sc.privileged {
        // kubelet sends the paths for its procMount setting; without them, the defaults.
        linux.set_masked_paths(if sc.masked_paths.is_empty() {
            default_linux.masked_paths().clone()
        } else {
            Some(sc.masked_paths.clone())
        });
        linux.set_readonly_paths(if sc.readonly_paths.is_empty() {
            default_linux.readonly_paths().clone()
        } else {
            Some(sc.readonly_paths.clone())
        });
    }
    // As containerd: the root must propagate for a bidirectional or host-to-container volume
    // to (the runtime's default root propagation is slave).
    let propagations: Vec<i32> = c.mounts.iter().map(|m| m.propagation).collect();
    if propagations.contains(&(MountPropagation::PropagationBidirectional as i32)) {
        linux.set_rootfs_propagation(Some("shared".into()));
    } else if propagations.contains(&(MountPropagation::PropagationHostToContainer as i32)) {
        linux.set_rootfs_propagation(Some("slave".into()));
    }
    linux.set_seccomp(super::seccomp::for_container(&sc)?);
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// CRI resources → OCI cgroup resources; used at creation and by UpdateContainerResources.
pub fn cgroup_resources(r: &LinuxContainerResources) -> Result<LinuxResources> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota > 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes > 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory = memory.swap(r.memory_swap_limit_in_bytes);
    }
    let mut hugepages = Vec::new();
    for h in &r.hugepage_limits {
        hugepages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(h.limit as i64)
                .build()
                .map_err(spec_err)?,
        );
    }
    let mut b = LinuxResourcesBuilder::default()
        .cpu(cpu.build().map_err(spec_err)?)
        .memory(memory.build().map_err(spec_err)?);
    if !hugepages.is_empty() {
        if crate::cgroups::hugetlb_controllable() {
            b = b.hugepage_limits(hugepages);
        } else if r.hugepage_limits.iter().any(|h| h.limit > 0) {
            // kubelet sends a limit (0 when not requested) for every page size the node has;
            // refusing them would fail every pod on such a host, as runc's v1 manager
            // does not fail either.
            tracing::warn!(
                "hugepage limits not enforced: no cgroup v1 hierarchy has the hugetlb controller \
                 on this host (hybrid layout with hugetlb only in the cgroup2 tree)"
            );
        }
    }
    if !r.unified.is_empty() {
        b = b.unified(r.unified.clone());
    }
    b.build().map_err(spec_err)
}

/// UpdateContainerResources before the start: the new limits go into the bundle's spec, which
/// the runtime creates the container from. Device rules and pids stay as built.
pub fn update_bundle_resources(bundle: &Path, new: LinuxResources) -> Result<()> {
    let path = bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&path)
        .map_err(|e| Error::internal(format!("reading {}", path.display()), e))?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_cpu(new.cpu().clone());
    resources.set_memory(*new.memory());
    resources.set_hugepage_limits(new.hugepage_limits().clone());
    if new.unified().is_some() {
        resources.set_unified(new.unified().clone());
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec.save(&path)
        .map_err(|e| Error::internal(format!("writing {}", path.display()), e))
}

/// Kubernetes' rule: `command` replaces the image ENTRYPOINT (and drops its CMD), `args`
/// replaces CMD.
fn command_line(c: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let mut args: Vec<String> = if !c.command.is_empty() {
        c.command.iter().chain(&c.args).cloned().collect()
    } else if !c.args.is_empty() {
        image.entrypoint.iter().chain(&c.args).cloned().collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if args.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: neither the container config nor the image specifies one".into(),
        ));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidArgument("command contains a NUL byte".into()));
    }
    args.shrink_to_fit();
    Ok(args)
}

/// The environment for `process.env`, and the exact bytes of the values that are not UTF-8
/// (see `crisp_api::raw_env`).
struct Environment {
    entries: Vec<String>,
    raw: BTreeMap<String, Vec<u8>>,
}

/// The image's Env, then the CRI envs, a later key replacing an earlier one.
fn environment(c: &ContainerConfig, image: &ImageConfig) -> Result<Environment> {
    let mut raw = BTreeMap::new();
    let mut env: Vec<(String, String)> = Vec::new();
    fn put(env: &mut Vec<(String, String)>, k: &str, entry: String) {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = entry,
            None => env.push((k.to_string(), entry)),
        }
    }
    for e in &image.env {
        let (k, _) = e.split_once('=').unwrap_or((e, ""));
        // The container's init sets each variable with std's set_var, which panics on these.
        if k.is_empty() || e.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "the image has an invalid environment variable {e:?}"
            )));
        }
        put(&mut env, k, e.clone());
    }
    for kv in &c.envs {
        if kv.key.is_empty()
            || kv.key.contains('=')
            || kv.key.contains('\0')
            || kv.value.contains(&0)
        {
            return Err(Error::InvalidArgument(format!(
                "invalid environment variable {:?}",
                kv.key
            )));
        }
        let value = String::from_utf8_lossy(&kv.value);
        if std::str::from_utf8(&kv.value).is_err() {
            raw.insert(kv.key.clone(), kv.value.clone());
        } else {
            raw.remove(&kv.key);
        }
        put(&mut env, &kv.key, format!("{}={value}", kv.key));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        put(
            &mut env,
            "PATH",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    // What containerd sets for a terminal, unless the image or the pod chose a TERM.
    if c.tty && !env.iter().any(|(k, _)| k == "TERM") {
        put(&mut env, "TERM", "TERM=xterm".into());
    }
    Ok(Environment {
        entries: env.into_iter().map(|(_, e)| e).collect(),
        raw,
    })
}

fn capabilities(
    privileged: bool,
    req: Option<&crisp_cri_api::v1::Capability>,
) -> Result<HashSet<Capability>> {
    // "All" is what crispd itself may grant, as containerd does for privileged containers: a
    // capability outside our bounding set (CAP_SYS_RESOURCE on some hosts) cannot be given and
    // would only make the container's capset fail.
    let all = || -> HashSet<Capability> {
        let bounding = own_bounding_set();
        ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
            .filter_map(|(_, n)| parse_cap(n))
            .collect()
    };
    if privileged {
        return Ok(all());
    }
    let mut caps: HashSet<Capability> = DEFAULT_CAPS.iter().copied().collect();
    let parse = |name: &str| -> Result<Capability> {
        parse_cap(name)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown capability {name:?}")))
    };
    if let Some(r) = req {
        for d in &r.drop_capabilities {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                caps.remove(&parse(d)?);
            }
        }
        for a in &r.add_capabilities {
            if a.eq_ignore_ascii_case("ALL") {
                caps = all();
            } else {
                let cap = parse(a)?;
                if !all().contains(&cap) {
                    return Err(Error::InvalidArgument(format!(
                        "capability {a} cannot be granted: crispd does not hold it (not in its \
                         bounding set)"
                    )));
                }
                caps.insert(cap);
            }
        }
    }
    Ok(caps)
}

/// crispd's capability bounding set (`CapBnd` in /proc/self/status), read once.
fn own_bounding_set() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX)
    })
}

/// cgroup device rules: deny everything, then allow what every container needs (the devices
/// runc and containerd allow by default).
fn device_rules(privileged: bool) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>> {
    let rule = |allow: bool,
                typ: LinuxDeviceType,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(spec_err)
    };
    if privileged {
        return Ok(vec![rule(true, LinuxDeviceType::A, None, None, "rwm")?]);
    }
    let c = LinuxDeviceType::C;
    Ok(vec![
        rule(false, LinuxDeviceType::A, None, None, "rwm")?,
        rule(true, c, None, None, "m")?,
        rule(true, LinuxDeviceType::B, None, None, "m")?,
        rule(true, c, Some(1), Some(3), "rwm")?,    // null
        rule(true, c, Some(1), Some(5), "rwm")?,    // zero
        rule(true, c, Some(1), Some(7), "rwm")?,    // full
        rule(true, c, Some(1), Some(8), "rwm")?,    // random
        rule(true, c, Some(1), Some(9), "rwm")?,    // urandom
        rule(true, c, Some(5), Some(0), "rwm")?,    // tty
        rule(true, c, Some(5), Some(1), "rwm")?,    // console
        rule(true, c, Some(5), Some(2), "rwm")?,    // ptmx
        rule(true, c, Some(136), None, "rwm")?,     // pts
        rule(true, c, Some(10), Some(200), "rwm")?, // tun
    ])
}

/// A container of a pod with its own user namespace: it must ask for the pod's namespace (or
/// none), and its ids must exist in it (setuid to an unmapped id fails only at start, obscurely).
fn check_in_user_namespace(
    map: &IdMap,
    sc: &crisp_cri_api::v1::LinuxContainerSecurityContext,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
) -> Result<()> {
    if let Some(opts) = sc
        .namespace_options
        .as_ref()
        .and_then(|n| n.userns_options.as_ref())
    {
        if IdMap::from_cri(Some(opts))?.as_ref() != Some(map) {
            return Err(Error::InvalidArgument(
                "the container's user namespace options differ from its pod's: containers \
                 share the pod's user namespace"
                    .into(),
            ));
        }
    }
    if sc.privileged {
        return Err(Error::InvalidArgument(
            "a privileged container cannot run in a pod with its own user namespace".into(),
        ));
    }
    if !map.maps_uid(uid) {
        return Err(Error::InvalidArgument(format!(
            "uid {uid} is not mapped in the pod's user namespace"
        )));
    }
    if let Some(g) = std::iter::once(&gid)
        .chain(additional_gids)
        .find(|g| !map.maps_gid(**g))
    {
        return Err(Error::InvalidArgument(format!(
            "gid {g} is not mapped in the pod's user namespace"
        )));
    }
    Ok(())
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<oci_spec::runtime::LinuxNamespace> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().map_err(spec_err)
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

fn mounts(
    c: &ContainerConfig,
    pod: &SandboxRecord,
    readonly_rootfs: bool,
    image_volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>> {
    let mut out: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    let requested: HashSet<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    let rw = if readonly_rootfs { "ro" } else { "rw" };
    for (file, dest) in [
        (files::HOSTNAME, "/etc/hostname"),
        (files::RESOLV_CONF, "/etc/resolv.conf"),
        (files::HOSTS, "/etc/hosts"),
    ] {
        if !requested.contains(dest) {
            out.push(bind(&pod.dir.join(file), dest, &["rbind", "rprivate", rw])?);
        }
    }
    for m in &c.mounts {
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount destination {:?} must be absolute",
                m.container_path
            )));
        }
        if super::image_volumes::image_of(m).is_some() {
            let source = image_volumes.get(&m.container_path).ok_or_else(|| {
                Error::Internal(format!(
                    "image volume at {} was not mounted",
                    m.container_path
                ))
            })?;
            // Read-only by definition (KEP-4639); the overlay has no upper layer anyway.
            out.push(bind(
                source,
                &m.container_path,
                &["rbind", "rprivate", "ro"],
            )?);
            continue;
        }
        if !m.host_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount source {:?} must be absolute",
                m.host_path
            )));
        }
        let host = Path::new(&m.host_path);
        match std::fs::symlink_metadata(host) {
            Ok(_) => {
                std::fs::metadata(host).map_err(|e| {
                    Error::InvalidArgument(format!("mount source {}: {e}", m.host_path))
                })?;
            }
            // containerd creates a missing host path as a directory; so do we.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(host).map_err(|e| {
                    Error::InvalidArgument(format!("creating mount source {}: {e}", m.host_path))
                })?;
            }
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "mount source {}: {e}",
                    m.host_path
                )))
            }
        }
        let propagation = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
        if m.recursive_read_only {
            // The CRI's rules: recursive read-only only on top of read-only, and only with private
            // propagation (a submount arriving later through propagation would be writable).
            if !m.readonly {
                return Err(Error::InvalidArgument(format!(
                    "mount {}: recursive_read_only needs readonly to be set too",
                    m.container_path
                )));
            }
            if m.propagation != MountPropagation::PropagationPrivate as i32 {
                return Err(Error::InvalidArgument(format!(
                    "mount {}: recursive_read_only needs private propagation",
                    m.container_path
                )));
            }
            // libcontainer applies it with mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY).
            options.push("rro");
        }
        out.push(bind(host, &m.container_path, &options)?);
    }
    Ok(out)
}

/// Sysctls a container may set: those the kernel namespaces (net, IPC). Anything else would
/// change the host, which the CRI forbids.
pub fn check_sysctl(key: &str) -> Result<()> {
    let namespaced = key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.shmmax"
                | "kernel.shmall"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
                | "kernel.msgmax"
                | "kernel.msgmni"
                | "kernel.msgmnb"
                | "kernel.sem"
        );
    if namespaced && !key.contains("..") && !key.contains('/') {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "sysctl {key:?} is not namespaced: it would change the host"
        )))
    }
}

/// Without CAP_SYS_RESOURCE a process cannot lower its oom_score_adj below crispd's own; ask for
/// no less than that instead of failing (containerd's `restrict_oom_score_adj`).
fn clamp_oom_score_adj(wanted: i64) -> i32 {
    let current: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1000);
    wanted.clamp(current.max(-1000), 1000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_cri_api::v1::KeyValue;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["cmd".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_command_rules() {
        let img = image();
        let mut c = ContainerConfig::default();
        assert_eq!(command_line(&c, &img).unwrap(), ["/entry", "cmd"]);
        c.args = vec!["x".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/entry", "x"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh", "x"]);
        c.args.clear();
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh"]);
        assert!(command_line(&ContainerConfig::default(), &ImageConfig::default()).is_err());
    }

    #[test]
    fn cri_env_wins() {
        let mut c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "A".into(),
                    value: "2".into(),
                },
                KeyValue {
                    key: "B".into(),
                    value: "3".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            environment(&c, &image()).unwrap().entries,
            ["PATH=/bin", "A=2", "B=3"]
        );
        c.envs = vec![KeyValue {
            key: "A=B".into(),
            value: "x".into(),
        }];
        assert!(environment(&c, &image()).is_err());
    }

    #[test]
    fn env_bytes_that_are_not_utf8_travel_beside_the_spec_env() {
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "RAW".into(),
                    value: vec![b'a', 0xff],
                },
                KeyValue {
                    key: "TEXT".into(),
                    value: "é".into(),
                },
            ],
            ..Default::default()
        };
        let env = environment(&c, &image()).unwrap();
        assert_eq!(env.entries, ["PATH=/bin", "A=1", "RAW=a\u{fffd}", "TEXT=é"]);
        assert_eq!(env.raw, BTreeMap::from([("RAW".into(), vec![b'a', 0xff])]));
    }

    #[test]
    fn image_env_that_init_cannot_set_is_refused() {
        // Found by fuzz/ (target spec): these reached the spec and panicked the container's init.
        for bad in ["", "=x", "A\0=1", "A=\0"] {
            let img = ImageConfig {
                env: vec![bad.into()],
                ..image()
            };
            assert!(
                environment(&ContainerConfig::default(), &img).is_err(),
                "{bad:?}"
            );
        }
        let img = ImageConfig {
            env: vec!["BARE".into()],
            ..image()
        };
        assert_eq!(
            environment(&ContainerConfig::default(), &img)
                .unwrap()
                .entries,
            [
                "BARE",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ]
        );
    }

    #[test]
    fn capability_add_drop() {
        let req = crisp_cri_api::v1::Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        let caps = capabilities(false, Some(&req)).unwrap();
        assert_eq!(
            caps.into_iter().collect::<Vec<_>>(),
            [Capability::NetBindService]
        );
        let bad = crisp_cri_api::v1::Capability {
            add_capabilities: vec!["NOPE".into()],
            ..Default::default()
        };
        assert!(capabilities(false, Some(&bad)).is_err());
    }

    #[test]
    fn sysctls() {
        assert!(check_sysctl("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl("kernel.shmmax").is_ok());
        assert!(check_sysctl("vm.swappiness").is_err());
        assert!(check_sysctl("kernel.hostname").is_err());
    }
}
