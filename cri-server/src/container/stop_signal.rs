//! The signal StopContainer sends first: the container config's `stop_signal` (kubelet 1.33+,
//! a pod's `lifecycle.stopSignal`), else the image's `StopSignal`, else SIGTERM.

use crate::error::{Error, Result};
use crisp_cri_api::v1::{ContainerConfig, Signal};

pub fn effective(config: &ContainerConfig, image_stop_signal: &str) -> Result<i32> {
    match Signal::try_from(config.stop_signal) {
        Ok(Signal::RuntimeDefault) => from_image(image_stop_signal),
        Ok(sig) => by_name(sig.as_str_name()).ok_or_else(|| {
            Error::InvalidArgument(format!("stop_signal {} has no number", sig.as_str_name()))
        }),
        Err(_) => Err(Error::InvalidArgument(format!(
            "stop_signal {} is not a CRI Signal",
            config.stop_signal
        ))),
    }
}

/// An image's StopSignal (`SIGQUIT`, `QUIT`, `3` or `SIGRTMIN+3`); SIGTERM when unset.
pub fn from_image(s: &str) -> Result<i32> {
    if s.is_empty() {
        return Ok(libc::SIGTERM);
    }
    s.parse::<i32>()
        .ok()
        .filter(|n| (1..=libc::SIGRTMAX()).contains(n))
        .or_else(|| by_name(s))
        .ok_or_else(|| Error::InvalidArgument(format!("image StopSignal {s:?} is not a signal")))
}

/// For ContainerStatus: the CRI name of a signal number (the first of its aliases in the
/// enum, so SIGABRT rather than SIGIOT).
pub fn to_cri(signal: i32) -> Signal {
    (1..=65)
        .filter_map(|n| Signal::try_from(n).ok())
        .find(|s| by_name(s.as_str_name()) == Some(signal))
        .unwrap_or(Signal::RuntimeDefault)
}

/// A signal's number by name, with or without `SIG`, in the CRI enum's spelling
/// (`RTMINPLUS3`) or the usual one (`RTMIN+3`). Real-time signals count from the C library's
/// SIGRTMIN (34 with glibc), as Go's runtimes do.
fn by_name(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    let rt = |base: i32, off: &str, sign: i32| -> Option<i32> {
        let off: i32 = if off.is_empty() { 0 } else { off.parse().ok()? };
        let n = base + sign * off;
        (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .contains(&n)
            .then_some(n)
    };
    if let Some(off) = name
        .strip_prefix("RTMINPLUS")
        .or_else(|| name.strip_prefix("RTMIN+"))
    {
        return rt(libc::SIGRTMIN(), off, 1);
    }
    if let Some(off) = name
        .strip_prefix("RTMAXMINUS")
        .or_else(|| name.strip_prefix("RTMAX-"))
    {
        return rt(libc::SIGRTMAX(), off, -1);
    }
    match name {
        "RTMIN" => return Some(libc::SIGRTMIN()),
        "RTMAX" => return Some(libc::SIGRTMAX()),
        "CLD" => return Some(libc::SIGCHLD),
        "POLL" => return Some(libc::SIGPOLL),
        "IOT" => return Some(libc::SIGIOT),
        _ => {}
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sig: Signal) -> ContainerConfig {
        ContainerConfig {
            stop_signal: sig as i32,
            ..Default::default()
        }
    }

    #[test]
    fn config_then_image_then_sigterm() {
        assert_eq!(
            effective(&config(Signal::Sigusr1), "SIGQUIT").unwrap(),
            libc::SIGUSR1
        );
        assert_eq!(
            effective(&config(Signal::RuntimeDefault), "SIGQUIT").unwrap(),
            libc::SIGQUIT
        );
        assert_eq!(
            effective(&config(Signal::RuntimeDefault), "").unwrap(),
            libc::SIGTERM
        );
        let bad = ContainerConfig {
            stop_signal: 999,
            ..Default::default()
        };
        assert!(effective(&bad, "").is_err());
    }

    #[test]
    fn every_cri_signal_has_a_number_and_maps_back() {
        for n in 1..=65 {
            let sig = Signal::try_from(n).unwrap();
            let num = by_name(sig.as_str_name()).unwrap_or_else(|| panic!("{sig:?}"));
            assert_eq!(by_name(to_cri(num).as_str_name()), Some(num), "{sig:?}");
        }
        assert_eq!(to_cri(libc::SIGABRT), Signal::Sigabrt);
        assert_eq!(to_cri(libc::SIGTERM), Signal::Sigterm);
        assert_eq!(to_cri(libc::SIGRTMIN() + 3), Signal::Sigrtminplus3);
        assert_eq!(to_cri(libc::SIGRTMAX()), Signal::Sigrtmax);
    }

    #[test]
    fn image_stop_signals() {
        assert_eq!(from_image("").unwrap(), libc::SIGTERM);
        assert_eq!(from_image("SIGQUIT").unwrap(), libc::SIGQUIT);
        assert_eq!(from_image("INT").unwrap(), libc::SIGINT);
        assert_eq!(from_image("9").unwrap(), 9);
        assert_eq!(from_image("SIGRTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
        assert!(from_image("NOPE").is_err());
        assert!(from_image("0").is_err());
        assert!(from_image("SIGRTMAX-99").is_err());
    }
}
