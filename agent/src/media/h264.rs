//! H.264 bitstream helpers: Annex B and AVCC framing, the AVCDecoderConfigurationRecord, SPS
//! parsing for the picture size, and an access-unit assembler for Annex B streams.
//!
//! Matroska (and KVS) carries H.264 as AVCC: each frame is its NAL units with a 4-byte
//! big-endian length in front, and the SPS/PPS travel once, in the track's CodecPrivate
//! (an AVCDecoderConfigurationRecord, ISO/IEC 14496-15 5.3.3.1). Cameras and `.h264` files give
//! Annex B instead: NAL units separated by `00 00 01` / `00 00 00 01` start codes, parameter
//! sets repeated in band.
//!
//! Parameter sets in frames: [`frame_payload`] drops access unit delimiters (framing is the
//! Matroska block's job) and SPS/PPS byte-identical to the ones in CodecPrivate, and keeps
//! everything else (SEI, and any SPS/PPS that differ). For `V_MPEG4/ISO/AVC` the CodecPrivate
//! is authoritative, and KVS stores the PutMedia MKV header (with it) alongside every fragment,
//! so each fragment stays decodable on its own without in-band copies; ffmpeg decodes such
//! files with `-err_detect explode` (the media tests check it) and the KVS HLS/MP4 packagers
//! build their init segments from CodecPrivate. Dropping them also makes RTSP and file frames
//! identical in shape. (ffmpeg and mkvmerge keep in-band copies when remuxing, which is just
//! as valid; the reader accepts both.) A *different* SPS/PPS means the codec parameters
//! changed: the recorder must start a new segment with a new CodecPrivate (see
//! [`AvcConfig::matches`]), and keeping such NALs in band lets a decoder cope if it did not.
//!
//! Everything here works on byte slices and returns [`H264Error`] on malformed input.

use thiserror::Error;

use super::mkv::{TrackInfo, VideoCodec};

/// NAL unit types (ITU-T H.264 Table 7-1) the helpers care about.
pub mod nal {
    pub const SLICE: u8 = 1;
    pub const SLICE_DPA: u8 = 2;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
    pub const END_OF_SEQUENCE: u8 = 10;
    pub const END_OF_STREAM: u8 = 11;
    pub const FILLER: u8 = 12;
    pub const SPS_EXT: u8 = 13;
    pub const PREFIX: u8 = 14;
    pub const SUBSET_SPS: u8 = 15;
}

/// Why H.264 data could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum H264Error {
    #[error("bitstream ends inside a syntax element")]
    Truncated,
    #[error("exp-Golomb code longer than 32 bits")]
    ExpGolombTooLong,
    #[error("empty NAL unit")]
    EmptyNal,
    #[error("zero-length NAL unit at offset {0} of an AVCC frame")]
    ZeroLengthNal(usize),
    #[error("AVCC NAL at offset {offset} claims {len} bytes, {available} left")]
    AvccTruncated {
        offset: usize,
        len: usize,
        available: usize,
    },
    #[error("NAL unit type {found} is not {expected}")]
    WrongNalType { expected: &'static str, found: u8 },
    #[error("forbidden_zero_bit is set")]
    ForbiddenBit,
    #[error("{what} = {value} is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("malformed AVCDecoderConfigurationRecord: {0}")]
    BadConfigRecord(&'static str),
    #[error("no {0} found")]
    Missing(&'static str),
}

/// The `nal_unit_type` of a NAL unit (low 5 bits of its first byte).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1F)
}

/// Whether the NAL unit is a coded slice (the picture data itself).
pub fn is_vcl(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

/// Split an Annex B byte stream into NAL units (without start codes). Both 3- and 4-byte start
/// codes are accepted; bytes before the first start code, trailing zero bytes and empty NAL
/// units are dropped.
pub fn split_annex_b(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|i| i + 3);
    std::iter::from_fn(move || {
        loop {
            let start = pos?;
            let next = find_start_code(data, start);
            let end = next.unwrap_or(data.len());
            pos = next.map(|i| i + 3);
            let nal = trim_trailing_zeros(&data[start..end]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    })
}

fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| i + from)
}

fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &nal[..end]
}

/// Incremental Annex B splitter for streams read in chunks: a NAL unit is returned once the
/// start code after it has been seen, and the last one by [`Self::finish`].
#[derive(Debug, Default)]
pub struct AnnexBSplitter {
    buf: Vec<u8>,
    /// Where the current NAL unit's payload starts in `buf`, once a start code was seen.
    nal_start: Option<usize>,
    /// Where to resume looking for a start code.
    scan_from: usize,
}

