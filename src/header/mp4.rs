//! MP4 and QuickTime: the `moov` box, wherever it lies among the top-level boxes.

use std::io::{Read, Seek};

use super::codec::{self, VideoConfig};
use super::{Bytes, CannotVouch, Source, cannot};
use crate::probe::{MediaInfo, Stream, StreamKind};

/// ffprobe's name for the whole ISO family.
const CONTAINER: &str = "mov,mp4,m4a,3gp,3g2,mj2";

/// Top-level boxes one of which opens every MP4 or QuickTime file.
pub(super) fn is_box_type(fourcc: &[u8]) -> bool {
    matches!(
        fourcc,
        b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide"
    )
}

/// The most top-level boxes walked in search of `moov`.
const MAX_TOP_LEVEL_BOXES: usize = 64;

pub(super) fn read<R: Read + Seek>(source: &mut Source<R>) -> Result<MediaInfo, CannotVouch> {
    let mut offset = 0u64;
    for _ in 0..MAX_TOP_LEVEL_BOXES {
        if offset == source.len() {
            return cannot("no moov box");
        }
        let head = source.read_at(offset, 8)?;
        let mut b = Bytes::new(&head);
        let size32 = b.u32()?;
        let kind = b.take(4)?;
        let (header, size) = match size32 {
            0 => (8, source.len() - offset),
            1 => (16, Bytes::new(&source.read_at(offset + 8, 8)?).u64()?),
            n => (8, u64::from(n)),
        };
        if size < header
            || offset
                .checked_add(size)
                .is_none_or(|end| end > source.len())
        {
            return cannot(format!(
                "a box of {size} bytes at {offset} does not fit the file"
            ));
        }
        if kind == b"moov" {
            let body = source.read_at(offset + header, size - header)?;
            return parse_moov(&body);
        }
        offset += size;
    }
    cannot("no moov box among the first top-level boxes")
}

/// A box: its type and body.
type Mp4Box<'a> = ([u8; 4], &'a [u8]);

/// The child boxes of a box body; every size checked.
fn children(data: &[u8]) -> Result<Vec<Mp4Box<'_>>, CannotVouch> {
    let mut out = Vec::new();
    let mut b = Bytes::new(data);
    while b.remaining() > 0 {
        if out.len() >= 4096 {
            return cannot("too many boxes");
        }
        let size32 = b.u32()?;
        let mut kind = [0; 4];
        kind.copy_from_slice(b.take(4)?);
        let body_len = match size32 {
            0 => b.remaining(),
            1 => usize::try_from(b.u64()?.checked_sub(16).ok_or(too_small())?)
                .or_else(|_| cannot("a box too large"))?,
            n => (n as usize).checked_sub(8).ok_or(too_small())?,
        };
        out.push((kind, b.take(body_len)?));
    }
    Ok(out)
}

fn too_small() -> CannotVouch {
    CannotVouch("a box smaller than its header".into())
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, CannotVouch> {
    Ok(children(data)?
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, body)| body))
}

fn parse_moov(moov: &[u8]) -> Result<MediaInfo, CannotVouch> {
    let mut duration_secs = None;
    let mut streams = Vec::new();
    for (kind, body) in children(moov)? {
        match &kind {
            b"mvhd" => duration_secs = Some(movie_duration(body)?),
            b"mvex" => return cannot("a fragmented MP4"),
            b"trak" => {
                let mut stream = parse_trak(body)?;
                stream.index = streams.len() as u32;
                streams.push(stream);
            }
            b"udta" => {
                if let Some(meta) = child(body, b"meta")? {
                    cover_art(meta, &mut streams)?;
                }
            }
            b"meta" => cover_art(body, &mut streams)?,
            _ => {}
        }
    }
    let Some(duration_secs) = duration_secs else {
        return cannot("no mvhd box");
    };
    Ok(MediaInfo {
        container: CONTAINER.into(),
        duration_secs: Some(duration_secs),
        bit_rate: None,
        streams,
        // Chapters are not read: survey facts decide only what to probe, never what to encode.
        chapters: 0,
    })
}

fn movie_duration(mvhd: &[u8]) -> Result<f64, CannotVouch> {
    let mut b = Bytes::new(mvhd);
    let version = b.u8()?;
    b.skip(3)?;
    let (timescale, duration) = if version == 1 {
        b.skip(16)?;
        (b.u32()?, b.u64()?)
    } else {
        b.skip(8)?;
        (b.u32()?, u64::from(b.u32()?))
    };
    if timescale == 0 || duration == 0 || duration == u64::from(u32::MAX) || duration == u64::MAX {
        return cannot("mvhd gives no duration");
    }
    Ok(duration as f64 / f64::from(timescale))
}

