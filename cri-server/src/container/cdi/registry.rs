//! CDI spec files and device lookup. Spec files (`*.json`, `*.yaml`, `*.yml`; YAML reads JSON
//! too) are read from the configured directories at each CreateContainer that asks for a
//! device, so a driver that writes a spec just before kubelet creates the container is seen.
//! A later directory wins over an earlier one (`/var/run/cdi` over `/etc/cdi`, as the CDI
//! spec orders them); a device defined twice in one directory is an error naming both files.

use super::parse_name;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub mounts: Vec<MountEdit>,
    #[serde(default, rename = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
    /// Edits crisp does not apply: a spec that asks for them is refused, not half-applied.
    #[serde(default)]
    pub intel_rdt: Option<serde_json::Value>,
    #[serde(default)]
    pub net_devices: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(default)]
    pub host_path: Option<String>,
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    #[serde(default)]
    pub major: Option<i64>,
    #[serde(default)]
    pub minor: Option<i64>,
    #[serde(default)]
    pub file_mode: Option<u32>,
    #[serde(default)]
    pub permissions: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MountEdit {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    kind: String,
    #[serde(default)]
    devices: Vec<DeviceDef>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceDef {
    name: String,
    #[serde(default)]
    container_edits: ContainerEdits,
}

/// The configured spec directories.
#[derive(Debug, Clone)]
pub struct Registry {
    dirs: Vec<PathBuf>,
}

struct Found {
    file: PathBuf,
    dir: usize,
    spec_edits: ContainerEdits,
    device_edits: ContainerEdits,
}

impl Registry {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Registry { dirs }
    }

    /// The edits for `names` in application order: each spec's own edits before its first
    /// device's, then each device's.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<ContainerEdits>> {
        let wanted: Vec<(&str, &str)> =
            names.iter().map(|n| parse_name(n)).collect::<Result<_>>()?;
        let mut found: HashMap<(String, String), Found> = HashMap::new();
        for (d, dir) in self.dirs.iter().enumerate() {
            for file in spec_files(dir) {
                let spec = match read_spec(&file) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(file = %file.display(), "CDI spec skipped: {e}");
                        continue;
                    }
                };
                for dev in spec.devices {
                    let key = (spec.kind.clone(), dev.name.clone());
                    if !wanted.iter().any(|(k, n)| *k == key.0 && *n == key.1) {
                        continue;
                    }
                    if let Some(prev) = found.get(&key).filter(|p| p.dir == d) {
                        return Err(Error::FailedPrecondition(format!(
                            "CDI device {}={} is defined in both {} and {}",
                            key.0,
                            key.1,
                            prev.file.display(),
                            file.display()
                        )));
                    }
                    found.insert(
                        key,
                        Found {
                            file: file.clone(),
                            dir: d,
                            spec_edits: spec.container_edits.clone(),
                            device_edits: dev.container_edits,
                        },
                    );
                }
            }
        }
        let mut out = Vec::new();
        let mut specs_applied: Vec<PathBuf> = Vec::new();
        for (name, (kind, dev)) in names.iter().zip(&wanted) {
            let f = found
                .get(&(kind.to_string(), dev.to_string()))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "CDI device {name} is not defined by any spec in {}",
                        self.dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            if !specs_applied.contains(&f.file) {
                specs_applied.push(f.file.clone());
                out.push(f.spec_edits.clone());
            }
            out.push(f.device_edits.clone());
        }
        Ok(out)
    }
}

fn spec_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
}

fn read_spec(file: &Path) -> std::result::Result<SpecFile, String> {
    // Spec files are small; a larger one is not a spec.
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    // A FIFO or device named *.json would block or never end.
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > 4 << 20 {
        return Err("larger than 4 MiB".into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    serde_norway::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn yaml_and_json_specs_later_dir_wins() {
        let etc = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        write(
            etc.path(),
            "a.yaml",
            "cdiVersion: 0.6.0\nkind: a.com/x\ncontainerEdits:\n  env: [SPEC=1]\ndevices:\n- name: one\n  containerEdits:\n    env: [ONE=etc]\n- name: two\n  containerEdits:\n    additionalGIDs: [44]\n",
        );
        write(
            run.path(),
            "b.json",
            r#"{"cdiVersion":"0.6.0","kind":"a.com/x","devices":[{"name":"one","containerEdits":{"env":["ONE=run"]}}]}"#,
        );
        write(run.path(), "broken.json", "{");
        let r = Registry::new(vec![etc.path().into(), run.path().into()]);
        let edits = r
            .resolve(&["a.com/x=one".into(), "a.com/x=two".into()])
            .unwrap();
        let envs: Vec<Vec<String>> = edits.iter().map(|e| e.env.clone()).collect();
        // b.json (no spec edits) for one, then a.yaml's spec edits before two's.
        assert_eq!(
            envs,
            [
                vec![],
                vec!["ONE=run".to_string()],
                vec!["SPEC=1".to_string()],
                vec![]
            ]
        );
        assert_eq!(edits[3].additional_gids, [44]);

        let missing = r.resolve(&["a.com/x=three".into()]).unwrap_err();
        assert!(matches!(missing, Error::NotFound(ref m) if m.contains("a.com/x=three")));
    }

    #[test]
    fn a_device_twice_in_one_dir_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let spec = r#"{"cdiVersion":"0.6.0","kind":"a.com/x","devices":[{"name":"one","containerEdits":{}}]}"#;
        write(dir.path(), "1.json", spec);
        write(dir.path(), "2.json", spec);
        let r = Registry::new(vec![dir.path().into()]);
        let e = r.resolve(&["a.com/x=one".into()]).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(ref m) if m.contains("1.json")));
    }
}
