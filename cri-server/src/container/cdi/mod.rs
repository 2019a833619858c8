//! CDI, the Container Device Interface (github.com/cncf-tags/container-device-interface):
//! devices named `vendor.com/class=name` that a DRA driver or device plugin hands to kubelet
//! and kubelet passes on in `ContainerConfig.CDI_devices` (older kubelets: `cdi.k8s.io/*`
//! annotations). crispd looks each up in the spec files of its spec dirs and applies the
//! edits to the container's OCI spec: device nodes (with cgroup rules), env, mounts, hooks and
//! additional groups.
//!
//! Not the `container-device-interface` crate: it validates specs with `jsonschema`, whose
//! default features pull in reqwest and aws-lc (a C/cmake build) for schema references crispd
//! never fetches; what crispd needs (parse, resolve, apply) is this module.

mod edits;
mod registry;

pub use registry::Registry;

use crate::error::{Error, Result};
use crisp_cri_api::v1::ContainerConfig;
use oci_spec::runtime::Spec;

/// The annotation prefix kubelets before `CDI_devices` (1.28) used: each value is a
/// comma-separated list of fully qualified device names.
const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The fully qualified names of the CDI devices a container asks for, in order, once each.
pub fn requested(config: &ContainerConfig) -> Vec<String> {
    let mut names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let mut annotated: Vec<(&String, &String)> = config
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    annotated.sort();
    for (_, v) in annotated {
        names.extend(
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Applies the edits of `devices` (and of the specs they come from, once per spec) to `spec`.
pub fn inject(spec: &mut Spec, devices: &[String], registry: &Registry) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let resolved = registry.resolve(devices)?;
    for edit in resolved {
        edits::apply(spec, edit).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("CDI: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

/// `vendor.com/class=name` → (`vendor.com/class`, `name`).
fn parse_name(name: &str) -> Result<(&str, &str)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "CDI device {name:?} is not a fully qualified name (vendor.com/class=name)"
        ))
    };
    let (kind, device) = name.split_once('=').ok_or_else(bad)?;
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c))
    };
    if !ok(vendor, &['.']) || !ok(class, &[]) || !ok(device, &['.', ':']) {
        return Err(bad());
    }
    Ok((kind, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_cri_api::v1::CdiDevice;

    #[test]
    fn names() {
        assert_eq!(
            parse_name("vendor.com/gpu=0").unwrap(),
            ("vendor.com/gpu", "0")
        );
        assert_eq!(
            parse_name("nvidia.com/gpu=GPU-1a:2").unwrap(),
            ("nvidia.com/gpu", "GPU-1a:2")
        );
        for bad in [
            "gpu=0",
            "vendor.com/gpu",
            "vendor.com/gpu=",
            "/gpu=0",
            "v/g=a/b",
        ] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requested_from_field_and_annotations() {
        let c = ContainerConfig {
            cdi_devices: vec![CdiDevice {
                name: "a.com/x=1".into(),
            }],
            annotations: [
                (
                    "cdi.k8s.io/b".to_string(),
                    "a.com/x=2, a.com/x=1".to_string(),
                ),
                ("other".to_string(), "a.com/x=3".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(requested(&c), ["a.com/x=1", "a.com/x=2"]);
    }
}
