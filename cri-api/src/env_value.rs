//! serde for `KeyValue.value`, which is `bytes` since cri-api v0.37 and was `string` before.
//!
//! crispd's records written before the change hold the value as a JSON string, and a record
//! should stay readable by the crispd it is rolled back to: so a UTF-8 value is written as a
//! string, as before, and only a value that is not UTF-8 as an array of bytes. Both read back.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(value) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_seq(value),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Value;
    impl<'de> Visitor<'de> for Value {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or an array of bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Value)
}

#[cfg(test)]
mod tests {
    use crate::v1::KeyValue;

    #[test]
    fn a_utf8_value_is_kept_as_a_string() {
        let kv = KeyValue {
            key: "A".into(),
            value: b"caf\xc3\xa9".to_vec(),
        };
        let json = serde_json::to_string(&kv).unwrap();
        assert_eq!(json, r#"{"key":"A","value":"café"}"#);
        assert_eq!(serde_json::from_str::<KeyValue>(&json).unwrap(), kv);
    }

    #[test]
    fn other_bytes_round_trip_as_an_array() {
        let kv = KeyValue {
            key: "B".into(),
            value: vec![0xff, b'x', 0],
        };
        let json = serde_json::to_string(&kv).unwrap();
        assert_eq!(json, r#"{"key":"B","value":[255,120,0]}"#);
        assert_eq!(serde_json::from_str::<KeyValue>(&json).unwrap(), kv);
    }

    #[test]
    fn a_message_without_the_newer_fields_reads() {
        let c: crate::v1::ContainerConfig =
            serde_json::from_str(r#"{"envs":[{"key":"A","value":"1"}]}"#).unwrap();
        assert_eq!(c.stop_signal, 0);
        assert!(c.cdi_devices.is_empty());
    }

    #[test]
    fn a_record_of_the_string_era_reads() {
        let kv: KeyValue = serde_json::from_str(r#"{"key":"C","value":"v=1"}"#).unwrap();
        assert_eq!(kv.value, b"v=1");
    }
}
