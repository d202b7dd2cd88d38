//! The RTSP source, on the `retina` crate.
//!
//! - Transport TCP-interleaved by default (works through NAT and firewalls, no loss to reorder),
//!   UDP on request.
//! - User and password come from the URL and are handed to retina as credentials (it answers
//!   Basic and Digest challenges); the URL retina sees has none, so no retina error message can
//!   carry the password.
//! - retina keeps the session alive (OPTIONS / GET_PARAMETER before the session timeout) but
//!   has no connect or read timeout: every request and every read is wrapped in one here; a
//!   stream with no frame for `stall_timeout` ends the session.
//! - `FrameFormat::MP4`: frames arrive as 4-byte length-prefixed NAL units and the parameter
//!   sets out of band; H.264 frames are still filtered through the CodecPrivate so in-band
//!   SPS/PPS equal to it (and AUDs) are not stored twice. H.265 is passed through as
//!   `V_MPEGH/ISO/HEVC`. Audio and other tracks are never set up.
//! - Memory per connection is bounded: retina is patched (vendor/retina/PATCHES.md) to cap an
//!   RTSP message head at 64 KiB, a message at 1 MiB, an SDP at 64 media sections, an access
//!   unit at 65536 NAL units or fragments and the read buffer at 16 MiB; here an SDP with more
//!   than [`MAX_STREAMS`] streams and a frame over [`MAX_FRAME_BYTES`] end the session.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, VideoParametersCodec};
use tokio::time::timeout;
use tracing::debug;
use url::Url;

