//! Fragmented MP4 (ISO BMFF, ISO/IEC 14496-12) for exporting a recorded time range to a
//! browser `<video>` element, written while it streams.
//!
//! # Layout
//!
//! ```text
//! ftyp                         isom; compatible isom, iso6, mp41 (and avc1 for H.264)
//! moov
//!   mvhd                       timescale 1000, duration 0: unknown while streaming
//!   trak
//!     tkhd                     track 1, enabled | in movie | in preview, width x height
//!     mdia
//!       mdhd                   timescale 1000 (ms, as the recorder stamps frames)
//!       hdlr                   'vide'
//!       minf
//!         vmhd
//!         dinf > dref > url    the media is in this file
//!         stbl
//!           stsd               avc1 > avcC (H.264) or hvc1 > hvcC (H.265): CodecPrivate
//!           stts stsc stsz stco  empty: every sample is in a fragment
//!   mvex > trex                fragments use sample description 1
//! then for each recorded fragment (one Matroska Cluster):
//! moof
//!   mfhd                       sequence number 1, 2, ...
//!   traf
//!     tfhd                     track 1, default-base-is-moof
//!     tfdt                     version 1: the first frame's time - origin
//!     trun                     data offset; duration, size and flags of each sample
//! mdat                         the frames' bytes, unchanged
//! ```
//!
//! [`Mp4Writer::init_segment`] gives `ftyp`+`moov` once, [`Mp4Writer::fragment`] one
//! `moof`+`mdat` per fragment, so an export holds one fragment in memory at a time and can be
//! sent as it is built. Concatenated they are an ordinary fragmented MP4 file (and each piece is
//! a Media Source Extensions init or media segment).
//!
//! Timing: decode time is `timestamp_ms - origin_ms` in ms. There are no B-frames, so
//! presentation time equals decode time and neither `ctts` nor an edit list is needed. Each
//! `tfdt` re-anchors time at its fragment's first frame, so a gap in the recording stays a gap
//! in the export instead of pulling later video earlier. A sample lasts until the next frame;
//! a fragment's last frame, whose successor is not known yet, repeats the interval before it.
//!
//! Samples: the recorder's frames are AVCC with 4-byte lengths, which is the MP4 sample format
//! of ISO/IEC 14496-15 when the configuration record says `lengthSizeMinusOne = 3` (checked), so
//! `mdat` is the frames' bytes as they are and the record goes into `avcC`/`hvcC` as it is.
//!
//! Why hand-written: the `mp4` crate's writer makes only progressive files (sample tables in a
//! `moov` written last). Crates that can emit `moof` exist (`mp4-atom` encodes boxes whose every
//! field the caller fills in; recent `shiguredo_mp4` has an fMP4 segment muxer), but the subset
//! needed is two dozen fixed-layout boxes with no options: fewer lines than adapting our frames
//! to another crate's model, and no dependency to follow. Moonfire NVR hand-writes its `mp4.rs`
//! too, as this crate does its Matroska writer.

use thiserror::Error;

use super::mkv::{Frame, TrackInfo, VideoCodec};

/// Ticks per second of the movie and the track: milliseconds, as frames are stamped.
pub const TIMESCALE: u32 = 1000;
/// The only track.
const TRACK_ID: u32 = 1;
/// Duration of a fragment's only frame when no interval is known yet: one frame at 25 fps.
pub const DEFAULT_SAMPLE_MS: u32 = 40;
/// Largest configuration record accepted (as KVS caps CodecPrivate), which bounds the init
/// segment far below the 4 GiB a 32-bit box size can say.
pub const MAX_CODEC_PRIVATE_LEN: usize = 1 << 20;
/// Most frames in one fragment: 1 << 20 is 11 h at 25 fps, and keeps `moof` (12 bytes a
/// sample) far below 4 GiB.
pub const MAX_FRAGMENT_FRAMES: usize = 1 << 20;

