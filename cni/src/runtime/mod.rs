//! The CNI runtime crispd uses (what libcni does for containerd/CRI-O): load a network
//! configuration list, run its plugins for ADD/DEL/CHECK with `prevResult` chaining, and keep
//! a result cache so DEL works after a restart or a config change.
//!
//! Speaks CNI 1.0.0 and 0.4.0, and accepts 0.3.x configs and results. All calls block (they
//! run plugin processes); call them from a blocking thread.

pub mod conf;
pub mod exec;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use conf::{ConfList, DEFAULT_CONFLIST};

/// The CNI_ARGS key by which a DEL says that the runtime removes the pod's netns right
/// after it (`…;CRISP_NETNS_TEARDOWN=true`).
pub const NETNS_TEARDOWN_ARG: &str = "CRISP_NETNS_TEARDOWN";

/// Where configs, plugins and the cache live.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// e.g. `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// e.g. `/opt/cni/bin`, `/usr/lib/cni`.
    pub bin_dirs: Vec<PathBuf>,
    /// e.g. `/var/lib/crisp/cni`; results go to `<cache_dir>/results/`.
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp" | "udp" | "sctp".
    pub protocol: String,
    /// "" = all addresses.
    pub host_ip: String,
}

/// The pod's DNS config (the `dns` capability).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Traffic shaping (the `bandwidth` capability), in bits per second and bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// One pod's attachment to the network.
#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    /// The pod sandbox id (CNI_CONTAINERID).
    pub id: String,
    /// The netns file, e.g. `/var/run/netns/<name>`.
    pub netns: PathBuf,
    /// "eth0".
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub dns: Option<Dns>,
    pub bandwidth: Option<Bandwidth>,
}

#[derive(Debug, Clone)]
pub struct AddResult {
    /// The addresses of the result (without prefix length); the first is the primary.
    pub ips: Vec<IpAddr>,
    /// The final CNI result, as printed by the last plugin.
    pub raw: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} failed on {command}: {msg}{}{}",
        code.map(|c| format!(" (code {c})")).unwrap_or_default(),
        if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        plugin: String,
        command: String,
        code: Option<u32>,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} timed out on {command} after {after:?} and was killed")]
    Timeout {
        plugin: String,
        command: String,
        after: Duration,
    },
    #[error("CNI plugin {plugin}: {msg}")]
    Exec { plugin: String, msg: String },
    #[error("CNI result cache {path}: {msg}")]
    Cache { path: PathBuf, msg: String },
    #[error("CNI request: {0}")]
    Invalid(String),
}

/// What the cache holds per attachment (`<cache_dir>/results/<network>-<id>-<ifname>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    netns: String,
    cni_args: String,
    /// The runtimeConfig values the plugins were given.
    capability_args: Map<String, Value>,
    /// The configuration list used for ADD.
    config: Value,
    result: Value,
}

const CACHE_KIND: &str = "crispCniCacheV1";

/// The loaded network and how to run it.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    cfg: CniConfig,
    list: ConfList,
    default: bool,
    timeout: Duration,
}

impl CniRuntime {
    /// Loads the first network config in lexical order from `conf_dir` (`*.conflist`,
    /// `*.conf`, `*.json`; a single-plugin config is wrapped into a list). When `conf_dir` has
    /// none, uses the embedded [`DEFAULT_CONFLIST`] and [`is_default`](Self::is_default) says
    /// so. A config that does not parse is an error naming the file.
    pub fn load(cfg: CniConfig) -> Result<CniRuntime, CniError> {
        Self::load_or(cfg, ConfList::default_list())
    }

    /// As [`load`](Self::load), with `default` as the network when `conf_dir` has none.
    pub fn load_or(cfg: CniConfig, default: ConfList) -> Result<CniRuntime, CniError> {
        let (list, default) = match conf::load_dir(&cfg.conf_dir)? {
            Some(l) => (l, false),
            None => (default, true),
        };
        Ok(CniRuntime {
            cfg,
            list,
            default,
            timeout: Duration::from_secs(60),
        })
    }