impl AnnexBSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the NAL units completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(i) = find_start_code(&self.buf, self.scan_from) {
            if let Some(start) = self.nal_start {
                let nal = trim_trailing_zeros(&self.buf[start..i]);
                if !nal.is_empty() {
                    out.push(nal.to_vec());
                }
            }
            self.nal_start = Some(i + 3);
            self.scan_from = i + 3;
        }
        // Keep only the unfinished NAL unit (or the last 2 bytes, which may begin a start code).
        let keep_from = self
            .nal_start
            .unwrap_or_else(|| self.buf.len().saturating_sub(2));
        self.buf.drain(..keep_from);
        if self.nal_start.is_some() {
            self.nal_start = Some(0);
        }
        // Start codes ending before the last 2 bytes have all been found.
        self.scan_from = self.buf.len().saturating_sub(2);
        out
    }

    /// The last NAL unit, at the end of the stream.
    pub fn finish(self) -> Option<Vec<u8>> {
        let start = self.nal_start?;
        let nal = trim_trailing_zeros(&self.buf[start..]);
        (!nal.is_empty()).then(|| nal.to_vec())
    }
}

/// Append NAL units as AVCC (4-byte big-endian length + NAL).
pub fn nals_to_avcc<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Convert an Annex B byte stream (one frame or more) to AVCC.
pub fn annex_b_to_avcc(data: &[u8]) -> Vec<u8> {
    nals_to_avcc(split_annex_b(data))
}

/// The NAL units of an AVCC frame with 4-byte lengths; zero-length or overrunning entries are
/// errors.
pub fn avcc_nals(data: &[u8]) -> Result<Vec<&[u8]>, H264Error> {
    let mut nals = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let len_bytes = data
            .get(offset..offset + 4)
            .ok_or(H264Error::AvccTruncated {
                offset,
                len: 4,
                available: data.len() - offset,
            })?;
        let len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len == 0 {
            return Err(H264Error::ZeroLengthNal(offset));
        }
        let available = data.len() - offset - 4;
        if len > available {
            return Err(H264Error::AvccTruncated {
                offset,
                len,
                available,
            });
        }
        nals.push(&data[offset + 4..offset + 4 + len]);
        offset += 4 + len;
    }
    Ok(nals)
}

/// Convert an AVCC frame to Annex B with 4-byte start codes.
pub fn avcc_to_annex_b(data: &[u8]) -> Result<Vec<u8>, H264Error> {
    let mut out = Vec::with_capacity(data.len());
    for nal in avcc_nals(data)? {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    Ok(out)
}

/// A NAL unit's payload with emulation-prevention bytes (`00 00 03`) removed.
pub fn rbsp(nal_payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal_payload.len());
    let mut zeros = 0;
    for &b in nal_payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader with exp-Golomb codes, over an RBSP.
pub struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, bit: 0 }
    }

    pub fn read_bit(&mut self) -> Result<bool, H264Error> {
        let byte = self.data.get(self.bit / 8).ok_or(H264Error::Truncated)?;
        let value = byte >> (7 - self.bit % 8) & 1 == 1;
        self.bit += 1;
        Ok(value)
    }

    /// Read up to 32 bits.
    pub fn read_bits(&mut self, n: u32) -> Result<u32, H264Error> {
        debug_assert!(n <= 32);
        let mut value = 0u32;
        for _ in 0..n.min(32) {
            value = value << 1 | u32::from(self.read_bit()?);
        }
        Ok(value)
    }

    /// ue(v).
    pub fn read_ue(&mut self) -> Result<u32, H264Error> {
        let mut zeros = 0;
        while !self.read_bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(H264Error::ExpGolombTooLong);
            }
        }
        let rest = self.read_bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// se(v).
    pub fn read_se(&mut self) -> Result<i32, H264Error> {
        let k = i64::from(self.read_ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(value as i32)
    }
}

/// What an SPS says that the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// constraint_set0..5 flags and reserved bits, as in the record's profile_compatibility.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub seq_parameter_set_id: u32,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub frame_mbs_only: bool,
    /// Displayed size: macroblocks minus the frame cropping.
    pub width: u32,
    pub height: u32,
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists (7.3.2.1.1).
fn has_high_profile_fields(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn bounded(what: &'static str, value: u32, max: u32) -> Result<u32, H264Error> {
    if value > max {
        return Err(H264Error::OutOfRange {
            what,
            value: value.into(),
        });
    }
    Ok(value)
}

fn skip_scaling_list(r: &mut BitReader, size: usize) -> Result<(), H264Error> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.read_se()?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange {
                    what: "delta_scale",
                    value: delta.unsigned_abs().into(),
                });
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

