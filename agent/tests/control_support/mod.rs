//! Shared by the control-plane tests: Mosquitto on a free port, the agent daemon, `ctl`, and an
//! MQTT watcher that records every message under the prefix.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;

// Not every test binary that includes this module uses all of them.
#[allow(unused_imports)]
pub use crate::recorder_support::{repo_root, require, sample_clip, signal};

pub const BIN: &str = env!("CARGO_BIN_EXE_kvs-edge-agent");
pub const THING: &str = "hub-1";
pub const PREFIX: &str = "kvs-edge";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until something accepts TCP connections on `port` (bounded).
pub fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A Mosquitto broker on a port of its own, with persistence in its directory.
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

/// The agent daemon with its own recording directory and settings file.
pub struct Agent {
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// The binary (the test build's unless given) and arguments after `run --config FILE`.
    bin: PathBuf,
    args: Vec<String>,
    pub dir: PathBuf,
    pub rec: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

/// Segment files under `rec/streams/{stream}/{day}/`, sorted.
pub fn segment_files(rec: &Path, stream: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = rec.join(kvs_edge_agent::store::layout::stream_dir(stream));
    let Ok(days) = std::fs::read_dir(dir) else {
        return out;
    };
    for d in days.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "mkv") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

pub fn secret_arn(stream: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}-uri")
}

impl Agent {
    /// Writes the settings (`yaml` is appended) and the secrets file (each stream `cam-N`
    /// maps to the sample clip; `extra_secrets` lines are appended), then starts the agent.
    pub fn start(dir: &Path, yaml: &str, extra_secrets: &str) -> Agent {
        Self::start_env(dir, yaml, extra_secrets, &[])
    }

    /// With extra environment variables.
    pub fn start_env(dir: &Path, yaml: &str, extra_secrets: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_bin(dir, yaml, extra_secrets, env, Path::new(BIN), &[])
    }

    /// With another binary (the release build) and arguments for `run`.
    pub fn start_bin(
        dir: &Path,
        yaml: &str,
        extra_secrets: &str,
        env: &[(&str, &str)],
        bin: &Path,
        args: &[&str],
    ) -> Agent {
        let rec = dir.join("rec");
        let secrets = dir.join("secrets.yaml");
        let mut s = String::new();
        for i in 0..20 {
            s.push_str(&format!(
                "{}: {}\n",
                secret_arn(&format!("cam-{i}")),
                sample_clip().display()
            ));
        }
        s.push_str(extra_secrets);
        std::fs::write(&secrets, s).unwrap();
        let config = dir.join("agent.yaml");
        // A `yaml` naming its own secrets file keeps it.
        let own = if yaml.contains("secrets_file:") {
            String::new()
        } else {
            format!("secrets_file: {}\n", secrets.display())
        };
        std::fs::write(
            &config,
            format!(
                "{own}recorder:\n  min_fragment_duration_ms: 1000\n  segment_duration_secs: 10\n{yaml}"
            ),
        )
        .unwrap();
        let mut a = Agent {
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            bin: bin.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dir: dir.to_owned(),
            rec,
            log: dir.join("agent.log"),
            config,
        };
        a.restart();
        a
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &self.rec)
            .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", self.dir.join("log"))
            .env("RUST_LOG", "info,rumqttd=warn")
            .env_remove("AWS_IOT_CORE_THING_NAME")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` `count` times (bounded).
    pub async fn wait_log(&self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count}x {needle:?} in the agent log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status and how long the exit took (panics after 15 s).
    pub fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("agent running");
        let t0 = Instant::now();
        signal(c.id(), "-TERM");
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                panic!("the agent did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The stream's segment files on disk.
    pub fn segment_files(&self, stream: &str) -> Vec<PathBuf> {
        segment_files(&self.rec, stream)
    }

    /// Fragments the catalog holds for the stream.
    pub fn fragment_count(&self, stream: &str) -> usize {
        let path = self.rec.join(kvs_edge_agent::catalog::FILE_NAME);
        let Ok(cat) = kvs_edge_agent::catalog::Catalog::open_read_only(&path) else {
            return 0;
        };
        let Ok(segs) = cat.segments(Some(stream)) else {
            return 0;
        };
        segs.iter()
            .map(|s| cat.fragments(s.id).map(|f| f.len()).unwrap_or(0))
            .sum()
    }

    pub async fn wait_fragments(&self, stream: &str, at_least: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.fragment_count(stream) >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {at_least} fragments of {stream}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `kvs-edge-agent ctl --broker URL ARGS...`.
pub async fn ctl(broker: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("ctl").args(args).arg("--broker").arg(broker);
    if !args.contains(&"--wait-seconds") {
        cmd.arg("--wait-seconds").arg("30");
    }
    cmd.output().await.expect("run ctl")
}

/// `ctl start-edge-configuration-update --cli-input-json REQ` (a `file://` URL).
pub async fn ctl_start(broker: &str, req: &str) -> Output {
    ctl(
        broker,
        &["start-edge-configuration-update", "--cli-input-json", req],
    )
    .await
}

pub fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl printed no JSON ({e}): status {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A StartEdgeConfigurationUpdate request for `stream` on THING with the sample clip.
pub fn start_request(stream: &str, extra_edge: &str) -> String {
    format!(
        r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{THING}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}}}}{extra_edge}}}}}"#,
        secret_arn(stream)
    )
}

pub fn write_request(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    format!("file://{}", p.display())
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    pub fn sync_status(&self) -> Option<String> {
        self.json()?.get("SyncStatus")?.as_str().map(str::to_owned)
    }
}

/// Records every message under `{PREFIX}/#`; reconnects (and resubscribes) on its own.
pub struct Watcher {
    pub client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn start(port: u16) -> Watcher {
        let mut o = MqttOptions::new(format!("watcher-{}", free_port()), "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 100);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let subscribed = Arc::new(Notify::new());
        let (m, n, c, s) = (
            msgs.clone(),
            notify.clone(),
            client.clone(),
            subscribed.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().unwrap().push(Msg {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("watcher subscribed");
        Watcher {
            client,
            msgs,
            notify,
            task,
        }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `pred` holds over the messages so far (bounded).
    pub async fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&[Msg]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if pred(&self.all()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if pred(&self.all()) {
                    return;
                }
                let topics: Vec<String> = self
                    .all()
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out waiting for {what}; messages:\n{}",
                    topics.join("\n")
                );
            }
        }
    }

    /// Publishes (retained, QoS 1).
    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
            .await
            .unwrap();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn reported(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/reported")
}

pub fn desired(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/desired")
}

pub fn agent_topic() -> String {
    format!("{PREFIX}/{THING}/agent")
}

/// The statuses seen on `topic`, in order.
pub fn statuses(msgs: &[Msg], topic: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.topic == topic)
        .filter_map(Msg::sync_status)
        .collect()
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate (CN `client`),
/// made with openssl in `dir`: (ca, server cert, server key, client cert, client key).
pub fn make_certs(dir: &Path) -> Option<[PathBuf; 5]> {
    if !require("openssl", &["version"]) {
        return None;
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    for (name, cn) in [("server", "localhost"), ("client", "client")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    Some(
        [
            "ca.crt",
            "server.crt",
            "server.key",
            "client.crt",
            "client.key",
        ]
        .map(|f| dir.join(f)),
    )
}
