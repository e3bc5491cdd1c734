//! AVI: the `hdrl` list at the start of the first `RIFF` chunk, one `strl` list a stream.
//!
//! Only what old libraries hold in numbers is vouched for: MPEG-4 Part 2 (Xvid, DivX 4+),
//! Microsoft's MPEG-4 v2 and v3 (DivX 3) and Motion JPEG video, with MP3, MP2, AC-3, DTS,
//! AAC or PCM audio. Everything else (H.264 in AVI, whose bit depth is only in its first
//! frame; raw and lossless codecs, which may carry alpha; subtitle and DV streams; a file cut
//! short) is left to ffprobe. The duration is left unknown: ffmpeg takes it from the index at
//! the end of the file (and an OpenDML file's from its later `RIFF` chunks), which a header
//! read does not reach.

use std::io::{Read, Seek};

use super::{CannotVouch, Source, cannot};
use crate::probe::{MediaInfo, Stream, StreamKind};

/// Whether the first 12 bytes open an AVI file.
pub(super) fn is_avi(magic: &[u8]) -> bool {
    magic.len() >= 12 && &magic[..4] == b"RIFF" && &magic[8..12] == b"AVI "
}

/// The most streams a file may declare: more is not a film.
const MAX_STREAMS: usize = 64;

pub(super) fn read<R: Read + Seek>(source: &mut Source<R>) -> Result<MediaInfo, CannotVouch> {
    let riff = le32(&source.read_at(4, 4)?, 0)?;
    if 8 + u64::from(riff) > source.len() {
        return cannot("an AVI file shorter than its RIFF header says (cut short?)");
    }
    // The header list comes first, by the format's own rule.
    let head = source.read_at(12, 12)?;
    if &head[..4] != b"LIST" || &head[8..12] != b"hdrl" {
        return cannot("an AVI file whose first chunk is not its header list");
    }
    let size = u64::from(le32(&head, 4)?);
    let hdrl = source.read_at(24, size.checked_sub(4).ok_or_else(too_small)?)?;
    let mut streams = Vec::new();
    for (id, body) in chunks(&hdrl)? {
        if id == *b"LIST" && body.get(..4) == Some(b"strl") {
            if streams.len() == MAX_STREAMS {
                return cannot("too many AVI streams");
            }
            streams.push(stream(streams.len() as u32, &body[4..])?);
        }
    }
    if streams.is_empty() {
        return cannot("an AVI header without streams");
    }
    Ok(MediaInfo {
        container: "avi".into(),
        duration_secs: None,
        bit_rate: None,
        streams,
        chapters: 0,
    })
}

fn too_small() -> CannotVouch {
    CannotVouch("an AVI chunk smaller than its own header".into())
}

/// A chunk: its id and body.
type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The chunks of a list body, every size checked against what is left.
fn chunks(data: &[u8]) -> Result<Vec<Chunk<'_>>, CannotVouch> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= 8 {
        if out.len() >= 1024 {
            return cannot("too many AVI chunks");
        }
        let mut id = [0; 4];
        id.copy_from_slice(&data[at..at + 4]);
        let size = le32(data, at + 4)? as usize;
        let body = data
            .get(at + 8..)
            .and_then(|rest| rest.get(..size))
            .ok_or_else(|| {
                CannotVouch(format!(
                    "an AVI chunk of {size} bytes passes the end of its list"
                ))
            })?;
        out.push((id, body));
        // Chunks are padded to an even size.
        at = (at + 8 + size + (size & 1)).min(data.len());
    }
    Ok(out)
}

/// One `strl` list: its `strh` (kind) and `strf` (format).
fn stream(index: u32, strl: &[u8]) -> Result<Stream, CannotVouch> {
    let list = chunks(strl)?;
    let find = |want: &[u8; 4]| {
        list.iter()
            .find(|(id, _)| id == want)
            .map(|(_, body)| *body)
            .ok_or_else(|| CannotVouch(format!("an AVI stream without {}", fourcc(want))))
    };
    let (strh, strf) = (find(b"strh")?, find(b"strf")?);
    let kind = strh.get(..4).ok_or_else(too_small)?;
    match kind {
        b"vids" => video(index, strf),
        b"auds" => audio(index, strf),
        other => cannot(format!("an AVI stream of kind {}", fourcc(other))),
    }
}

/// `BITMAPINFOHEADER`: size and compression.
fn video(index: u32, strf: &[u8]) -> Result<Stream, CannotVouch> {
    let width = le32(strf, 4)? as i32;
    let height = le32(strf, 8)? as i32;
    let compression = strf.get(16..20).ok_or_else(too_small)?;
    // ffmpeg's own table (riff.c), in upper case as it also matches them.
    let upper = compression.to_ascii_uppercase();
    let codec = match &upper[..] {
        b"XVID" | b"DIVX" | b"DX50" | b"FMP4" | b"MP4V" | b"3IV2" => "mpeg4",
        b"DIV3" | b"MP43" | b"DIV4" => "msmpeg4v3",
        b"MP42" | b"DIV2" => "msmpeg4v2",
        b"MJPG" => "mjpeg",
        _ => {
            return cannot(format!(
                "AVI video in {}, which the native reader does not know",
                fourcc(compression)
            ));
        }
    };
    if width <= 0 || height == 0 || height == i32::MIN {
        return cannot(format!("an AVI video of {width}x{height}"));
    }
    let mut stream = Stream::new(index, StreamKind::Video, codec);
    stream.width = Some(width as u32);
    stream.height = Some(height.unsigned_abs());
    Ok(stream)
}

/// `WAVEFORMATEX`: the format tag, and for PCM its sample size.
fn audio(index: u32, strf: &[u8]) -> Result<Stream, CannotVouch> {
    let tag = le16(strf, 0)?;
    let channels = le16(strf, 2)?;
    let rate = le32(strf, 4)?;
    let bits = le16(strf, 14)?;
    if channels == 0 || rate == 0 {
        // ffprobe would call it undescribed, or find out more from the packets.
        return cannot("AVI audio with no channels or sample rate");
    }
    let codec = match (tag, bits) {
        (0x0001, 8) => "pcm_u8",
        (0x0001, 16) => "pcm_s16le",
        (0x0001, 24) => "pcm_s24le",
        (0x0001, 32) => "pcm_s32le",
        (0x0050, _) => "mp2",
        (0x0055, _) => "mp3",
        (0x00FF, _) => "aac",
        (0x2000, _) => "ac3",
        (0x2001, _) => "dts",
        _ => return cannot(format!("AVI audio of format tag {tag:#06x}")),
    };
    Ok(Stream::new(index, StreamKind::Audio, codec))
}

fn le32(data: &[u8], at: usize) -> Result<u32, CannotVouch> {
    let b = data.get(at..at + 4).ok_or_else(too_small)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le16(data: &[u8], at: usize) -> Result<u16, CannotVouch> {
    let b = data.get(at..at + 2).ok_or_else(too_small)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn fourcc(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_longer_than_its_list_is_refused() {
        let mut list = b"strh".to_vec();
        list.extend_from_slice(&100u32.to_le_bytes());
        list.extend_from_slice(&[0; 10]);
        assert!(chunks(&list).is_err());
        let mut fits = b"strh".to_vec();
        fits.extend_from_slice(&3u32.to_le_bytes());
        fits.extend_from_slice(&[1, 2, 3, 0]);
        assert_eq!(chunks(&fits).unwrap(), [(*b"strh", &[1u8, 2, 3][..])]);
    }
}
