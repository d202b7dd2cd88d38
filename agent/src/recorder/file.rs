//! The FILE_URI source (`MediaUriType: FILE_URI`): a local H.264 Annex B file or a Matroska
//! file played at real-time pace, looping, as a virtual camera for demos and tests.
//!
//! The whole file is parsed into frames when the source opens, so it is meant for clips (at
//! most [`MAX_FILE_BYTES`]). Annex B carries no timestamps: frames are spaced at the URI's
//! `fps` query parameter (default 25). Matroska frames keep their spacing. Each loop continues
//! the media timeline, so the recorder sees one endless session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::SourceError;
use super::source::SourceFrame;
use crate::media::h264::{self, AvcConfig, H264Error};
use crate::media::mkv::{MkvError, SegmentReader, TrackInfo};

/// Largest file the source loads.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

#[derive(Debug, Clone)]
struct ClipFrame {
    media_ms: i64,
    key: bool,
    data: Arc<Vec<u8>>,
    track: Arc<TrackInfo>,
}

/// A clip played in a loop at real-time pace.
#[derive(Debug)]
pub struct FileSource {
    frames: Vec<ClipFrame>,
    loop_ms: i64,
    next: usize,
    loops: i64,
    start: Option<Instant>,
}

impl FileSource {
    /// Loads and parses `path` (blocking: call from a blocking thread or at startup).
    pub fn open(path: &Path, fps: u32) -> Result<FileSource, SourceError> {
        let bad = |msg: String| SourceError::BadUri(format!("{}: {msg}", path.display()));
        let bytes = crate::input::read_regular_file(path, MAX_FILE_BYTES, "the FILE_URI clip")
            .map_err(|e| SourceError::BadUri(e.to_string()))?;
        let frames = if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
            mkv_frames(&bytes)
        } else {
            annex_b_frames(&bytes, fps)
        }
        .map_err(|e| bad(e.to_string()))?;
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Err(bad("no video frames".into()));
        };
        let span = last.media_ms - first.media_ms;
        let interval = if frames.len() > 1 {
            span / (frames.len() as i64 - 1)
        } else {
            1000 / i64::from(fps.max(1))
        };
        Ok(FileSource {
            loop_ms: span + interval.max(1),
            frames,
            next: 0,
            loops: 0,
            start: None,
        })
    }

    /// Frames in one pass over the file.
    pub fn frames_per_loop(&self) -> usize {
        self.frames.len()
    }

    /// The next frame, when its time has come.
    pub async fn next(&mut self) -> Result<SourceFrame, SourceError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let f = &self.frames[self.next];
        let media_ms = self.loops * self.loop_ms + f.media_ms;
        tokio::time::sleep_until(start + Duration::from_millis(media_ms as u64)).await;
        let out = SourceFrame {
            media_ms,
            key: f.key,
            data: f.data.as_ref().clone(),
            track: f.track.clone(),
        };
        self.next += 1;
        if self.next == self.frames.len() {
            self.next = 0;
            self.loops += 1;
        }
        Ok(out)
    }
}

