//! What the log holds on disk, read-only (safe while the server runs): behind `shiplog log
//! status`.

use std::path::Path;

use bytes::Bytes;

use super::compress::{is_compressed, SegmentFile};
use super::format::*;
use super::retention::live_segments;
use super::scan::scan_newest;
use crate::{LogError, Offset};

/// The log's disk usage and extent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    pub segments: u64,
    pub compressed_segments: u64,
    /// Bytes of the segment files on disk.
    pub bytes: u64,
    /// Bytes the segments hold uncompressed.
    pub raw_bytes: u64,
    /// The first offset the log holds.
    pub first_offset: Offset,
    /// Where the log starts: offsets below were removed by retention (`START`; 0 without).
    pub start_offset: Offset,
    /// The offset after the last record (of the newest segment's valid frames).
    pub end_offset: Offset,
    /// The value of the first record the log holds (the oldest event kept), if readable.
    pub first_record: Option<Bytes>,
}

impl LogStatus {
    /// Raw bytes per byte on disk (1 when nothing is compressed).
    pub fn compression_ratio(&self) -> f64 {
        self.raw_bytes as f64 / self.bytes.max(1) as f64
    }
}

/// Reads the status of the log in `dir` without opening it for writing.
pub fn status(dir: &Path) -> Result<LogStatus, LogError> {
    let (start, segments, _) = live_segments(dir)?;
    let mut s = LogStatus {
        start_offset: start,
        ..LogStatus::default()
    };
    for (i, (base, path)) in segments.iter().enumerate() {
        let file = SegmentFile::open(path)?;
        let len = file.len()?;
        s.segments += 1;
        s.compressed_segments += is_compressed(path) as u64;
        s.bytes += file.disk_len()?;
        s.raw_bytes += len;
        if i == 0 {
            s.first_offset = (*base).max(start);
            s.first_record = match *base >= start {
                true => first_value(&file, len),
                // The log starts inside this segment (`START` edited by hand): not its
                // first frame.
                false => None,
            };
        }
        if i + 1 == segments.len() {
            s.end_offset = scan_newest(&file, *base, len)?.next_offset;
        }
    }
    Ok(s)
}

/// The value of a segment's first frame, when it checks out.
fn first_value(file: &SegmentFile, len: u64) -> Option<Bytes> {
    let mut prefix = [0u8; 8];
    file.read_exact_at(&mut prefix, SEGMENT_HEADER_LEN).ok()?;
    let body = u32::from_le_bytes(prefix[0..4].try_into().ok()?) as u64;
    let total = 8 + body;
    if SEGMENT_HEADER_LEN + total > len {
        return None;
    }
    let mut frame = vec![0u8; total as usize];
    file.read_exact_at(&mut frame, SEGMENT_HEADER_LEN).ok()?;
    match parse_frame(&frame) {
        Parsed::Frame { key_len, total, .. } => Some(Bytes::copy_from_slice(
            &frame[FRAME_OVERHEAD + key_len..total],
        )),
        _ => None,
    }
}
