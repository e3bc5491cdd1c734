//! Matroska and WebM: the EBML header, then the segment's `Info`, `Tracks` and `Attachments`,
//! found by walking the segment up to its first cluster and, past it, through `SeekHead`.
//!
//! A small EBML reader of our own rather than a crate: the survey needs five elements out
//! of hundreds, the crates on offer parse whole files (clusters too) or trust sizes, and
//! the bound on bytes read is simplest to hold where every read is ours.

use std::io::{Read, Seek};

use super::codec::{self, VideoConfig};
use super::{Bytes, CannotVouch, Source, cannot};
use crate::probe::{MediaInfo, Stream, StreamKind};

const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const LANGUAGE: u32 = 0x22_B59C;
const CONTENT_ENCODINGS: u32 = 0x6D80;
const BLOCK_ADDITION_MAPPING: u32 = 0x41E4;
const BLOCK_ADD_ID_TYPE: u32 = 0x41E7;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const COLOUR: u32 = 0x55B0;
const MATRIX: u32 = 0x55B1;
const RANGE: u32 = 0x55B9;
const TRANSFER: u32 = 0x55BA;
const PRIMARIES: u32 = 0x55BB;
const ATTACHMENTS: u32 = 0x1941_A469;
const ATTACHED_FILE: u32 = 0x61A7;
const FILE_NAME: u32 = 0x466E;
const FILE_MIME_TYPE: u32 = 0x4660;
const FILE_DATA: u32 = 0x465C;
const CLUSTER: u32 = 0x1F43_B675;

/// The most elements walked at one level through the file.
const MAX_ELEMENTS: usize = 512;
/// The largest `SeekHead`, `Info` or `Tracks` read whole.
const MAX_MASTER_BYTES: u64 = 1 << 20;

/// An element found in the file: its ID, where its data starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u32,
    data: u64,
    /// `None`: unknown size (allowed for the segment and clusters only).
    size: Option<u64>,
}

pub(super) fn read<R: Read + Seek>(source: &mut Source<R>) -> Result<MediaInfo, CannotVouch> {
    let ebml = element_at(source, 0)?;
    let ebml_size = known(ebml)?;
    if ebml.id != EBML || ebml_size > 4096 {
        return cannot("an EBML header of unusual size");
    }
    let header = source.read_at(ebml.data, ebml_size)?;
    let doc_type = elements(&header)?
        .into_iter()
        .find(|(id, _)| *id == DOC_TYPE)
        .map(|(_, v)| text(v));
    if !matches!(doc_type.as_deref(), Some("matroska" | "webm")) {
        return cannot("an EBML file that is not Matroska or WebM");
    }
    let segment = element_at(source, ebml.data + ebml_size)?;
    if segment.id != SEGMENT {
        return cannot("no Matroska segment after the EBML header");
    }
    let segment_end = match segment.size {
        Some(size) => segment
            .data
            .checked_add(size)
            .filter(|&end| end <= source.len())
            .ok_or_else(|| CannotVouch("a segment longer than the file".into()))?,
        None => source.len(),
    };

    let (mut info, mut tracks, mut attachments) = (None, None, None);
    let mut seeks: Vec<(u32, u64)> = Vec::new();
    let mut offset = segment.data;
    for _ in 0..MAX_ELEMENTS {
        if offset >= segment_end {
            break;
        }
        let el = element_at(source, offset)?;
        if el.id == CLUSTER {
            break;
        }
        let size = known(el)?;
        match el.id {
            SEEK_HEAD => seeks.extend(seek_head(&read_master(source, el)?)?),
            INFO => info = Some(read_master(source, el)?),
            TRACKS => tracks = Some(read_master(source, el)?),
            ATTACHMENTS => attachments = Some(read_attachments(source, el)?),
            _ => {}
        }
        offset = el.data + size;
    }
    // Past the first cluster, only what SeekHead points to.
    for (id, position) in seeks {
        let wanted = match id {
            INFO => info.is_none(),
            TRACKS => tracks.is_none(),
            ATTACHMENTS => attachments.is_none(),
            _ => false,
        };
        if !wanted {
            continue;
        }
        let at = segment
            .data
            .checked_add(position)
            .ok_or_else(|| CannotVouch("a SeekHead position past the end".into()))?;
        let el = element_at(source, at)?;
        if el.id != id {
            return cannot("SeekHead points at the wrong element");
        }
        match id {
            INFO => info = Some(read_master(source, el)?),
            TRACKS => tracks = Some(read_master(source, el)?),
            _ => attachments = Some(read_attachments(source, el)?),
        }
    }

    let (Some(info), Some(tracks)) = (info, tracks) else {
        return cannot("no Info or Tracks before the first cluster or in SeekHead");
    };
    let mut streams = Vec::new();
    for (id, entry) in elements(&tracks)? {
        if id == TRACK_ENTRY {
            let mut stream = track(entry)?;
            stream.index = streams.len() as u32;
            streams.push(stream);
        }
    }
    for codec in attachments.unwrap_or_default() {
        let kind = match codec {
            "mjpeg" | "png" | "gif" => StreamKind::Video,
            _ => StreamKind::Attachment,
        };
        let mut stream = Stream::new(streams.len() as u32, kind, codec);
        stream.attached_pic = kind == StreamKind::Video;
        streams.push(stream);
    }
    Ok(MediaInfo {
        container: "matroska,webm".into(),
        duration_secs: Some(duration(&info)?),
        bit_rate: None,
        streams,
        // Chapters are not read: survey facts decide only what to probe, never what to encode.
        chapters: 0,
    })
}

