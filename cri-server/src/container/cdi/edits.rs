//! Applying one set of CDI container edits to an OCI spec, in the CDI spec's terms: env
//! entries replace a variable of the same name, device nodes get a node and a cgroup rule,
//! mounts and hooks are appended, additional GIDs joined.

use super::registry::{ContainerEdits, DeviceNode, Hook, MountEdit};
use crate::container::devices;
use crate::error::{Error, Result};
use crisp_cri_api::v1::Device;
use oci_spec::runtime::{
    HookBuilder, Hooks, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount,
    MountBuilder, Spec,
};
use std::path::{Path, PathBuf};

pub fn apply(spec: &mut Spec, edits: ContainerEdits) -> Result<()> {
    if edits.intel_rdt.is_some() || !edits.net_devices.is_empty() {
        return Err(Error::InvalidArgument(
            "intelRdt and netDevices edits are not supported by crisp".into(),
        ));
    }
    if let Some(process) = spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        let mut replaced = Vec::new();
        for entry in edits.env {
            let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            if key.is_empty() || entry.contains('\0') {
                return Err(Error::InvalidArgument(format!("env {entry:?} is invalid")));
            }
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            replaced.push(key.to_string());
            env.push(entry);
        }
        process.set_env(Some(env));
        let user = process.user_mut();
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        // As CDI's reference code: group 0 is never added.
        for g in edits.additional_gids.into_iter().filter(|g| *g != 0) {
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
        user.set_additional_gids(Some(gids));
        forget_raw_env(spec, &replaced);
    }
    for node in &edits.device_nodes {
        device_node(spec, node)?;
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &edits.mounts {
        mounts.push(mount(m)?);
    }
    spec.set_mounts(Some(mounts));
    for h in &edits.hooks {
        hook(spec, h)?;
    }
    Ok(())
}

/// A variable the CDI edits set is theirs: the CRI value's exact bytes (`crisp_api::raw_env`)
/// must not win over it at exec.
fn forget_raw_env(spec: &mut Spec, keys: &[String]) {
    let Some(annotations) = spec.annotations_mut().as_mut() else {
        return;
    };
    let Some(raw) = annotations.get(crisp_api::raw_env::ANNOTATION) else {
        return;
    };
    let Ok(mut values) = crisp_api::raw_env::decode(raw) else {
        return;
    };
    values.retain(|k, _| !keys.contains(k));
    if values.is_empty() {
        annotations.remove(crisp_api::raw_env::ANNOTATION);
    } else {
        annotations.insert(
            crisp_api::raw_env::ANNOTATION.to_string(),
            crisp_api::raw_env::encode(&values),
        );
    }
}

fn device_node(spec: &mut Spec, n: &DeviceNode) -> Result<()> {
    if !n.path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "device node path {:?} must be absolute",
            n.path
        )));
    }
    let access = n.permissions.clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::InvalidArgument(format!(
            "device node {}: permissions {access:?} must be letters of \"rwm\"",
            n.path
        )));
    }
    let host = n.host_path.clone().unwrap_or_else(|| n.path.clone());
    let (mut node, rule) = if Path::new(&host).exists() {
        let mut found = devices::requested(&[Device {
            host_path: host.clone(),
            container_path: n.path.clone(),
            permissions: access.clone(),
        }])?;
        match (found.nodes.pop(), found.rules.pop()) {
            (Some(node), Some(rule)) if found.nodes.is_empty() => (node, rule),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "device node {host} is not a single device"
                )))
            }
        }
    } else {
        // A node the host does not have, fully described by the spec.
        let (Some(typ), Some(major), Some(minor)) = (n.typ.as_deref(), n.major, n.minor) else {
            return Err(Error::InvalidArgument(format!(
                "device node {host} does not exist and the spec gives no type, major and minor"
            )));
        };
        let typ = match typ {
            "c" | "u" => LinuxDeviceType::C,
            "b" => LinuxDeviceType::B,
            "p" => LinuxDeviceType::P,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "device node {host}: type {other:?}"
                )))
            }
        };
        let node = LinuxDeviceBuilder::default()
            .path(PathBuf::from(&n.path))
            .typ(typ)
            .major(major)
            .minor(minor)
            .build()
            .map_err(|e| Error::internal("building a CDI device node", e))?;
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .major(major)
            .minor(minor)
            .access(access)
            .build()
            .map_err(|e| Error::internal("building a CDI device rule", e))?;
        (node, rule)
    };
    if let Some(mode) = n.file_mode {
        node.set_file_mode(Some(mode));
    }
    if let Some(uid) = n.uid {
        node.set_uid(Some(uid));
    }
    if let Some(gid) = n.gid {
        node.set_gid(Some(gid));
    }
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut nodes = linux.devices().clone().unwrap_or_default();
    nodes.retain(|d| d.path() != node.path());
    nodes.push(node);
    linux.set_devices(Some(nodes));
    let resources = linux.resources_mut().get_or_insert_with(Default::default);
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.push(rule);
    resources.set_devices(Some(rules));
    Ok(())
}