impl Sps {
    /// Parse an SPS NAL unit (header byte included, emulation prevention still in).
    pub fn parse(nal: &[u8]) -> Result<Sps, H264Error> {
        let header = *nal.first().ok_or(H264Error::EmptyNal)?;
        if header & 0x80 != 0 {
            return Err(H264Error::ForbiddenBit);
        }
        if header & 0x1F != nal::SPS {
            return Err(H264Error::WrongNalType {
                expected: "SPS",
                found: header & 0x1F,
            });
        }
        let data = rbsp(&nal[1..]);
        let mut r = BitReader::new(&data);
        let profile_idc = r.read_bits(8)? as u8;
        let constraint_flags = r.read_bits(8)? as u8;
        let level_idc = r.read_bits(8)? as u8;
        let seq_parameter_set_id = bounded("seq_parameter_set_id", r.read_ue()?, 31)?;
        let (mut chroma_format_idc, mut separate_colour_plane) = (1, false);
        let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
        if has_high_profile_fields(profile_idc) {
            chroma_format_idc = bounded("chroma_format_idc", r.read_ue()?, 3)?;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.read_bit()?;
            }
            bit_depth_luma = 8 + bounded("bit_depth_luma_minus8", r.read_ue()?, 6)?;
            bit_depth_chroma = 8 + bounded("bit_depth_chroma_minus8", r.read_ue()?, 6)?;
            let _qpprime_y_zero_transform_bypass = r.read_bit()?;
            if r.read_bit()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.read_bit()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let _log2_max_frame_num = bounded("log2_max_frame_num_minus4", r.read_ue()?, 12)?;
        match bounded("pic_order_cnt_type", r.read_ue()?, 2)? {
            0 => {
                bounded("log2_max_pic_order_cnt_lsb_minus4", r.read_ue()?, 12)?;
            }
            1 => {
                let _delta_pic_order_always_zero = r.read_bit()?;
                r.read_se()?;
                r.read_se()?;
                let cycle = bounded("num_ref_frames_in_pic_order_cnt_cycle", r.read_ue()?, 255)?;
                for _ in 0..cycle {
                    r.read_se()?;
                }
            }
            _ => {}
        }
        let _max_num_ref_frames = r.read_ue()?;
        let _gaps_in_frame_num_allowed = r.read_bit()?;
        let width_mbs = u64::from(bounded("pic_width_in_mbs_minus1", r.read_ue()?, 1 << 16)?) + 1;
        let height_map_units = u64::from(bounded(
            "pic_height_in_map_units_minus1",
            r.read_ue()?,
            1 << 16,
        )?) + 1;
        let frame_mbs_only = r.read_bit()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.read_bit()?;
        }
        let _direct_8x8_inference = r.read_bit()?;
        let mut crop = [0u64; 4];
        if r.read_bit()? {
            for c in &mut crop {
                *c = r.read_ue()?.into();
            }
        }
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (crop_x, crop_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let coded_width = width_mbs * 16;
        let coded_height = height_map_units * 16 * field_factor;
        let crop_w = crop_x * (crop[0] + crop[1]);
        let crop_h = crop_y * (crop[2] + crop[3]);
        if crop_w >= coded_width || crop_h >= coded_height {
            return Err(H264Error::OutOfRange {
                what: "frame cropping",
                value: crop_w.max(crop_h),
            });
        }
        Ok(Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            seq_parameter_set_id,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            frame_mbs_only,
            width: (coded_width - crop_w) as u32,
            height: (coded_height - crop_h) as u32,
        })
    }
}

/// AVCDecoderConfigurationRecord: the H.264 CodecPrivate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile_idc: u8,
    pub profile_compatibility: u8,
    pub level_idc: u8,
    /// Bytes in each NAL length prefix; we always write 4.
    pub nal_length_size: u8,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
    /// chroma_format, bit_depth_luma_minus8, bit_depth_chroma_minus8 for High profiles.
    pub high_profile_ext: Option<(u8, u8, u8)>,
}

