//! A private pod network per crispd instance: its own bridge and /24 (claimed so parallel
//! tests never share one), a conflist for `crisp-bridge` in the instance's conf dir, and IPAM
//! state under the instance's temp dir. Dropping it deletes the bridge and releases the claim.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where /24 claims live; one file per claimed third octet of 10.89.0.0/16.
const CLAIMS: &str = "/run/crisp-test-subnets";

/// Which CNI plugins the test network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugins {
    /// crisp's own `crisp-bridge` (IPAM and hostPorts built in).
    CrispBridge,
    /// Debian's containernetworking-plugins: bridge + host-local + portmap, from /usr/lib/cni.
    Reference,
}

impl Plugins {
    /// Where crispd looks for the plugins (crispd always adds its own binaries' directory).
    pub fn bin_dirs(self) -> Vec<&'static str> {
        match self {
            Plugins::CrispBridge => Vec::new(),
            Plugins::Reference => vec!["/usr/lib/cni"],
        }
    }
}

pub struct TestNetwork {
    pub octet: u8,
    pub bridge: String,
    claim: PathBuf,
}

impl TestNetwork {
    /// Claims a free 10.89.<n>.0/24 and writes a conflist for it into `conf_dir`.
    pub fn claim(
        id: &str,
        conf_dir: &Path,
        ipam_dir: &Path,
        plugins: Plugins,
    ) -> anyhow::Result<TestNetwork> {
        fs::create_dir_all(CLAIMS).with_context(|| format!("creating {CLAIMS}"))?;
        let start = u8::from_str_radix(id.get(..2).unwrap_or("00"), 16).unwrap_or(0);
        for i in 0..=255u8 {
            let octet = start.wrapping_add(i);
            let claim = Path::new(CLAIMS).join(octet.to_string());
            if fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
                .is_err()
            {
                continue;
            }
            let net = TestNetwork {
                octet,
                bridge: format!("crt{}", &id[..id.len().min(8)]),
                claim,
            };
            fs::create_dir_all(conf_dir)
                .with_context(|| format!("creating {}", conf_dir.display()))?;
            let name = format!("crisp-test-{id}");
            let conflist = match plugins {
                Plugins::CrispBridge => serde_json::json!({
                    "cniVersion": "1.0.0",
                    "name": name,
                    "plugins": [{
                        "type": "crisp-bridge",
                        "bridge": net.bridge,
                        "subnet": net.subnet(),
                        "gateway": net.gateway(),
                        "hairpinMode": true,
                        "ipMasq": true,
                        "dataDir": ipam_dir,
                        "capabilities": { "portMappings": true }
                    }]
                }),
                Plugins::Reference => serde_json::json!({
                    "cniVersion": "1.0.0",
                    "name": name,
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": net.bridge,
                            "isGateway": true,
                            "ipMasq": true,
                            "hairpinMode": true,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{ "subnet": net.subnet(), "gateway": net.gateway() }]],
                                "routes": [{ "dst": "0.0.0.0/0" }],
                                "dataDir": ipam_dir
                            }
                        },
                        { "type": "portmap", "capabilities": { "portMappings": true } }
                    ]
                }),
            };
            fs::write(
                conf_dir.join("10-crisp-test.conflist"),
                conflist.to_string(),
            )
            .context("writing the test conflist")?;
            return Ok(net);
        }
        anyhow::bail!("no free test subnet in 10.89.0.0/16")
    }

    pub fn subnet(&self) -> String {
        format!("10.89.{}.0/24", self.octet)
    }

    pub fn gateway(&self) -> String {
        format!("10.89.{}.1", self.octet)
    }
}

impl TestNetwork {
    /// The CNI network name, which crisp-bridge puts in the comment of every rule it adds.
    fn network_name(&self) -> String {
        format!("crisp-test-{}", self.bridge.trim_start_matches("crt"))
    }

    /// (table, `-A …` rule) for every iptables rule of this network: crisp-bridge tags its
    /// rules `crisp:<network>:`, the reference plugins put `name: "<network>"` in theirs.
    pub fn iptables_rules(&self) -> Vec<(String, String)> {
        let tag = self.network_name();
        let Ok(out) = std::process::Command::new("iptables-save").output() else {
            return Vec::new();
        };
        let mut table = String::new();
        let mut rules = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if line.starts_with("-A ") && line.contains(&tag) {
                rules.push((table.clone(), line.to_string()));
            }
        }
        rules
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // Rules of pods a failed test never removed: CNI DEL did not run for them.
        for (table, rule) in self.iptables_rules() {
            if let Some(spec) = rule.strip_prefix("-A ") {
                let _ = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t {table} -D {spec}"))
                    .status();
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = fs::remove_file(&self.claim);
    }
}