use super::SourceError;
use super::source::SourceFrame;
use crate::media::h264::{AvcConfig, strip_avcc_frame};
use crate::media::mkv::{TrackInfo, VideoCodec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtspOptions {
    pub transport: RtspTransport,
    /// Bound on each request of the setup (DESCRIBE, SETUP, PLAY).
    pub request_timeout: Duration,
    /// A session with no video frame for this long is ended and reconnected.
    pub stall_timeout: Duration,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            transport: RtspTransport::Tcp,
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Cameras offer a handful of streams (video, audio, metadata, back channel); an SDP listing more
/// is refused before any is set up.
pub const MAX_STREAMS: usize = 32;
/// Far above any camera's key frame (a few MB at 4K); the fragment holding it would approach the
/// KVS fragment limit.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Streams named in an "unsupported codec" message.
const STREAMS_NAMED: usize = 8;
/// Longest retina message line kept: a server's reason phrase or header can be 64 KiB.
const MAX_MESSAGE_CHARS: usize = 300;

/// One playing RTSP session.
pub struct RtspSource {
    demuxed: Demuxed,
    stream_i: usize,
    clock_rate: i64,
    track: Option<(Arc<TrackInfo>, Option<AvcConfig>)>,
    stall_timeout: Duration,
}

/// The first line of a retina error, cut to [`MAX_MESSAGE_CHARS`]: the rest is connection
/// context (addresses, positions) that bloats status details.
fn first_line(e: &retina::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= MAX_MESSAGE_CHARS {
        line.to_owned()
    } else {
        let head: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{head}...")
    }
}

fn classify(e: retina::Error) -> SourceError {
    match e.status_code() {
        Some(401 | 403) => SourceError::Auth(first_line(&e)),
        Some(404) => SourceError::BadUri(first_line(&e)),
        Some(_) => SourceError::Protocol(first_line(&e)),
        None if e.to_string().starts_with("Unable to connect") => {
            SourceError::Unreachable(first_line(&e))
        }
        None => SourceError::Protocol(first_line(&e)),
    }
}

impl RtspSource {
    /// DESCRIBE, SETUP of the first H.264/H.265 video stream, PLAY.
    pub async fn connect(url: &Url, opts: &RtspOptions) -> Result<RtspSource, SourceError> {
        let creds = (!url.username().is_empty()).then(|| Credentials {
            username: percent_decode(url.username()),
            password: percent_decode(url.password().unwrap_or_default()),
        });
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let session_opts = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("kvs-edge-agent/{}", env!("CARGO_PKG_VERSION")));
        let t = opts.request_timeout;
        let timed_out =
            |what: &str| SourceError::Unreachable(format!("no answer to {what} within {t:?}"));
        let mut session = timeout(t, Session::describe(bare, session_opts))
            .await
            .map_err(|_| timed_out("DESCRIBE"))?
            .map_err(classify)?;
        let streams = session.streams();
        if streams.len() > MAX_STREAMS {
            return Err(SourceError::Protocol(format!(
                "the camera describes {} streams; at most {MAX_STREAMS} are accepted",
                streams.len()
            )));
        }
        let stream_i = streams
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| {
                let mut seen: Vec<String> = streams
                    .iter()
                    .take(STREAMS_NAMED)
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect();
                if streams.len() > STREAMS_NAMED {
                    seen.push(format!("{} more", streams.len() - STREAMS_NAMED));
                }
                SourceError::UnsupportedCodec(format!(
                    "no H.264 or H.265 video stream (the camera offers {})",
                    if seen.is_empty() {
                        "nothing".to_owned()
                    } else {
                        seen.join(", ")
                    }
                ))
            })?;
        let clock_rate = i64::from(streams[stream_i].clock_rate_hz().max(1));
        let transport = match opts.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        timeout(
            t,
            session.setup(
                stream_i,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::MP4),
            ),
        )
        .await
        .map_err(|_| timed_out("SETUP"))?
        .map_err(classify)?;
        let playing = timeout(t, session.play(PlayOptions::default()))
            .await
            .map_err(|_| timed_out("PLAY"))?
            .map_err(classify)?;
        let demuxed = playing.demuxed().map_err(classify)?;
        let mut src = RtspSource {
            demuxed,
            stream_i,
            clock_rate,
            track: None,
            stall_timeout: opts.stall_timeout,
        };
        // Parameters from the SDP, when it has them; else they come with the first frame.
        src.refresh_track()?;
        Ok(src)
    }

    fn refresh_track(&mut self) -> Result<(), SourceError> {
        let params = match self.demuxed.streams()[self.stream_i].parameters() {
            Some(retina::codec::ParametersRef::Video(v)) => v.clone(),
            _ => return Ok(()),
        };
        let (w, h) = params.pixel_dimensions();
        let dim = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        let track = match params.codec_params() {
            VideoParametersCodec::H264 { sps, pps } => {
                match AvcConfig::from_parameter_sets(sps, pps)
                    .and_then(|c| Ok((c.track_info()?, c)))
                {
                    Ok((info, c)) => (Arc::new(info), Some(c)),
                    Err(e) => {
                        debug!(error = %e, "own SPS parse failed; using retina's record");
                        let info = TrackInfo {
                            codec: VideoCodec::H264,
                            codec_private: params.extra_data().to_vec(),
                            width: dim(w),
                            height: dim(h),
                        };
                        (Arc::new(info), AvcConfig::parse(params.extra_data()).ok())
                    }
                }
            }
            VideoParametersCodec::H265 { .. } => (
                Arc::new(TrackInfo {
                    codec: VideoCodec::H265,
                    codec_private: params.extra_data().to_vec(),
                    width: dim(w),
                    height: dim(h),
                }),
                None,
            ),
            other => {
                return Err(SourceError::UnsupportedCodec(format!(
                    "video codec {other:?} is not H.264 or H.265"
                )));
            }
        };
        let changed = self.track.as_ref().is_none_or(|(t, _)| **t != *track.0);
        if changed {
            self.track = Some(track);
        }
        Ok(())
    }

    /// The next video frame; errors end the session.
    pub async fn next(&mut self) -> Result<SourceFrame, SourceError> {
        // One deadline for the frame, so RTCP reports cannot keep a frozen video stream alive.
        let deadline = tokio::time::Instant::now() + self.stall_timeout;
        loop {
            let item = tokio::time::timeout_at(deadline, self.demuxed.next())
                .await
                .map_err(|_| SourceError::Stalled(self.stall_timeout))?;
            let frame = match item {
                None => return Err(SourceError::Ended),
                Some(Err(e)) => return Err(classify(e)),
                Some(Ok(CodecItem::VideoFrame(f))) if f.stream_id() == self.stream_i => f,
                Some(Ok(_)) => continue,
            };
            if frame.data().len() > MAX_FRAME_BYTES {
                return Err(SourceError::Protocol(format!(
                    "a frame of {} bytes; the limit is {MAX_FRAME_BYTES}",
                    frame.data().len()
                )));
            }
            if frame.has_new_parameters() || self.track.is_none() {
                self.refresh_track()?;
            }
            let Some((track, config)) = &self.track else {
                return Err(SourceError::Protocol(
                    "a frame came before any codec parameters".into(),
                ));
            };
            if frame.loss() > 0 {
                debug!(lost = frame.loss(), "RTP packets lost before this frame");
            }
            let media_ms = frame.timestamp().elapsed() * 1000 / self.clock_rate;
            let key = frame.is_random_access_point();
            let data = match config {
                Some(c) => strip_avcc_frame(frame.data(), c).map_err(|e| {
                    SourceError::Protocol(format!("bad frame from the camera: {e}"))
                })?,
                None => frame.into_data(),
            };
            if data.is_empty() {
                continue;
            }
            return Ok(SourceFrame {
                media_ms,
                key,
                data,
                track: track.clone(),
            });
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(percent_decode("plain%zz"), "plain%zz");
    }
}