impl AvcConfig {
    /// The record for one SPS and one PPS, with 4-byte NAL lengths.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<AvcConfig, H264Error> {
        let parsed = Sps::parse(sps)?;
        match nal_type(pps) {
            Some(nal::PPS) => {}
            Some(found) => {
                return Err(H264Error::WrongNalType {
                    expected: "PPS",
                    found,
                });
            }
            None => return Err(H264Error::EmptyNal),
        }
        let high_profile_ext = matches!(parsed.profile_idc, 100 | 110 | 122 | 144).then(|| {
            (
                parsed.chroma_format_idc as u8,
                (parsed.bit_depth_luma - 8) as u8,
                (parsed.bit_depth_chroma - 8) as u8,
            )
        });
        Ok(AvcConfig {
            profile_idc: parsed.profile_idc,
            profile_compatibility: parsed.constraint_flags,
            level_idc: parsed.level_idc,
            nal_length_size: 4,
            sps: vec![sps.to_vec()],
            pps: vec![pps.to_vec()],
            high_profile_ext,
        })
    }

    /// Serialize (ISO/IEC 14496-15 5.3.3.1.2).
    pub fn to_bytes(&self) -> Result<Vec<u8>, H264Error> {
        if self.sps.len() > 31 || self.pps.len() > 255 {
            return Err(H264Error::BadConfigRecord("too many parameter sets"));
        }
        if !(1..=4).contains(&self.nal_length_size) || self.nal_length_size == 3 {
            return Err(H264Error::BadConfigRecord(
                "lengthSizeMinusOne must be 0, 1 or 3",
            ));
        }
        let mut out = vec![
            1,
            self.profile_idc,
            self.profile_compatibility,
            self.level_idc,
            0xFC | (self.nal_length_size - 1),
            0xE0 | self.sps.len() as u8,
        ];
        for set in &self.sps {
            push_u16_prefixed(&mut out, set)?;
        }
        out.push(self.pps.len() as u8);
        for set in &self.pps {
            push_u16_prefixed(&mut out, set)?;
        }
        if let Some((chroma, luma, chroma_depth)) = self.high_profile_ext {
            out.push(0xFC | chroma);
            out.push(0xF8 | luma);
            out.push(0xF8 | chroma_depth);
            out.push(0); // numOfSequenceParameterSetExt
        }
        Ok(out)
    }

    /// Parse a record; the High-profile extension is optional, as many muxers omit it.
    pub fn parse(bytes: &[u8]) -> Result<AvcConfig, H264Error> {
        let bad = H264Error::BadConfigRecord;
        if bytes.len() < 7 {
            return Err(bad("shorter than 7 bytes"));
        }
        if bytes[0] != 1 {
            return Err(bad("configurationVersion is not 1"));
        }
        let nal_length_size = (bytes[4] & 3) + 1;
        if nal_length_size == 3 {
            return Err(bad("lengthSizeMinusOne is 2"));
        }
        let mut pos = 6;
        let sets = |count: usize, pos: &mut usize| -> Result<Vec<Vec<u8>>, H264Error> {
            (0..count)
                .map(|_| {
                    let len_bytes = bytes.get(*pos..*pos + 2).ok_or(bad("truncated length"))?;
                    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                    let set = bytes
                        .get(*pos + 2..*pos + 2 + len)
                        .ok_or(bad("truncated parameter set"))?;
                    if set.is_empty() {
                        return Err(bad("empty parameter set"));
                    }
                    *pos += 2 + len;
                    Ok(set.to_vec())
                })
                .collect()
        };
        let sps = sets(usize::from(bytes[5] & 0x1F), &mut pos)?;
        pos += 1;
        let pps_count = *bytes
            .get(pos - 1)
            .ok_or(bad("missing numOfPictureParameterSets"))?;
        let pps = sets(usize::from(pps_count), &mut pos)?;
        let high_profile_ext = match bytes.get(pos..pos + 3) {
            Some(ext) if matches!(bytes[1], 100 | 110 | 122 | 144) => {
                Some((ext[0] & 3, ext[1] & 7, ext[2] & 7))
            }
            _ => None,
        };
        Ok(AvcConfig {
            profile_idc: bytes[1],
            profile_compatibility: bytes[2],
            level_idc: bytes[3],
            nal_length_size,
            sps,
            pps,
            high_profile_ext,
        })
    }

    /// Whether `nal` is byte-identical to one of the record's SPS or PPS.
    pub fn contains(&self, nal: &[u8]) -> bool {
        self.sps.iter().chain(&self.pps).any(|set| set == nal)
    }

    /// Whether an access unit's in-band SPS/PPS (if any) all equal the record's, so its frames
    /// can stay in a segment with this CodecPrivate.
    pub fn matches(&self, au: &AccessUnit) -> bool {
        au.nals
            .iter()
            .filter(|n| matches!(nal_type(n), Some(nal::SPS | nal::PPS)))
            .all(|n| self.contains(n))
    }

    /// A Matroska track for this record, sized from its first SPS.
    pub fn track_info(&self) -> Result<TrackInfo, H264Error> {
        let sps = Sps::parse(self.sps.first().ok_or(H264Error::Missing("SPS"))?)?;
        let size = |what, v: u32| {
            u16::try_from(v).map_err(|_| H264Error::OutOfRange {
                what,
                value: v.into(),
            })
        };
        Ok(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: self.to_bytes()?,
            width: size("width", sps.width)?,
            height: size("height", sps.height)?,
        })
    }
}