/// Why an MP4 could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Mp4Error {
    #[error("{codec:?} decoder configuration record is malformed: {reason}")]
    BadCodecPrivate {
        codec: VideoCodec,
        reason: &'static str,
    },
    #[error("decoder configuration says {0}-byte NAL lengths; frames carry 4-byte lengths")]
    LengthSize(u8),
    #[error("fragment has no frames")]
    EmptyFragment,
    #[error("fragment has {0} frames, more than the {MAX_FRAGMENT_FRAMES} allowed")]
    TooManyFrames(usize),
    #[error("fragment must start with a key frame")]
    FirstFrameNotKey,
    #[error("frame at {timestamp_ms} ms is before the export origin {origin_ms} ms")]
    BeforeOrigin { timestamp_ms: i64, origin_ms: i64 },
    #[error("timestamps go backwards: {next} ms after {prev} ms")]
    TimestampBackwards { prev: i64, next: i64 },
    #[error("frame {index} is not AVCC with 4-byte lengths (framing breaks at byte {offset})")]
    BadFraming { index: usize, offset: usize },
    #[error("{what} {value} does not fit in 32 bits")]
    TooLarge { what: &'static str, value: u64 },
}

/// Writes one video track as fragmented MP4: [`init_segment`](Self::init_segment) once, then
/// [`fragment`](Self::fragment) for each recorded fragment in time order.
#[derive(Debug, Clone)]
pub struct Mp4Writer {
    init: Vec<u8>,
    origin_ms: i64,
    /// `mfhd` sequence number of the next fragment.
    sequence: u32,
    /// The last frame written and the duration given to it, for the next fragment's checks and
    /// for a single-frame fragment's duration.
    last: Option<(i64, u32)>,
}

impl Mp4Writer {
    /// A writer for `track` whose time zero is `origin_ms` (wall-clock ms, typically the first
    /// exported frame's timestamp). Frames before the origin are an error, not clamped: clamping
    /// would give several frames the same decode time.
    pub fn new(track: &TrackInfo, origin_ms: i64) -> Result<Self, Mp4Error> {
        check_codec_private(track)?;
        Ok(Mp4Writer {
            init: init_segment(track),
            origin_ms,
            sequence: 1,
            last: None,
        })
    }

    /// `ftyp` + `moov`: what a player needs before the first fragment.
    pub fn init_segment(&self) -> Vec<u8> {
        self.init.clone()
    }

    /// One `moof` + `mdat` holding `frames`, which must start with a key frame and not go back
    /// in time, within the fragment or from the previous one. On error nothing changes, so the
    /// caller may skip the fragment and go on.
    pub fn fragment(&mut self, frames: &[Frame]) -> Result<Vec<u8>, Mp4Error> {
        let first = frames.first().ok_or(Mp4Error::EmptyFragment)?;
        if frames.len() > MAX_FRAGMENT_FRAMES {
            return Err(Mp4Error::TooManyFrames(frames.len()));
        }
        if !first.key {
            return Err(Mp4Error::FirstFrameNotKey);
        }
        if first.timestamp_ms < self.origin_ms {
            return Err(Mp4Error::BeforeOrigin {
                timestamp_ms: first.timestamp_ms,
                origin_ms: self.origin_ms,
            });
        }
        let mut prev = self.last.map_or(first.timestamp_ms, |(ts, _)| ts);
        let mut payload_len: u64 = 0;
        for (index, frame) in frames.iter().enumerate() {
            if frame.timestamp_ms < prev {
                return Err(Mp4Error::TimestampBackwards {
                    prev,
                    next: frame.timestamp_ms,
                });
            }
            prev = frame.timestamp_ms;
            check_avcc(&frame.data).map_err(|offset| Mp4Error::BadFraming { index, offset })?;
            payload_len += frame.data.len() as u64;
        }
        let mdat_len = u32_of("mdat size", 8 + payload_len)?;

        let mut durations = Vec::with_capacity(frames.len());
        for pair in frames.windows(2) {
            // Non-negative: checked above.
            let delta = pair[1].timestamp_ms.abs_diff(pair[0].timestamp_ms);
            durations.push(u32_of("sample duration", delta)?);
        }
        // The last frame's successor is not known yet: repeat the interval before it.
        let last_duration = durations
            .last()
            .copied()
            .or(self.last.map(|(_, d)| d))
            .unwrap_or(DEFAULT_SAMPLE_MS);
        durations.push(last_duration);
        let samples: Vec<Sample> = frames
            .iter()
            .zip(durations)
            .map(|(frame, duration)| Sample {
                duration,
                // Fits: the whole mdat does.
                size: frame.data.len() as u32,
                flags: sample_flags(frame.key),
            })
            .collect();
        // Non-negative: checked against the origin above.
        let decode_time = first.timestamp_ms.abs_diff(self.origin_ms);

        // trun's data offset counts from the start of moof, whose size does not depend on it.
        // Fits in i32: at most MAX_FRAGMENT_FRAMES samples of 12 bytes.
        let data_offset = moof(self.sequence, decode_time, 0, &samples).len() as i32 + 8;
        let mut out = moof(self.sequence, decode_time, data_offset, &samples);
        out.reserve(mdat_len as usize);
        out.extend_from_slice(&mdat_len.to_be_bytes());
        out.extend_from_slice(b"mdat");
        for frame in frames {
            out.extend_from_slice(&frame.data);
        }

        self.sequence = self.sequence.wrapping_add(1);
        self.last = Some((prev, last_duration));
        Ok(out)
    }
}

