//! Codec configuration records, the same bytes in MP4 boxes and Matroska `CodecPrivate`:
//! profile, pixel format and bit depth as ffprobe names them; and colour code points.

use super::{Bytes, CannotVouch, cannot};
use crate::probe::{Color, Stream};

/// What a configuration record says about a video stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoConfig {
    pub profile: String,
    pub pix_fmt: String,
    pub bit_depth: u8,
}

impl VideoConfig {
    pub(crate) fn apply(self, stream: &mut Stream) {
        stream.profile = Some(self.profile.into());
        stream.pix_fmt = Some(self.pix_fmt.into());
        stream.bit_depth = Some(self.bit_depth);
    }
}

/// ffmpeg's pixel format for a chroma layout (0 mono, 1 4:2:0, 2 4:2:2, 3 4:4:4) and depth.
fn pix_fmt(chroma: u8, depth: u8) -> Result<String, CannotVouch> {
    let base = match chroma {
        0 => "gray",
        1 => "yuv420p",
        2 => "yuv422p",
        3 => "yuv444p",
        _ => return cannot(format!("chroma format {chroma}")),
    };
    Ok(match depth {
        8 => base.to_string(),
        10 | 12 if chroma == 0 => format!("gray{depth}le"),
        10 | 12 => format!("{base}{depth}le"),
        _ => return cannot(format!("bit depth {depth}")),
    })
}

/// `HEVCDecoderConfigurationRecord` (`hvcC`).
pub(crate) fn hevc(record: &[u8]) -> Result<VideoConfig, CannotVouch> {
    let mut b = Bytes::new(record);
    if b.u8()? != 1 {
        return cannot("hvcC of an unknown version");
    }
    let profile_idc = b.u8()? & 0x1f;
    b.skip(14)?;
    let chroma = b.u8()? & 0x03;
    let depth = (b.u8()? & 0x07) + 8;
    let profile = match profile_idc {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => "Rext",
        other => return cannot(format!("HEVC profile {other}")),
    };
    Ok(VideoConfig {
        profile: profile.into(),
        pix_fmt: pix_fmt(chroma, depth)?,
        bit_depth: depth,
    })
}

/// `AVCDecoderConfigurationRecord` (`avcC`), reading the first sequence parameter set for
/// the chroma format and bit depth of the high profiles.
pub(crate) fn avc(record: &[u8]) -> Result<VideoConfig, CannotVouch> {
    let mut b = Bytes::new(record);
    if b.u8()? != 1 {
        return cannot("avcC of an unknown version");
    }
    b.skip(4)?;
    if b.u8()? & 0x1f == 0 {
        return cannot("avcC without a sequence parameter set");
    }
    let sps_len = b.u16()? as usize;
    let sps = unescape(b.take(sps_len)?);
    let mut s = Bits::new(&sps);
    if s.bits(8)? & 0x1f != 7 {
        return cannot("avcC whose first parameter set is not an SPS");
    }
    let profile_idc = s.bits(8)?;
    let constraints = s.bits(8)?;
    s.bits(8)?; // level
    s.golomb()?; // seq_parameter_set_id
    let (mut chroma, mut depth) = (1, 8);
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = s.golomb()?;
        if chroma == 3 {
            s.bits(1)?;
        }
        depth = s.golomb()? + 8;
    }
    let set1 = constraints & 0x40 != 0;
    let set3 = constraints & 0x10 != 0;
    let profile = match profile_idc {
        66 if set1 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 if set3 => "High 10 Intra",
        110 => "High 10",
        122 if set3 => "High 4:2:2 Intra",
        122 => "High 4:2:2",
        244 if set3 => "High 4:4:4 Intra",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4",
        other => return cannot(format!("H.264 profile {other}")),
    };
    let (chroma, depth) = (
        u8::try_from(chroma).or_else(|_| cannot("H.264 chroma format"))?,
        u8::try_from(depth).or_else(|_| cannot("H.264 bit depth"))?,
    );
    Ok(VideoConfig {
        profile: profile.into(),
        pix_fmt: pix_fmt(chroma, depth)?,
        bit_depth: depth,
    })
}

/// VP9 in MP4: the `vpcC` box's body after its version and flags.
pub(crate) fn vp9_vpcc(body: &[u8]) -> Result<VideoConfig, CannotVouch> {
    let mut b = Bytes::new(body);
    let profile = b.u8()?;
    b.u8()?; // level
    let packed = b.u8()?;
    let depth = packed >> 4;
    let chroma = match (packed >> 1) & 0x07 {
        0 | 1 => 1,
        2 => 2,
        3 => 3,
        other => return cannot(format!("VP9 chroma subsampling {other}")),
    };
    vp9(profile, depth, chroma)
}

/// VP9 in Matroska: the codec feature metadata of `CodecPrivate`, (id, length, value) triples.
pub(crate) fn vp9_features(private: &[u8]) -> Result<VideoConfig, CannotVouch> {
    let (mut profile, mut depth, mut chroma) = (None, None, None);
    let mut b = Bytes::new(private);
    while b.remaining() > 0 {
        let id = b.u8()?;
        let len = b.u8()? as usize;
        let value = b.take(len)?;
        let value = match value {
            [v] => *v,
            _ => return cannot("VP9 feature of an unexpected length"),
        };
        match id {
            1 => profile = Some(value),
            3 => depth = Some(value),
            4 => {
                chroma = Some(match value {
                    0 | 1 => 1,
                    2 => 2,
                    3 => 3,
                    other => return cannot(format!("VP9 chroma subsampling {other}")),
                })
            }
            _ => {}
        }
    }
    match (profile, depth, chroma) {
        (Some(p), Some(d), Some(c)) => vp9(p, d, c),
        _ => cannot("VP9 without its profile, bit depth and chroma in CodecPrivate"),
    }
}

