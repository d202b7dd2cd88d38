//! `run` under a stand-in for systemd: the agent's notifications on `NOTIFY_SOCKET` arrive in
//! order (READY=1, watchdog pings while healthy, STOPPING=1 after SIGTERM, nothing after it).

#[path = "support/bin.rs"]
mod bin;
#[path = "support/net.rs"]
mod net;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use net::free_port;
use process::Killed;

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

/// `run` with an embedded broker on a port of its own (so that it runs beside other agents
/// under test), recording and logging in `dir`; `setup` adds to the command.
fn start(dir: &Path, setup: impl FnOnce(&mut Command)) -> Killed {
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  embedded_broker_listen: 127.0.0.1:{}\n",
            free_port()
        ),
    )
    .unwrap();
    let mut cmd = bin::command();
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.join("rec"))
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.join("log"))
        .stdin(Stdio::null());
    setup(&mut cmd);
    Killed(cmd.spawn().unwrap())
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = Manager {
        socket: UnixDatagram::bind(&socket_path).unwrap(),
        log: dir.path().join("log/kvs-edge-agent.log"),
    };
    let mut agent = start(dir.path(), |c| {
        c.env("NOTIFY_SOCKET", &socket_path)
            // 2 s: a ping every second, each health check given 0.9 s (ample on a loaded CI box).
            .env("WATCHDOG_USEC", "2000000")
            .stderr(Stdio::null());
    });

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

    process::signal(agent.0.id(), "-TERM");
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
    let mut agent = start(dir.path(), |c| {
        c.env("AWS_KVS_EDGE_LOG_LEVEL", "info")
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::piped());
    });
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(agent.0.stderr.take().unwrap());
    let mut lines = stderr.lines().map_while(Result::ok);
    assert!(lines.any(|l| l.contains("ready")), "the agent gets ready");
    process::signal(agent.0.id(), "-TERM");
    let rest: Vec<String> = lines.collect();
    assert_eq!(agent.0.wait().unwrap().code(), Some(0));
    assert!(
        !rest.iter().any(|l| l.contains("notify")),
        "no complaint about a missing socket: {rest:?}"
    );
}
