//! A commit record: one message of a keyspace's log, holding a whole batch.

use crate::storage::Batch;

/// Per key, the value to store or `None` to remove it.
pub type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The record of `batch`.
pub fn encode(batch: &Batch) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&batch.writes)
}

/// The writes a record holds.
pub fn decode(bytes: &[u8]) -> Result<Writes, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_its_batch() {
        let mut batch = Batch::default();
        batch.insert(b"a".to_vec(), b"1".to_vec());
        batch.remove(b"\xffoutbox\0b".to_vec());
        let writes = decode(&encode(&batch).unwrap()).unwrap();
        assert_eq!(writes, batch.writes);
        assert!(decode(b"\xff\xff\xff").is_err());
    }
}
