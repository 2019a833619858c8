//! The small files every container of a pod bind-mounts: `/etc/hostname`, `/etc/resolv.conf`
//! and `/etc/hosts`.

use crate::error::{Context, Error, Result};
use crisp_cri_api::v1::DnsConfig;
use std::path::Path;

pub const HOSTNAME: &str = "hostname";
pub const RESOLV_CONF: &str = "resolv.conf";
pub const HOSTS: &str = "hosts";

pub fn write(dir: &Path, hostname: &str, dns: Option<&DnsConfig>) -> Result<()> {
    std::fs::write(dir.join(HOSTNAME), format!("{hostname}\n"))
        .context(|| format!("writing {}/hostname", dir.display()))?;
    std::fs::write(dir.join(RESOLV_CONF), resolv_conf(dns)?)
        .context(|| format!("writing {}/resolv.conf", dir.display()))?;
    std::fs::write(
        dir.join(HOSTS),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )
    .context(|| format!("writing {}/hosts", dir.display()))?;
    Ok(())
}

/// `resolv.conf` from the pod's `DNSConfig`; without one, the host's (as containerd does).
fn resolv_conf(dns: Option<&DnsConfig>) -> Result<String> {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return Ok(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    };
    let mut out = String::new();
    for field in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if field.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(format!(
                "DNS config entry {field:?} contains a line break"
            )));
        }
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// RFC 1123 label rules, as the kernel and kubelet expect of a hostname.
pub fn check_hostname(h: &str) -> Result<()> {
    let ok = h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid pod hostname {h:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.local".into(), "local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search svc.local local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        let evil = DnsConfig {
            servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(resolv_conf(Some(&evil)).is_err());
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("pod-1.example").is_ok());
        assert!(check_hostname("bad_host").is_err());
        assert!(check_hostname("").is_err());
    }
}