fn mount(m: &MountEdit) -> Result<Mount> {
    if !m.container_path.starts_with('/') || !m.host_path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "mount {} -> {}: both paths must be absolute",
            m.host_path, m.container_path
        )));
    }
    let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
    let mut options = m.options.clone();
    if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.push("bind".into());
    }
    MountBuilder::default()
        .destination(PathBuf::from(&m.container_path))
        .source(PathBuf::from(&m.host_path))
        .typ(typ)
        .options(options)
        .build()
        .map_err(|e| Error::internal("building a CDI mount", e))
}

fn hook(spec: &mut Spec, h: &Hook) -> Result<()> {
    if !h.path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "hook path {:?} must be absolute",
            h.path
        )));
    }
    let mut b = HookBuilder::default()
        .path(PathBuf::from(&h.path))
        .args(h.args.clone())
        .env(h.env.clone());
    if let Some(t) = h.timeout {
        if t <= 0 {
            return Err(Error::InvalidArgument(format!(
                "hook {}: timeout {t} must be positive",
                h.path
            )));
        }
        b = b.timeout(t);
    }
    let built = b
        .build()
        .map_err(|e| Error::internal("building a CDI hook", e))?;
    let hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
    #[allow(deprecated)] // prestart: still what a CDI spec may name
    let list = match h.hook_name.as_str() {
        "prestart" => hooks.prestart_mut(),
        "createRuntime" => hooks.create_runtime_mut(),
        "createContainer" => hooks.create_container_mut(),
        "startContainer" => hooks.start_container_mut(),
        "poststart" => hooks.poststart_mut(),
        "poststop" => hooks.poststop_mut(),
        other => {
            return Err(Error::InvalidArgument(format!(
                "hook {}: unknown hookName {other:?}",
                h.path
            )))
        }
    };
    list.get_or_insert_with(Vec::new).push(built);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gids(spec: &Spec) -> Vec<u32> {
        let process = spec
            .process()
            .as_ref()
            .expect("the default spec has a process");
        process.user().additional_gids().clone().unwrap_or_default()
    }

    #[test]
    fn env_mounts_gids_nodes_and_hooks() {
        let mut spec = Spec::default();
        let edits = ContainerEdits {
            env: vec!["PATH=/cdi".into(), "NEW=1".into()],
            additional_gids: vec![44],
            device_nodes: vec![DeviceNode {
                path: "/dev/cdi-null".into(),
                host_path: Some("/dev/null".into()),
                permissions: Some("rw".into()),
                ..Default::default()
            }],
            mounts: vec![MountEdit {
                host_path: "/opt/lib".into(),
                container_path: "/usr/lib/vendor".into(),
                options: vec!["ro".into()],
                ..Default::default()
            }],
            hooks: vec![Hook {
                hook_name: "createContainer".into(),
                path: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        apply(&mut spec, edits).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"PATH=/cdi".to_string()) && env.contains(&"NEW=1".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        let linux = spec.linux().as_ref().unwrap();
        let node = linux.devices().as_ref().unwrap().last().unwrap();
        assert_eq!(node.path(), Path::new("/dev/cdi-null"));
        assert_eq!((node.major(), node.minor()), (1, 3));
        let rule = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
            .and_then(|d| d.last())
            .unwrap();
        assert_eq!(rule.access().as_deref(), Some("rw"));
        let m = spec.mounts().as_ref().unwrap().last().unwrap();
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(m.options().as_ref().unwrap(), &["ro", "bind"]);
        let hooks = spec.hooks().as_ref().unwrap();
        assert_eq!(hooks.create_container().as_ref().unwrap().len(), 1);
        assert!(gids(&spec).contains(&44));
    }

    #[test]
    fn a_cdi_env_edit_wins_over_the_raw_cri_value() {
        let mut spec = Spec::default();
        let raw = std::collections::BTreeMap::from([
            ("GPU".to_string(), vec![0xff]),
            ("KEEP".to_string(), vec![0xfe]),
        ]);
        spec.set_annotations(Some(std::collections::HashMap::from([(
            crisp_api::raw_env::ANNOTATION.to_string(),
            crisp_api::raw_env::encode(&raw),
        )])));
        let edits = ContainerEdits {
            env: vec!["GPU=0".into()],
            additional_gids: vec![0, 5],
            ..Default::default()
        };
        apply(&mut spec, edits).unwrap();
        let left = spec.annotations().as_ref().unwrap()[crisp_api::raw_env::ANNOTATION].clone();
        let left = crisp_api::raw_env::decode(&left).unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["KEEP"]);
        assert_eq!(gids(&spec), [5], "group 0 is never added");
    }

    #[test]
    fn refused_edits() {
        let bad_hook = ContainerEdits {
            hooks: vec![Hook {
                hook_name: "whenever".into(),
                path: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(apply(&mut Spec::default(), bad_hook).is_err());
        let missing = ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/not-on-this-host".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(apply(&mut Spec::default(), missing).is_err());
    }
}