    /// Changes the per-plugin timeout (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> CniRuntime {
        self.timeout = timeout;
        self
    }

    pub fn is_default(&self) -> bool {
        self.default
    }

    pub fn network_name(&self) -> &str {
        &self.list.name
    }

    /// The loaded configuration list.
    pub fn conf_list(&self) -> &ConfList {
        &self.list
    }

    /// Ok when every plugin of the config is found in `bin_dirs`; else the reason.
    pub fn status(&self) -> Result<(), String> {
        for ty in self.list.plugin_types() {
            exec::find_plugin(ty, &self.cfg.bin_dirs).map_err(|e| {
                format!(
                    "network {:?} ({}): {e}",
                    self.list.name,
                    self.list
                        .source
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "embedded default".into())
                )
            })?;
        }
        Ok(())
    }

    fn cni_path(&self) -> String {
        self.cfg
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn cache_path(&self, network: &str, pod: &PodNetwork) -> PathBuf {
        self.cfg
            .cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", pod.id, pod.ifname))
    }

    /// The cache entry for `pod`: under the current network name, else under any name (the
    /// config may have changed since ADD).
    fn find_cache(&self, pod: &PodNetwork) -> Result<Option<(PathBuf, CacheEntry)>, CniError> {
        let mut candidates = vec![self.cache_path(&self.list.name, pod)];
        let suffix = format!("-{}-{}", pod.id, pod.ifname);
        if let Ok(rd) = std::fs::read_dir(self.cfg.cache_dir.join("results")) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)) {
                    candidates.push(e.path());
                }
            }
        }
        for path in candidates {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(CniError::Cache {
                        path,
                        msg: e.to_string(),
                    })
                }
            };
            match serde_json::from_slice::<CacheEntry>(&bytes) {
                Ok(entry) if entry.container_id == pod.id && entry.if_name == pod.ifname => {
                    return Ok(Some((path, entry)))
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a corrupt CNI cache entry");
                    continue;
                }
            }
        }
        Ok(None)
    }

    fn write_cache(&self, pod: &PodNetwork, entry: &CacheEntry) -> Result<(), CniError> {
        let path = self.cache_path(&entry.network_name, pod);
        let err = |msg: String| CniError::Cache {
            path: path.clone(),
            msg,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let data = serde_json::to_vec(entry).map_err(|e| err(e.to_string()))?;
        // Outliving crispd is all the cache needs: after a reboot its pods are gone.
        crisp_api::atomic_file::replace(&path, &data).map_err(|e| err(e.to_string()))
    }

    fn validate(pod: &PodNetwork) -> Result<(), CniError> {
        if pod.id.is_empty() {
            return Err(CniError::Invalid("empty pod sandbox id".into()));
        }
        if pod.ifname.is_empty() {
            return Err(CniError::Invalid("empty interface name".into()));
        }
        // The id and ifname become part of a file name.
        for (what, s) in [("sandbox id", &pod.id), ("interface name", &pod.ifname)] {
            if s.contains('/') || s == "." || s == ".." {
                return Err(CniError::Invalid(format!("bad {what} {s:?}")));
            }
        }
        Ok(())
    }

    /// ADD: runs the plugins in order, each getting the previous result. On failure, the
    /// plugins are run with DEL (errors ignored) so nothing is left behind, and the first
    /// error is returned. On success the result is cached.
    pub fn add(&self, pod: &PodNetwork) -> Result<AddResult, CniError> {
        Self::validate(pod)?;
        if !is_netns(&pod.netns) {
            return Err(CniError::Invalid(format!(
                "{} is not a network namespace",
                pod.netns.display()
            )));
        }
        let caps = capability_args(pod);
        let cni_args = cni_args(pod);
        let netns = pod.netns.display().to_string();
        let mut prev: Option<Value> = None;
        for plugin in &self.list.plugins {
            let r = self.invoke(
                &self.list,
                plugin,
                "ADD",
                pod,
                &netns,
                &cni_args,
                &caps,
                prev.as_ref(),
            );
            match r.and_then(|out| parse_result(plugin_type(plugin), &out)) {
                Ok(v) => prev = Some(v),
                Err(e) => {
                    self.run_del(&self.list, pod, &netns, &cni_args, &caps, prev.as_ref());
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or_else(|| Value::Object(Map::new()));
        let entry = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: pod.id.clone(),
            if_name: pod.ifname.clone(),
            network_name: self.list.name.clone(),
            netns: netns.clone(),
            cni_args: cni_args.clone(),
            capability_args: caps.clone(),
            config: self.list.raw.clone(),
            result: result.clone(),
        };
        if let Err(e) = self.write_cache(pod, &entry) {
            self.run_del(&self.list, pod, &netns, &cni_args, &caps, Some(&result));
            return Err(e);
        }
        Ok(AddResult {
            ips: result_ips(&result),
            raw: result,
        })
    }

    /// DEL: runs the plugins in reverse order with the configuration (and result) cached at
    /// ADD, or the current configuration when nothing is cached, then drops the cache entry.
    /// Idempotent; the netns may be gone (CNI_NETNS is then passed empty).
    pub fn del(&self, pod: &PodNetwork) -> Result<(), CniError> {
        self.del_as(pod, false)
    }

    /// DEL for a runtime that removes the pod's netns right after it, as crispd does at
    /// StopPodSandbox (and containerd's CRI too). The plugins are told so in CNI_ARGS
    /// ([`NETNS_TEARDOWN_ARG`]): crisp-bridge then leaves the veth pair to go with the netns
    /// instead of deleting it (see `bridge::cmd_del`); other plugins ignore the key
    /// (`IgnoreUnknown=1`).
    pub fn del_before_netns_removal(&self, pod: &PodNetwork) -> Result<(), CniError> {
        self.del_as(pod, true)
    }

    fn del_as(&self, pod: &PodNetwork, netns_removed_after: bool) -> Result<(), CniError> {
        Self::validate(pod)?;
        let cached = self.find_cache(pod)?;
        let (list, caps, cni_args, prev, cache_path) = match &cached {
            Some((path, entry)) => match ConfList::parse(
                &serde_json::to_vec(&entry.config).unwrap_or_default(),
                Some(path),
                false,
            ) {
                Ok(list) => (
                    list,
                    entry.capability_args.clone(),
                    entry.cni_args.clone(),
                    Some(entry.result.clone()),
                    Some(path.clone()),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cached CNI config unusable; deleting with the current one");
                    (
                        self.list.clone(),
                        capability_args(pod),
                        cni_args(pod),
                        None,
                        Some(path.clone()),
                    )
                }
            },
            None => (
                self.list.clone(),
                capability_args(pod),
                cni_args(pod),
                None,
                None,
            ),
        };
        // A netns that is gone (or a leftover file that is no longer a namespace mount) is
        // passed as empty, which plugins take as "nothing to clean inside".
        let netns = if is_netns(&pod.netns) {
            pod.netns.display().to_string()
        } else {
            String::new()
        };
        let prev = prev.filter(|_| crate::types::version_at_least(&list.cni_version, "0.4.0"));
        let cni_args = if netns_removed_after && !netns.is_empty() {
            format!("{cni_args};{NETNS_TEARDOWN_ARG}=true")
        } else {
            cni_args
        };
        if let Some(e) = self.run_del(&list, pod, &netns, &cni_args, &caps, prev.as_ref()) {
            return Err(e);
        }
        if let Some(path) = cache_path {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CniError::Cache {
                        path,
                        msg: e.to_string(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// CHECK: runs the plugins in order with the cached result as `prevResult`. A no-op for
    /// configs older than 0.4.0 or with `disableCheck`; an error when nothing is cached.
    pub fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        Self::validate(pod)?;
        if self.list.disable_check
            || !crate::types::version_at_least(&self.list.cni_version, "0.4.0")
        {
            return Ok(());
        }
        let Some((path, entry)) = self.find_cache(pod)? else {
            return Err(CniError::Invalid(format!(
                "no cached result for {}/{} in network {:?}: was ADD run?",
                pod.id, pod.ifname, self.list.name
            )));
        };
        let list = ConfList::parse(
            &serde_json::to_vec(&entry.config).unwrap_or_default(),
            Some(&path),
            false,
        )?;
        if list.disable_check || !crate::types::version_at_least(&list.cni_version, "0.4.0") {
            return Ok(());
        }
        let netns = pod.netns.display().to_string();
        for plugin in &list.plugins {
            self.invoke(
                &list,
                plugin,
                "CHECK",
                pod,
                &netns,
                &entry.cni_args,
                &entry.capability_args,
                Some(&entry.result),
            )?;
        }
        Ok(())
    }

    /// Runs DEL over `list` in reverse order; returns the first error (all plugins run).
    fn run_del(
        &self,
        list: &ConfList,
        pod: &PodNetwork,
        netns: &str,
        cni_args: &str,
        caps: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Option<CniError> {
        let mut first = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.invoke(list, plugin, "DEL", pod, netns, cni_args, caps, prev) {
                tracing::warn!(error = %e, "CNI DEL");
                first.get_or_insert(e);
            }
        }
        first
    }

    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &self,
        list: &ConfList,
        plugin: &Map<String, Value>,
        command: &str,
        pod: &PodNetwork,
        netns: &str,
        cni_args: &str,
        caps: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let ty = plugin_type(plugin);
        let path = exec::find_plugin(ty, &self.cfg.bin_dirs)?;
        let stdin = plugin_stdin(list, plugin, caps, prev);
        let env = exec::Env {
            command,
            container_id: &pod.id,
            netns,
            ifname: &pod.ifname,
            cni_args,
            cni_path: &self.cni_path(),
        };
        exec::run(
            ty,
            &path,
            &env,
            &serde_json::to_vec(&stdin).unwrap_or_default(),
            self.timeout,
        )
    }
}

/// Whether `path` is a network namespace (an nsfs file: a bind mount under `/run/netns` or
/// `/proc/<pid>/ns/net`).
fn is_netns(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && nix::sys::statfs::statfs(path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…`
fn cni_args(pod: &PodNetwork) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.pod_namespace, pod.pod_name, pod.id, pod.pod_uid
    )
}

/// The runtimeConfig values the pod can supply, by capability name.
fn capability_args(pod: &PodNetwork) -> Map<String, Value> {
    let mut m = Map::new();
    if !pod.port_mappings.is_empty() {
        m.insert(
            "portMappings".into(),
            Value::Array(
                pod.port_mappings
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "hostPort": p.host_port,
                            "containerPort": p.container_port,
                            "protocol": p.protocol.to_ascii_lowercase(),
                            "hostIP": p.host_ip,
                        })
                    })
                    .collect(),
            ),
        );
    }
    if let Some(d) = &pod.dns {
        m.insert(
            "dns".into(),
            serde_json::json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
        );
    }
    if let Some(b) = &pod.bandwidth {
        m.insert(
            "bandwidth".into(),
            serde_json::json!({
                "ingressRate": b.ingress_rate, "ingressBurst": b.ingress_burst,
                "egressRate": b.egress_rate, "egressBurst": b.egress_burst,
            }),
        );
    }
    m
}

/// A plugin's stdin: its config plus the list's `cniVersion`/`name`, a `runtimeConfig` with
/// only the capabilities it declares, and `prevResult`.
fn plugin_stdin(
    list: &ConfList,
    plugin: &Map<String, Value>,
    caps: &Map<String, Value>,
    prev: Option<&Value>,
) -> Value {
    let mut c = plugin.clone();
    c.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    c.insert("name".into(), Value::String(list.name.clone()));
    let mut rc = Map::new();
    if let Some(Value::Object(declared)) = plugin.get("capabilities") {
        for (k, v) in declared {
            if v == &Value::Bool(true) {
                if let Some(val) = caps.get(k) {
                    rc.insert(k.clone(), val.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        c.insert("runtimeConfig".into(), Value::Object(rc));
    }
    c.remove("prevResult");
    if let Some(p) = prev {
        c.insert("prevResult".into(), p.clone());
    }
    Value::Object(c)
}

fn parse_result(plugin: &str, out: &[u8]) -> Result<Value, CniError> {
    match serde_json::from_slice::<Value>(out) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) | Err(_) => Err(CniError::Exec {
            plugin: plugin.to_string(),
            msg: format!(
                "ADD printed no JSON result: {:?}",
                String::from_utf8_lossy(out)
                    .chars()
                    .take(400)
                    .collect::<String>()
            ),
        }),
    }
}

/// The addresses of a 0.3.x–1.0.0 result, in order.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("address")?.as_str())
                .filter_map(|a| a.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cache file name used for `network`/`id`/`ifname` under `cache_dir` (for tests and
/// tooling).
pub fn cache_file(cache_dir: &Path, network: &str, id: &str, ifname: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{id}-{ifname}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "abc".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            pod_name: "p".into(),
            pod_namespace: "ns".into(),
            pod_uid: "u".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: "".into(),
            }],
            dns: Some(Dns {
                servers: vec!["10.0.0.10".into()],
                ..Default::default()
            }),
            bandwidth: None,
        }
    }

    #[test]
    fn stdin_carries_only_declared_capabilities() {
        let list = ConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":true}}]}"#,
            None,
            false,
        )
        .unwrap();
        let caps = capability_args(&pod());
        let prev = serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"}]});
        let s0 = plugin_stdin(&list, &list.plugins[0], &caps, None);
        assert_eq!(s0["name"], "n");
        assert_eq!(s0["cniVersion"], "1.0.0");
        assert!(s0.get("runtimeConfig").is_none());
        assert!(s0.get("prevResult").is_none());
        let s1 = plugin_stdin(&list, &list.plugins[1], &caps, Some(&prev));
        assert_eq!(
            s1["runtimeConfig"],
            serde_json::json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}]})
        );
        assert_eq!(s1["prevResult"], prev);
        assert_eq!(
            cni_args(&pod()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u"
        );
    }

    #[test]
    fn ips_from_all_result_versions() {
        let v1 = serde_json::json!({"ips":[{"address":"10.1.0.2/24","interface":2},{"address":"fd00::2/64"}]});
        assert_eq!(
            result_ips(&v1),
            vec![
                "10.1.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        let v03 = serde_json::json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.3/24"}]});
        assert_eq!(
            result_ips(&v03),
            vec!["10.1.0.3".parse::<IpAddr>().unwrap()]
        );
    }
}
