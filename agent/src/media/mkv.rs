//! Matroska segments as Kinesis Video Streams takes them: writer and crash-safe reader.
//!
//! # Writing
//!
//! A segment file (and the start of every PutMedia body) is [`segment_header`]: the EBML
//! header, a Segment with the *unknown* size marker, Info and Tracks. Then one [`cluster`] per
//! KVS fragment is appended. The unknown Segment size is what lets a file grow cluster by
//! cluster with no size to patch afterwards, so a file cut anywhere is still a valid segment up
//! to its last complete cluster.
//!
//! The header is modelled on the KVS producer SDK's (`mkvgen`): DocType `matroska` version 2
//! (SimpleBlock needs 2), EBMLMaxIDLength 4, EBMLMaxSizeLength 8; Info with a 16-byte
//! SegmentUID, TimecodeScale 1 ms, MuxingApp/WritingApp; one video TrackEntry with TrackNumber
//! 1, TrackUID 1, Name `kinesis_video` (the SDK's default track name), CodecID
//! `V_MPEG4/ISO/AVC` (the PutMedia page's `V_MPEG/ISO/AVC` is a typo of the registered ID, which
//! the producer SDK itself uses) or `V_MPEGH/ISO/HEVC`, the AVCC/HVCC CodecPrivate and the
//! pixel size. No Cues, SeekHead or Duration: KVS does not need them and they cannot be known
//! while the file grows.
//!
//! Cluster rules (one Cluster = one KVS fragment):
//! - its size is known: the fragment is built in memory and written in one go;
//! - Timecode is the first frame's absolute wall-clock time in ms (PutMedia with
//!   `x-amzn-fragment-timecode-type: ABSOLUTE`);
//! - it holds SimpleBlocks on track 1, each with a signed 16-bit timecode relative to the
//!   Cluster's, so a cluster spans at most 32.767 s (KVS allows 20 s anyway);
//! - the first frame is a key frame, timestamps never go backwards (equal ones are accepted).
//!
//! No maintained Rust crate writes Matroska for H.264/H.265 (the `webm` crate wraps libwebm
//! for VP8/VP9/AV1, `matroska` and friends only read), and the subset KVS needs is a few
//! hundred lines, so the writer is hand-written on top of [`super::ebml`].
//!
//! # Reading
//!
//! [`SegmentReader`] parses the header and then walks the clusters one at a time, with memory
//! bounded by the largest cluster (at most [`MAX_CLUSTER_LEN`]). It reads our files and those
//! of ffmpeg or mkvmerge: SimpleBlocks and BlockGroups, Void/CRC-32/Cues/Tags and unknown
//! elements skipped, unknown-size clusters (ended by the next top-level element or the end of
//! the file).
//!
//! Crash-recovery guarantee: [`scan_segment`] stops at the first cluster (or other top-level
//! element) that is incomplete or malformed and reports `valid_len`, the offset where the last
//! good element ends. Every byte before `valid_len` belongs to the header or to clusters that
//! parsed completely, so truncating the file there leaves a valid segment holding exactly the
//! clusters in `clusters`.

use std::io::{self, Read, Seek, SeekFrom};

use thiserror::Error;

use super::ebml::{self, EbmlError, ElementHeader, ids};

/// The tag that closes the fragment before it at once (PIC `src/client/src/Stream.h:58`,
/// `EOFR_METADATA_NAME`).
pub const END_OF_FRAGMENT_TAG: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";

/// TimecodeScale written in our headers: 1 ms per tick, so block times are milliseconds.
pub const TIMECODE_SCALE_NS: u64 = 1_000_000;
/// The only track we write.
pub const TRACK_NUMBER: u64 = 1;
/// The KVS producer SDK's default track name.
pub const TRACK_NAME: &str = "kinesis_video";
/// MuxingApp and WritingApp.
pub const APP_NAME: &str = "kvs-edge-agent";
/// Largest cluster the reader loads (KVS caps fragments at 50 MB; foreign files get slack).
pub const MAX_CLUSTER_LEN: u64 = 256 << 20;
/// Largest header element (EBML header, Info, Tracks) the reader loads; CodecPrivate is at most
/// 1 MiB in KVS.
const MAX_HEADER_ELEMENT_LEN: u64 = 16 << 20;

/// Video codecs KVS plays back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// The Matroska CodecID.
    pub fn codec_id(self) -> &'static str {
        match self {
            VideoCodec::H264 => "V_MPEG4/ISO/AVC",
            VideoCodec::H265 => "V_MPEGH/ISO/HEVC",
        }
    }

    /// The codec for a Matroska CodecID, if it is one we carry.
    pub fn from_codec_id(codec_id: &str) -> Option<Self> {
        match codec_id {
            "V_MPEG4/ISO/AVC" => Some(VideoCodec::H264),
            "V_MPEGH/ISO/HEVC" => Some(VideoCodec::H265),
            _ => None,
        }
    }
}

/// The one video track of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub codec: VideoCodec,
    /// AVCDecoderConfigurationRecord (H.264) or HEVCDecoderConfigurationRecord (H.265).
    pub codec_private: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

/// One video frame (access unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Presentation time, absolute wall-clock milliseconds since the Unix epoch when written by
    /// the recorder; as stored in the file when read back.
    pub timestamp_ms: i64,
    /// A random access point (IDR for H.264, IRAP for H.265).
    pub key: bool,
    /// AVCC payload: NAL units each prefixed with a 4-byte big-endian length.
    pub data: Vec<u8>,
}

