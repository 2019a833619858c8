//! This boot's identity. State that only holds until the next reboot (layers not yet written
//! back, iptables rules) is stamped with it, so a reader tells an earlier boot's stamp apart.

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The kernel's random id of this boot.
pub fn boot_id() -> std::io::Result<String> {
    std::fs::read_to_string(BOOT_ID).map(|b| b.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_stable_and_not_empty() {
        let id = super::boot_id().unwrap();
        assert!(!id.is_empty());
        assert_eq!(super::boot_id().unwrap(), id);
    }
}
