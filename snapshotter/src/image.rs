//! Summary of an OCI / docker image config JSON: what a runtime needs to
//! start a container, plus the layer diff ids.
//!
//! Parsed with our own lenient serde structs rather than oci-spec's
//! `ImageConfiguration`: docker-produced configs routinely carry `null`
//! lists and maps and extra fields, and a runtime should accept anything a
//! registry serves as long as the fields we use are well-formed.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub os: String,
    pub architecture: String,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default, deserialize_with = "null_default")]
    architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    os: String,
    #[serde(default, deserialize_with = "null_default")]
    config: RawRunConfig,
    #[serde(default, deserialize_with = "null_default")]
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default, deserialize_with = "null_default")]
    entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    env: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    working_dir: String,
    #[serde(default, deserialize_with = "null_default")]
    user: String,
    #[serde(default, deserialize_with = "null_default")]
    stop_signal: String,
    #[serde(default, deserialize_with = "null_default")]
    volumes: BTreeMap<String, serde_json::Value>,
    #[serde(default, deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawRootfs {
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    kind: String,
    #[serde(default, deserialize_with = "null_default")]
    diff_ids: Vec<Digest>,
}

/// Treats an explicit JSON `null` like a missing field.
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn parse_raw(bytes: &[u8]) -> Result<RawConfig> {
    serde_json::from_slice(bytes).map_err(|e| Error::Json {
        what: "image config".into(),
        source: e,
    })
}

impl ImageConfig {
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig> {
        Ok(summary(parse_raw(bytes)?))
    }
}

fn summary(raw: RawConfig) -> ImageConfig {
    let c = raw.config;
    ImageConfig {
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        env: c.env,
        working_dir: c.working_dir,
        user: c.user,
        stop_signal: c.stop_signal,
        volumes: c.volumes.into_keys().collect(),
        labels: c.labels,
        os: raw.os,
        architecture: raw.architecture,
    }
}

/// Parses a config and returns its summary plus `rootfs.diff_ids`
/// (bottom layer first).
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>)> {
    let raw = parse_raw(bytes)?;
    if !raw.rootfs.kind.is_empty() && raw.rootfs.kind != "layers" {
        return Err(Error::InvalidImage {
            what: "config".into(),
            reason: format!("unsupported rootfs type {:?}", raw.rootfs.kind),
        });
    }
    let diff_ids = raw.rootfs.diff_ids.clone();
    Ok((summary(raw), diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_config_with_nulls() {
        let j = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,
            "WorkingDir":"/w","User":"1000","Volumes":{"/data":{}},"Labels":null,"StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}}},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
            "history":[{"created_by":"x"}]}"#;
        let (c, ids) = parse_config(j).unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.volumes, vec!["/data"]);
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.architecture, "amd64");
        assert_eq!(ids.len(), 1);
        assert_eq!(ImageConfig::from_json(j).unwrap(), c);
        assert!(ImageConfig::from_json(b"not json").is_err());
        assert!(parse_config(br#"{"rootfs":{"diff_ids":["md5:00"]}}"#).is_err());
    }
}
