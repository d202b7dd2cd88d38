//! A Mosquitto broker on a port of its own, with persistence in its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{free_port, wait_listening};
use crate::peer::require;
use crate::process::signal;

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Lines added to the listener's configuration (TLS).
    extra: String,
}

impl Mosquitto {
    /// `None` (test skipped) when mosquitto is not installed outside CI.
    pub fn start(dir: &Path) -> Option<Mosquitto> {
        Self::start_with(dir, "allow_anonymous true\n")
    }

    /// With `conf` lines after the `listener` line.
    pub fn start_with(dir: &Path, conf: &str) -> Option<Mosquitto> {
        if !Path::new("/usr/sbin/mosquitto").exists() && !require("mosquitto", &["-h"]) {
            return None;
        }
        let mut m = Mosquitto {
            child: None,
            port: free_port(),
            dir: dir.join("mosquitto"),
            extra: conf.to_owned(),
        };
        std::fs::create_dir_all(&m.dir).unwrap();
        m.restart();
        Some(m)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {} 127.0.0.1\n{}persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.port,
                self.extra,
                self.dir.display()
            ),
        )
        .unwrap();
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        assert!(
            wait_listening(self.port, Duration::from_secs(10)),
            "mosquitto did not listen on {}",
            self.port
        );
    }

    /// Stops the broker (SIGTERM: it saves its retained messages and sessions).
    #[allow(dead_code, reason = "for the tests of broker outages")]
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-TERM");
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
