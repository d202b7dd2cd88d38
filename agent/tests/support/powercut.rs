//! The power-cut file system (tests/powercut/powercut.py) as a disk for the agent: mounted over
//! a backing directory that always holds exactly what a disk would keep after a cut, cut (or
//! stalled) on command, mounted again over the same backing directory as the power comes back.

use std::fs::OpenOptions;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer;
use crate::process::ready_line;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/powercut/powercut.py");

/// Whether FUSE and the mfusepy binding are here (under CI their absence fails instead).
pub fn have_fuse() -> bool {
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    peer::required(
        "/dev/fuse",
        device,
        "a kernel with FUSE; in a container, --device /dev/fuse --cap-add SYS_ADMIN",
    ) && peer::on_path("fusermount3")
        && peer::python(
            "mfusepy",
            "apt-get install fuse3 libfuse3-3; python3 -m pip install mfusepy",
        )
}

/// One disk: `backing` is its durable state, `mountpoint` the live file system while mounted.
pub struct PowerDisk {
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    control: PathBuf,
    logs: PathBuf,
    mounts: usize,
    child: Option<Child>,
}

#[allow(dead_code, reason = "each test uses its own part")]
impl PowerDisk {
    /// A disk whose files live in `dir` (backing directory, control socket, logs), seen at
    /// `mountpoint`; not mounted until [`PowerDisk::mount`].
    pub fn new(dir: &Path, mountpoint: &Path) -> PowerDisk {
        let backing = dir.join("disk");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(mountpoint).unwrap();
        PowerDisk {
            backing,
            mountpoint: mountpoint.to_owned(),
            control: dir.join("powercut.sock"),
            logs: dir.to_owned(),
            mounts: 0,
            child: None,
        }
    }

    /// Mounts the backing directory (the power comes on); returns once the mount answers.
    pub fn mount(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already mounted");
        let log = self.logs.join(format!("powercut-{}.log", self.mounts));
        self.mounts += 1;
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("mount")
            .arg(&self.backing)
            .arg(&self.mountpoint)
            .arg("--control")
            .arg(&self.control)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("python3 powercut.py: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ready_line(&mut out, "powercut.py", |l| (l == "READY").then_some(()))
        }));
        self.child = Some(child);
        if ready.is_err() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            self.reap();
            return Err(format!("powercut.py did not mount: {text}"));
        }
        Ok(())
    }

    pub fn is_mounted(&self) -> bool {
        self.child.is_some()
    }

    /// Cuts the power: from this instant nothing more reaches the backing directory; returns
    /// once the file system has exited and its mount point is free for the next mount.
    pub fn cut(&mut self) -> Result<(), String> {
        self.request("cut")?;
        self.reap();
        Ok(())
    }

    /// A clean shutdown: everything visible is made durable, then it unmounts.
    pub fn unmount(&mut self) -> Result<(), String> {
        self.request("unmount")?;
        self.reap();
        Ok(())
    }

    /// From now on every operation that changes something waits `secs` before it proceeds.
    pub fn stall(&self, secs: f64) -> Result<(), String> {
        self.request(&format!("stall {secs}")).map(drop)
    }

    /// Ends a stall, releasing every operation waiting in it.
    pub fn unstall(&self) -> Result<(), String> {
        self.request("unstall").map(drop)
    }

    /// Arms a trap (`OP SUFFIX [after OP2 SUFFIX2]`, see powercut.py): the operation it
    /// names, once reached, waits with every change after it until a cut or an unstall.
    pub fn trap(&self, spec: &str) -> Result<(), String> {
        self.request(&format!("trap {spec}")).map(drop)
    }

    /// The operation a trap caught (`"fsync /streams/cam/…/1.mkv"`), if one did.
    pub fn trapped(&self) -> Result<Option<String>, String> {
        Ok(self.stats()?["trapped"].as_str().map(str::to_owned))
    }

    /// The file system's counters (syncs, operations waiting in a stall).
    pub fn stats(&self) -> Result<serde_json::Value, String> {
        let text = self.request("stats")?;
        serde_json::from_str(&text).map_err(|e| format!("powercut stats {text:?}: {e}"))
    }

    fn request(&self, command: &str) -> Result<String, String> {
        let mut conn =
            UnixStream::connect(&self.control).map_err(|e| format!("powercut {command}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("powercut {command}: {e}"))?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)
            .or_else(|e| {
                // The answer came in whole before the process exited; a reset after it is no
                // failure.
                if reply.ends_with('\n') { Ok(0) } else { Err(e) }
            })
            .map_err(|e| format!("powercut {command}: {e}"))?;
        let line = reply.lines().next().unwrap_or_default().trim();
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(format!("powercut {command}: {}", line_or(line))),
        }
    }

    /// Waits for the file system's process to end; a mount it left behind is detached.
    fn reap(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn line_or(line: &str) -> &str {
    if line.is_empty() { "no answer" } else { line }
}

/// Whether `path` is a mount point, a dead one included.
fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(path.as_ref()))
}

impl Drop for PowerDisk {
    /// Releases whatever a stall or a trap holds (a failed test may leave one), then unmounts.
    fn drop(&mut self) {
        if self.child.is_some()
            && self.unstall().and_then(|()| self.unmount()).is_err()
            && let Some(c) = self.child.as_mut()
        {
            let _ = c.kill();
        }
        self.reap();
    }
}
