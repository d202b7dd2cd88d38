//! The repository's sample clip (H.264, 640x360, 25 fps, a key frame each second, 150 frames)
//! and where the repository is.

use std::path::{Path, PathBuf};

use kvs_edge_agent::media::h264::{self, AccessUnit, AvcConfig};
use kvs_edge_agent::media::mkv::{Frame, TrackInfo};

/// The clip's path.
#[allow(dead_code, reason = "for the tests that pass the clip to a tool")]
pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/sample-h264-640x360-gop1s.h264"
);
/// 25 fps.
#[allow(dead_code, reason = "for the tests that build frames of the clip")]
pub const FRAME_MS: i64 = 40;

#[allow(dead_code, reason = "for the tests that use the repository's files")]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[allow(dead_code, reason = "for the tests that record the clip")]
pub fn sample_clip() -> PathBuf {
    repo_root().join("samples/sample-h264-640x360-gop1s.h264")
}

/// The clip as the recorder sees it.
#[allow(dead_code, reason = "for the tests that build frames of the clip")]
pub struct Clip {
    pub access_units: Vec<AccessUnit>,
    pub config: AvcConfig,
    pub track: TrackInfo,
    /// AVCC frames stamped [`FRAME_MS`] apart from the `t0_ms` given.
    pub frames: Vec<Frame>,
}

#[allow(dead_code, reason = "for the tests that build frames of the clip")]
pub fn clip(t0_ms: i64) -> Clip {
    let data = std::fs::read(SAMPLE).expect("read sample clip");
    let access_units = h264::access_units(&data);
    let (sps, pps) = access_units[0].parameter_sets();
    let config = AvcConfig::from_parameter_sets(
        sps.expect("SPS in first AU"),
        pps.expect("PPS in first AU"),
    )
    .unwrap();
    let track = config.track_info().unwrap();
    let frames = access_units
        .iter()
        .enumerate()
        .map(|(i, au)| Frame {
            timestamp_ms: t0_ms + FRAME_MS * i as i64,
            key: au.is_key(),
            data: h264::frame_payload(au.nals.iter().map(Vec::as_slice), &config),
        })
        .collect();
    Clip {
        access_units,
        config,
        track,
        frames,
    }
}
