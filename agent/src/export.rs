//! A recorded time range as one file a player opens: fragmented MP4 (what browsers play) or
//! Matroska. Served by `GET /api/v1/streams/{name}/export.{mp4,mkv}` and written by
//! `kvs-edge-agent export`.
//!
//! Built while it is read, one fragment at a time ([`Export::next_chunk`]), so memory is
//! bounded by one fragment whatever the range. Whole fragments are exported: every fragment
//! that overlaps the range, each starting at its key frame, so the file is playable from its
//! first byte and its duration is the range's within a fragment.
//!
//! Order is timestamp order (a player needs time to go forward); a fragment that starts before
//! the previous one ended (recorded after a wall-clock step backwards, design/time.md) is left
//! out. Matroska clusters are copied as they are on disk (their absolute timecodes included,
//! so a player shows the time of day each frame was recorded), under a header with the range's
//! Duration;
//! MP4 samples are the clusters' frames with time zero at the first exported frame. A change
//! of track (the camera's resolution or codec) ends the export there: one file, one track.
//! Fragments whose segment was deleted meanwhile (retention) are skipped and counted.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogError, FragmentTime, SegmentId, SegmentRow};
use crate::media::mkv::{self, MkvError, TrackInfo, VideoCodec};
use crate::media::mp4::{Mp4Error, Mp4Writer};

/// Most fragments one export lists (a day of 1 s fragments, with room).
const MAX_FRAGMENTS: usize = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mp4,
    Mkv,
}