/// Why a segment could not be written or read.
#[derive(Debug, Error)]
pub enum MkvError {
    #[error(transparent)]
    Ebml(#[from] EbmlError),
    #[error("I/O error reading a segment: {0}")]
    Io(#[from] io::Error),
    #[error("cluster has no frames")]
    EmptyCluster,
    #[error("cluster must start with a key frame")]
    FirstFrameNotKey,
    #[error("frame {index} has no data")]
    EmptyFrame { index: usize },
    #[error("timestamps go backwards: {next} ms after {prev} ms")]
    TimestampBackwards { prev: i64, next: i64 },
    #[error(
        "frame at {timestamp_ms} ms is too far from cluster start {cluster_ms} ms for a 16-bit relative timecode"
    )]
    RelativeTimecodeOverflow { cluster_ms: i64, timestamp_ms: i64 },
    #[error("cluster timecode {0} ms is negative")]
    NegativeTimecode(i64),
    #[error("not an EBML file (first element 0x{0:x})")]
    NotEbml(u32),
    #[error("DocType {0:?} is not matroska")]
    NotMatroska(String),
    #[error("no {0} element")]
    Missing(&'static str),
    #[error("no H.264 or H.265 video track (codecs seen: {0:?})")]
    NoVideoTrack(Vec<String>),
    #[error(
        "element 0x{id:x} at offset {offset} has unknown size, which only Segment and Cluster may have"
    )]
    UnexpectedUnknownSize { id: u32, offset: u64 },
    #[error("element 0x{id:x} at offset {offset} is {len} bytes, more than the {max} allowed")]
    ElementTooLarge {
        id: u32,
        offset: u64,
        len: u64,
        max: u64,
    },
    #[error("element at offset {offset} needs {needed} bytes but the file ends at {file_len}")]
    Truncated {
        offset: u64,
        needed: u64,
        file_len: u64,
    },
    #[error("malformed block: {0}")]
    BadBlock(&'static str),
    #[error("laced blocks are not supported for video")]
    Lacing,
    #[error("{what} value {value} out of range")]
    OutOfRange { what: &'static str, value: u64 },
}

/// The header of a new segment: EBML header, unknown-size Segment, Info and Tracks.
///
/// `segment_uid` should be random (or otherwise unique per file); KVS keeps it as segment
/// metadata but does not interpret it.
pub fn segment_header(track: &TrackInfo, segment_uid: [u8; 16]) -> Vec<u8> {
    build_segment_header(track, &segment_uid, None)
        .expect("header uses valid constant IDs and in-memory sizes far below 2^56")
}

/// [`segment_header`] with the Segment's Duration (ms) in Info: a file written whole (an
/// export), so players know its length though the Segment's size stays unknown.
pub fn file_header(track: &TrackInfo, segment_uid: [u8; 16], duration_ms: f64) -> Vec<u8> {
    build_segment_header(track, &segment_uid, Some(duration_ms))
        .expect("header uses valid constant IDs and in-memory sizes far below 2^56")
}

fn build_segment_header(
    track: &TrackInfo,
    segment_uid: &[u8; 16],
    duration_ms: Option<f64>,
) -> Result<Vec<u8>, EbmlError> {
    let mut ebml_body = Vec::new();
    ebml::write_uint(&mut ebml_body, ids::EBML_VERSION, 1)?;
    ebml::write_uint(&mut ebml_body, ids::EBML_READ_VERSION, 1)?;
    ebml::write_uint(&mut ebml_body, ids::EBML_MAX_ID_LENGTH, 4)?;
    ebml::write_uint(&mut ebml_body, ids::EBML_MAX_SIZE_LENGTH, 8)?;
    ebml::write_string(&mut ebml_body, ids::DOC_TYPE, "matroska")?;
    ebml::write_uint(&mut ebml_body, ids::DOC_TYPE_VERSION, 2)?;
    ebml::write_uint(&mut ebml_body, ids::DOC_TYPE_READ_VERSION, 2)?;

    let mut info = Vec::new();
    ebml::write_binary(&mut info, ids::SEGMENT_UID, segment_uid)?;
    ebml::write_uint(&mut info, ids::TIMECODE_SCALE, TIMECODE_SCALE_NS)?;
    if let Some(d) = duration_ms {
        ebml::write_float(&mut info, ids::DURATION, d)?;
    }
    ebml::write_string(&mut info, ids::MUXING_APP, APP_NAME)?;
    ebml::write_string(&mut info, ids::WRITING_APP, APP_NAME)?;

    let mut video = Vec::new();
    ebml::write_uint(&mut video, ids::PIXEL_WIDTH, track.width.into())?;
    ebml::write_uint(&mut video, ids::PIXEL_HEIGHT, track.height.into())?;

    let mut entry = Vec::new();
    ebml::write_uint(&mut entry, ids::TRACK_NUMBER, TRACK_NUMBER)?;
    ebml::write_uint(&mut entry, ids::TRACK_UID, TRACK_NUMBER)?;
    ebml::write_uint(&mut entry, ids::TRACK_TYPE, 1)?;
    ebml::write_string(&mut entry, ids::NAME, TRACK_NAME)?;
    ebml::write_string(&mut entry, ids::CODEC_ID, track.codec.codec_id())?;
    ebml::write_binary(&mut entry, ids::CODEC_PRIVATE, &track.codec_private)?;
    ebml::write_master(&mut entry, ids::VIDEO, &video)?;

    let mut tracks = Vec::new();
    ebml::write_master(&mut tracks, ids::TRACK_ENTRY, &entry)?;

    let mut out = Vec::with_capacity(128 + ebml_body.len() + info.len() + tracks.len());
    ebml::write_master(&mut out, ids::EBML, &ebml_body)?;
    ebml::write_unknown_size_header(&mut out, ids::SEGMENT)?;
    ebml::write_master(&mut out, ids::INFO, &info)?;
    ebml::write_master(&mut out, ids::TRACKS, &tracks)?;
    Ok(out)
}

/// Check the cluster rules and return the cluster timecode.
/// The Tags element PIC sends after a fragment's last frame to close it without waiting for
/// the next Cluster (`Stream.c:849`, bytes as `mkvgen/src/MkvStatics.c:131-183`: Tags > Tag >
/// SimpleTag > TagName `AWS_KINESISVIDEO_END_OF_FRAGMENT`, TagString ""). A top-level element,
/// valid between Clusters; readers (ours, ffmpeg, mkvmerge) skip it.
pub fn end_of_fragment_tags() -> Vec<u8> {
    let build = || -> Result<Vec<u8>, EbmlError> {
        let mut simple = Vec::new();
        ebml::write_string(&mut simple, ids::TAG_NAME, END_OF_FRAGMENT_TAG)?;
        ebml::write_string(&mut simple, ids::TAG_STRING, "")?;
        let mut tag = Vec::new();
        ebml::write_master(&mut tag, ids::SIMPLE_TAG, &simple)?;
        let mut tags = Vec::new();
        ebml::write_master(&mut tags, ids::TAG, &tag)?;
        let mut out = Vec::new();
        ebml::write_master(&mut out, ids::TAGS, &tags)?;
        Ok(out)
    };
    build().expect("constant IDs and a few dozen bytes")
}

fn check_cluster(frames: &[Frame]) -> Result<i64, MkvError> {
    let first = frames.first().ok_or(MkvError::EmptyCluster)?;
    if !first.key {
        return Err(MkvError::FirstFrameNotKey);
    }
    let cluster_ms = first.timestamp_ms;
    if cluster_ms < 0 {
        return Err(MkvError::NegativeTimecode(cluster_ms));
    }
    let mut prev = cluster_ms;
    for (index, frame) in frames.iter().enumerate() {
        if frame.data.is_empty() {
            return Err(MkvError::EmptyFrame { index });
        }
        if frame.timestamp_ms < prev {
            return Err(MkvError::TimestampBackwards {
                prev,
                next: frame.timestamp_ms,
            });
        }
        if frame.timestamp_ms - cluster_ms > i64::from(i16::MAX) {
            return Err(MkvError::RelativeTimecodeOverflow {
                cluster_ms,
                timestamp_ms: frame.timestamp_ms,
            });
        }
        prev = frame.timestamp_ms;
    }
    Ok(cluster_ms)
}

/// SimpleBlock header: track number VINT (1 byte for track 1), i16 timecode, flags.
const SIMPLE_BLOCK_HEADER_LEN: u64 = 4;

/// One Cluster of known size holding `frames` as SimpleBlocks on track 1: one KVS fragment.
pub fn cluster(frames: &[Frame]) -> Result<Vec<u8>, MkvError> {
    let cluster_ms = check_cluster(frames)?;
    let mut timecode = Vec::with_capacity(10);
    ebml::write_uint(&mut timecode, ids::TIMECODE, cluster_ms as u64)?;
    let mut body_len = timecode.len() as u64;
    for frame in frames {
        let block_len = SIMPLE_BLOCK_HEADER_LEN + frame.data.len() as u64;
        body_len += 1 + ebml::size_len(block_len)? as u64 + block_len;
    }
    let mut out = Vec::with_capacity(12 + body_len as usize);
    ebml::write_header(&mut out, ids::CLUSTER, body_len)?;
    out.extend_from_slice(&timecode);
    for frame in frames {
        let block_len = SIMPLE_BLOCK_HEADER_LEN + frame.data.len() as u64;
        ebml::write_header(&mut out, ids::SIMPLE_BLOCK, block_len)?;
        // Checked above: 0 <= relative <= i16::MAX.
        let relative = (frame.timestamp_ms - cluster_ms) as i16;
        out.push(0x80 | TRACK_NUMBER as u8);
        out.extend_from_slice(&relative.to_be_bytes());
        out.push(if frame.key { 0x80 } else { 0x00 });
        out.extend_from_slice(&frame.data);
    }
    Ok(out)
}

/// Duration of a fragment from its frame timestamps: last - first plus one mean frame
/// interval, so back-to-back fragments tile the timeline; 0 for a single frame (no interval
/// to estimate). The recorder knows the exact value (the next fragment's first timestamp minus
/// this one's) and may store that instead.
pub fn fragment_duration_ms(first_ms: i64, last_ms: i64, frame_count: usize) -> i64 {
    if frame_count < 2 {
        return 0;
    }
    let span = last_ms - first_ms;
    span + span / (frame_count as i64 - 1)
}

/// What the reader learned from a segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub track: TrackInfo,
    /// Track number of the video track in the file (1 in ours).
    pub track_number: u64,
    /// Nanoseconds per timecode tick (1 ms in ours).
    pub timecode_scale_ns: u64,
    pub segment_uid: Option<Vec<u8>>,
    /// Offset of the first byte after the header (where the first cluster starts in ours).
    pub header_len: u64,
}

