//! The outside judges of the Matroska we write: ffprobe, ffmpeg, mkvinfo and mkvmerge.

use std::path::Path;
use std::process::{Command, ExitStatus};

use serde_json::Value;

/// ffprobe's JSON on `path` for `args` (`-show_streams`...) and what it said on stderr; `Err`
/// when it exits non-zero or prints no JSON.
pub fn ffprobe_json(path: &Path, args: &[&str]) -> Result<(Value, String), String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "json"])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("ffprobe rejects {}: {stderr}", path.display()));
    }
    let json = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ffprobe on {}: no JSON ({e}) {stderr}", path.display()))?;
    Ok((json, stderr))
}

/// What ffprobe makes of a file's first video stream, decoding every frame.
#[allow(dead_code, reason = "each test reads the fields it checks")]
pub struct Probe {
    pub codec: String,
    pub frames: u64,
    /// The container's format name.
    pub format: String,
    /// What ffprobe complained of (`-v error`).
    pub stderr: String,
}

#[allow(dead_code, reason = "for the tests that count decoded frames")]
pub fn probe(path: &Path) -> Result<Probe, String> {
    let args = [
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_streams",
        "-show_format",
    ];
    let (json, stderr) = ffprobe_json(path, &args)?;
    let stream = &json["streams"][0];
    let frames = stream["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok());
    match (stream["codec_name"].as_str(), frames) {
        (Some(codec), Some(frames)) => Ok(Probe {
            codec: codec.to_owned(),
            frames,
            format: json["format"]["format_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            stderr,
        }),
        _ => Err(format!("ffprobe on {}: {json} {stderr}", path.display())),
    }
}

/// `ffprobe`'s codec name and decoded frame count; panics if it rejects or complains of the file.
#[allow(dead_code, reason = "for the recorder tests")]
pub fn ffprobe(path: &Path) -> (String, u64) {
    let p = probe(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.stderr.is_empty(),
        "ffprobe rejects {}: {}",
        path.display(),
        p.stderr
    );
    (p.codec, p.frames)
}

/// ffprobe decodes the file as H.264 and counts `frames` frames.
#[allow(dead_code, reason = "for the reliability suite")]
pub fn ffprobe_frames_ok(path: &Path, frames: u64) -> Result<(), String> {
    let p = probe(path)?;
    if (p.codec.as_str(), p.frames) != ("h264", frames) {
        return Err(format!(
            "ffprobe on {}: {:?} (want \"h264,{frames}\") {}",
            path.display(),
            format!("{},{}", p.codec, p.frames),
            p.stderr
        ));
    }
    Ok(())
}

/// The full-decode check: ffmpeg exits non-zero on any structural or bitstream error.
#[allow(dead_code, reason = "for the tests that decode what was written")]
pub fn ffmpeg_decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-xerror",
            "-err_detect",
            "explode",
            "-i",
        ])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mkvinfo`'s report on a file it accepts.
#[allow(dead_code, reason = "for the tests that run mkvinfo")]
pub fn mkvinfo(path: &Path) -> String {
    let out = Command::new("mkvinfo").arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mkvinfo rejects {}: {text}",
        path.display()
    );
    text
}

/// `mkvinfo` accepts the file and sees at least one cluster.
#[allow(dead_code, reason = "for the recorder tests")]
pub fn mkvinfo_ok(path: &Path) {
    let text = mkvinfo(path);
    assert!(
        text.contains("Cluster"),
        "mkvinfo sees no cluster in {}",
        path.display()
    );
    assert!(!text.to_lowercase().contains("error"), "mkvinfo: {text}");
}

/// `mkvmerge -J` on a file: its JSON and exit status (1 for warnings, 2 for errors).
#[allow(dead_code, reason = "for the tests that run mkvmerge")]
pub fn mkvmerge_json(path: &Path) -> Result<(Value, ExitStatus), String> {
    let out = Command::new("mkvmerge")
        .arg("-J")
        .arg(path)
        .output()
        .map_err(|e| format!("mkvmerge: {e}"))?;
    let json = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("mkvmerge -J {}: no JSON ({e})", path.display()))?;
    Ok((json, out.status))
}

/// `mkvmerge -J` recognises the file as Matroska with one H.264 video track and no errors.
#[allow(dead_code, reason = "for the reliability suite")]
pub fn mkvmerge_ok(path: &Path) -> Result<(), String> {
    let (v, status) = mkvmerge_json(path)?;
    let container_ok = v["container"]["recognized"] == true
        && v["container"]["supported"] == true
        && v["container"]["type"] == "Matroska";
    let errors = v["errors"].as_array().map_or(0, |e| e.len());
    let h264 = v["tracks"]
        .as_array()
        .is_some_and(|t| t.len() == 1 && t[0]["codec"].as_str().is_some_and(|c| c.contains("AVC")));
    if status.code() == Some(2) || !container_ok || errors > 0 || !h264 {
        return Err(format!("mkvmerge -J rejects {}: {v}", path.display()));
    }
    Ok(())
}
