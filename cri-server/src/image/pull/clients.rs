//! Registry clients kept between pulls. Setting one up costs more than a small pull's whole
//! transfer from a registry nearby: reqwest builds a rustls configuration and the platform
//! verifier loads the system's CA store (16 ms of a 38 ms pull of a 1 MiB image, measured in
//! crisp-bench's per-call phase). A kept client also keeps its connections and the bearer
//! tokens the registry handed out, until they expire.
//!
//! A client is kept per endpoint configuration *and* credentials: `oci-client` remembers the
//! first credentials it saw for a registry and caches tokens by registry and repository only,
//! so a client must never serve a pull that brought other credentials. The key includes the
//! size and modification time of the CA and client certificate files, so an edited file is
//! read again. Clients idle for [`IDLE`] are dropped, and at most [`MAX`] are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

use super::hosts::Endpoint;

const MAX: usize = 32;
const IDLE: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct ClientCache {
    kept: Mutex<HashMap<[u8; 32], (oci_client::Client, Instant)>>,
}

impl ClientCache {
    /// A client for `ep` used with `auth`: a kept one, or a new one (then kept).
    pub fn get(
        &self,
        ep: &Endpoint,
        auth: &RegistryAuth,
        build: impl FnOnce(&Endpoint) -> Result<oci_client::Client, String>,
    ) -> Result<oci_client::Client, String> {
        let key = key(ep, auth);
        let now = Instant::now();
        {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
            if let Some((client, used)) = kept.get_mut(&key) {
                *used = now;
                return Ok(client.clone());
            }
        }
        let client = build(ep)?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= MAX {
            if let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                kept.remove(&oldest);
            }
        }
        kept.insert(key, (client.clone(), now));
        Ok(client)
    }
}

fn key(ep: &Endpoint, auth: &RegistryAuth) -> [u8; 32] {
    let mut h = Sha256::new();
    // Endpoint's Debug lists every field that goes into a client.
    h.update(format!("{ep:?}").as_bytes());
    let files = ep.ca.iter().chain(
        ep.client
            .iter()
            .flat_map(|(c, k)| std::iter::once(c).chain(k.iter())),
    );
    for f in files {
        let meta = std::fs::metadata(f).ok();
        let stamp = meta.as_ref().map(|m| {
            let at = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .unwrap_or_default();
            (m.len(), at.as_nanos())
        });
        h.update(format!("\0{}\0{stamp:?}", f.display()).as_bytes());
    }
    // Length-prefixed, so no two credential pairs hash alike by shifting a separator.
    let mut part = |tag: &[u8], s: &str| {
        h.update(tag);
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    match auth {
        RegistryAuth::Anonymous => part(b"anon", ""),
        RegistryAuth::Basic(user, password) => {
            part(b"user", user);
            part(b"pass", password);
        }
        RegistryAuth::Bearer(token) => part(b"bear", token),
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        super::super::hosts::Hosts::new(None)
            .endpoints("registry.example")
            .unwrap()
            .remove(0)
    }

    #[test]
    fn kept_per_endpoint_and_credentials() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cache = ClientCache::default();
        let ep = endpoint();
        let built = std::cell::Cell::new(0);
        let build = |e: &Endpoint| {
            built.set(built.get() + 1);
            super::super::registry::client_for(e)
        };
        let alice = RegistryAuth::Basic("alice".into(), "a".into());
        let bob = RegistryAuth::Basic("bob".into(), "b".into());
        cache.get(&ep, &alice, build).unwrap();
        cache.get(&ep, &alice, build).unwrap();
        assert_eq!(
            built.get(),
            1,
            "the same endpoint and credentials share a client"
        );
        cache.get(&ep, &bob, build).unwrap();
        cache.get(&ep, &RegistryAuth::Anonymous, build).unwrap();
        assert_eq!(built.get(), 3, "other credentials never get alice's client");
        let mut other = ep.clone();
        other.skip_verify = true;
        cache.get(&other, &alice, build).unwrap();
        assert_eq!(built.get(), 4);
        // "ab" + "c" and "a" + "bc" are different credentials.
        assert_ne!(
            key(&ep, &RegistryAuth::Basic("ab".into(), "c".into())),
            key(&ep, &RegistryAuth::Basic("a".into(), "bc".into()))
        );
    }
}
