//! The built binary as a daemon (`kvs-edge-agent run`) in a directory of its own: settings
//! file, environment, one log per start, SIGTERM, SIGKILL, SIGSTOP.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bin::BIN;
use crate::process::{signal, signal_quiet};

/// The thing name the tests' configurations name.
#[allow(dead_code, reason = "for the tests that configure a thing")]
pub const THING: &str = "hub-1";

/// `kvs-edge-agent run --config dir/agent.yaml ARGS`; not running until [`Agent::start`].
pub struct Agent {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The test's own environment is passed on (but for the thing name) instead of a clean one.
    inherit_env: bool,
    pub dir: PathBuf,
    /// Recording directory; the catalog lives in it (the default state directory).
    pub rec: PathBuf,
    pub config: PathBuf,
    /// One log per start, in order.
    pub logs: Vec<PathBuf>,
    /// The catalog, when not in the recording directory (`state_directory`).
    pub db: Option<PathBuf>,
}

impl Agent {
    /// Writes the settings file (`yaml`) and remembers how to start the agent: in an environment
    /// of its own (PATH, HOME in `dir`, no instance metadata) with `env` added.
    pub fn new(dir: &Path, yaml: &str, args: &[String], env: &[(String, String)]) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        Agent {
            child: None,
            bin: PathBuf::from(BIN),
            args: args.to_vec(),
            env: env.to_vec(),
            inherit_env: false,
            dir: dir.to_owned(),
            rec: dir.join("rec"),
            config,
            logs: Vec::new(),
            db: None,
        }
    }

    /// Runs `bin` (e.g. the release build) with the test's environment instead of a clean one.
    #[allow(dead_code, reason = "for the control-plane tests")]
    pub fn inheriting_env(mut self, bin: &Path) -> Agent {
        self.inherit_env = true;
        self.bin = bin.to_owned();
        self
    }

    /// The catalog's path.
    #[allow(dead_code, reason = "for the tests that read the catalog")]
    pub fn catalog(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.rec.join(kvs_edge_agent::catalog::FILE_NAME))
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        let log = self.dir.join(format!("agent-{}.log", self.logs.len()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args);
        if self.inherit_env {
            cmd.env_remove("AWS_IOT_CORE_THING_NAME");
        } else {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &self.dir)
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        let child = cmd
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &self.rec)
            .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", self.dir.join("log"))
            .env("RUST_LOG", "info,rumqttd=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the agent");
        self.child = Some(child);
        self.logs.push(log);
    }

    /// SIGTERM: the agent must exit 0, and its log must hold no panic.
    #[allow(dead_code, reason = "for the tests that end with an orderly stop")]
    pub fn stop_cleanly(&mut self) {
        assert!(!self.log_text().contains("panicked"), "{}", self.log_tail());
        let (status, _) = self.stop().unwrap();
        assert!(status.success(), "exit {status:?}: {}", self.log_tail());
    }

    #[allow(dead_code, reason = "for the tests that signal the agent")]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// The log of the current (or last) start.
    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn log(&self) -> String {
        self.logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The logs of every start, in order.
    #[allow(dead_code, reason = "for the control-plane tests")]
    pub fn log_text(&self) -> String {
        self.logs
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// The last lines of the current start's log, for failure messages.
    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    #[allow(dead_code, reason = "for the tests that watch the agent live")]
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL. Fails when the agent had already exited (a crash of its own).
    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn kill9(&mut self) -> Result<(), String> {
        let mut c = self.child.take().expect("agent running");
        if let Some(status) = c.try_wait().unwrap() {
            return Err(format!("the agent exited on its own: {status:?}"));
        }
        c.kill().unwrap();
        let status = c.wait().unwrap();
        if status.signal() != Some(9) {
            return Err(format!("the agent ended with {status:?}, not by SIGKILL"));
        }
        Ok(())
    }

    /// SIGTERM: the exit status and how long the exit took, or `Err` (the agent killed) when it
    /// did not exit within 15 s.
    #[allow(dead_code, reason = "for the tests that stop the agent")]
    pub fn stop(&mut self) -> Result<(ExitStatus, Duration), String> {
        let mut c = self.child.take().expect("agent running");
        let t0 = Instant::now();
        signal(c.id(), "-TERM");
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return Ok((status, t0.elapsed()));
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                return Err("the agent did not exit within 15 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP: the agent is frozen wherever it is, as a crash would leave it, but can go on.
    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn thaw(&self) {
        signal(self.pid(), "-CONT");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_quiet(c.id(), "-CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
