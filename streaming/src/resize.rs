//! Decodes the resize stream: a sequence of JSON objects
//! `{"Width":80,"Height":24}` (Go's json.Encoder output, newline-separated
//! on SPDY, one per message on WebSocket).

use serde::Deserialize;

use crate::TermSize;

/// Bound on a buffered, not yet complete object; a real one is ~30 bytes.
const MAX_PENDING: usize = 4096;

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width", default)]
    width: u16,
    #[serde(rename = "Height", default)]
    height: u16,
}

#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// Feeds bytes; returns the complete sizes they finish. Malformed input
    /// is discarded (resizes are advisory; a bad one must not end the exec).
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
        let mut consumed = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    consumed = it.byte_offset();
                    out.push(TermSize {
                        width: s.width,
                        height: s.height,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > MAX_PENDING {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_joins() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(b"{\"Width\":80,\"Hei"), vec![]);
        assert_eq!(
            d.push(b"ght\":24}\n{\"Width\":100,\"Height\":50}\n"),
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(d.push(b"garbage{"), vec![]);
        assert_eq!(
            d.push(b"{\"Width\":1,\"Height\":2}"),
            vec![TermSize {
                width: 1,
                height: 2
            }]
        );
        assert_eq!(d.push(b"{\"Width\":99999,\"Height\":2}"), vec![]);
    }
}