/// Why a clip's bytes hold no playable video.
#[derive(Debug, thiserror::Error)]
enum ClipError {
    #[error(transparent)]
    H264(#[from] H264Error),
    #[error(transparent)]
    Mkv(#[from] MkvError),
    #[error("no H.264 access unit after an SPS and PPS (not an Annex B H.264 stream?)")]
    NoParameterSets,
}

fn annex_b_frames(bytes: &[u8], fps: u32) -> Result<Vec<ClipFrame>, ClipError> {
    let fps = i64::from(fps.clamp(1, 1000));
    let mut config: Option<(AvcConfig, Arc<TrackInfo>)> = None;
    let mut out = Vec::new();
    for au in h264::access_units(bytes) {
        if let (Some(sps), Some(pps)) = au.parameter_sets() {
            let same = config.as_ref().is_some_and(|(c, _)| c.matches(&au));
            if !same {
                let c = AvcConfig::from_parameter_sets(sps, pps)?;
                let track = Arc::new(c.track_info()?);
                config = Some((c, track));
            }
        }
        let Some((c, track)) = &config else {
            // Pictures before the first SPS/PPS cannot be decoded.
            continue;
        };
        let index = out.len() as i64;
        out.push(ClipFrame {
            media_ms: index * 1000 / fps,
            key: au.is_key(),
            data: Arc::new(h264::frame_payload(au.nals.iter().map(Vec::as_slice), c)),
            track: track.clone(),
        });
    }
    if out.is_empty() {
        return Err(ClipError::NoParameterSets);
    }
    Ok(out)
}

fn mkv_frames(bytes: &[u8]) -> Result<Vec<ClipFrame>, ClipError> {
    let mut reader = SegmentReader::new(std::io::Cursor::new(bytes))?;
    let track = Arc::new(reader.header().track.clone());
    let mut out = Vec::new();
    let mut first_ms = None;
    while let Some(cluster) = reader.next_cluster()? {
        for f in cluster.frames {
            let first = *first_ms.get_or_insert(f.timestamp_ms);
            out.push(ClipFrame {
                media_ms: f.timestamp_ms - first,
                key: f.key,
                data: Arc::new(f.data),
                track: track.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sample-h264-640x360-gop1s.h264")
    }

    #[tokio::test(start_paused = true)]
    async fn annex_b_plays_in_real_time_and_loops() {
        let mut src = FileSource::open(&sample(), 25).unwrap();
        assert_eq!(src.frames_per_loop(), 150);
        let t0 = Instant::now();
        let mut frames = Vec::new();
        for _ in 0..301 {
            frames.push(src.next().await.unwrap());
        }
        assert_eq!(Instant::now() - t0, Duration::from_millis(300 * 40));
        assert!(
            frames
                .windows(2)
                .all(|w| w[1].media_ms - w[0].media_ms == 40)
        );
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].key).collect();
        assert_eq!(keys, (0..=300).step_by(25).collect::<Vec<_>>());
        assert_eq!(frames[0].track.width, 640);
        assert_eq!(frames[0].track.height, 360);
        assert!(
            Arc::ptr_eq(&frames[0].track, &frames[150].track),
            "same parameters, same track"
        );
        // SPS/PPS live in CodecPrivate, not in the frames.
        let nals = h264::avcc_nals(&frames[0].data).unwrap();
        assert!(
            nals.iter()
                .all(|n| !matches!(h264::nal_type(n), Some(7 | 8)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn mkv_clip_keeps_its_spacing_and_codec() {
        use crate::media::mkv::{self, Frame};
        let annex_b = FileSource::open(&sample(), 25).unwrap();
        let track = annex_b.frames[0].track.clone();
        // Re-time the clip at 12.5 fps, starting at an arbitrary wall-clock time.
        let frames: Vec<Frame> = annex_b
            .frames
            .iter()
            .map(|f| Frame {
                timestamp_ms: 1_700_000_000_000 + f.media_ms * 2,
                key: f.key,
                data: f.data.as_ref().clone(),
            })
            .collect();
        let mut bytes = mkv::segment_header(&track, [7; 16]);
        for gop in frames.chunks(25) {
            bytes.extend(mkv::cluster(gop).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mkv");
        std::fs::write(&path, &bytes).unwrap();

        let mut src = FileSource::open(&path, 25).unwrap();
        assert_eq!(src.frames_per_loop(), 150);
        let t0 = Instant::now();
        let mut got = Vec::new();
        for _ in 0..151 {
            got.push(src.next().await.unwrap());
        }
        assert_eq!(Instant::now() - t0, Duration::from_millis(150 * 80));
        assert!(got.windows(2).all(|w| w[1].media_ms - w[0].media_ms == 80));
        assert_eq!(*got[0].track, *track);
        assert!(
            got[150].key && got[150].data == got[0].data,
            "loops to the start"
        );
    }

    #[test]
    fn rejects_missing_and_non_video_files() {
        assert!(matches!(
            FileSource::open(Path::new("/nonexistent.h264"), 25),
            Err(SourceError::BadUri(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.h264");
        std::fs::write(&p, b"hello world").unwrap();
        assert!(matches!(
            FileSource::open(&p, 25),
            Err(SourceError::BadUri(_))
        ));
    }
}
