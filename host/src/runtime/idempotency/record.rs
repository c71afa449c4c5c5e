//! The record a key holds: a lease while its request runs, then the kept
//! answer; a versioned binary layout, since an answer's body is bytes.

use crate::bindings::types::{Header, Response};

/// The record format's version, its first byte.
const VERSION: u8 = 1;

/// One record: a lease held by a running request, or a kept answer.
pub(super) enum Record {
    Lease { fingerprint: [u8; 32], until_ms: u64 },
    Kept { fingerprint: [u8; 32], expires_ms: u64, response: Response },
}

impl Record {
    pub(super) fn fingerprint(&self) -> &[u8; 32] {
        match self {
            Record::Lease { fingerprint, .. } | Record::Kept { fingerprint, .. } => fingerprint,
        }
    }

    pub(super) fn ends_ms(&self) -> u64 {
        match self {
            Record::Lease { until_ms, .. } => *until_ms,
            Record::Kept { expires_ms, .. } => *expires_ms,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![VERSION];
        match self {
            Record::Lease { fingerprint, until_ms } => {
                bytes.push(0);
                bytes.extend_from_slice(fingerprint);
                bytes.extend_from_slice(&until_ms.to_be_bytes());
            }
            Record::Kept { fingerprint, expires_ms, response } => {
                bytes.push(1);
                bytes.extend_from_slice(fingerprint);
                bytes.extend_from_slice(&expires_ms.to_be_bytes());
                bytes.extend_from_slice(&response.status.to_be_bytes());
                let headers: Vec<(&str, &str)> =
                    response.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
                let headers = serde_json::to_vec(&headers).expect("strings serialise");
                bytes.extend_from_slice(&(headers.len() as u32).to_be_bytes());
                bytes.extend_from_slice(&headers);
                bytes.extend_from_slice(&response.body);
            }
        }
        bytes
    }

    /// The record `bytes` hold; `None` for bytes no version wrote (read as
    /// no record: the key is claimed afresh).
    pub(super) fn decode(bytes: &[u8]) -> Option<Record> {
        let (&version, rest) = bytes.split_first()?;
        let (&tag, rest) = rest.split_first()?;
        if version != VERSION || rest.len() < 40 {
            return None;
        }
        let fingerprint: [u8; 32] = rest[..32].try_into().ok()?;
        let ends = u64::from_be_bytes(rest[32..40].try_into().ok()?);
        let rest = &rest[40..];
        match tag {
            0 => Some(Record::Lease { fingerprint, until_ms: ends }),
            1 if rest.len() >= 6 => {
                let status = u16::from_be_bytes(rest[..2].try_into().ok()?);
                let length = u32::from_be_bytes(rest[2..6].try_into().ok()?) as usize;
                let headers: Vec<(String, String)> =
                    serde_json::from_slice(rest.get(6..6 + length)?).ok()?;
                let body = rest.get(6 + length..)?.to_vec();
                let headers = headers.into_iter().map(|(name, value)| Header { name, value });
                let response = Response { status, headers: headers.collect(), body };
                Some(Record::Kept { fingerprint, expires_ms: ends, response })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let response = Response {
            status: 201,
            headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
            body: b"{\"id\":\"ord_1\"}".to_vec(),
        };
        let kept =
            Record::Kept { fingerprint: [7; 32], expires_ms: 99, response: response.clone() };
        match Record::decode(&kept.encode()) {
            Some(Record::Kept { fingerprint, expires_ms, response: read }) => {
                assert_eq!((fingerprint, expires_ms), ([7; 32], 99));
                let headers: Vec<(String, String)> =
                    read.headers.into_iter().map(|h| (h.name, h.value)).collect();
                assert_eq!(headers, [("content-type".to_string(), "application/json".to_string())]);
                assert_eq!((read.status, read.body), (201, response.body));
            }
            _ => panic!("not read back"),
        }
        let lease = Record::Lease { fingerprint: [1; 32], until_ms: 5 }.encode();
        assert!(matches!(Record::decode(&lease), Some(Record::Lease { until_ms: 5, .. })));
        // Bytes no version wrote are no record at all.
        for bad in [&b""[..], &[9, 0], &lease[..20], &[VERSION, 7, 0, 0]] {
            assert!(Record::decode(bad).is_none(), "{bad:?}");
        }
    }
}