fn parse_trak(trak: &[u8]) -> Result<Stream, CannotVouch> {
    if let Some(tref) = child(trak, b"tref")?
        && child(tref, b"chap")?.is_some()
    {
        return cannot("a chapter track");
    }
    let Some(mdia) = child(trak, b"mdia")? else {
        return cannot("a track without mdia");
    };
    let (Some(mdhd), Some(hdlr), Some(minf)) = (
        child(mdia, b"mdhd")?,
        child(mdia, b"hdlr")?,
        child(mdia, b"minf")?,
    ) else {
        return cannot("a track without mdhd, hdlr or minf");
    };
    let mut b = Bytes::new(mdhd);
    let version = b.u8()?;
    b.skip(if version == 1 { 3 + 28 } else { 3 + 16 })?;
    let language = language(b.u16()?)?;
    let mut b = Bytes::new(hdlr);
    b.skip(8)?;
    let handler = b.take(4)?;
    let kind = match handler {
        b"vide" => StreamKind::Video,
        b"soun" => StreamKind::Audio,
        b"sbtl" | b"subt" | b"text" => StreamKind::Subtitle,
        other => {
            return cannot(format!(
                "a track of handler {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let Some(stsd) = child(minf, b"stbl")?
        .map(|stbl| child(stbl, b"stsd"))
        .transpose()?
        .flatten()
    else {
        return cannot("a track without stsd");
    };
    let mut b = Bytes::new(stsd);
    b.skip(4)?;
    if b.u32()? != 1 {
        return cannot("a track with other than one sample description");
    }
    let entries = children(&stsd[8..])?;
    let [(fourcc, entry)] = entries.as_slice() else {
        return cannot("a track whose sample description is malformed");
    };
    let mut stream = match kind {
        StreamKind::Video => video_entry(fourcc, entry)?,
        StreamKind::Audio => audio_entry(fourcc, entry)?,
        _ => match fourcc {
            b"tx3g" | b"text" => Stream::new(0, kind, "mov_text"),
            b"wvtt" => Stream::new(0, kind, "webvtt"),
            other => return cannot(format!("subtitles {:?}", String::from_utf8_lossy(other))),
        },
    };
    stream.language = language.map(Into::into);
    Ok(stream)
}

/// `mdhd`'s language: packed ISO 639-2 letters, or an old Macintosh language code.
fn language(code: u16) -> Result<Option<String>, CannotVouch> {
    if code == 0x7fff {
        return Ok(None);
    }
    if code >= 0x400 {
        let letters: String = [10, 5, 0]
            .iter()
            .map(|shift| char::from(0x60 + ((code >> shift) & 0x1f) as u8))
            .collect();
        if !letters.chars().all(|c| c.is_ascii_lowercase()) {
            return cannot(format!("language code {code:#x}"));
        }
        return Ok(Some(letters));
    }
    const MACINTOSH: [&str; 12] = [
        "eng", "fra", "ger", "ita", "dut", "sve", "spa", "dan", "por", "nor", "heb", "jpn",
    ];
    match MACINTOSH.get(code as usize) {
        Some(lang) => Ok(Some((*lang).into())),
        None => cannot(format!("Macintosh language code {code}")),
    }
}

fn video_entry(fourcc: &[u8; 4], entry: &[u8]) -> Result<Stream, CannotVouch> {
    let mut b = Bytes::new(entry);
    b.skip(24)?;
    let (width, height) = (b.u16()?, b.u16()?);
    b.skip(50)?;
    let boxes = children(&entry[78..])?;
    let find = |kind: &[u8; 4]| boxes.iter().find(|(k, _)| k == kind).map(|(_, v)| *v);
    let config = |kind: &[u8; 4]| {
        find(kind).ok_or_else(|| {
            CannotVouch(format!(
                "video without its {} box",
                String::from_utf8_lossy(kind)
            ))
        })
    };
    let (codec, config): (&str, Option<VideoConfig>) = match fourcc {
        b"avc1" | b"avc3" | b"dva1" | b"dvav" => ("h264", Some(codec::avc(config(b"avcC")?)?)),
        b"hvc1" | b"hev1" | b"dvh1" | b"dvhe" => ("hevc", Some(codec::hevc(config(b"hvcC")?)?)),
        b"vp09" => {
            let vpcc = config(b"vpcC")?;
            (
                "vp9",
                Some(codec::vp9_vpcc(vpcc.get(4..).unwrap_or_default())?),
            )
        }
        b"av01" => ("av1", Some(codec::av1(config(b"av1C")?)?)),
        b"mp4v" if object_type(config(b"esds")?)? == 0x20 => ("mpeg4", None),
        other => return cannot(format!("video {:?}", String::from_utf8_lossy(other))),
    };
    let mut stream = Stream::new(0, StreamKind::Video, codec);
    if let Some(config) = config {
        config.apply(&mut stream);
    }
    stream.width = Some(width.into());
    stream.height = Some(height.into());
    stream.dolby_vision = matches!(fourcc, b"dva1" | b"dvav" | b"dvh1" | b"dvhe")
        || [b"dvcC", b"dvvC", b"dvwC"]
            .iter()
            .any(|k| find(k).is_some());
    if let Some(colr) = find(b"colr") {
        let mut b = Bytes::new(colr);
        let kind = b.take(4)?;
        if kind == b"nclx" || kind == b"nclc" {
            let (p, t, m) = (b.u16()?, b.u16()?, b.u16()?);
            let range = if kind == b"nclx" {
                Some(if b.u8()? & 0x80 != 0 { "pc" } else { "tv" })
            } else {
                None
            };
            let color = codec::color(p.into(), t.into(), m.into(), range);
            stream.color = Some(color).filter(|c| c != &Default::default());
        }
    }
    Ok(stream)
}

fn audio_entry(fourcc: &[u8; 4], entry: &[u8]) -> Result<Stream, CannotVouch> {
    let mut b = Bytes::new(entry);
    b.skip(8)?;
    let children_at = match b.u16()? {
        0 => 28,
        1 => 44,
        2 => 64,
        other => return cannot(format!("audio description version {other}")),
    };
    let boxes = children(entry.get(children_at..).unwrap_or_default())?;
    let find = |kind: &[u8; 4]| boxes.iter().find(|(k, _)| k == kind).map(|(_, v)| *v);
    let codec = match fourcc {
        b"mp4a" => {
            let esds = match find(b"esds") {
                Some(esds) => esds,
                None => match find(b"wave").map(|w| child(w, b"esds")).transpose()? {
                    Some(Some(esds)) => esds,
                    _ => return cannot("mp4a without esds"),
                },
            };
            match object_type(esds)? {
                0x40 | 0x66..=0x68 => "aac",
                other => return cannot(format!("mp4a object type {other:#x}")),
            }
        }
        b"ac-3" => "ac3",
        b"ec-3" => "eac3",
        b"fLaC" => "flac",
        b"Opus" => "opus",
        b"alac" => "alac",
        other => return cannot(format!("audio {:?}", String::from_utf8_lossy(other))),
    };
    Ok(Stream::new(0, StreamKind::Audio, codec))
}

/// The object type of an `esds` box's decoder configuration.
fn object_type(esds: &[u8]) -> Result<u8, CannotVouch> {
    let mut b = Bytes::new(esds);
    b.skip(4)?;
    if b.u8()? != 0x03 {
        return cannot("esds without an ES descriptor");
    }
    descriptor_len(&mut b)?;
    b.skip(2)?;
    let flags = b.u8()?;
    if flags & 0x80 != 0 {
        b.skip(2)?;
    }
    if flags & 0x40 != 0 {
        let len = b.u8()?;
        b.skip(len.into())?;
    }
    if flags & 0x20 != 0 {
        b.skip(2)?;
    }
    if b.u8()? != 0x04 {
        return cannot("esds without a decoder configuration");
    }
    descriptor_len(&mut b)?;
    b.u8()
}

fn descriptor_len(b: &mut Bytes<'_>) -> Result<u32, CannotVouch> {
    let mut len = 0;
    for _ in 0..4 {
        let byte = b.u8()?;
        len = (len << 7) | u32::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(len);
        }
    }
    cannot("an esds length too long")
}

/// `covr` images in an iTunes `meta`/`ilst`: ffprobe shows each as a cover-art stream.
fn cover_art(meta: &[u8], streams: &mut Vec<Stream>) -> Result<(), CannotVouch> {
    // ISO `meta` is a full box; QuickTime's is not.
    let body = if meta.get(4..8) == Some(b"hdlr") {
        meta
    } else {
        meta.get(4..).unwrap_or_default()
    };
    let Some(ilst) = child(body, b"ilst")? else {
        return Ok(());
    };
    let Some(covr) = child(ilst, b"covr")? else {
        return Ok(());
    };
    for (kind, data) in children(covr)? {
        if &kind != b"data" {
            continue;
        }
        let codec = match Bytes::new(data).u32()? & 0x00ff_ffff {
            13 => "mjpeg",
            14 => "png",
            27 => "bmp",
            other => return cannot(format!("cover art of data type {other}")),
        };
        let mut stream = Stream::new(streams.len() as u32, StreamKind::Video, codec);
        stream.attached_pic = true;
        streams.push(stream);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_packed_and_macintosh() {
        assert_eq!(language(0x55c4).unwrap().as_deref(), Some("und"));
        assert_eq!(language(0x15c7).unwrap().as_deref(), Some("eng"));
        assert_eq!(language(0).unwrap().as_deref(), Some("eng"));
        assert_eq!(language(0x7fff).unwrap(), None);
        assert!(language(300).is_err());
    }

    #[test]
    fn a_box_claiming_more_than_its_parent_is_refused() {
        let data = [0, 0, 0, 100, b'f', b'r', b'e', b'e', 0, 0];
        assert!(children(&data).is_err());
        let data = [0, 0, 0, 4, b'f', b'r', b'e', b'e'];
        assert!(children(&data).is_err(), "smaller than its header");
    }
}