fn push_u16_prefixed(out: &mut Vec<u8>, set: &[u8]) -> Result<(), H264Error> {
    let len = u16::try_from(set.len())
        .map_err(|_| H264Error::BadConfigRecord("parameter set over 65535 bytes"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(set);
    Ok(())
}

/// One coded picture with the non-VCL NAL units that precede it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessUnit {
    pub nals: Vec<Vec<u8>>,
}

impl AccessUnit {
    /// Contains an IDR slice: decodable on its own, so it may start a fragment.
    pub fn is_key(&self) -> bool {
        self.nals.iter().any(|n| nal_type(n) == Some(nal::IDR))
    }

    /// Whether it holds picture data (an AU of only parameter sets/SEI is not a frame).
    pub fn has_picture(&self) -> bool {
        self.nals.iter().any(|n| nal_type(n).is_some_and(is_vcl))
    }

    /// The last SPS and PPS carried in band, if any.
    pub fn parameter_sets(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        let last = |t| {
            self.nals
                .iter()
                .rev()
                .find(|n| nal_type(n) == Some(t))
                .map(Vec::as_slice)
        };
        (last(nal::SPS), last(nal::PPS))
    }
}

/// The Matroska block payload for an access unit: AVCC, without AUDs and without SPS/PPS equal
/// to those in `config` (see the module doc for why).
pub fn frame_payload<'a>(nals: impl IntoIterator<Item = &'a [u8]>, config: &AvcConfig) -> Vec<u8> {
    nals_to_avcc(nals.into_iter().filter(|n| match nal_type(n) {
        Some(nal::AUD) => false,
        Some(nal::SPS | nal::PPS) => !config.contains(n),
        _ => true,
    }))
}

/// [`frame_payload`] for a frame already in AVCC (as RTSP depacketizers deliver it).
pub fn strip_avcc_frame(data: &[u8], config: &AvcConfig) -> Result<Vec<u8>, H264Error> {
    Ok(frame_payload(avcc_nals(data)?, config))
}

/// first_mb_in_slice of a slice NAL (types 1, 2, 5).
fn first_mb_in_slice(nal: &[u8]) -> Result<u32, H264Error> {
    // The ue(v) sits in the first bytes; 8 are plenty and bound the copy.
    let head = rbsp(&nal[1..nal.len().min(9)]);
    BitReader::new(&head).read_ue()
}

/// Groups NAL units into access units (H.264 7.4.1.2.3): a new one starts at an AUD, SPS,
/// PPS, SEI or prefix NAL after the current unit's picture, or at a slice with
/// first_mb_in_slice == 0 when the current unit already has one (arbitrary slice order is
/// not handled: no camera sends it).
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    current: AccessUnit,
    has_picture: bool,
}

impl AccessUnitAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the next NAL unit; returns the access unit it completed, if any. Empty NAL units
    /// are ignored; a slice whose header cannot be read is kept in the current unit.
    pub fn push(&mut self, nal: &[u8]) -> Option<AccessUnit> {
        let kind = nal_type(nal)?;
        let starts_new = self.has_picture
            && match kind {
                nal::AUD | nal::SPS | nal::PPS | nal::SEI | nal::PREFIX | nal::SUBSET_SPS => true,
                16..=18 => true,
                nal::SLICE | nal::SLICE_DPA | nal::IDR => first_mb_in_slice(nal) == Ok(0),
                _ => false,
            };
        let done = starts_new.then(|| self.take());
        if is_vcl(kind) {
            self.has_picture = true;
        }
        self.current.nals.push(nal.to_vec());
        done
    }

    /// The last access unit at the end of the stream, if it has a picture.
    pub fn flush(&mut self) -> Option<AccessUnit> {
        let au = self.take();
        au.has_picture().then_some(au)
    }

    fn take(&mut self) -> AccessUnit {
        self.has_picture = false;
        std::mem::take(&mut self.current)
    }
}

