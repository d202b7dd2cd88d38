//! The test cameras of tests/rtsp/: GStreamer's RTSP server (server.py) and the hostile ones
//! (hostile.py), each killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};

use crate::peer::require;
use crate::process::{Killed, ready_line, signal};
use crate::sample::repo_root;

/// Whether the GStreamer RTSP server and the elements `elements` are installed.
#[allow(dead_code, reason = "for the tests with a GStreamer camera")]
pub fn require_gstreamer(elements: &[&str]) -> bool {
    if !require(
        "/usr/bin/python3",
        &[
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ],
    ) {
        return false;
    }
    elements
        .iter()
        .all(|e| require("gst-inspect-1.0", &["--exists", e]))
}

/// A camera of tests/rtsp/.
pub struct RtspServer {
    child: Killed,
    pub url: String,
    #[allow(dead_code, reason = "for the tests that address the camera's port")]
    pub port: u16,
    stdout: BufReader<ChildStdout>,
}

impl RtspServer {
    /// The GStreamer camera (server.py), once it prints its READY line.
    #[allow(dead_code, reason = "for the tests with a GStreamer camera")]
    pub fn start(args: &[&str]) -> RtspServer {
        Self::start_script("server.py", args)
    }

    /// Another camera of tests/rtsp/ (e.g. hostile.py) that prints the same READY line.
    pub fn start_script(script: &str, args: &[&str]) -> RtspServer {
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/rtsp").join(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/rtsp/server.py");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Owned from here, so a failed wait below still kills and reaps it.
        let mut server = RtspServer {
            child: Killed(child),
            url: String::new(),
            port: 0,
            stdout,
        };
        server.url = ready_line(&mut server.stdout, "the RTSP server", |line| {
            line.strip_prefix("READY ").map(str::to_owned)
        });
        server.port = server
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("a port in the READY line");
        server
    }

    #[allow(dead_code, reason = "for the tests that signal the camera")]
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGTERM (an orderly stop), and its exit.
    #[allow(dead_code, reason = "for the tests of a camera that goes away")]
    pub fn terminate(mut self) {
        signal(self.pid(), "-TERM");
        let _ = self.child.0.wait();
    }

    /// The URL with credentials.
    #[allow(
        dead_code,
        reason = "for the tests of a camera that asks for a password"
    )]
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
    }

    /// Drops every client (SIGUSR1) and waits for the server to say so.
    #[allow(dead_code, reason = "for the tests of a camera that goes away")]
    pub fn drop_clients(&mut self) {
        signal(self.child.0.id(), "-USR1");
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap() > 0 && !line.contains("DROPPED") {
            line.clear();
        }
    }
}