/// One `trun` entry.
#[derive(Debug, Clone, Copy)]
struct Sample {
    duration: u32,
    size: u32,
    flags: u32,
}

fn u32_of(what: &'static str, value: u64) -> Result<u32, Mp4Error> {
    u32::try_from(value).map_err(|_| Mp4Error::TooLarge { what, value })
}

/// `sample_flags` (14496-12 8.8.3.1): a key frame depends on no other (`sample_depends_on` 2);
/// any other frame depends on others (1) and is not a sync sample, so players seek to key
/// frames only.
fn sample_flags(key: bool) -> u32 {
    if key { 0x0200_0000 } else { 0x0101_0000 }
}

/// Where the 4-byte-length framing of `data` breaks (a zero length, a length past the end, or
/// nothing at all), if it does: a cheap walk that catches Annex B or cut frames, which a
/// decoder reading `avcC`/`hvcC` lengths would choke on.
fn check_avcc(data: &[u8]) -> Result<(), usize> {
    if data.is_empty() {
        return Err(0);
    }
    let mut offset = 0;
    while offset < data.len() {
        let len = data
            .get(offset..offset + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(offset)?;
        if len == 0 || len > data.len() - offset - 4 {
            return Err(offset);
        }
        offset += 4 + len;
    }
    Ok(())
}

/// The record must be version 1 with 4-byte NAL lengths, as the frames are; its other fields
/// are the decoder's business.
fn check_codec_private(track: &TrackInfo) -> Result<(), Mp4Error> {
    let cp = &track.codec_private;
    let bad = |reason| Mp4Error::BadCodecPrivate {
        codec: track.codec,
        reason,
    };
    if cp.len() > MAX_CODEC_PRIVATE_LEN {
        return Err(bad("longer than 1 MiB"));
    }
    // lengthSizeMinusOne: AVCDecoderConfigurationRecord byte 4, HEVC's byte 21 (14496-15
    // 5.3.2.1.2, 8.3.3.1.2).
    let length_byte = match track.codec {
        VideoCodec::H264 => 4,
        VideoCodec::H265 => 21,
    };
    let Some(&length) = cp.get(length_byte) else {
        return Err(bad("too short"));
    };
    if cp[0] != 1 {
        return Err(bad("configurationVersion is not 1"));
    }
    let length_size = (length & 3) + 1;
    if length_size != 4 {
        return Err(Mp4Error::LengthSize(length_size));
    }
    Ok(())
}

/// A box: 32-bit size, type, body. Callers keep bodies far below 4 GiB (the limits above).
fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + body.len()).expect("box bodies are bounded far below 4 GiB");
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A full box: a box whose body starts with an 8-bit version and 24-bit flags.
fn full_box(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut full = ((u32::from(version) << 24) | (flags & 0x00FF_FFFF))
        .to_be_bytes()
        .to_vec();
    full.extend_from_slice(body);
    boxed(kind, &full)
}

