//! The result of an exec/attach as the client sees it: a `metav1.Status`
//! (JSON) for remotecommand v4+, or bare error text for v1–v3.

use serde::Serialize;

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode(i32),
    /// The runtime (or the session plumbing) failed.
    Failed(String),
}

#[derive(Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl Outcome {
    fn message(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(c) => Some(format!(
                "command terminated with non-zero exit code: exit status {c}"
            )),
            Outcome::Failed(e) => Some(format!("Internal error occurred: {e}")),
        }
    }

    /// The v4/v5 error-stream payload, shaped like kubelet's.
    pub fn status_json(&self) -> Vec<u8> {
        let s = match self {
            Outcome::Success => Status {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            Outcome::ExitCode(c) => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: c.to_string(),
                    }],
                }),
                code: None,
            },
            Outcome::Failed(e) => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("InternalError"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: None,
                        message: e.clone(),
                    }],
                }),
                code: Some(500),
            },
        };
        // Serialising plain structs of strings cannot fail.
        serde_json::to_vec(&s).unwrap_or_default()
    }

    /// The v1–v3 error-stream payload: nothing on success.
    pub fn legacy_text(&self) -> Option<String> {
        self.message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_minimal() {
        assert_eq!(
            Outcome::Success.status_json(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(Outcome::Success.legacy_text(), None);
    }

    #[test]
    fn exit_code_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::ExitCode(3).status_json()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("command terminated with non-zero exit code: "));
    }

    #[test]
    fn internal_error_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::Failed("boom".into()).status_json()).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
        assert_eq!(v["details"]["causes"][0]["message"], "boom");
    }
}
