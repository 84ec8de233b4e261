//! Walking a segment's frames: the scan recovery runs on the newest segment, the scan
//! that indexes a sealed segment on first use (and finds its damage), and the
//! resynchronising search that finds where valid frames resume after damage (see
//! [`super::reader`] for how readers use it).

use super::compress::SegmentFile;
use std::io;

use super::format::*;
use crate::Offset;

pub(super) struct Scan {
    /// End of the last valid frame.
    pub(super) valid_len: u64,
    pub(super) records: u64,
    pub(super) next_offset: Offset,
    pub(super) index: Vec<(Offset, u64)>,
    /// Damaged ranges skipped ([`scan_sealed`] only).
    pub(super) damage: Vec<Damage>,
    /// Where and why the scan stopped before the end of the file.
    pub(super) stop: Option<(u64, String)>,
}

/// A damaged range of a segment, skipped by readers: bytes `start..end` hold no readable
/// frame, and the records `first..resume` were in them (none when `first == resume`:
/// only bytes between frames are bad). Frames resume at `end` with offset `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) first: Offset,
    pub(super) resume: Offset,
    pub(super) reason: String,
}

/// Walks the frames of a segment from its header to `file_len`, checking CRCs and offsets;
/// stops at the first damage (tail recovery: what follows is a torn write).
pub(super) fn scan_segment(file: &SegmentFile, base: Offset, file_len: u64) -> io::Result<Scan> {
    scan_from(file, base, SEGMENT_HEADER_LEN, base, file_len)
}

/// Walks the frames of a segment from byte `start` (where offset `next` is expected) to
/// `file_len`, stopping at the first damage.
pub(super) fn scan_from(
    file: &SegmentFile,
    base: Offset,
    start: u64,
    next: Offset,
    file_len: u64,
) -> io::Result<Scan> {
    let mut scan = Scan {
        valid_len: start,
        records: 0,
        next_offset: next,
        index: Vec::new(),
        damage: Vec::new(),
        stop: None,
    };
    let mut data: Vec<u8> = Vec::new();
    let mut data_pos = start; // file position of data[0]
    let mut cursor = 0usize;
    loop {
        let pos = data_pos + cursor as u64;
        match parse_frame(&data[cursor..]) {
            Parsed::Frame { offset, total, .. } => {
                if offset != scan.next_offset {
                    scan.stop = Some((
                        pos,
                        format!("frame holds offset {offset}, expected {}", scan.next_offset),
                    ));
                    break;
                }
                if (offset - base) & (INDEX_INTERVAL - 1) == 0 {
                    scan.index.push((offset, pos));
                }
                cursor += total;
                scan.records += 1;
                scan.next_offset += 1;
                scan.valid_len = pos + total as u64;
            }
            Parsed::Incomplete(need) => {
                let available = file_len.saturating_sub(pos);
                if available == 0 {
                    break;
                }
                if need as u64 > available {
                    let reason = if available < FRAME_PREFIX as u64 {
                        format!("torn frame header ({available} bytes at the end of the file)")
                    } else {
                        format!(
                            "frame of {need} bytes runs past the end of the file ({available} bytes left)"
                        )
                    };
                    scan.stop = Some((pos, reason));
                    break;
                }
                data.drain(..cursor);
                cursor = 0;
                data_pos = pos;
                let have = data.len();
                let want = need.max(READ_CHUNK).min(available as usize);
                data.resize(want, 0);
                file.read_exact_at(&mut data[have..], data_pos + have as u64)?;
            }
            Parsed::Bad(reason) => {
                scan.stop = Some((pos, reason));
                break;
            }
        }
    }
    Ok(scan)
}

/// Walks every frame of a segment whose records are acknowledged (a sealed one), skipping
/// damaged ranges: after damage it resynchronises on the next valid frame ([`resync`]).
/// `upper` is the base offset of the next segment (where this one's records must end);
/// with it, damage that no valid frame follows runs to the end of the file and loses the
/// records up to `upper`, and a segment that ends early loses the rest. Without it (the
/// last segment) such damage is left in `stop`: its extent is unknown.
pub(super) fn scan_sealed(
    file: &SegmentFile,
    base: Offset,
    len: u64,
    upper: Option<Offset>,
) -> io::Result<Scan> {
    scan_skipping(file, base, len, upper, Resync::Sealed)
}

/// Walks every frame of the newest segment, telling damage from a torn tail: damage that
/// a valid frame with a plausible offset follows (found *after* the damaged bytes, see
/// [`Resync::Newest`]) is recorded in `damage` and skipped, like damage in a sealed
/// segment; the first damage that no valid frame follows is the torn tail, left in `stop`
/// (recovery truncates the file at `valid_len`, the end of the last valid frame).
pub(super) fn scan_newest(file: &SegmentFile, base: Offset, len: u64) -> io::Result<Scan> {
    scan_skipping(file, base, len, None, Resync::Newest)
}