fn known(el: Element) -> Result<u64, CannotVouch> {
    el.size
        .ok_or_else(|| CannotVouch(format!("element {:#x} of unknown size", el.id)))
}

fn read_master<R: Read + Seek>(
    source: &mut Source<R>,
    el: Element,
) -> Result<Vec<u8>, CannotVouch> {
    let size = known(el)?;
    if size > MAX_MASTER_BYTES {
        return cannot(format!("element {:#x} of {size} bytes", el.id));
    }
    source.read_at(el.data, size)
}

/// The element header at `offset` in the file.
fn element_at<R: Read + Seek>(source: &mut Source<R>, offset: u64) -> Result<Element, CannotVouch> {
    let available = source.len().saturating_sub(offset).min(12);
    let head = source.read_at(offset, available)?;
    let mut b = Bytes::new(&head);
    let id = vint_id(&mut b)?;
    let size = vint_size(&mut b)?;
    let data = offset + (head.len() - b.remaining()) as u64;
    if let Some(size) = size
        && data.checked_add(size).is_none_or(|end| end > source.len())
    {
        return cannot(format!(
            "element {id:#x} of {size} bytes at {offset} passes the end of the file"
        ));
    }
    Ok(Element { id, data, size })
}

/// The length of a variable-size integer from its first byte.
fn vint_len(first: u8) -> Result<usize, CannotVouch> {
    match first.leading_zeros() {
        n @ 0..=7 => Ok(n as usize + 1),
        _ => cannot("an invalid EBML number"),
    }
}

/// An element ID, its marker bits kept, as the specification writes IDs.
fn vint_id(b: &mut Bytes<'_>) -> Result<u32, CannotVouch> {
    let first = b.u8()?;
    let len = vint_len(first)?;
    if len > 4 {
        return cannot("an EBML ID longer than 4 bytes");
    }
    let mut id = u32::from(first);
    for _ in 1..len {
        id = (id << 8) | u32::from(b.u8()?);
    }
    Ok(id)
}

/// An element size; `None` where all its value bits are set (unknown size).
fn vint_size(b: &mut Bytes<'_>) -> Result<Option<u64>, CannotVouch> {
    let first = b.u8()?;
    let len = vint_len(first)?;
    let mut value = u64::from(first) & (0xff >> len);
    for _ in 1..len {
        value = (value << 8) | u64::from(b.u8()?);
    }
    let all_ones = (1u64 << (7 * len)) - 1;
    Ok((value != all_ones).then_some(value))
}

/// The children of a master element held in memory, each size checked against its parent.
fn elements(data: &[u8]) -> Result<Vec<(u32, &[u8])>, CannotVouch> {
    let mut out = Vec::new();
    let mut b = Bytes::new(data);
    while b.remaining() > 0 {
        if out.len() >= 4096 {
            return cannot("too many elements");
        }
        let id = vint_id(&mut b)?;
        let Some(size) = vint_size(&mut b)? else {
            return cannot(format!("element {id:#x} of unknown size in a header"));
        };
        let size = usize::try_from(size).or_else(|_| cannot("an element too large"))?;
        out.push((id, b.take(size)?));
    }
    Ok(out)
}

fn uint(data: &[u8]) -> Result<u64, CannotVouch> {
    if data.len() > 8 {
        return cannot("an unsigned integer longer than 8 bytes");
    }
    Ok(data.iter().fold(0, |v, &b| (v << 8) | u64::from(b)))
}

