//! Sub-protocol negotiation for the upgrade request.

use http::HeaderMap;

pub const SPDY_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";
pub const WS_PROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// remotecommand versions; order matters (newer is greater).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExecVersion {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl ExecVersion {
    /// v3 added the resize stream.
    pub fn has_resize(self) -> bool {
        self >= ExecVersion::V3
    }

    /// v4 made the error stream a JSON Status.
    pub fn json_status(self) -> bool {
        self >= ExecVersion::V4
    }
}

/// SPDY exec/attach protocols, newest first (v5 is WebSocket-only).
pub const SPDY_EXEC: &[(&str, ExecVersion)] = &[
    ("v4.channel.k8s.io", ExecVersion::V4),
    ("v3.channel.k8s.io", ExecVersion::V3),
    ("v2.channel.k8s.io", ExecVersion::V2),
    ("channel.k8s.io", ExecVersion::V1),
];

pub const PORT_FORWARD: &str = "portforward.k8s.io";

/// A WebSocket exec sub-protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsExecProto {
    pub name: &'static str,
    pub version: ExecVersion,
    /// Text frames: channel as an ASCII digit, payload base64.
    pub base64: bool,
}

/// WebSocket exec/attach protocols in preference order.
pub const WS_EXEC: &[WsExecProto] = &[
    WsExecProto {
        name: "v5.channel.k8s.io",
        version: ExecVersion::V5,
        base64: false,
    },
    WsExecProto {
        name: "v4.channel.k8s.io",
        version: ExecVersion::V4,
        base64: false,
    },
    WsExecProto {
        name: "v4.base64.channel.k8s.io",
        version: ExecVersion::V4,
        base64: true,
    },
    WsExecProto {
        name: "v3.channel.k8s.io",
        version: ExecVersion::V3,
        base64: false,
    },
    WsExecProto {
        name: "v2.channel.k8s.io",
        version: ExecVersion::V2,
        base64: false,
    },
    WsExecProto {
        name: "channel.k8s.io",
        version: ExecVersion::V1,
        base64: false,
    },
    WsExecProto {
        name: "base64.channel.k8s.io",
        version: ExecVersion::V1,
        base64: true,
    },
];

/// WebSocket port-forward protocols in preference order.
pub const WS_PORT_FORWARD: &[(&str, bool)] = &[
    ("portforward.k8s.io", false),
    ("base64.portforward.k8s.io", true),
];

/// Newer kubectl tunnels SPDY port-forward through a WebSocket.
pub const WS_SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Every value offered in `name`, across repeated headers and
/// comma-separated lists, trimmed, empties dropped.
pub fn offered(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first of `supported` (server preference: newest first) that the
/// client offered, as kubelet's httpstream.Handshake does.
pub fn pick<'a, T>(
    offered: &[String],
    supported: &'a [T],
    name: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    supported
        .iter()
        .find(|s| offered.iter().any(|o| o == name(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn gathers_repeated_and_comma_separated() {
        let mut h = HeaderMap::new();
        h.append(
            SPDY_PROTOCOL_HEADER,
            HeaderValue::from_static("channel.k8s.io"),
        );
        h.append(
            SPDY_PROTOCOL_HEADER,
            HeaderValue::from_static(" v3.channel.k8s.io ,v2.channel.k8s.io,"),
        );
        let o = offered(&h, SPDY_PROTOCOL_HEADER);
        assert_eq!(
            o,
            ["channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"]
        );
        let p = pick(&o, SPDY_EXEC, |s| s.0).unwrap();
        assert_eq!(p.1, ExecVersion::V3);
    }

    #[test]
    fn picks_newest_and_rejects_unknown() {
        let o = vec![
            "v4.channel.k8s.io".to_string(),
            "v5.channel.k8s.io".to_string(),
        ];
        assert_eq!(
            pick(&o, WS_EXEC, |p| p.name).unwrap().version,
            ExecVersion::V5
        );
        assert_eq!(pick(&o, SPDY_EXEC, |s| s.0).unwrap().1, ExecVersion::V4);
        let o = vec!["v9.channel.k8s.io".to_string()];
        assert!(pick(&o, SPDY_EXEC, |s| s.0).is_none());
    }
}
