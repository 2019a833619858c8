//! AppArmor from the CRI security context, as containerd decides it: with AppArmor off on the
//! node (like this CI host), `RuntimeDefault` and `Unconfined` mean no profile, and a named
//! `Localhost` profile is refused rather than silently ignored; with AppArmor on, a `Localhost`
//! profile (already loaded on the node) is applied by name. crisp loads no default profile of
//! its own (that needs `apparmor_parser`), so `RuntimeDefault` runs unconfined: said here, and
//! in the README, because it is weaker than containerd's `cri-containerd.apparmor.d`.

use crate::error::{Error, Result};
use crisp_cri_api::v1::security_profile::ProfileType;
use crisp_cri_api::v1::LinuxContainerSecurityContext;

fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

/// The profile name for the container's process, if any.
pub fn profile_for(sc: &LinuxContainerSecurityContext) -> Result<Option<String>> {
    decide(sc, enabled)
}

// Older kubelets still send the deprecated string form.
#[allow(deprecated)]
/// `host_has_apparmor` is asked only when a named profile is requested: most containers ask for
/// none, and container creation should not read /sys for them.
fn decide(
    sc: &LinuxContainerSecurityContext,
    host_has_apparmor: impl FnOnce() -> bool,
) -> Result<Option<String>> {
    if sc.privileged {
        return Ok(None);
    }
    let named: Option<String> = match &sc.apparmor {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) | Ok(ProfileType::Unconfined) => None,
            Ok(ProfileType::Localhost) => Some(p.localhost_ref.clone()),
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "unknown apparmor profile type {}",
                    p.profile_type
                )))
            }
        },
        // The deprecated string form.
        None => match sc.apparmor_profile.as_str() {
            "" | "unconfined" | "runtime/default" => None,
            s => match s.strip_prefix("localhost/") {
                Some(name) => Some(name.to_string()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown apparmor profile {s:?}"
                    )))
                }
            },
        },
    };
    let Some(name) = named else {
        return Ok(None);
    };
    if name.is_empty() || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid apparmor profile name {name:?}"
        )));
    }
    if !host_has_apparmor() {
        return Err(Error::InvalidArgument(format!(
            "apparmor profile {name:?} requested, but AppArmor is not enabled on this node"
        )));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_cri_api::v1::SecurityProfile;

    fn sc(t: ProfileType, name: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: name.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    #[allow(deprecated)]
    fn decides_like_containerd() {
        assert_eq!(
            decide(&sc(ProfileType::RuntimeDefault, ""), || false).unwrap(),
            None
        );
        assert_eq!(
            decide(&sc(ProfileType::Unconfined, ""), || true).unwrap(),
            None
        );
        let e = decide(&sc(ProfileType::Localhost, "my-profile"), || false).unwrap_err();
        assert!(e.to_string().contains("not enabled"), "{e}");
        assert_eq!(
            decide(&sc(ProfileType::Localhost, "my-profile"), || true).unwrap(),
            Some("my-profile".into())
        );
        let legacy = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/p".into(),
            ..Default::default()
        };
        assert_eq!(decide(&legacy, || true).unwrap(), Some("p".into()));
        let bad = LinuxContainerSecurityContext {
            apparmor_profile: "weird".into(),
            ..Default::default()
        };
        assert!(decide(&bad, || true).is_err());
    }
}