impl Format {
    /// The format a file name's extension asks for.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "mp4" => Some(Format::Mp4),
            "mkv" => Some(Format::Mkv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Mp4 => "video/mp4",
            Format::Mkv => "video/x-matroska",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Mp4 => "mp4",
            Format::Mkv => "mkv",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no media of {stream} is recorded between {start} and {end}")]
    NoMedia {
        stream: String,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    },
    #[error("the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("segment {segment}: codec {codec:?} cannot be exported")]
    Codec { segment: SegmentId, codec: String },
    #[error("a recorded fragment does not parse: {0}")]
    Media(#[from] MkvError),
    #[error("MP4: {0}")]
    Mp4(#[from] Mp4Error),
}

fn timestamp(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// How far an export has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub fragments_done: usize,
    pub fragments_total: usize,
    pub bytes: u64,
    /// Fragments whose segment file was gone (deleted by retention while exporting).
    pub skipped: usize,
    /// Fragments left out because they start before the previous one ended.
    pub overlapping: usize,
}

/// The segment being read.
struct Open {
    id: SegmentId,
    file: std::fs::File,
    path: PathBuf,
    track: TrackInfo,
}

enum Muxer {
    Mp4(Mp4Writer),
    Mkv,
}

/// An export in progress (blocking I/O: run it on a blocking thread).
pub struct Export {
    catalog: Arc<Catalog>,
    root: PathBuf,
    format: Format,
    fragments: std::vec::IntoIter<FragmentTime>,
    open: Option<Open>,
    /// The exported track and its muxer, from the first fragment.
    muxer: Option<(TrackInfo, Muxer)>,
    last_end_ms: Option<i64>,
    /// From the first fragment's start to the last one's end.
    duration_ms: i64,
    /// Why it ended before the range's end (a change of track), once it has.
    pub ended_early: Option<String>,
    progress: Progress,
}

fn track_of(s: &SegmentRow) -> Result<TrackInfo, ExportError> {
    let codec = VideoCodec::from_codec_id(&s.codec_id).ok_or_else(|| ExportError::Codec {
        segment: s.id,
        codec: s.codec_id.clone(),
    })?;
    Ok(TrackInfo {
        codec,
        codec_private: s.codec_private.clone(),
        width: s.width,
        height: s.height,
    })
}

impl Export {
    /// The fragments of `stream` overlapping `[start_ms, end_ms)`; `NoMedia` when there are
    /// none.
    pub fn new(
        catalog: Arc<Catalog>,
        root: &Path,
        stream: &str,
        (start_ms, end_ms): (i64, i64),
        format: Format,
    ) -> Result<Export, ExportError> {
        let fragments = catalog.fragment_times(stream, start_ms, end_ms, MAX_FRAGMENTS)?;
        if fragments.is_empty() {
            return Err(ExportError::NoMedia {
                stream: stream.to_owned(),
                start: timestamp(start_ms),
                end: timestamp(end_ms),
            });
        }
        let first = fragments[0].timecode_ms;
        let last = fragments
            .iter()
            .map(|f| f.timecode_ms + f.duration_ms)
            .max()
            .unwrap_or(first);
        Ok(Export {
            duration_ms: last - first,
            catalog,
            root: root.to_owned(),
            format,
            progress: Progress {
                fragments_total: fragments.len(),
                ..Progress::default()
            },
            fragments: fragments.into_iter(),
            open: None,
            muxer: None,
            last_end_ms: None,
            ended_early: None,
        })
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The segment holding `f`, opened; `None` when its row or file is gone.
    fn segment(&mut self, f: &FragmentTime) -> Result<Option<&Open>, ExportError> {
        if self.open.as_ref().is_none_or(|o| o.id != f.segment_id) {
            self.open = None;
            let Some(row) = self.catalog.segment(f.segment_id)? else {
                return Ok(None);
            };
            let path = self.root.join(&row.path);
            let file = match crate::store::fsx::open_media(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(ExportError::Io { path, source }),
            };
            self.open = Some(Open {
                id: row.id,
                file,
                path,
                track: track_of(&row)?,
            });
        }
        Ok(self.open.as_ref())
    }

    /// The next bytes of the file (the header comes with the first fragment); `None` at the
    /// end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ExportError> {
        while self.ended_early.is_none() {
            let Some(f) = self.fragments.next() else {
                return Ok(None);
            };
            self.progress.fragments_done += 1;
            if self.last_end_ms.is_some_and(|end| f.timecode_ms < end) {
                self.progress.overlapping += 1;
                continue;
            }
            let Some(open) = self.segment(&f)? else {
                self.progress.skipped += 1;
                continue;
            };
            let mut cluster = vec![0; usize::try_from(f.size).unwrap_or(usize::MAX)];
            open.file
                .read_exact_at(&mut cluster, f.offset)
                .map_err(|source| ExportError::Io {
                    path: open.path.clone(),
                    source,
                })?;
            let track = open.track.clone();
            let mut out = Vec::new();
            if let Some((t, _)) = &self.muxer
                && *t != track
            {
                self.ended_early = Some(format!(
                    "the track changes at {} ({}x{} to {}x{}): one file holds one track",
                    timestamp(f.timecode_ms),
                    t.width,
                    t.height,
                    track.width,
                    track.height
                ));
                return Ok(None);
            }
            let muxer = match &mut self.muxer {
                Some((_, m)) => m,
                None => {
                    let m = match self.format {
                        Format::Mp4 => {
                            let w = Mp4Writer::new(&track, f.timecode_ms)?;
                            out.extend(w.init_segment());
                            Muxer::Mp4(w)
                        }
                        Format::Mkv => {
                            let mut uid = [0u8; 16];
                            let _ = getrandom::fill(&mut uid);
                            out.extend(mkv::file_header(&track, uid, self.duration_ms as f64));
                            Muxer::Mkv
                        }
                    };
                    &mut self.muxer.insert((track, m)).1
                }
            };
            match muxer {
                Muxer::Mkv => out.extend(&cluster),
                Muxer::Mp4(w) => {
                    let frames = mkv::read_cluster_frames(
                        &cluster,
                        mkv::TIMECODE_SCALE_NS,
                        mkv::TRACK_NUMBER,
                    )?;
                    out.extend(w.fragment(&frames)?);
                }
            }
            self.last_end_ms = Some(f.timecode_ms + f.duration_ms);
            self.progress.bytes += out.len() as u64;
            return Ok(Some(out));
        }
        Ok(None)
    }
}