fn vp9(profile: u8, depth: u8, chroma: u8) -> Result<VideoConfig, CannotVouch> {
    if profile > 3 {
        return cannot(format!("VP9 profile {profile}"));
    }
    Ok(VideoConfig {
        profile: format!("Profile {profile}"),
        pix_fmt: pix_fmt(chroma, depth)?,
        bit_depth: depth,
    })
}

/// `AV1CodecConfigurationRecord` (`av1C`).
pub(crate) fn av1(record: &[u8]) -> Result<VideoConfig, CannotVouch> {
    let mut b = Bytes::new(record);
    if b.u8()? != 0x81 {
        return cannot("av1C of an unknown version");
    }
    let profile = b.u8()? >> 5;
    let flags = b.u8()?;
    let high = flags & 0x40 != 0;
    let twelve = flags & 0x20 != 0;
    let mono = flags & 0x10 != 0;
    let (sub_x, sub_y) = (flags & 0x08 != 0, flags & 0x04 != 0);
    let depth = match (high, twelve) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    };
    let chroma = match (mono, sub_x, sub_y) {
        (true, _, _) => 0,
        (false, true, true) => 1,
        (false, true, false) => 2,
        (false, false, false) => 3,
        (false, false, true) => return cannot("AV1 chroma subsampling"),
    };
    let profile = match profile {
        0 => "Main",
        1 => "High",
        2 => "Professional",
        other => return cannot(format!("AV1 profile {other}")),
    };
    Ok(VideoConfig {
        profile: profile.into(),
        pix_fmt: pix_fmt(chroma, depth)?,
        bit_depth: depth,
    })
}

/// Colour code points (ITU-T H.273, shared by MP4 `nclx` and Matroska `Colour`) by
/// ffmpeg's names; unspecified and reserved values are left out, as the prober leaves out
/// `unknown`.
pub(crate) fn color(primaries: u64, transfer: u64, matrix: u64, range: Option<&str>) -> Color {
    let primaries = match primaries {
        1 => Some("bt709"),
        4 => Some("bt470m"),
        5 => Some("bt470bg"),
        6 => Some("smpte170m"),
        7 => Some("smpte240m"),
        8 => Some("film"),
        9 => Some("bt2020"),
        10 => Some("smpte428"),
        11 => Some("smpte431"),
        12 => Some("smpte432"),
        22 => Some("jedec-p22"),
        _ => None,
    };
    let transfer = match transfer {
        1 => Some("bt709"),
        4 => Some("gamma22"),
        5 => Some("gamma28"),
        6 => Some("smpte170m"),
        7 => Some("smpte240m"),
        8 => Some("linear"),
        9 => Some("log100"),
        10 => Some("log316"),
        11 => Some("iec61966-2-4"),
        12 => Some("bt1361e"),
        13 => Some("iec61966-2-1"),
        14 => Some("bt2020-10"),
        15 => Some("bt2020-12"),
        16 => Some("smpte2084"),
        17 => Some("smpte428"),
        18 => Some("arib-std-b67"),
        _ => None,
    };
    let space = match matrix {
        0 => Some("gbr"),
        1 => Some("bt709"),
        4 => Some("fcc"),
        5 => Some("bt470bg"),
        6 => Some("smpte170m"),
        7 => Some("smpte240m"),
        8 => Some("ycgco"),
        9 => Some("bt2020nc"),
        10 => Some("bt2020c"),
        11 => Some("smpte2085"),
        12 => Some("chroma-derived-nc"),
        13 => Some("chroma-derived-c"),
        14 => Some("ictcp"),
        _ => None,
    };
    Color {
        primaries: primaries.map(Into::into),
        transfer: transfer.map(Into::into),
        space: space.map(Into::into),
        range: range.map(Into::into),
    }
}

/// A NAL unit's payload without its emulation-prevention bytes (`00 00 03`).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// A most-significant-bit-first reader with Exp-Golomb codes.
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, bit: 0 }
    }

    fn bits(&mut self, n: u32) -> Result<u32, CannotVouch> {
        let mut value = 0;
        for _ in 0..n {
            let Some(byte) = self.data.get(self.bit / 8) else {
                return cannot("a parameter set ends early");
            };
            value = (value << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        Ok(value)
    }

    fn golomb(&mut self) -> Result<u32, CannotVouch> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return cannot("an Exp-Golomb code too long");
            }
        }
        Ok((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), [0, 0, 1, 0, 0]);
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut b = Bits::new(&data);
        let codes: Vec<u32> = (0..4).map(|_| b.golomb().unwrap()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
        assert!(Bits::new(&[0, 0]).golomb().is_err());
    }

    #[test]
    fn pixel_formats_follow_ffmpeg_names() {
        assert_eq!(pix_fmt(1, 8).unwrap(), "yuv420p");
        assert_eq!(pix_fmt(1, 10).unwrap(), "yuv420p10le");
        assert_eq!(pix_fmt(3, 12).unwrap(), "yuv444p12le");
        assert!(pix_fmt(1, 9).is_err());
    }

    #[test]
    fn av1_record_gives_depth_and_profile() {
        let c = av1(&[0x81, 0x08, 0x4c, 0]).unwrap();
        assert_eq!((c.profile.as_str(), c.bit_depth), ("Main", 10));
        assert_eq!(c.pix_fmt, "yuv420p10le");
        assert!(av1(&[0x80, 0, 0]).is_err());
    }
}