/// Split a whole Annex B stream into access units (those without a picture are dropped).
pub fn access_units(annex_b: &[u8]) -> Vec<AccessUnit> {
    let mut assembler = AccessUnitAssembler::new();
    let mut out: Vec<AccessUnit> = split_annex_b(annex_b)
        .filter_map(|nal| assembler.push(nal))
        .filter(AccessUnit::has_picture)
        .collect();
    out.extend(assembler.flush());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPS/PPS from libx264 (ffmpeg 5.1) for the sizes named.
    const SPS_1080P_HIGH: &str = "67640028acd940780227e5c044000003000400000300c83c60c658";
    const PPS_1080P_HIGH: &str = "68ebe3cb22c0";
    const SPS_720P_BASELINE: &str = "6742c01fd9005005bb011000000300100000030320f1832480";
    const SPS_360P_MAIN: &str = "674d401ed900a02ff97011000003000100000300320f162e48";
    const SPS_1080I_HIGH: &str = "67640028acd94078044fde0220000003002000000643e2c5b2c0";
    const SPS_1366X766_HIGH444: &str = "67f40020919b280ac0c3c5de0220000003002000000641e30632c0";
    const SPS_642X362_HIGH422_10BIT: &str =
        "677a001eb6cd940a42fe227c0440000003004000000c83c58b6580";

    #[test]
    fn sps_sizes_of_known_streams() {
        let cases = [
            (SPS_1080P_HIGH, 1920, 1080, 100, true),
            (SPS_720P_BASELINE, 1280, 720, 66, true),
            (SPS_360P_MAIN, 640, 360, 77, true),
            (SPS_1080I_HIGH, 1920, 1080, 100, false),
            (SPS_1366X766_HIGH444, 1366, 766, 244, true),
            (SPS_642X362_HIGH422_10BIT, 642, 362, 122, true),
        ];
        for (sps, w, h, profile, progressive) in cases {
            let parsed = Sps::parse(&hex(sps)).unwrap();
            assert_eq!((parsed.width, parsed.height), (w, h), "{sps}");
            assert_eq!(parsed.profile_idc, profile);
            assert_eq!(parsed.frame_mbs_only, progressive);
        }
        let hi422 = Sps::parse(&hex(SPS_642X362_HIGH422_10BIT)).unwrap();
        assert_eq!((hi422.chroma_format_idc, hi422.bit_depth_luma), (2, 10));
    }

    /// Writes SPS syntax for cases no encoder at hand produces (SPS scaling lists).
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn bits(&mut self, value: u32, n: u32) {
            for i in (0..n).rev() {
                self.bits.push(value >> i & 1 == 1);
            }
        }
        fn ue(&mut self, value: u32) {
            let v = value + 1;
            let len = 32 - v.leading_zeros();
            self.bits(0, len - 1);
            self.bits(v, len);
        }
        fn se(&mut self, value: i32) {
            self.ue(if value > 0 {
                2 * value as u32 - 1
            } else {
                2 * value.unsigned_abs()
            });
        }
        fn finish(mut self) -> Vec<u8> {
            self.bits.push(true);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            self.bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
                .collect()
        }
    }

    #[test]
    fn sps_with_scaling_lists_and_cropping() {
        let mut w = BitWriter::default();
        w.bits(100, 8); // High
        w.bits(0, 8);
        w.bits(40, 8);
        w.ue(0); // sps id
        w.ue(1); // 4:2:0
        w.ue(0);
        w.ue(0);
        w.bits(0, 1); // qpprime
        w.bits(1, 1); // seq_scaling_matrix_present
        for i in 0..8 {
            w.bits(1, 1);
            let size = if i < 6 { 16 } else { 64 };
            // A list that ends early with nextScale = 0 for even lists, a full one for odd.
            if i % 2 == 0 {
                w.se(-8);
            } else {
                for j in 0..size {
                    w.se(if j == 0 { 5 } else { 1 });
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // poc type 1
        w.bits(0, 1);
        w.se(-2);
        w.se(3);
        w.ue(2);
        w.se(1);
        w.se(-1);
        w.ue(4); // max_num_ref_frames
        w.bits(0, 1);
        w.ue(119); // 1920
        w.ue(67); // 1088
        w.bits(1, 1); // frame_mbs_only
        w.bits(1, 1);
        w.bits(1, 1); // cropping
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4); // 8 lines
        w.bits(0, 1); // no VUI
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
    }

    #[test]
    fn malformed_sps_is_an_error() {
        let sps = hex(SPS_1080P_HIGH);
        let full = Sps::parse(&sps).unwrap();
        for cut in 0..sps.len() {
            // The VUI is not parsed, so a cut there still yields the full answer.
            match Sps::parse(&sps[..cut]) {
                Ok(parsed) => assert!(cut > 8 && parsed == full, "cut {cut}"),
                Err(e) => assert!(
                    matches!(e, H264Error::Truncated | H264Error::EmptyNal),
                    "cut {cut}: {e}"
                ),
            }
        }
        assert_eq!(
            Sps::parse(&hex(PPS_1080P_HIGH)).unwrap_err(),
            H264Error::WrongNalType {
                expected: "SPS",
                found: 8
            }
        );
        assert_eq!(
            Sps::parse(&[0xE7, 0x42]).unwrap_err(),
            H264Error::ForbiddenBit
        );
        // 40 zero bits: an exp-Golomb code that never ends.
        assert_eq!(
            Sps::parse(&[0x67, 66, 0, 30, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            H264Error::ExpGolombTooLong
        );
        // Cropping larger than the picture.
        let mut w = BitWriter::default();
        w.bits(66, 8);
        w.bits(0, 8);
        w.bits(30, 8);
        // sps id, log2_max_frame_num_minus4, poc type 0, its lsb size, max_num_ref_frames.
        for v in [0, 0, 0, 1, 1] {
            w.ue(v);
        }
        w.bits(0, 1);
        w.ue(0); // 16 x 16
        w.ue(0);
        w.bits(1, 1);
        w.bits(1, 1);
        w.bits(1, 1);
        for v in [8, 0, 0, 0] {
            w.ue(v);
        }
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        assert!(matches!(
            Sps::parse(&nal),
            Err(H264Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]), [0, 0, 1, 0, 0, 0, 3]);
        let mut r = BitReader::new(&[0b1010_0110, 0b0111_0000]);
        assert_eq!(r.read_ue().unwrap(), 0);
        assert_eq!(r.read_ue().unwrap(), 1);
        assert_eq!(r.read_ue().unwrap(), 2);
        assert_eq!(r.read_se().unwrap(), -3);
        assert_eq!(r.read_bits(3), Ok(0));
        assert_eq!(r.read_bits(2), Err(H264Error::Truncated));
    }

    #[test]
    fn avcc_config_round_trip() {
        let (sps, pps) = (hex(SPS_1080P_HIGH), hex(PPS_1080P_HIGH));
        let config = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        let bytes = config.to_bytes().unwrap();
        assert_eq!(&bytes[..6], &[1, 0x64, 0x00, 0x28, 0xFF, 0xE1]);
        assert_eq!(&bytes[bytes.len() - 4..], &[0xFD, 0xF8, 0xF8, 0]);
        assert_eq!(AvcConfig::parse(&bytes).unwrap(), config);
        let track = config.track_info().unwrap();
        assert_eq!(
            (track.width, track.height, track.codec),
            (1920, 1080, VideoCodec::H264)
        );

        let base = AvcConfig::from_parameter_sets(
            &hex(SPS_720P_BASELINE),
            &[0x68, 0xCB, 0x83, 0xCB, 0x20],
        )
        .unwrap();
        let bytes = base.to_bytes().unwrap();
        assert_eq!(bytes.len(), 6 + 2 + 25 + 1 + 2 + 5);
        assert_eq!(AvcConfig::parse(&bytes).unwrap(), base);

        for cut in 0..bytes.len() - 1 {
            assert!(AvcConfig::parse(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(AvcConfig::from_parameter_sets(&sps, &sps).is_err());
        assert!(AvcConfig::from_parameter_sets(&sps, &[]).is_err());
    }

    #[test]
    fn annex_b_splitting() {
        let stream = [
            0xFF, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0,
            1, 0, 0, 1,
        ];
        let nals: Vec<_> = split_annex_b(&stream).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 0, 0, 3, 1]]);
        assert_eq!(split_annex_b(&[]).count(), 0);
        assert_eq!(split_annex_b(&[0, 0, 1]).count(), 0);
        assert_eq!(split_annex_b(&[1, 2, 3]).count(), 0);

        // Any chunking gives the same NAL units.
        for chunk in 1..stream.len() {
            let mut splitter = AnnexBSplitter::new();
            let mut got: Vec<Vec<u8>> = stream
                .chunks(chunk)
                .flat_map(|c| splitter.push(c))
                .collect();
            got.extend(splitter.finish());
            assert_eq!(got, nals, "chunk {chunk}");
        }
    }

    #[test]
    fn avcc_conversions() {
        let annex_b = [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x65, 0x88];
        let avcc = annex_b_to_avcc(&annex_b);
        assert_eq!(avcc, [0, 0, 0, 2, 0x09, 0xF0, 0, 0, 0, 2, 0x65, 0x88]);
        assert_eq!(
            avcc_to_annex_b(&avcc).unwrap(),
            [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x65, 0x88]
        );
        assert_eq!(
            avcc_nals(&[0, 0, 0, 0, 1]),
            Err(H264Error::ZeroLengthNal(0))
        );
        assert_eq!(
            avcc_nals(&[0, 0, 0, 9, 1]),
            Err(H264Error::AvccTruncated {
                offset: 0,
                len: 9,
                available: 1
            })
        );
        assert!(matches!(
            avcc_nals(&[0, 0, 0, 1, 5, 0, 0]),
            Err(H264Error::AvccTruncated { offset: 5, .. })
        ));
        assert_eq!(
            avcc_nals(&[0xFF, 0xFF, 0xFF, 0xFF]).unwrap_err(),
            H264Error::AvccTruncated {
                offset: 0,
                len: u32::MAX as usize,
                available: 0
            }
        );
        assert!(avcc_nals(&[]).unwrap().is_empty());
    }

    fn slice(kind: u8, first_mb: u32) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.ue(first_mb);
        w.ue(if kind == nal::IDR { 7 } else { 5 });
        let mut nal = vec![0x60 | kind];
        nal.extend(w.finish());
        nal
    }

    #[test]
    fn access_units_and_parameter_set_stripping() {
        let sps = hex(SPS_360P_MAIN);
        let pps = vec![0x68, 0xEB, 0xC1, 0x92, 0xC8];
        let aud = vec![0x09, 0x10];
        let sei = vec![0x06, 0x05, 0x01, 0xAA, 0x80];
        let mut stream = Vec::new();
        let mut push = |nal: &[u8]| {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(nal);
        };
        // AU 1: AUD SPS PPS SEI IDR(2 slices); AU 2: P (no AUD); AU 3: AUD P(2 slices);
        // AU 4: SPS PPS IDR.
        for nal in [
            &aud,
            &sps,
            &pps,
            &sei,
            &slice(5, 0),
            &slice(5, 20),
            &slice(1, 0),
            &aud,
            &slice(1, 0),
            &slice(1, 9),
            &sps,
            &pps,
            &slice(5, 0),
        ] {
            push(nal);
        }
        let aus = access_units(&stream);
        assert_eq!(
            aus.iter().map(|a| a.nals.len()).collect::<Vec<_>>(),
            [6, 1, 3, 3]
        );
        assert_eq!(
            aus.iter().map(AccessUnit::is_key).collect::<Vec<_>>(),
            [true, false, false, true]
        );
        assert_eq!(aus[0].parameter_sets(), (Some(&sps[..]), Some(&pps[..])));

        let config = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        assert!(aus.iter().all(|au| config.matches(au)));
        let payload = frame_payload(aus[0].nals.iter().map(Vec::as_slice), &config);
        let kinds: Vec<_> = avcc_nals(&payload)
            .unwrap()
            .iter()
            .map(|n| n[0] & 0x1F)
            .collect();
        assert_eq!(kinds, [nal::SEI, nal::IDR, nal::IDR]);
        assert_eq!(
            strip_avcc_frame(
                &nals_to_avcc(aus[3].nals.iter().map(Vec::as_slice)),
                &config
            )
            .unwrap(),
            nals_to_avcc([&slice(5, 0)[..]])
        );

        // A different PPS is a parameter change: kept in band and flagged.
        let other = AccessUnit {
            nals: vec![vec![0x68, 0xEE], slice(5, 0)],
        };
        assert!(!config.matches(&other));
        assert_eq!(
            avcc_nals(&frame_payload(
                other.nals.iter().map(Vec::as_slice),
                &config
            ))
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let sps = hex(SPS_1080P_HIGH);
        for round in 0..5000 {
            let len = (random() % 48) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| random() as u8).collect();
            if round % 2 == 0 {
                // Mostly-valid SPS with one byte changed reaches deeper into the parser.
                data = sps.clone();
                let at = (random() as usize) % data.len();
                data[at] = random() as u8;
            }
            let _ = Sps::parse(&data);
            let _ = AvcConfig::parse(&data);
            let _ = avcc_nals(&data);
            let _ = access_units(&data);
            if let Some(first) = data.first_mut() {
                *first = 0x67;
            }
            let _ = Sps::parse(&data);
        }
    }

    #[test]
    fn assembler_tolerates_garbage() {
        let mut a = AccessUnitAssembler::new();
        assert!(a.push(&[]).is_none());
        assert!(a.push(&[0x01]).is_none()); // slice with no header bytes
        assert!(a.push(&[0x01, 0x00]).is_none()); // unreadable first_mb_in_slice
        assert!(a.push(&[0x1F, 0xFF]).is_none());
        assert_eq!(a.flush().map(|au| au.nals.len()), Some(3));
        assert!(a.flush().is_none());
        assert!(access_units(&[0, 0, 1, 0x06, 0x05]).is_empty());
    }
}
