//! The facts the survey needs, read from a Matroska/WebM, MP4/MOV or AVI file's own headers
//! instead of from ffprobe: a few small reads rather than a process per file.
//!
//! The reader is deliberately narrow. It reads at most [`MAX_HEADER_BYTES`] of any file,
//! checks every length field against what is left of the file and of its parent before
//! using it, and answers [`CannotVouch`] for anything it does not fully understand (an
//! unknown codec, a fragmented MP4, compressed Matroska headers, a chapter track, ...), so
//! the caller asks ffprobe instead. It never decides what to encode: before a file is
//! converted, ffprobe still describes it fully.
//!
//! What it vouches for, per stream: kind, codec (ffprobe's names), language, cover art
//! (`attached_pic`), Dolby Vision signalling, and for the main video codecs (H.264, HEVC,
//! VP9, AV1) profile, pixel format, bit depth and size; colour as the container signals it;
//! and the duration. `bit_rate` is left empty. AVI, the container of older libraries, is
//! read more narrowly still (`avi.rs`: its MPEG-4 Part 2 and Motion JPEG video and common
//! audio, its frame size, no duration).
//!
//! The readers are our own, small and bounded. Mozilla's `mp4parse` was considered for
//! MP4: it exposes no HEVC configuration and no `colr` box, and reads through `mdat` to
//! reach a `moov` stored at the end (ffmpeg's default layout), so it would still need a
//! seeking walk like the one here.

mod avi;
mod codec;
mod mkv;
mod mp4;

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use crate::probe::MediaInfo;

/// The most bytes the reader takes from one file, headers of every kind together.
pub const MAX_HEADER_BYTES: u64 = 4 << 20;

/// The native reader cannot vouch for this file's facts: ask ffprobe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannotVouch(pub String);

impl std::fmt::Display for CannotVouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "headers not read natively: {}", self.0)
    }
}

impl std::error::Error for CannotVouch {}

pub(crate) fn cannot<T>(why: impl Into<String>) -> Result<T, CannotVouch> {
    Err(CannotVouch(why.into()))
}

/// Reads a file's headers; `CannotVouch` for anything but a plain Matroska/WebM, MP4/MOV or
/// AVI file whose every stream the reader understands.
///
/// A field left `None` is not known, not absent: `color` holds only what the container
/// signals (Matroska `Colour`, MP4 `colr`), so a stream whose HDR transfer is written in
/// its bitstream alone has none here, and VP9 in older Matroska files has no bit depth.
/// Neither changes the survey's decision; before a file is encoded ffprobe reads it whole.
pub fn read(path: &Path) -> Result<MediaInfo, CannotVouch> {
    let file = File::open(path).or_else(|e| cannot(format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .or_else(|e| cannot(format!("cannot stat: {e}")))?
        .len();
    read_from(file, len).map(|(info, _)| info)
}

/// Reads headers from memory, as [`read`] does from a file (for tests and fuzzing).
pub fn read_bytes(data: &[u8]) -> Result<MediaInfo, CannotVouch> {
    read_bytes_counted(data).map(|(info, _)| info)
}

/// [`read_bytes`], with the number of bytes it read.
pub fn read_bytes_counted(data: &[u8]) -> Result<(MediaInfo, u64), CannotVouch> {
    read_from(Cursor::new(data), data.len() as u64)
}

fn read_from<R: Read + Seek>(inner: R, len: u64) -> Result<(MediaInfo, u64), CannotVouch> {
    let mut source = Source {
        inner,
        len,
        budget: MAX_HEADER_BYTES,
    };
    let magic = source.read_at(0, 12.min(len))?;
    let info = if magic.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        mkv::read(&mut source)?
    } else if magic.len() >= 8 && mp4::is_box_type(&magic[4..8]) {
        mp4::read(&mut source)?
    } else if avi::is_avi(&magic) {
        avi::read(&mut source)?
    } else {
        return cannot("neither Matroska, MP4 nor AVI");
    };
    Ok((info, MAX_HEADER_BYTES - source.budget))
}

/// A file read only at checked offsets, within a byte budget.
pub(crate) struct Source<R> {
    inner: R,
    len: u64,
    budget: u64,
}

impl<R: Read + Seek> Source<R> {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Exactly `n` bytes at `offset`, which must lie inside the file and the budget.
    pub(crate) fn read_at(&mut self, offset: u64, n: u64) -> Result<Vec<u8>, CannotVouch> {
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return cannot(format!(
                "a length field points past the end of the file ({n} bytes at {offset})"
            ));
        }
        if n > self.budget {
            return cannot(format!(
                "its headers pass the {MAX_HEADER_BYTES}-byte limit of a native read"
            ));
        }
        self.budget -= n;
        self.inner
            .seek(SeekFrom::Start(offset))
            .or_else(|e| cannot(format!("cannot seek: {e}")))?;
        let mut buf = vec![0; n as usize];
        self.inner
            .read_exact(&mut buf)
            .or_else(|e| cannot(format!("cannot read: {e}")))?;
        Ok(buf)
    }
}

/// A big-endian reader over a slice that never reads past its end.
#[derive(Debug, Clone)]
pub(crate) struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CannotVouch> {
        if n > self.remaining() {
            return cannot(format!(
                "a length field ({n}) passes the end of its parent ({} left)",
                self.remaining()
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), CannotVouch> {
        self.take(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CannotVouch> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CannotVouch> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CannotVouch> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CannotVouch> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_are_refused_not_trusted() {
        let mut b = Bytes::new(&[1, 2, 3]);
        assert!(b.take(4).is_err());
        assert_eq!(b.u16().unwrap(), 0x0102);
        assert!(b.u16().is_err());
        let mut source = Source {
            inner: Cursor::new(vec![0u8; 100]),
            len: 100,
            budget: 10,
        };
        assert!(source.read_at(95, 6).is_err(), "past the end");
        assert!(source.read_at(u64::MAX, 2).is_err(), "overflowing offset");
        assert!(source.read_at(0, 11).is_err(), "over the budget");
        assert_eq!(source.read_at(0, 10).unwrap().len(), 10);
        assert!(source.read_at(0, 1).is_err(), "budget spent");
    }

    #[test]
    fn other_files_are_not_vouched_for() {
        assert!(read_bytes(b"").is_err());
        assert!(read_bytes(b"RIFF\0\0\0\0AVI LIST").is_err());
        assert!(read_bytes(&[0x47; 188 * 4]).is_err(), "MPEG-TS");
    }
}
