//! `run` under a stand-in for systemd: the agent's notifications on `NOTIFY_SOCKET` arrive in
//! order (READY=1, watchdog pings while healthy, STOPPING=1 after SIGTERM, nothing after it).

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kvs-edge-agent");

/// Kills the agent if the test fails before it stops it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notify socket systemd would listen on.
struct Manager {
    socket: UnixDatagram,
    log: std::path::PathBuf,
}

impl Manager {
    /// The next message, as its lines; fails the test after `within`.
    fn next(&self, within: Duration) -> Vec<String> {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned)
                .collect(),
            Err(e) => panic!(
                "no notification within {within:?} ({e}); agent log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// Messages until one has `line`, which is returned with those before it.
    fn until(&self, line: &str, within: Duration) -> Vec<Vec<String>> {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = self.next(left.max(Duration::from_millis(1)));
            let done = msg.iter().any(|l| l == line);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
}

/// The agent with none of the caller's agent or systemd variables.
fn agent_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_")
            || k.starts_with("GREENGRASS")
            || k.starts_with("WATCHDOG_")
            || k == "SVCUID"
            || k == "RUST_LOG"
            || k == "NOTIFY_SOCKET"
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = Manager {
        socket: UnixDatagram::bind(&socket_path).unwrap(),
        log: dir.path().join("log/kvs-edge-agent.log"),
    };
    // Its own embedded broker port, so that it runs beside other agents under test.
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  embedded_broker_listen: 127.0.0.1:{}\n",
            free_port()
        ),
    )
    .unwrap();

    let child = agent_command()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path().join("rec"))
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
        .env("NOTIFY_SOCKET", &socket_path)
        // 2 s: a ping every second, each health check given 0.9 s (ample on a loaded CI box).
        .env("WATCHDOG_USEC", "2000000")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);

    let before_ready = manager.until("READY=1", Duration::from_secs(30));
    assert!(
        before_ready
            .iter()
            .flatten()
            .any(|l| l == "STATUS=resuming the stored configurations"),
        "{before_ready:?}"
    );
    assert!(
        !before_ready.iter().flatten().any(|l| l == "WATCHDOG=1"),
        "no ping before READY=1: {before_ready:?}"
    );
    let ready = before_ready.last().unwrap();
    assert!(
        ready.iter().any(|l| l == "STATUS=running: 0 streams"),
        "{ready:?}"
    );

    for _ in 0..3 {
        let msg = manager.next(Duration::from_secs(10));
        assert_eq!(msg, ["WATCHDOG=1"], "a healthy agent pings");
    }

    let pid = agent.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopping = manager.until("STOPPING=1", Duration::from_secs(5));
    assert!(
        stopping
            .iter()
            .all(|m| m == &["WATCHDOG=1"] || m.contains(&"STOPPING=1".to_owned())),
        "{stopping:?}"
    );
    assert_eq!(agent.0.wait().unwrap().code(), Some(0));

    manager.socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    if let Ok(n) = manager.socket.recv(&mut buf) {
        panic!(
            "nothing after STOPPING=1, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

#[test]
fn without_notify_socket_the_agent_runs_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  embedded_broker_listen: 127.0.0.1:{}\n",
            free_port()
        ),
    )
    .unwrap();
    let child = agent_command()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path().join("rec"))
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
        .env("AWS_KVS_EDGE_LOG_LEVEL", "info")
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(agent.0.stderr.take().unwrap());
    let mut lines = stderr.lines().map_while(Result::ok);
    assert!(lines.any(|l| l.contains("ready")), "the agent gets ready");
    let pid = agent.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.collect();
    assert_eq!(agent.0.wait().unwrap().code(), Some(0));
    assert!(
        !rest.iter().any(|l| l.contains("notify")),
        "no complaint about a missing socket: {rest:?}"
    );
}