fn float(data: &[u8]) -> Result<f64, CannotVouch> {
    match data.len() {
        4 => Ok(f32::from_be_bytes([data[0], data[1], data[2], data[3]]).into()),
        8 => Bytes::new(data).u64().map(f64::from_bits),
        _ => cannot("a float of unusual size"),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_string()
}

fn seek_head(data: &[u8]) -> Result<Vec<(u32, u64)>, CannotVouch> {
    let mut out = Vec::new();
    for (id, seek) in elements(data)? {
        if id != SEEK {
            continue;
        }
        let (mut target, mut position) = (None, None);
        for (id, value) in elements(seek)? {
            match id {
                SEEK_ID => target = Some(vint_id(&mut Bytes::new(value))?),
                SEEK_POSITION => position = Some(uint(value)?),
                _ => {}
            }
        }
        if let (Some(target), Some(position)) = (target, position) {
            out.push((target, position));
        }
    }
    Ok(out)
}

fn duration(info: &[u8]) -> Result<f64, CannotVouch> {
    let (mut scale, mut duration) = (1_000_000, None);
    for (id, value) in elements(info)? {
        match id {
            TIMESTAMP_SCALE => scale = uint(value)?,
            DURATION => duration = Some(float(value)?),
            _ => {}
        }
    }
    match duration {
        Some(d) if d.is_finite() && d > 0.0 && scale > 0 => Ok(d * scale as f64 / 1e9),
        _ => cannot("no duration in Info"),
    }
}

/// One `TrackEntry` as a stream.
fn track(entry: &[u8]) -> Result<Stream, CannotVouch> {
    let (mut kind, mut codec_id, mut private, mut video) = (None, None, None, None);
    let mut language = Some("eng".to_string());
    let mut dolby_vision = false;
    for (id, value) in elements(entry)? {
        match id {
            TRACK_TYPE => kind = Some(uint(value)?),
            CODEC_ID => codec_id = Some(text(value)),
            CODEC_PRIVATE => private = Some(value),
            LANGUAGE => language = Some(text(value)).filter(|l| l != "und"),
            VIDEO => video = Some(value),
            CONTENT_ENCODINGS => return cannot("a track with compressed or encrypted data"),
            BLOCK_ADDITION_MAPPING => {
                for (id, value) in elements(value)? {
                    if id == BLOCK_ADD_ID_TYPE {
                        match &uint(value)?.to_be_bytes()[4..] {
                            b"dvcC" | b"dvvC" => dolby_vision = true,
                            _ => return cannot("a block addition of an unknown type"),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let codec_id = codec_id.unwrap_or_default();
    let kind = match kind {
        Some(1) => StreamKind::Video,
        Some(2) => StreamKind::Audio,
        Some(17) => StreamKind::Subtitle,
        other => return cannot(format!("a track of type {other:?}")),
    };
    let (codec, config) = codec_of(kind, &codec_id, private)?;
    let mut stream = Stream::new(0, kind, codec);
    if let Some(config) = config {
        config.apply(&mut stream);
    }
    stream.language = language.map(Into::into);
    stream.dolby_vision = dolby_vision;
    if let Some(video) = video {
        for (id, value) in elements(video)? {
            match id {
                PIXEL_WIDTH => stream.width = u32::try_from(uint(value)?).ok(),
                PIXEL_HEIGHT => stream.height = u32::try_from(uint(value)?).ok(),
                COLOUR => stream.color = colour(value)?,
                _ => {}
            }
        }
    }
    Ok(stream)
}

fn codec_of(
    kind: StreamKind,
    codec_id: &str,
    private: Option<&[u8]>,
) -> Result<(&'static str, Option<VideoConfig>), CannotVouch> {
    let needs =
        |what: &str| private.ok_or_else(|| CannotVouch(format!("{what} without its CodecPrivate")));
    let found = match (kind, codec_id) {
        (StreamKind::Video, "V_MPEG4/ISO/AVC") => ("h264", Some(codec::avc(needs("H.264")?)?)),
        (StreamKind::Video, "V_MPEGH/ISO/HEVC") => ("hevc", Some(codec::hevc(needs("HEVC")?)?)),
        (StreamKind::Video, "V_AV1") => ("av1", Some(codec::av1(needs("AV1")?)?)),
        // Older muxers write VP9 without its feature metadata: the codec alone is known.
        (StreamKind::Video, "V_VP9") => ("vp9", private.map(codec::vp9_features).transpose()?),
        (StreamKind::Video, "V_VP8") => ("vp8", None),
        (StreamKind::Video, "V_MPEG2") => ("mpeg2video", None),
        (StreamKind::Video, "V_MPEG1") => ("mpeg1video", None),
        (StreamKind::Video, "V_MPEG4/ISO/ASP" | "V_MPEG4/ISO/SP" | "V_MPEG4/ISO/AP") => {
            ("mpeg4", None)
        }
        (StreamKind::Video, "V_THEORA") => ("theora", None),
        (StreamKind::Audio, id) if id.starts_with("A_AAC") => ("aac", None),
        (StreamKind::Audio, "A_AC3") => ("ac3", None),
        (StreamKind::Audio, "A_EAC3") => ("eac3", None),
        (StreamKind::Audio, "A_DTS") => ("dts", None),
        (StreamKind::Audio, "A_TRUEHD") => ("truehd", None),
        (StreamKind::Audio, "A_OPUS") => ("opus", None),
        (StreamKind::Audio, "A_VORBIS") => ("vorbis", None),
        (StreamKind::Audio, "A_FLAC") => ("flac", None),
        (StreamKind::Audio, "A_MPEG/L3") => ("mp3", None),
        (StreamKind::Audio, "A_MPEG/L2") => ("mp2", None),
        (StreamKind::Subtitle, "S_TEXT/UTF8") => ("subrip", None),
        (StreamKind::Subtitle, "S_TEXT/ASS" | "S_TEXT/SSA" | "S_ASS" | "S_SSA") => ("ass", None),
        (StreamKind::Subtitle, "S_TEXT/WEBVTT" | "D_WEBVTT/SUBTITLES") => ("webvtt", None),
        (StreamKind::Subtitle, "S_HDMV/PGS") => ("hdmv_pgs_subtitle", None),
        (StreamKind::Subtitle, "S_VOBSUB") => ("dvd_subtitle", None),
        (StreamKind::Subtitle, "S_DVBSUB") => ("dvb_subtitle", None),
        (_, other) => return cannot(format!("codec {other:?}")),
    };
    Ok(found)
}

fn colour(data: &[u8]) -> Result<Option<crate::probe::Color>, CannotVouch> {
    let (mut matrix, mut transfer, mut primaries, mut range) = (2, 2, 2, None);
    for (id, value) in elements(data)? {
        match id {
            MATRIX => matrix = uint(value)?,
            TRANSFER => transfer = uint(value)?,
            PRIMARIES => primaries = uint(value)?,
            RANGE => {
                range = match uint(value)? {
                    1 => Some("tv"),
                    2 => Some("pc"),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    let color = codec::color(primaries, transfer, matrix, range);
    Ok(Some(color).filter(|c| c != &Default::default()))
}

/// The codec of each attachment, walking element headers only: an attachment's data (a
/// cover image, a font) is never read.
fn read_attachments<R: Read + Seek>(
    source: &mut Source<R>,
    el: Element,
) -> Result<Vec<&'static str>, CannotVouch> {
    let end = el.data + known(el)?;
    let mut codecs = Vec::new();
    let mut offset = el.data;
    while offset < end {
        if codecs.len() >= MAX_ELEMENTS {
            return cannot("too many attachments");
        }
        let file = element_at(source, offset)?;
        let file_end = file.data + known(file)?;
        if file_end > end {
            return cannot("an attachment passes the end of Attachments");
        }
        if file.id == ATTACHED_FILE {
            codecs.push(attached_file(source, file.data, file_end)?);
        }
        offset = file_end;
    }
    Ok(codecs)
}

fn attached_file<R: Read + Seek>(
    source: &mut Source<R>,
    start: u64,
    end: u64,
) -> Result<&'static str, CannotVouch> {
    let (mut name, mut mime, mut data) = (false, None, false);
    let mut offset = start;
    for _ in 0..MAX_ELEMENTS {
        if offset >= end {
            break;
        }
        let el = element_at(source, offset)?;
        let size = known(el)?;
        if el.data + size > end {
            return cannot("an attachment element passes the end of its file");
        }
        match el.id {
            FILE_NAME => name = size > 0,
            FILE_DATA => data = size > 0,
            FILE_MIME_TYPE if size <= 256 => mime = Some(text(&source.read_at(el.data, size)?)),
            _ => {}
        }
        offset = el.data + size;
    }
    if !(name && data) {
        return cannot("an attachment without a name or data");
    }
    match mime.as_deref() {
        Some("image/jpeg") => Ok("mjpeg"),
        Some("image/png") => Ok("png"),
        Some("image/gif") => Ok("gif"),
        Some("application/x-truetype-font") => Ok("ttf"),
        Some("application/vnd.ms-opentype") => Ok("otf"),
        other => cannot(format!("an attachment of type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebml_numbers() {
        let mut b = Bytes::new(&[0x1A, 0x45, 0xDF, 0xA3, 0x81, 0xFF, 0x42, 0x86]);
        assert_eq!(vint_id(&mut b).unwrap(), EBML);
        assert_eq!(vint_size(&mut b).unwrap(), Some(1));
        assert_eq!(vint_size(&mut b).unwrap(), None, "unknown size");
        assert_eq!(vint_size(&mut b).unwrap(), Some(0x286));
        assert!(vint_size(&mut Bytes::new(&[0])).is_err());
    }

    #[test]
    fn a_child_longer_than_its_parent_is_refused() {
        // A TrackType element claiming 16 bytes inside 3.
        assert!(elements(&[0x83, 0x90, 1]).is_err());
        assert!(
            elements(&[0x83, 0xFF, 1]).is_err(),
            "unknown size in a header"
        );
    }
}
