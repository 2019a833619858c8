//! Environment values that are not UTF-8, carried from crispd to the container's init.
//!
//! The CRI sends env values as bytes, but an OCI spec's `process.env` is a list of JSON
//! strings, and libcontainer sets the container's environment from Rust `String`s. crispd puts
//! a lossy copy of such a value in `process.env` (so the variable exists, and ordering and
//! overriding work as for any other) and the exact bytes in this annotation; the shim's
//! executor sets them last, just before exec.

use std::collections::BTreeMap;

/// Annotation on the container's spec: a JSON object of variable name to an array of bytes.
pub const ANNOTATION: &str = "io.crisp.env.raw";

pub fn encode(values: &BTreeMap<String, Vec<u8>>) -> String {
    // A map of strings to byte arrays always serialises.
    serde_json::to_string(values).unwrap_or_default()
}

pub fn decode(annotation: &str) -> Result<BTreeMap<String, Vec<u8>>, serde_json::Error> {
    serde_json::from_str(annotation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = BTreeMap::new();
        m.insert("A".to_string(), vec![0xff, 0xfe, b'a']);
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }
}
