//! Object ids: 64 random hex digits, like containerd's. Ids from requests are validated before
//! they touch a path.

use crate::error::{Error, Result};

pub fn new_id() -> String {
    let mut b = [0u8; 32];
    // getrandom only fails when the kernel has no entropy source at all; fall back to
    // time-and-pid uniqueness rather than refusing to create objects.
    if getrandom::fill(&mut b).is_err() {
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u128;
        let seed = t ^ ((std::process::id() as u128) << 64);
        b[..16].copy_from_slice(&seed.to_le_bytes());
    }
    hex::encode(b)
}

/// An id (or id prefix) from a request: hex only, so it can never form a path component like
/// `..` or contain a slash.
pub fn check_id(kind: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{kind} id must not be empty"
        )));
    }
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotFound(format!("{kind} {id:?} not found")));
    }
    Ok(())
}

/// Resolves a full id or a unique prefix among `ids`.
pub fn resolve<'a>(
    kind: &str,
    wanted: &str,
    ids: impl Iterator<Item = &'a String>,
) -> Result<String> {
    check_id(kind, wanted)?;
    let mut found: Option<&String> = None;
    for id in ids {
        if id == wanted {
            return Ok(id.clone());
        }
        if id.starts_with(wanted) {
            if found.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{kind} id prefix {wanted} is ambiguous"
                )));
            }
            found = Some(id);
        }
    }
    found
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("{kind} {wanted} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_unique() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_id());
        assert!(check_id("pod", &a).is_ok());
    }

    #[test]
    fn path_like_ids_are_rejected() {
        assert!(check_id("pod", "../etc").is_err());
        assert!(check_id("pod", "").is_err());
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let ids = ["abc1".to_string(), "abd2".to_string()];
        assert_eq!(resolve("pod", "abc", ids.iter()).unwrap(), "abc1");
        assert!(matches!(
            resolve("pod", "ab", ids.iter()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve("pod", "ff", ids.iter()),
            Err(Error::NotFound(_))
        ));
    }
}