/// A complete cluster as found by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSummary {
    /// Offset of the Cluster element (its ID) in the file.
    pub offset: u64,
    /// Bytes of the whole element, header included.
    pub size: u64,
    /// Cluster timecode in ms.
    pub timecode_ms: i64,
    /// Video frames in it (blocks of other tracks are not counted).
    pub frame_count: usize,
    /// See [`fragment_duration_ms`].
    pub duration_ms: i64,
    /// Whether the first video frame is a key frame (always, in clusters we write).
    pub key_first: bool,
}

impl ClusterSummary {
    /// Offset one past the cluster's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// A cluster and its video frames (timestamps in ms: cluster timecode + block timecode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub summary: ClusterSummary,
    pub frames: Vec<Frame>,
}

/// Result of walking a whole segment.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    pub clusters: Vec<ClusterSummary>,
    /// Offset where the good data ends: truncate the file here to drop a torn tail.
    pub valid_len: u64,
    /// Length of the file (or slice) that was scanned.
    pub file_len: u64,
    /// Why the walk stopped before the end of the data, if it did.
    pub stopped_by: Option<MkvError>,
}

/// Walk a segment: header, then every complete cluster until the end or the first bad one.
/// Fails only if the header itself cannot be read.
pub fn scan_segment<R: Read + Seek>(src: R) -> Result<SegmentScan, MkvError> {
    let mut reader = SegmentReader::new(src)?;
    let mut clusters = Vec::new();
    let stopped_by = loop {
        match reader.next_summary() {
            Ok(Some(summary)) => clusters.push(summary),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    Ok(SegmentScan {
        header: reader.header.clone(),
        clusters,
        valid_len: reader.valid_len(),
        file_len: reader.file_len,
        stopped_by,
    })
}

/// [`scan_segment`] over bytes in memory.
pub fn scan_segment_bytes(bytes: &[u8]) -> Result<SegmentScan, MkvError> {
    scan_segment(io::Cursor::new(bytes))
}

/// Reads a Matroska segment cluster by cluster.
pub struct SegmentReader<R> {
    src: R,
    header: SegmentHeader,
    file_len: u64,
    /// End of the Segment's data (its known size, else the file length).
    segment_end: u64,
    /// Offset of the next top-level element to read.
    pos: u64,
    /// Set once the walk has stopped; later calls return `Ok(None)`.
    done: bool,
}

impl<R: Read + Seek> SegmentReader<R> {
    /// Parse the EBML header, the Segment header, Info and Tracks, stopping at the first
    /// Cluster.
    pub fn new(mut src: R) -> Result<Self, MkvError> {
        let file_len = src.seek(SeekFrom::End(0))?;
        let mut io = Io {
            src: &mut src,
            file_len,
        };

        let (ebml_header, ebml_body) = io.element_at(0, MAX_HEADER_ELEMENT_LEN)?;
        if ebml_header.id != ids::EBML {
            return Err(MkvError::NotEbml(ebml_header.id));
        }
        let mut doc_type = String::from("matroska");
        for child in ebml::children(&ebml_body) {
            let (h, data) = child?;
            if h.id == ids::DOC_TYPE {
                doc_type = ebml::read_string(data)?;
            }
        }
        if doc_type != "matroska" && doc_type != "webm" {
            return Err(MkvError::NotMatroska(doc_type));
        }

        let segment_offset = ebml_header.total_len().unwrap_or(0);
        let segment = io.header_at(segment_offset)?;
        if segment.id != ids::SEGMENT {
            return Err(MkvError::Missing("Segment"));
        }
        let data_start = segment_offset + segment.header_len as u64;
        let segment_end = segment
            .size
            .map_or(file_len, |size| (data_start + size).min(file_len));

        let mut pos = data_start;
        let mut timecode_scale_ns = TIMECODE_SCALE_NS;
        let mut segment_uid = None;
        let mut tracks = None;
        while pos < segment_end {
            // Once Tracks is known, a torn or bad element ends the header; the cluster walk
            // then reports it, so a file cut right after its header still opens.
            let h = match io.header_at(pos) {
                Err(_) if tracks.is_some() => break,
                h => h?,
            };
            if h.id == ids::CLUSTER {
                break;
            }
            match h.id {
                ids::INFO => {
                    let (_, body) = io.element_at(pos, MAX_HEADER_ELEMENT_LEN)?;
                    for child in ebml::children(&body) {
                        let (ch, data) = child?;
                        match ch.id {
                            ids::TIMECODE_SCALE => timecode_scale_ns = ebml::read_uint(data)?,
                            ids::SEGMENT_UID => segment_uid = Some(data.to_vec()),
                            _ => {}
                        }
                    }
                }
                ids::TRACKS => {
                    let (_, body) = io.element_at(pos, MAX_HEADER_ELEMENT_LEN)?;
                    tracks = Some(parse_tracks(&body)?);
                }
                _ => {}
            }
            match io.known_total(pos, &h) {
                Ok(total) => pos += total,
                Err(_) if tracks.is_some() => break,
                Err(e) => return Err(e),
            }
        }
        if timecode_scale_ns == 0 {
            return Err(MkvError::OutOfRange {
                what: "TimecodeScale",
                value: 0,
            });
        }
        let (track_number, track) = tracks.ok_or(MkvError::Missing("Tracks"))?;
        Ok(SegmentReader {
            src,
            header: SegmentHeader {
                track,
                track_number,
                timecode_scale_ns,
                segment_uid,
                header_len: pos,
            },
            file_len,
            segment_end,
            pos,
            done: false,
        })
    }

    /// What the header says.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Offset where the data read so far ends cleanly: the header, then every complete cluster
    /// and other top-level element returned or skipped so far.
    pub fn valid_len(&self) -> u64 {
        self.pos
    }

    /// The next cluster with its frames, `Ok(None)` at the end of the segment. After an error
    /// the reader stays where the bad element starts and returns `Ok(None)` from then on.
    pub fn next_cluster(&mut self) -> Result<Option<Cluster>, MkvError> {
        self.next_with(true)
            .map(|c| c.map(|(summary, frames)| Cluster { summary, frames }))
    }

    /// Like [`Self::next_cluster`] without copying frame data out.
    pub fn next_summary(&mut self) -> Result<Option<ClusterSummary>, MkvError> {
        self.next_with(false).map(|c| c.map(|(summary, _)| summary))
    }

    fn next_with(
        &mut self,
        want_frames: bool,
    ) -> Result<Option<(ClusterSummary, Vec<Frame>)>, MkvError> {
        if self.done {
            return Ok(None);
        }
        let result = self.advance(want_frames);
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn advance(
        &mut self,
        want_frames: bool,
    ) -> Result<Option<(ClusterSummary, Vec<Frame>)>, MkvError> {
        let mut io = Io {
            src: &mut self.src,
            file_len: self.file_len,
        };
        while self.pos < self.segment_end {
            let offset = self.pos;
            let h = io.header_at(offset)?;
            if h.id == ids::EBML || h.id == ids::SEGMENT {
                // A second segment (chained streams): ours never has one; stop cleanly here.
                return Ok(None);
            }
            if h.id != ids::CLUSTER {
                self.pos += io.known_total(offset, &h)?;
                continue;
            }
            let size = match h.total_len() {
                Some(total) => total,
                None => io.unknown_cluster_len(offset, &h, self.segment_end)?,
            };
            let bytes = io.bytes_at(offset, size, MAX_CLUSTER_LEN, h.id)?;
            let parsed = parse_cluster_body(
                &bytes[h.header_len..],
                self.header.timecode_scale_ns,
                self.header.track_number,
            )?;
            let frame_count = parsed.blocks.len();
            let (first_ms, last_ms) = match (parsed.blocks.first(), parsed.blocks.last()) {
                (Some(a), Some(b)) => (a.timestamp_ms, b.timestamp_ms),
                _ => (parsed.timecode_ms, parsed.timecode_ms),
            };
            let summary = ClusterSummary {
                offset,
                size,
                timecode_ms: parsed.timecode_ms,
                frame_count,
                duration_ms: fragment_duration_ms(first_ms, last_ms, frame_count),
                key_first: parsed.blocks.first().is_some_and(|b| b.key),
            };
            let frames = if want_frames {
                parsed
                    .blocks
                    .iter()
                    .map(|b| Frame {
                        timestamp_ms: b.timestamp_ms,
                        key: b.key,
                        data: b.data.to_vec(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            self.pos = offset + size;
            return Ok(Some((summary, frames)));
        }
        Ok(None)
    }
}

/// Positioned reads with every length checked against the file before allocating.
struct Io<'a, R> {
    src: &'a mut R,
    file_len: u64,
}

impl<R: Read + Seek> Io<'_, R> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MkvError> {
        self.src.seek(SeekFrom::Start(offset))?;
        self.src.read_exact(buf)?;
        Ok(())
    }

    fn header_at(&mut self, offset: u64) -> Result<ElementHeader, MkvError> {
        let available = self.file_len.saturating_sub(offset).min(12) as usize;
        let mut buf = [0u8; 12];
        self.read_exact_at(offset, &mut buf[..available])?;
        match ebml::read_element_header(&buf[..available]) {
            Err(EbmlError::Truncated { needed, .. }) => Err(MkvError::Truncated {
                offset,
                needed,
                file_len: self.file_len,
            }),
            other => Ok(other?),
        }
    }

    /// Total length of a known-size element that must lie entirely within the file.
    fn known_total(&mut self, offset: u64, h: &ElementHeader) -> Result<u64, MkvError> {
        let total = h
            .total_len()
            .ok_or(MkvError::UnexpectedUnknownSize { id: h.id, offset })?;
        if offset.saturating_add(total) > self.file_len {
            return Err(MkvError::Truncated {
                offset,
                needed: total,
                file_len: self.file_len,
            });
        }
        Ok(total)
    }

    fn bytes_at(&mut self, offset: u64, len: u64, max: u64, id: u32) -> Result<Vec<u8>, MkvError> {
        if offset.saturating_add(len) > self.file_len {
            return Err(MkvError::Truncated {
                offset,
                needed: len,
                file_len: self.file_len,
            });
        }
        if len > max {
            return Err(MkvError::ElementTooLarge {
                id,
                offset,
                len,
                max,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Header and data of the known-size element at `offset`.
    fn element_at(&mut self, offset: u64, max: u64) -> Result<(ElementHeader, Vec<u8>), MkvError> {
        let h = self.header_at(offset)?;
        let total = self.known_total(offset, &h)?;
        let bytes = self.bytes_at(offset, total, max, h.id)?;
        Ok((h, bytes[h.header_len..].to_vec()))
    }

    /// Length of an unknown-size cluster: its children run until a top-level element starts
    /// or the segment ends; every child must be complete.
    fn unknown_cluster_len(
        &mut self,
        offset: u64,
        h: &ElementHeader,
        end: u64,
    ) -> Result<u64, MkvError> {
        let mut pos = offset + h.header_len as u64;
        while pos < end {
            let child = self.header_at(pos)?;
            if is_top_level(child.id) {
                break;
            }
            pos += self.known_total(pos, &child)?;
            if pos - offset > MAX_CLUSTER_LEN {
                return Err(MkvError::ElementTooLarge {
                    id: ids::CLUSTER,
                    offset,
                    len: pos - offset,
                    max: MAX_CLUSTER_LEN,
                });
            }
        }
        Ok(pos.min(end) - offset)
    }
}

/// IDs that end an unknown-size Cluster: Segment children and a new EBML stream.
fn is_top_level(id: u32) -> bool {
    matches!(
        id,
        ids::CLUSTER
            | ids::CUES
            | ids::TAGS
            | ids::CHAPTERS
            | ids::ATTACHMENTS
            | ids::SEEK_HEAD
            | ids::INFO
            | ids::TRACKS
            | ids::SEGMENT
            | ids::EBML
    )
}

/// First H.264/H.265 video track: `(track number, info)`.
fn parse_tracks(body: &[u8]) -> Result<(u64, TrackInfo), MkvError> {
    let mut seen = Vec::new();
    for entry in ebml::children(body) {
        let (h, data) = entry?;
        if h.id != ids::TRACK_ENTRY {
            continue;
        }
        let (mut number, mut kind, mut codec_id) = (0, 0, String::new());
        let (mut codec_private, mut width, mut height) = (Vec::new(), 0, 0);
        for child in ebml::children(data) {
            let (ch, data) = child?;
            match ch.id {
                ids::TRACK_NUMBER => number = ebml::read_uint(data)?,
                ids::TRACK_TYPE => kind = ebml::read_uint(data)?,
                ids::CODEC_ID => codec_id = ebml::read_string(data)?,
                ids::CODEC_PRIVATE => codec_private = data.to_vec(),
                ids::VIDEO => {
                    for v in ebml::children(data) {
                        let (vh, data) = v?;
                        match vh.id {
                            ids::PIXEL_WIDTH => width = pixel_size("PixelWidth", data)?,
                            ids::PIXEL_HEIGHT => height = pixel_size("PixelHeight", data)?,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        match VideoCodec::from_codec_id(&codec_id) {
            Some(codec) if kind == 1 && number != 0 => {
                let track = TrackInfo {
                    codec,
                    codec_private,
                    width,
                    height,
                };
                return Ok((number, track));
            }
            _ => seen.push(codec_id),
        }
    }
    Err(MkvError::NoVideoTrack(seen))
}

fn pixel_size(what: &'static str, data: &[u8]) -> Result<u16, MkvError> {
    let value = ebml::read_uint(data)?;
    u16::try_from(value).map_err(|_| MkvError::OutOfRange { what, value })
}

struct BlockRef<'a> {
    timestamp_ms: i64,
    key: bool,
    data: &'a [u8],
}

struct ParsedCluster<'a> {
    timecode_ms: i64,
    blocks: Vec<BlockRef<'a>>,
}

/// Ticks to ms, saturating instead of overflowing on absurd values.
fn ticks_to_ms(ticks: i128, scale_ns: u64) -> i64 {
    let ms = ticks
        .checked_mul(i128::from(scale_ns))
        .map_or(ticks.signum() * i128::MAX, |ns| ns / 1_000_000);
    ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Parse a cluster's children: Timecode, then SimpleBlocks and BlockGroups of `track`.
fn parse_cluster_body(
    body: &[u8],
    scale_ns: u64,
    track: u64,
) -> Result<ParsedCluster<'_>, MkvError> {
    let mut timecode: Option<u64> = None;
    let mut blocks = Vec::new();
    for child in ebml::children(body) {
        let (h, data) = child?;
        let (block, key_override) = match h.id {
            ids::TIMECODE => {
                timecode = Some(ebml::read_uint(data)?);
                continue;
            }
            ids::SIMPLE_BLOCK => (data, None),
            ids::BLOCK_GROUP => {
                let mut block = None;
                let mut referenced = false;
                for g in ebml::children(data) {
                    let (gh, gdata) = g?;
                    match gh.id {
                        ids::BLOCK => block = Some(gdata),
                        ids::REFERENCE_BLOCK => referenced = true,
                        _ => {}
                    }
                }
                let block = block.ok_or(MkvError::BadBlock("BlockGroup without Block"))?;
                (block, Some(!referenced))
            }
            _ => continue,
        };
        let cluster_tc = timecode.ok_or(MkvError::Missing("Cluster Timecode before blocks"))?;
        let (block_track, vint_len) = ebml::read_size(block)?;
        let rest = &block[vint_len..];
        if rest.len() < 3 {
            return Err(MkvError::BadBlock("block shorter than its header"));
        }
        if block_track != Some(track) {
            continue;
        }
        let relative = i16::from_be_bytes([rest[0], rest[1]]);
        let flags = rest[2];
        if flags & 0x06 != 0 {
            return Err(MkvError::Lacing);
        }
        let ticks = i128::from(cluster_tc) + i128::from(relative);
        blocks.push(BlockRef {
            timestamp_ms: ticks_to_ms(ticks, scale_ns),
            key: key_override.unwrap_or(flags & 0x80 != 0),
            data: &rest[3..],
        });
    }
    let timecode = timecode.ok_or(MkvError::Missing("Cluster Timecode"))?;
    Ok(ParsedCluster {
        timecode_ms: ticks_to_ms(timecode.into(), scale_ns),
        blocks,
    })
}

/// The frames of one complete Cluster element (header included), as written by [`cluster`]
/// or read from a file with the given TimecodeScale and video track number.
pub fn read_cluster_frames(
    cluster: &[u8],
    timecode_scale_ns: u64,
    track: u64,
) -> Result<Vec<Frame>, MkvError> {
    let (h, body, _) = ebml::split_element(cluster)?;
    if h.id != ids::CLUSTER {
        return Err(MkvError::Missing("Cluster"));
    }
    let parsed = parse_cluster_body(body, timecode_scale_ns, track)?;
    Ok(parsed
        .blocks
        .into_iter()
        .map(|b| Frame {
            timestamp_ms: b.timestamp_ms,
            key: b.key,
            data: b.data.to_vec(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> TrackInfo {
        TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![
                1, 0x4D, 0x40, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x4D, 0x40, 0x1E, 1, 0, 2, 0x68, 0xEB,
            ],
            width: 640,
            height: 360,
        }
    }

    fn frame(ts: i64, key: bool, fill: u8) -> Frame {
        Frame {
            timestamp_ms: ts,
            key,
            data: vec![0, 0, 0, 3, if key { 0x65 } else { 0x41 }, fill, fill],
        }
    }

    fn gop(start: i64, n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| frame(start + 40 * i as i64, i == 0, i as u8))
            .collect()
    }

    fn segment(clusters: &[Vec<Frame>]) -> Vec<u8> {
        let mut out = segment_header(&track(), [7; 16]);
        for frames in clusters {
            out.extend(cluster(frames).unwrap());
        }
        out
    }

    #[test]
    fn header_reads_back() {
        let bytes = segment_header(&track(), [7; 16]);
        let scan = scan_segment_bytes(&bytes).unwrap();
        assert_eq!(scan.header.track, track());
        assert_eq!(scan.header.track_number, 1);
        assert_eq!(scan.header.timecode_scale_ns, 1_000_000);
        assert_eq!(scan.header.segment_uid.as_deref(), Some(&[7u8; 16][..]));
        assert_eq!(scan.header.header_len, bytes.len() as u64);
        assert_eq!(
            (scan.valid_len, scan.clusters.len()),
            (bytes.len() as u64, 0)
        );
        assert!(scan.stopped_by.is_none());
        // Segment size is the unknown marker, right after the EBML header.
        let ebml_len = ebml::split_element(&bytes).unwrap().0.total_len().unwrap() as usize;
        assert_eq!(
            &bytes[ebml_len..ebml_len + 12],
            &[
                0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
    }

    #[test]
    fn end_of_fragment_tags_are_pics_chain_and_readers_skip_them() {
        let tags = end_of_fragment_tags();
        let name = END_OF_FRAGMENT_TAG.as_bytes();
        let mut want = vec![0x12, 0x54, 0xC3, 0x67, 0x80 | (name.len() as u8 + 12)];
        want.extend([0x73, 0x73, 0x80 | (name.len() as u8 + 9)]);
        want.extend([0x67, 0xC8, 0x80 | (name.len() as u8 + 6)]);
        want.extend([0x45, 0xA3, 0x80 | name.len() as u8]);
        want.extend(name);
        want.extend([0x44, 0x87, 0x80]);
        assert_eq!(tags, want);

        let mut bytes = segment(&[gop(1_000, 3)]);
        bytes.extend(&tags);
        bytes.extend(cluster(&gop(2_000, 3)).unwrap());
        bytes.extend(&tags);
        let scan = scan_segment_bytes(&bytes).unwrap();
        assert_eq!(scan.clusters.len(), 2);
        assert_eq!(scan.valid_len, bytes.len() as u64);
    }

    #[test]
    fn hevc_track_round_trips() {
        let hevc = TrackInfo {
            codec: VideoCodec::H265,
            codec_private: vec![1, 2, 3],
            width: 3840,
            height: 2160,
        };
        let bytes = segment_header(&hevc, [2; 16]);
        assert!(bytes.windows(16).any(|w| w == b"V_MPEGH/ISO/HEVC"));
        assert_eq!(scan_segment_bytes(&bytes).unwrap().header.track, hevc);
    }

    #[test]
    fn cluster_layout_and_round_trip() {
        let frames = gop(1_700_000_000_000, 3);
        let bytes = cluster(&frames).unwrap();
        let (h, body, rest) = ebml::split_element(&bytes).unwrap();
        assert_eq!((h.id, rest.len()), (ids::CLUSTER, 0));
        let kids: Vec<_> = ebml::children(body).collect::<Result<_, _>>().unwrap();
        assert_eq!(kids[0].0.id, ids::TIMECODE);
        assert_eq!(ebml::read_uint(kids[0].1).unwrap(), 1_700_000_000_000);
        assert_eq!(kids[1].0.id, ids::SIMPLE_BLOCK);
        assert_eq!(&kids[1].1[..4], &[0x81, 0, 0, 0x80]);
        assert_eq!(&kids[2].1[..4], &[0x81, 0, 40, 0x00]);
        assert_eq!(
            read_cluster_frames(&bytes, TIMECODE_SCALE_NS, 1).unwrap(),
            frames
        );
    }

    #[test]
    fn cluster_rules_are_enforced() {
        assert!(matches!(cluster(&[]), Err(MkvError::EmptyCluster)));
        assert!(matches!(
            cluster(&[frame(0, false, 0)]),
            Err(MkvError::FirstFrameNotKey)
        ));
        assert!(matches!(
            cluster(&[frame(100, true, 0), frame(99, false, 0)]),
            Err(MkvError::TimestampBackwards {
                prev: 100,
                next: 99
            })
        ));
        assert!(matches!(
            cluster(&[frame(0, true, 0), frame(32_768, false, 0)]),
            Err(MkvError::RelativeTimecodeOverflow { .. })
        ));
        assert!(cluster(&[frame(0, true, 0), frame(32_767, false, 0)]).is_ok());
        assert!(matches!(
            cluster(&[frame(-1, true, 0)]),
            Err(MkvError::NegativeTimecode(-1))
        ));
        let mut empty = frame(0, true, 0);
        empty.data.clear();
        assert!(matches!(
            cluster(&[empty]),
            Err(MkvError::EmptyFrame { index: 0 })
        ));
        // Equal timestamps are accepted.
        assert!(cluster(&[frame(5, true, 0), frame(5, false, 0)]).is_ok());
    }

    #[test]
    fn scan_reports_clusters_and_frames() {
        let t0 = 1_700_000_000_000;
        let clusters = [gop(t0, 50), gop(t0 + 2000, 50), gop(t0 + 4000, 10)];
        let bytes = segment(&clusters);
        let scan = scan_segment_bytes(&bytes).unwrap();
        assert!(scan.stopped_by.is_none(), "{:?}", scan.stopped_by);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.clusters.len(), 3);
        assert_eq!(scan.clusters[0].offset, scan.header.header_len);
        assert_eq!(scan.clusters[1].offset, scan.clusters[0].end());
        assert_eq!(scan.clusters[1].timecode_ms, t0 + 2000);
        assert_eq!(scan.clusters[1].frame_count, 50);
        assert_eq!(scan.clusters[1].duration_ms, 2000);
        assert_eq!(scan.clusters[2].duration_ms, 400);
        assert!(scan.clusters.iter().all(|c| c.key_first));

        let mut reader = SegmentReader::new(io::Cursor::new(&bytes)).unwrap();
        for expected in &clusters {
            assert_eq!(&reader.next_cluster().unwrap().unwrap().frames, expected);
        }
        assert!(reader.next_cluster().unwrap().is_none());
    }

    #[test]
    fn every_truncation_keeps_only_complete_clusters() {
        let bytes = segment(&[gop(0, 3), gop(120, 3)]);
        let full = scan_segment_bytes(&bytes).unwrap();
        let header_len = full.header.header_len as usize;
        for cut in 0..bytes.len() {
            let scan = scan_segment_bytes(&bytes[..cut]);
            if cut < header_len {
                assert!(scan.is_err(), "cut {cut} inside header must fail");
                continue;
            }
            let scan = scan.unwrap();
            let expected: Vec<_> = full
                .clusters
                .iter()
                .filter(|c| c.end() <= cut as u64)
                .copied()
                .collect();
            assert_eq!(scan.clusters, expected, "cut {cut}");
            let valid = expected.last().map_or(header_len as u64, |c| c.end());
            assert_eq!(scan.valid_len, valid, "cut {cut}");
            assert_eq!(scan.stopped_by.is_some(), cut as u64 != valid, "cut {cut}");
        }
    }

    #[test]
    fn corrupt_cluster_stops_the_scan() {
        let mut bytes = segment(&[gop(0, 3), gop(120, 3)]);
        let full = scan_segment_bytes(&bytes).unwrap();
        let second = full.clusters[1].offset as usize;
        bytes[second] = 0x00; // invalid ID VINT
        let scan = scan_segment_bytes(&bytes).unwrap();
        assert_eq!(scan.clusters.len(), 1);
        assert_eq!(scan.valid_len, second as u64);
        assert!(matches!(
            scan.stopped_by,
            Some(MkvError::Ebml(EbmlError::InvalidVint { .. }))
        ));
        // A cluster claiming a huge size is truncated, not allocated.
        let mut bytes = segment(&[gop(0, 3)]);
        let at = full.clusters[0].offset as usize + 4;
        bytes[at..at + 8].copy_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]);
        let scan = scan_segment_bytes(&bytes).unwrap();
        assert!(scan.clusters.is_empty());
        assert!(matches!(scan.stopped_by, Some(MkvError::Truncated { .. })));
    }

    #[test]
    fn unknown_size_clusters_block_groups_and_junk_are_read() {
        let mut bytes = segment_header(&track(), [1; 16]);
        let mut body = Vec::new();
        ebml::write_uint(&mut body, ids::TIMECODE, 1000).unwrap();
        ebml::write_binary(&mut body, ids::VOID, &[0; 5]).unwrap();
        ebml::write_binary(&mut body, ids::SIMPLE_BLOCK, &[0x81, 0, 0, 0x80, 9]).unwrap();
        ebml::write_binary(&mut body, ids::SIMPLE_BLOCK, &[0x82, 0, 1, 0x80, 9]).unwrap(); // other track
        let mut group = Vec::new();
        ebml::write_binary(&mut group, ids::BLOCK, &[0x81, 0, 40, 0x00, 8]).unwrap();
        ebml::write_int(&mut group, ids::REFERENCE_BLOCK, -40).unwrap();
        ebml::write_master(&mut body, ids::BLOCK_GROUP, &group).unwrap();
        let mut group = Vec::new();
        ebml::write_binary(&mut group, ids::BLOCK, &[0x81, 0, 80, 0x00, 7]).unwrap();
        ebml::write_master(&mut body, ids::BLOCK_GROUP, &group).unwrap();
        ebml::write_unknown_size_header(&mut bytes, ids::CLUSTER).unwrap();
        bytes.extend(&body);
        let second = bytes.len() as u64;
        ebml::write_unknown_size_header(&mut bytes, ids::CLUSTER).unwrap();
        bytes.extend(&body);
        ebml::write_binary(&mut bytes, ids::CUES, &[0; 4]).unwrap();

        let scan = scan_segment_bytes(&bytes).unwrap();
        assert!(scan.stopped_by.is_none(), "{:?}", scan.stopped_by);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.clusters.len(), 2);
        assert_eq!(scan.clusters[1].offset, second);
        let mut reader = SegmentReader::new(io::Cursor::new(&bytes)).unwrap();
        let c = reader.next_cluster().unwrap().unwrap();
        let got: Vec<_> = c
            .frames
            .iter()
            .map(|f| (f.timestamp_ms, f.key, f.data.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1000, true, vec![9]),
                (1040, false, vec![8]),
                (1080, true, vec![7])
            ]
        );
    }

    #[test]
    fn foreign_timecode_scale_is_converted() {
        let mut body = Vec::new();
        ebml::write_uint(&mut body, ids::TIMECODE, 20).unwrap();
        ebml::write_binary(&mut body, ids::SIMPLE_BLOCK, &[0x81, 0, 4, 0x80, 1]).unwrap();
        let mut c = Vec::new();
        ebml::write_master(&mut c, ids::CLUSTER, &body).unwrap();
        let frames = read_cluster_frames(&c, 10_000_000, 1).unwrap();
        assert_eq!(frames[0].timestamp_ms, 240);
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(
            scan_segment_bytes(&[]),
            Err(MkvError::Truncated { .. })
        ));
        assert!(matches!(
            scan_segment_bytes(&[0xA3, 0x80]),
            Err(MkvError::NotEbml(0xA3))
        ));
        let mut doc = Vec::new();
        let mut body = Vec::new();
        ebml::write_string(&mut body, ids::DOC_TYPE, "other").unwrap();
        ebml::write_master(&mut doc, ids::EBML, &body).unwrap();
        assert!(matches!(
            scan_segment_bytes(&doc),
            Err(MkvError::NotMatroska(_))
        ));
        let header = segment_header(&track(), [0; 16]);
        let ebml_len = ebml::split_element(&header).unwrap().0.total_len().unwrap() as usize;
        assert!(matches!(
            scan_segment_bytes(&header[..ebml_len + 12]),
            Err(MkvError::Missing("Tracks"))
        ));
        let mut laced = segment_header(&track(), [0; 16]);
        let mut body = Vec::new();
        ebml::write_uint(&mut body, ids::TIMECODE, 0).unwrap();
        ebml::write_binary(&mut body, ids::SIMPLE_BLOCK, &[0x81, 0, 0, 0x82, 0, 1]).unwrap();
        ebml::write_master(&mut laced, ids::CLUSTER, &body).unwrap();
        assert!(matches!(
            scan_segment_bytes(&laced).unwrap().stopped_by,
            Some(MkvError::Lacing)
        ));
    }

    /// Deterministic xorshift64, so the mutation tests need no extra crate.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn read_everything(bytes: &[u8]) {
        if let Ok(scan) = scan_segment_bytes(bytes) {
            assert!(scan.valid_len <= bytes.len() as u64);
            assert!(scan.clusters.iter().all(|c| c.end() <= scan.valid_len));
        }
        if let Ok(mut reader) = SegmentReader::new(io::Cursor::new(bytes)) {
            while let Ok(Some(_)) = reader.next_cluster() {}
        }
    }

    #[test]
    fn mutated_segments_never_panic() {
        let bytes = segment(&[gop(0, 3), gop(120, 3)]);
        for i in 0..bytes.len() {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF, bytes[i] ^ 0x55] {
                let mut mutated = bytes.clone();
                mutated[i] = value;
                read_everything(&mutated);
            }
        }
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let keep = (next_random(&mut state) % bytes.len() as u64) as usize;
            let mut mutated = bytes[..keep].to_vec();
            for _ in 0..next_random(&mut state) % 64 {
                mutated.push(next_random(&mut state) as u8);
            }
            read_everything(&mutated);
        }
        let mut c = Vec::new();
        ebml::write_master(
            &mut c,
            ids::CLUSTER,
            &[
                0xE7, 0x88, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xA3, 0x84, 0x81, 0x7F,
                0xFF, 0x80,
            ],
        )
        .unwrap();
        let frames = read_cluster_frames(&c, u64::MAX, 1).unwrap();
        assert_eq!(frames[0].timestamp_ms, i64::MAX);
    }

    #[test]
    fn fragment_duration_estimate() {
        assert_eq!(fragment_duration_ms(0, 0, 1), 0);
        assert_eq!(fragment_duration_ms(1000, 1040, 2), 80);
        assert_eq!(fragment_duration_ms(0, 1960, 50), 2000);
    }
}