pub(super) fn scan_skipping(
    file: &SegmentFile,
    base: Offset,
    len: u64,
    upper: Option<Offset>,
    mode: Resync,
) -> io::Result<Scan> {
    let mut scan = scan_segment(file, base, len)?;
    while let Some((start, reason)) = scan.stop.take() {
        let first = scan.next_offset;
        match resync(file, start, len, first, upper, mode)? {
            Some((end, resume)) => {
                scan.damage.push(Damage {
                    start,
                    end,
                    first,
                    resume,
                    reason,
                });
                let more = scan_from(file, base, end, resume, len)?;
                scan.valid_len = more.valid_len;
                scan.records += more.records;
                scan.next_offset = more.next_offset;
                scan.index.extend(more.index);
                scan.stop = more.stop;
            }
            None => {
                match upper {
                    Some(resume) => {
                        scan.damage.push(Damage {
                            start,
                            end: len,
                            first,
                            resume: resume.max(first),
                            reason,
                        });
                        scan.next_offset = resume.max(first);
                    }
                    // Nothing valid follows in the last segment: its extent is unknown.
                    None => scan.stop = Some((start, reason)),
                }
                break;
            }
        }
    }
    if let Some(upper) = upper {
        if scan.stop.is_none() && scan.next_offset < upper {
            let end = scan.next_offset;
            scan.damage.push(Damage {
                start: len,
                end: len,
                first: end,
                resume: upper,
                reason: format!(
                    "offsets {end}..{upper} are in no segment file: {this} ends at offset \
                     {end} and the next file is {next} ({missing} is missing, deleted by hand?, \
                     or {this} was cut short)",
                    this = segment_name(base),
                    next = segment_name(upper),
                    missing = segment_name(end),
                ),
            });
            scan.next_offset = upper;
        }
    }
    Ok(scan)
}

/// Where [`resync`] may resume after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resync {
    /// A sealed segment: anywhere from the damaged position on, including right there (a
    /// whole frame holding a later offset: records missing without bytes).
    Sealed,
    /// The newest segment: only after the damaged position. A torn write leaves
    /// unacknowledged bytes after the last synced frame but never a whole frame holding a
    /// later offset where the next one belongs; such a frame with nothing valid after it is
    /// truncated with the torn tail.
    Newest,
}

/// Finds the first position at or after `from` (the start of a damaged frame that should
/// hold offset `expected`) where a whole frame with a valid CRC32C holds a plausible
/// offset: at least `expected`, below `upper` when known, and at most one record per
/// minimal frame (18 bytes) since `from`, since the lost frames lay between. Returns the
/// position and that offset. A false match needs a 32-bit CRC to agree by chance on top
/// of the length, key length and offset checks; record values are JSON, which never holds
/// the zero bytes a frame header of a plausible length has.
pub(super) fn resync(
    file: &SegmentFile,
    from: u64,
    len: u64,
    expected: Offset,
    upper: Option<Offset>,
    mode: Resync,
) -> io::Result<Option<(u64, Offset)>> {
    let mut window: Vec<u8> = Vec::new();
    let mut window_pos = from;
    let mut c = if mode == Resync::Newest {
        from + 1
    } else {
        from
    };
    while c + FRAME_OVERHEAD as u64 <= len {
        if c + FRAME_OVERHEAD as u64 > window_pos + window.len() as u64 {
            window_pos = c;
            let n = (len - c).min(READ_CHUNK as u64) as usize;
            window.resize(n, 0);
            file.read_exact_at(&mut window, c)?;
        }
        let i = (c - window_pos) as usize;
        let h = &window[i..i + FRAME_OVERHEAD];
        let body_len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as u64;
        let offset = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let key_len = u16::from_le_bytes(h[16..18].try_into().expect("2 bytes")) as u64;
        // A valid frame right at `from` may hold any later offset (records missing without
        // bytes); further on, the lost frames took at least 18 bytes each.
        let most = if c == from {
            Offset::MAX
        } else {
            expected.saturating_add((c - from) / FRAME_OVERHEAD as u64)
        };
        let plausible = body_len >= BODY_PREFIX as u64
            && c + FRAME_PREFIX as u64 + body_len <= len
            && BODY_PREFIX as u64 + key_len <= body_len
            && offset >= expected
            && offset <= most
            && upper.is_none_or(|u| offset < u);
        if plausible {
            let stored = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let body_at = i + FRAME_PREFIX;
            let body_end = body_at + body_len as usize;
            let computed = if body_end <= window.len() {
                crc32c::crc32c(&window[body_at..body_end])
            } else {
                let mut body = vec![0u8; body_len as usize];
                file.read_exact_at(&mut body, c + FRAME_PREFIX as u64)?;
                crc32c::crc32c(&body)
            };
            if computed == stored {
                return Ok(Some((c, offset)));
            }
        }
        c += 1;
    }
    Ok(None)
}
