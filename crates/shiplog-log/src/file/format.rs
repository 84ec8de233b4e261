//! The on-disk format (version 1): the directory, the segment header, the record frame.
//!
//! A log is one directory. It holds:
//!
//! - `LOCK`: an empty file, `flock`ed exclusively while a [`SegmentedLog`](super::SegmentedLog) has the directory
//!   open, so two processes can never write the same log.
//! - Segment files named by the offset of their first record, zero-padded to 20 decimal
//!   digits: `00000000000000000000.seg`, `00000000000000004096.seg`, … The segments of a log
//!   cover dense, contiguous offset ranges: a segment's records run from its base offset up
//!   to (excluding) the base offset of the next segment. Files with other names are ignored.
//!
//! Every segment starts with a 24-byte header:
//!
//! ```text
//! +--------------------+----------------+-----------------+---------------------+
//! | magic "SHPLGSEG"   | version u32 LE | reserved u32 LE | base offset u64 LE  |
//! | 8 bytes            | = 1            | = 0             | = the file's name   |
//! +--------------------+----------------+-----------------+---------------------+
//! ```
//!
//! followed by record frames, back to back, with no padding:
//!
//! ```text
//! +---------------+---------------+------------------+----------------+-----+-------+
//! | length u32 LE | CRC32C u32 LE | offset u64 LE    | key len u16 LE | key | value |
//! +---------------+---------------+------------------+----------------+-----+-------+
//!                                 |<------------------ body ---------------------->|
//! ```
//!
//! - `length` is the byte length of the body: `10 + key len + value len` (so a frame is
//!   `18 + key + value` bytes). The value's length is implied by it.
//! - `CRC32C` (Castagnoli) covers the whole body: offset, key length, key and value.
//! - `offset` is the record's offset; within a segment the first frame holds the base offset
//!   and each next frame holds the previous offset + 1.
//! - Keys are at most 65,535 bytes; key + value at most [`FileLogConfig::max_record_bytes`](super::FileLogConfig::max_record_bytes).
//!

use super::compress::{is_compressed, SegmentFile, COMPRESSED_SUFFIX};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{LogError, Offset};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHPLGSEG";
/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// Bytes a frame adds to key + value: length, CRC, offset, key length.
pub const FRAME_OVERHEAD: usize = 18;
/// Bytes of a frame before its body: length and CRC.
pub(super) const FRAME_PREFIX: usize = 8;
/// Body bytes before the key: offset and key length.
pub(super) const BODY_PREFIX: usize = 10;
/// One sparse index entry per this many records of a segment (a power of two).
pub const INDEX_INTERVAL: u64 = 4096;
/// Readers and scans read segments in chunks of this size.
pub(super) const READ_CHUNK: usize = 1 << 20;
pub(super) const SEGMENT_SUFFIX: &str = ".seg";
pub(super) const LOCK_FILE: &str = "LOCK";

pub(super) fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(segment_name(base))
}

/// The file name of the segment whose first record has offset `base`.
pub(super) fn segment_name(base: Offset) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// Segment files of `dir`, sorted by base offset.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(Offset, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .or_else(|| name.strip_suffix(COMPRESSED_SUFFIX))
        else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(base) = digits.parse::<Offset>() else {
            continue;
        };
        segments.push((base, entry.path()));
    }
    segments.sort();
    // A segment in both forms: the compressor renamed its complete `.zseg` into place but
    // did not delete the `.seg` yet. Both hold the same records; list the `.zseg`.
    segments.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same && is_compressed(&later.1) {
            std::mem::swap(later, earlier);
        }
        same
    });
    Ok(segments)
}

pub(super) fn segment_header(base: Offset) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    header
}

pub(super) enum Header {
    Valid,
    /// Not a complete header: a crash while the segment was being created.
    Torn(String),
}

pub(super) fn read_header(file: &SegmentFile, file_len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// `Err` is damage that is not a torn write.
pub(super) fn check_header(bytes: &[u8], base: Offset) -> Result<Header, String> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize {
        return Ok(Header::Torn(format!(
            "partial segment header ({} of {SEGMENT_HEADER_LEN} bytes)",
            bytes.len()
        )));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Ok(Header::Torn("all-zero segment header".into()));
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let header_base = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if header_base != base {
        return Err(format!(
            "header base offset {header_base} does not match the file name ({base})"
        ));
    }
    Ok(Header::Valid)
}

pub(super) fn encode_frame(buf: &mut Vec<u8>, offset: Offset, key: &[u8], value: &[u8]) {
    let body_len = (BODY_PREFIX + key.len() + value.len()) as u32;
    buf.extend_from_slice(&body_len.to_le_bytes());
    let crc_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let body_at = buf.len();
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32c::crc32c(&buf[body_at..]);
    buf[crc_at..body_at].copy_from_slice(&crc.to_le_bytes());
}

pub(super) enum Parsed {
    /// A whole, CRC-checked frame of `total` bytes; key at `18..18+key_len`, value after.
    Frame {
        offset: Offset,
        key_len: usize,
        total: usize,
    },
    /// The frame needs this many bytes in all.
    Incomplete(usize),
    Bad(String),
}

pub(super) fn parse_frame(buf: &[u8]) -> Parsed {
    if buf.len() < FRAME_PREFIX {
        return Parsed::Incomplete(FRAME_PREFIX);
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if body_len < BODY_PREFIX {
        return Parsed::Bad(format!(
            "frame length {body_len} is below the minimum of {BODY_PREFIX}"
        ));
    }
    let total = FRAME_PREFIX + body_len;
    if buf.len() < total {
        return Parsed::Incomplete(total);
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let body = &buf[FRAME_PREFIX..total];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Parsed::Bad(format!(
            "CRC32C mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let key_len = u16::from_le_bytes(body[8..10].try_into().expect("2 bytes")) as usize;
    if BODY_PREFIX + key_len > body_len {
        return Parsed::Bad(format!("key length {key_len} runs past the frame"));
    }
    Parsed::Frame {
        offset,
        key_len,
        total,
    }
}