/// Big-endian u32s, for the many all-u32 bodies.
fn be32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The identity transformation matrix of `mvhd` and `tkhd` (16.16, except 2.30 for w).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn init_segment(track: &TrackInfo) -> Vec<u8> {
    let mut ftyp = b"isom".to_vec();
    ftyp.extend_from_slice(&0x200u32.to_be_bytes());
    ftyp.extend_from_slice(b"isomiso6mp41");
    if track.codec == VideoCodec::H264 {
        ftyp.extend_from_slice(b"avc1");
    }

    // mvhd v0: times 0, timescale, duration 0, rate 1.0, volume 1.0, reserved, matrix,
    // pre_defined, next_track_ID.
    let mut mvhd = be32(&[0, 0, TIMESCALE, 0, 0x0001_0000]);
    mvhd.extend_from_slice(&[0x01, 0x00, 0, 0]);
    mvhd.extend(be32(&[0, 0]));
    mvhd.extend(be32(&MATRIX));
    mvhd.extend(be32(&[0; 6]));
    mvhd.extend(be32(&[TRACK_ID + 1]));

    // tkhd v0: times 0, track_ID, reserved, duration 0, reserved, layer/alternate_group 0,
    // volume 0 (video) and reserved, matrix, width and height in 16.16.
    let mut tkhd = be32(&[0, 0, TRACK_ID, 0, 0, 0, 0, 0, 0]);
    tkhd.extend(be32(&MATRIX));
    tkhd.extend(be32(&[
        u32::from(track.width) << 16,
        u32::from(track.height) << 16,
    ]));
    // track_enabled | track_in_movie | track_in_preview.
    let tkhd = full_box(b"tkhd", 0, 0x7, &tkhd);

    // mdhd v0: times 0, timescale, duration 0, language 'und' (packed ISO-639-2/T), pre_defined.
    let mut mdhd = be32(&[0, 0, TIMESCALE, 0]);
    mdhd.extend_from_slice(&[0x55, 0xC4, 0, 0]);

    let mut hdlr = be32(&[0]);
    hdlr.extend_from_slice(b"vide");
    hdlr.extend(be32(&[0, 0, 0]));
    hdlr.extend_from_slice(b"VideoHandler\0");

    // vmhd has flags 1 (14496-12 12.1.2.2); graphicsmode copy, opcolor 0.
    let vmhd = full_box(b"vmhd", 0, 1, &[0; 8]);
    // A data reference with flags 1: the media is in this file.
    let dref = full_box(
        b"dref",
        0,
        0,
        &[be32(&[1]), full_box(b"url ", 0, 1, &[])].concat(),
    );
    let dinf = boxed(b"dinf", &dref);

    let stbl = [
        full_box(b"stsd", 0, 0, &[be32(&[1]), sample_entry(track)].concat()),
        full_box(b"stts", 0, 0, &be32(&[0])),
        full_box(b"stsc", 0, 0, &be32(&[0])),
        full_box(b"stsz", 0, 0, &be32(&[0, 0])),
        full_box(b"stco", 0, 0, &be32(&[0])),
    ]
    .concat();
    let minf = [vmhd, dinf, boxed(b"stbl", &stbl)].concat();
    let mdia = [
        full_box(b"mdhd", 0, 0, &mdhd),
        full_box(b"hdlr", 0, 0, &hdlr),
        boxed(b"minf", &minf),
    ]
    .concat();
    let trak = [tkhd, boxed(b"mdia", &mdia)].concat();
    // trex: track_ID, default sample description 1; durations, sizes and flags are all in trun.
    let mvex = boxed(
        b"mvex",
        &full_box(b"trex", 0, 0, &be32(&[TRACK_ID, 1, 0, 0, 0])),
    );
    let moov = [full_box(b"mvhd", 0, 0, &mvhd), boxed(b"trak", &trak), mvex].concat();
    [boxed(b"ftyp", &ftyp), boxed(b"moov", &moov)].concat()
}

/// The `avc1`/`hvc1` VisualSampleEntry (14496-12 12.1.3) around the track's configuration
/// record. `hvc1` rather than `hev1` because parameter sets live in the record, and Safari
/// plays only `hvc1`.
fn sample_entry(track: &TrackInfo) -> Vec<u8> {
    let (entry, config): (&[u8; 4], &[u8; 4]) = match track.codec {
        VideoCodec::H264 => (b"avc1", b"avcC"),
        VideoCodec::H265 => (b"hvc1", b"hvcC"),
    };
    // SampleEntry: reserved 6 bytes, data_reference_index 1.
    let mut body = vec![0, 0, 0, 0, 0, 0, 0, 1];
    // pre_defined, reserved, pre_defined[3].
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&track.width.to_be_bytes());
    body.extend_from_slice(&track.height.to_be_bytes());
    // 72 dpi both ways, reserved, frame_count 1.
    body.extend(be32(&[0x0048_0000, 0x0048_0000, 0]));
    body.extend_from_slice(&1u16.to_be_bytes());
    // compressorname: empty, 32 bytes.
    body.extend_from_slice(&[0; 32]);
    // depth 0x18 (colour, no alpha), pre_defined -1.
    body.extend_from_slice(&[0x00, 0x18, 0xFF, 0xFF]);
    body.extend(boxed(config, &track.codec_private));
    boxed(entry, &body)
}

