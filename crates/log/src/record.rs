//! The record format, as pure encode/decode functions.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the payload: len, crc, first_offset, rows, ingested_at.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 4 + 8;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub first_offset: u64,
    pub rows: u32,
    pub ingested_at: i64,
    pub payload: Bytes,
}

impl LogRecord {
    /// One past the offset of the record's last row.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.rows)
    }
}

pub(crate) fn encode(
    first_offset: u64,
    rows: u32,
    ingested_at: i64,
    payload: &[u8],
    out: &mut BytesMut,
) {
    let body_len = HEADER_LEN - 8 + payload.len();
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32_le(u32::try_from(body_len).expect("record size checked by the writer"));
    let crc_at = out.len();
    out.put_u32_le(0);
    let body_at = out.len();
    out.put_u64_le(first_offset);
    out.put_u32_le(rows);
    out.put_i64_le(ingested_at);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes do not hold a whole, valid record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the record claims: a torn write at the tail.
    Truncated,
    /// The CRC does not match.
    BadChecksum,
}

/// Decodes the record at the start of `bytes`, returning it and its length on disk.
pub(crate) fn decode(bytes: &[u8]) -> Result<(LogRecord, usize), DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::Truncated);
    }
    let mut head = &bytes[..8];
    let body_len = head.get_u32_le() as usize;
    let crc = head.get_u32_le();
    if body_len < HEADER_LEN - 8 {
        return Err(DecodeError::BadChecksum);
    }
    let total = 8 + body_len;
    if bytes.len() < total {
        return Err(DecodeError::Truncated);
    }
    let body = &bytes[8..total];
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::BadChecksum);
    }
    let mut b = body;
    let first_offset = b.get_u64_le();
    let rows = b.get_u32_le();
    let ingested_at = b.get_i64_le();
    let payload = Bytes::copy_from_slice(b);
    Ok((
        LogRecord {
            first_offset,
            rows,
            ingested_at,
            payload,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut buf = BytesMut::new();
        encode(7, 3, 1234, b"hello", &mut buf);
        let (record, len) = decode(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(
            record,
            LogRecord {
                first_offset: 7,
                rows: 3,
                ingested_at: 1234,
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(record.end_offset(), 10);

        assert_eq!(decode(&buf[..buf.len() - 1]), Err(DecodeError::Truncated));
        let mut flipped = buf.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), Err(DecodeError::BadChecksum));
    }
}
