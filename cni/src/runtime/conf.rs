//! Loading network configuration lists (libcni's `conf.go`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// The network used when `conf_dir` holds no configuration: one `crisp-bridge` plugin on
/// bridge `crisp0` with 10.88.0.0/16 and the portMappings capability.
pub const DEFAULT_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "crisp",
  "plugins": [
    {
      "type": "crisp-bridge",
      "bridge": "crisp0",
      "subnet": "10.88.0.0/16",
      "gateway": "10.88.0.1",
      "mtu": 1500,
      "hairpinMode": true,
      "ipMasq": true,
      "capabilities": { "portMappings": true }
    }
  ]
}"#;

/// A parsed network configuration list.
#[derive(Debug, Clone)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's configuration object, verbatim.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as JSON (what goes into the result cache).
    pub raw: Value,
    /// The file it came from; None for the embedded default.
    pub source: Option<PathBuf>,
}

impl ConfList {
    /// The `type` of each plugin, in order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .map(|p| p.get("type").and_then(Value::as_str).unwrap_or(""))
            .collect()
    }

    /// Parses a conflist (`{"name", "cniVersion", "plugins": [...]}`), or, when `single` and the
    /// object has no `plugins`, a single-plugin config that is wrapped into a list.
    pub fn parse(bytes: &[u8], source: Option<&Path>, single: bool) -> Result<ConfList, CniError> {
        let path = source
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<embedded default>"));
        let bad = |msg: String| CniError::Config {
            path: path.clone(),
            msg,
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Value::Object(mut obj) = v else {
            return Err(bad("not a JSON object".into()));
        };
        if single && !obj.contains_key("plugins") {
            let mut list = Map::new();
            for k in ["cniVersion", "name"] {
                if let Some(v) = obj.get(k) {
                    list.insert(k.into(), v.clone());
                }
            }
            if let Some(v) = obj.remove("disableCheck") {
                list.insert("disableCheck".into(), v);
            }
            list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
            obj = list;
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing \"name\"".into()))?
            .to_string();
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(bad(format!("invalid network name {name:?}")));
        }
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing \"cniVersion\"".into()))?
            .to_string();
        if !crate::types::version_at_least(&cni_version, "0.3.0") {
            return Err(bad(format!(
                "cniVersion {cni_version} is not supported (need 0.3.0 or later)"
            )));
        }
        let disable_check = match obj.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            Some(other) => return Err(bad(format!("bad disableCheck {other}"))),
        };
        let plugins = obj
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing \"plugins\" list".into()))?;
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        let mut out = Vec::new();
        for (i, p) in plugins.iter().enumerate() {
            let Value::Object(p) = p else {
                return Err(bad(format!("plugin #{i} is not an object")));
            };
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            if ty.is_empty() || ty.contains('/') || ty.starts_with('.') {
                return Err(bad(format!("plugin #{i} has a missing or bad \"type\"")));
            }
            out.push(p.clone());
        }
        Ok(ConfList {
            name,
            cni_version,
            disable_check,
            plugins: out,
            raw: Value::Object(obj),
            source: source.map(Path::to_path_buf),
        })
    }

    pub fn default_list() -> ConfList {
        ConfList::parse(DEFAULT_CONFLIST.as_bytes(), None, false).expect("embedded conflist")
    }

    /// The embedded network on `subnet` (the node's pod CIDR from kubelet) instead of
    /// 10.88.0.0/16, with the gateway on its first address.
    pub fn default_list_on(subnet: crate::ipam::Ipv4Net) -> Result<ConfList, String> {
        if subnet.prefix > 30 {
            return Err(format!(
                "pod CIDR {subnet} is too small for a bridge network"
            ));
        }
        let gateway = std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1);
        let mut raw: Value = serde_json::from_str(DEFAULT_CONFLIST).map_err(|e| e.to_string())?;
        if let Some(plugin) = raw["plugins"].get_mut(0) {
            plugin["subnet"] = Value::from(subnet.to_string());
            plugin["gateway"] = Value::from(gateway.to_string());
        }
        ConfList::parse(raw.to_string().as_bytes(), None, false).map_err(|e| e.to_string())
    }
}

/// The first configuration in lexical order in `dir` (`*.conflist`, `*.conf`, `*.json`), or
/// None when there is none (or the directory does not exist).
pub fn load_dir(dir: &Path) -> Result<Option<ConfList>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::Config {
                path: dir.to_path_buf(),
                msg: format!("reading the directory: {e}"),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let Some(first) = files.first() else {
        return Ok(None);
    };
    let bytes = std::fs::read(first).map_err(|e| CniError::Config {
        path: first.clone(),
        msg: format!("reading: {e}"),
    })?;
    let single = first.extension().and_then(|e| e.to_str()) != Some("conflist");
    ConfList::parse(&bytes, Some(first), single).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let d = ConfList::default_list();
        assert_eq!(d.name, "crisp");
        assert_eq!(d.plugin_types(), vec!["crisp-bridge"]);
    }

    #[test]
    fn wraps_single_conf_and_picks_first_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"x"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("00-ignored.txt"), "junk").unwrap();
        let l = load_dir(dir.path()).unwrap().unwrap();
        assert_eq!(l.name, "a");
        assert_eq!(l.cni_version, "0.4.0");
        assert_eq!(l.plugin_types(), vec!["bridge"]);
        assert_eq!(l.plugins[0]["bridge"], "x");
    }

    #[test]
    fn broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-bad.conflist"), "{ nope").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("10-bad.conflist"), "{e}");
        assert!(e.contains("invalid JSON"), "{e}");
        assert!(load_dir(&dir.path().join("missing")).unwrap().is_none());
    }
}