/// `moof` for samples whose data start `data_offset` bytes after the start of this `moof`.
fn moof(sequence: u32, decode_time: u64, data_offset: i32, samples: &[Sample]) -> Vec<u8> {
    // default-base-is-moof: offsets count from this moof, not from the previous fragment's
    // data, so every fragment stands alone.
    let tfhd = full_box(b"tfhd", 0, 0x02_0000, &be32(&[TRACK_ID]));
    let tfdt = full_box(b"tfdt", 1, 0, &decode_time.to_be_bytes());
    // Fits: at most MAX_FRAGMENT_FRAMES samples.
    let mut trun = (samples.len() as u32).to_be_bytes().to_vec();
    trun.extend_from_slice(&data_offset.to_be_bytes());
    for s in samples {
        trun.extend(be32(&[s.duration, s.size, s.flags]));
    }
    // data-offset | sample-duration | sample-size | sample-flags present.
    let trun = full_box(b"trun", 0, 0x00_0701, &trun);
    let traf = [tfhd, tfdt, trun].concat();
    let mfhd = full_box(b"mfhd", 0, 0, &be32(&[sequence]));
    boxed(b"moof", &[mfhd, boxed(b"traf", &traf)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn track(codec: VideoCodec) -> TrackInfo {
        let codec_private = match codec {
            // AVCDecoderConfigurationRecord: version 1, Main@3.0, 4-byte lengths, one SPS,
            // one PPS.
            VideoCodec::H264 => vec![
                1, 0x4D, 0x40, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x4D, 0x40, 0x1E, 1, 0, 2, 0x68, 0xEB,
            ],
            // HEVCDecoderConfigurationRecord: version 1, 22 header bytes with
            // lengthSizeMinusOne 3 in byte 21, no arrays.
            VideoCodec::H265 => {
                let mut r = vec![
                    1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC,
                ];
                r.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 0]);
                r
            }
        };
        TrackInfo {
            codec,
            codec_private,
            width: 640,
            height: 360,
        }
    }

    /// A frame of `nals` NAL units of `len` bytes each.
    fn frame(ts: i64, key: bool, nals: usize, len: u8) -> Frame {
        let mut data = Vec::new();
        for _ in 0..nals {
            data.extend_from_slice(&u32::from(len).to_be_bytes());
            data.push(if key { 0x65 } else { 0x41 });
            data.extend(std::iter::repeat_n(len, usize::from(len) - 1));
        }
        Frame {
            timestamp_ms: ts,
            key,
            data,
        }
    }

    /// `n` frames 40 ms apart from `start`, the first a key frame.
    fn gop(start: i64, n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| frame(start + 40 * i as i64, i == 0, 1 + i % 2, 3 + i as u8))
            .collect()
    }

    /// The boxes of `data` as (type, body), checking that their sizes tile it exactly.
    fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            assert!(rest.len() >= 8, "{} stray bytes", rest.len());
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(
                (8..=rest.len()).contains(&size),
                "box size {size} of {}",
                rest.len()
            );
            out.push((rest[4..8].try_into().unwrap(), &rest[8..size]));
            rest = &rest[size..];
        }
        out
    }

    /// The types of the boxes in `data`.
    fn kinds(data: &[u8]) -> Vec<String> {
        boxes(data)
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// The body of the only `kind` box in `data`.
    fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
        let found: Vec<_> = boxes(data).into_iter().filter(|(k, _)| k == kind).collect();
        assert_eq!(
            found.len(),
            1,
            "{} in {:?}",
            String::from_utf8_lossy(kind),
            kinds(data)
        );
        found[0].1
    }

    /// The body at `path` of nested boxes.
    fn at<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> &'a [u8] {
        path.iter().fold(data, |d, kind| find(d, kind))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// A full box body's (version, flags, rest).
    fn full(body: &[u8]) -> (u8, u32, &[u8]) {
        (body[0], u32_at(body, 0) & 0x00FF_FFFF, &body[4..])
    }

    /// What one `moof`+`mdat` says.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        sequence: u32,
        decode_time: u64,
        /// (duration, size, flags).
        samples: Vec<(u32, u32, u32)>,
        /// The bytes the data offset points at, as long as the sizes say.
        data: Vec<u8>,
    }

    fn parse_fragment(bytes: &[u8]) -> Parsed {
        assert_eq!(kinds(bytes), ["moof", "mdat"]);
        let moof_len = u32_at(bytes, 0) as usize;
        let moof = find(bytes, b"moof");
        assert_eq!(kinds(moof), ["mfhd", "traf"]);
        let (_, _, mfhd) = full(find(moof, b"mfhd"));
        let traf = find(moof, b"traf");
        assert_eq!(kinds(traf), ["tfhd", "tfdt", "trun"]);

        let (version, flags, tfhd) = full(find(traf, b"tfhd"));
        assert_eq!(
            (version, flags),
            (0, 0x02_0000),
            "default-base-is-moof only"
        );
        assert_eq!(tfhd, 1u32.to_be_bytes());
        let (version, _, tfdt) = full(find(traf, b"tfdt"));
        assert_eq!(version, 1);
        let decode_time = u64::from_be_bytes(tfdt.try_into().unwrap());

        let (version, flags, trun) = full(find(traf, b"trun"));
        assert_eq!((version, flags), (0, 0x701));
        let count = u32_at(trun, 0) as usize;
        let data_offset = u32_at(trun, 4) as usize;
        assert_eq!(trun.len(), 8 + 12 * count);
        let samples: Vec<_> = (0..count)
            .map(|i| {
                let e = 8 + 12 * i;
                (u32_at(trun, e), u32_at(trun, e + 4), u32_at(trun, e + 8))
            })
            .collect();

        // The data offset is the first mdat payload byte, and the samples fill the payload.
        let mdat = find(bytes, b"mdat");
        assert_eq!(data_offset, moof_len + 8);
        let total: usize = samples.iter().map(|s| s.1 as usize).sum();
        assert_eq!(total, mdat.len());
        Parsed {
            sequence: u32_at(mfhd, 0),
            decode_time,
            samples,
            data: bytes[data_offset..data_offset + total].to_vec(),
        }
    }

    fn payload(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.data.clone()).collect()
    }

    const SYNC: u32 = 0x0200_0000;
    const NON_SYNC: u32 = 0x0101_0000;

    #[test]
    fn init_segment_h264() {
        let track = track(VideoCodec::H264);
        let init = Mp4Writer::new(&track, T0).unwrap().init_segment();
        assert_eq!(kinds(&init), ["ftyp", "moov"]);

        let ftyp = find(&init, b"ftyp");
        assert_eq!(&ftyp[..4], b"isom");
        assert_eq!(&ftyp[8..], b"isomiso6mp41avc1");

        let moov = find(&init, b"moov");
        assert_eq!(kinds(moov), ["mvhd", "trak", "mvex"]);
        let (_, _, mvhd) = full(find(moov, b"mvhd"));
        assert_eq!(mvhd.len(), 96);
        assert_eq!(
            (u32_at(mvhd, 8), u32_at(mvhd, 12)),
            (1000, 0),
            "timescale, duration"
        );
        assert_eq!(u32_at(mvhd, 92), 2, "next_track_ID");

        let trak = find(moov, b"trak");
        assert_eq!(kinds(trak), ["tkhd", "mdia"]);
        let (version, flags, tkhd) = full(find(trak, b"tkhd"));
        assert_eq!((version, flags, tkhd.len()), (0, 7, 80));
        assert_eq!(u32_at(tkhd, 8), 1, "track_ID");
        assert_eq!((u32_at(tkhd, 72), u32_at(tkhd, 76)), (640 << 16, 360 << 16));

        let mdia = find(trak, b"mdia");
        assert_eq!(kinds(mdia), ["mdhd", "hdlr", "minf"]);
        let (_, _, mdhd) = full(find(mdia, b"mdhd"));
        assert_eq!((u32_at(mdhd, 8), u32_at(mdhd, 12)), (1000, 0));
        let (_, _, hdlr) = full(find(mdia, b"hdlr"));
        assert_eq!(&hdlr[4..8], b"vide");

        let minf = find(mdia, b"minf");
        assert_eq!(kinds(minf), ["vmhd", "dinf", "stbl"]);
        assert_eq!(full(find(minf, b"vmhd")).1, 1);
        let (_, _, dref) = full(at(minf, &[b"dinf", b"dref"]));
        assert_eq!(u32_at(dref, 0), 1);
        assert_eq!(full(find(&dref[4..], b"url ")), (0, 1, &[][..]));

        let stbl = find(minf, b"stbl");
        assert_eq!(kinds(stbl), ["stsd", "stts", "stsc", "stsz", "stco"]);
        for (kind, body) in [
            (b"stts", &[0; 4][..]),
            (b"stsc", &[0; 4]),
            (b"stsz", &[0; 8]),
            (b"stco", &[0; 4]),
        ] {
            assert_eq!(full(find(stbl, kind)).2, body, "{kind:?} is empty");
        }
        let (_, _, stsd) = full(find(stbl, b"stsd"));
        assert_eq!(u32_at(stsd, 0), 1);
        let avc1 = find(&stsd[4..], b"avc1");
        assert_eq!(&avc1[6..8], [0, 1], "data_reference_index");
        assert_eq!(&avc1[24..28], [0x02, 0x80, 0x01, 0x68], "640x360");
        assert_eq!(kinds(&avc1[78..]), ["avcC"]);
        assert_eq!(find(&avc1[78..], b"avcC"), track.codec_private);

        let (_, _, trex) = full(at(moov, &[b"mvex", b"trex"]));
        assert_eq!(trex, be32(&[1, 1, 0, 0, 0]));
    }

    #[test]
    fn init_segment_h265() {
        let track = track(VideoCodec::H265);
        let init = Mp4Writer::new(&track, T0).unwrap().init_segment();
        assert_eq!(&find(&init, b"ftyp")[8..], b"isomiso6mp41");
        let stsd = at(
            &init,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
        );
        let hvc1 = find(&stsd[8..], b"hvc1");
        assert_eq!(find(&hvc1[78..], b"hvcC"), track.codec_private);
    }

    #[test]
    fn fragments_number_time_and_carry_the_frames() {
        let mut w = Mp4Writer::new(&track(VideoCodec::H264), T0).unwrap();
        let first = gop(T0, 5);
        // A 1 s gap after the first fragment's last frame.
        let second = gop(T0 + 5 * 40 + 1000, 3);
        let a = parse_fragment(&w.fragment(&first).unwrap());
        let b = parse_fragment(&w.fragment(&second).unwrap());
        assert_eq!((a.sequence, b.sequence), (1, 2));
        assert_eq!((a.decode_time, b.decode_time), (0, 1200), "gaps stay gaps");
        assert_eq!(a.data, payload(&first));
        assert_eq!(b.data, payload(&second));
        let expect = |frames: &[Frame]| -> Vec<(u32, u32, u32)> {
            frames
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        40,
                        f.data.len() as u32,
                        if i == 0 { SYNC } else { NON_SYNC },
                    )
                })
                .collect()
        };
        assert_eq!(a.samples, expect(&first));
        assert_eq!(b.samples, expect(&second));
    }

    #[test]
    fn durations_follow_timestamps_and_the_last_repeats_the_one_before() {
        let mut w = Mp4Writer::new(&track(VideoCodec::H264), T0 - 500).unwrap();
        let frames = [
            frame(T0, true, 1, 4),
            frame(T0 + 33, false, 1, 4),
            frame(T0 + 33, false, 1, 4),
            frame(T0 + 100, true, 1, 4),
        ];
        let p = parse_fragment(&w.fragment(&frames).unwrap());
        assert_eq!(p.decode_time, 500);
        let durations: Vec<u32> = p.samples.iter().map(|s| s.0).collect();
        assert_eq!(durations, [33, 0, 67, 67]);
        let flags: Vec<u32> = p.samples.iter().map(|s| s.2).collect();
        assert_eq!(flags, [SYNC, NON_SYNC, NON_SYNC, SYNC]);

        // A single-frame fragment repeats the previous fragment's last duration...
        let p = parse_fragment(&w.fragment(&[frame(T0 + 200, true, 1, 4)]).unwrap());
        assert_eq!((p.sequence, p.decode_time, p.samples[0].0), (2, 700, 67));
        // ... and a first one lasts 1/25 s.
        let mut w = Mp4Writer::new(&track(VideoCodec::H264), T0).unwrap();
        let p = parse_fragment(&w.fragment(&[frame(T0, true, 2, 9)]).unwrap());
        assert_eq!(p.samples, [(DEFAULT_SAMPLE_MS, 26, SYNC)]);
    }

    #[test]
    fn bad_fragments_are_refused_and_change_nothing() {
        let mut w = Mp4Writer::new(&track(VideoCodec::H264), T0).unwrap();
        let key = |ts| frame(ts, true, 1, 4);
        let delta = |ts| frame(ts, false, 1, 4);
        let with_data = |data: &[u8]| Frame {
            data: data.to_vec(),
            ..key(T0)
        };
        let cases: Vec<(Vec<Frame>, Mp4Error)> = vec![
            (vec![], Mp4Error::EmptyFragment),
            (vec![delta(T0), key(T0 + 40)], Mp4Error::FirstFrameNotKey),
            (
                vec![key(T0 - 1)],
                Mp4Error::BeforeOrigin {
                    timestamp_ms: T0 - 1,
                    origin_ms: T0,
                },
            ),
            (
                vec![key(T0 + 40), delta(T0 + 80), delta(T0 + 79)],
                Mp4Error::TimestampBackwards {
                    prev: T0 + 80,
                    next: T0 + 79,
                },
            ),
            (
                vec![key(T0), delta(T0 + (1 << 32))],
                Mp4Error::TooLarge {
                    what: "sample duration",
                    value: 1 << 32,
                },
            ),
        ];
        let framing: [(&[u8], usize); 5] = [
            (&[], 0),
            (&[0, 0, 0], 0),
            (&[0, 0, 0, 0, 0x65], 0),
            (&[0, 0, 0, 1, 0x65, 0, 0, 0, 2, 0x41], 5),
            (&[0, 0, 0, 1, 0x65, 0], 5),
        ];
        let cases = cases
            .into_iter()
            .chain(framing.iter().map(|&(data, offset)| {
                (
                    vec![key(T0), with_data(data)],
                    Mp4Error::BadFraming { index: 1, offset },
                )
            }));
        for (frames, error) in cases {
            assert_eq!(w.fragment(&frames), Err(error), "{frames:?}");
        }
        let too_many = vec![key(T0); MAX_FRAGMENT_FRAMES + 1];
        assert_eq!(
            w.fragment(&too_many),
            Err(Mp4Error::TooManyFrames(MAX_FRAGMENT_FRAMES + 1))
        );

        // Nothing was written: the next good fragment is still the first.
        let p = parse_fragment(&w.fragment(&gop(T0 + 1000, 2)).unwrap());
        assert_eq!((p.sequence, p.decode_time), (1, 1000));
        // And time cannot go back across fragments either.
        assert_eq!(
            w.fragment(&gop(T0 + 1000, 2)),
            Err(Mp4Error::TimestampBackwards {
                prev: T0 + 1040,
                next: T0 + 1000,
            })
        );
        // Equal timestamps are accepted, as in Matroska.
        let p = parse_fragment(&w.fragment(&gop(T0 + 1040, 1)).unwrap());
        assert_eq!((p.sequence, p.decode_time, p.samples[0].0), (2, 1040, 40));
    }

    #[test]
    fn sizes_beyond_32_bits_are_errors() {
        assert_eq!(u32_of("mdat size", u32::MAX.into()), Ok(u32::MAX));
        assert_eq!(
            u32_of("mdat size", 1 << 32),
            Err(Mp4Error::TooLarge {
                what: "mdat size",
                value: 1 << 32,
            })
        );
    }

    #[test]
    fn configuration_records_must_be_version_1_with_4_byte_lengths() {
        let with = |codec, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut t = track(codec);
            edit(&mut t.codec_private);
            Mp4Writer::new(&t, T0).map(|_| ())
        };
        let bad = |codec, reason| Err(Mp4Error::BadCodecPrivate { codec, reason });
        for (codec, length_byte) in [(VideoCodec::H264, 4), (VideoCodec::H265, 21)] {
            assert_eq!(with(codec, &|_| ()), Ok(()));
            assert_eq!(
                with(codec, &|r| r[0] = 0),
                bad(codec, "configurationVersion is not 1")
            );
            assert_eq!(
                with(codec, &|r| r.truncate(length_byte)),
                bad(codec, "too short")
            );
            assert_eq!(
                with(codec, &|r| r[length_byte] &= !2),
                Err(Mp4Error::LengthSize(2))
            );
            assert_eq!(
                with(codec, &|r| r.resize(MAX_CODEC_PRIVATE_LEN + 1, 0)),
                bad(codec, "longer than 1 MiB")
            );
        }
    }
}
