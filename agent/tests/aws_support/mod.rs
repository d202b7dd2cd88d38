//! AWS stand-ins shared by the tests: moto (Secrets Manager) and LocalStack (CloudWatch), each
//! a child process on a free port, killed when dropped. Missing under CI fails the test;
//! elsewhere it is skipped with a notice.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts moto on a free port and returns once it says it listens.
pub fn start_moto() -> Option<(Moto, u16)> {
    let have = Command::new("python3")
        .args(["-c", "import moto.server"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto is required when CI is set: python3 -m pip install 'moto[server]'"
        );
        eprintln!("skipped: moto is not installed (python3 -m pip install 'moto[server]')");
        return None;
    }
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let moto = Moto(child);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("moto exited before listening").unwrap();
        if line.contains("Running on") {
            break;
        }
    }
    // Keep draining its request log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some((moto, port))
}

/// LocalStack (community, no Docker) serving CloudWatch on a free port; killed when dropped.
pub struct LocalStack {
    child: Child,
    port: u16,
}

impl LocalStack {
    pub fn start(dir: &Path) -> Option<LocalStack> {
        let have = Command::new("python3")
            .args(["-c", "import localstack.runtime.main"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var_os("CI").is_none(),
                "LocalStack is required when CI is set (see tests/ci.sh)"
            );
            eprintln!("notice: LocalStack not installed, skipping");
            return None;
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("localstack.log")).unwrap();
        let child = Command::new("python3")
            .args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "cloudwatch")
            .env("DNS_ADDRESS", "0")
            .env("LOCALSTACK_TELEMETRY", "0")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DISABLE_EVENTS", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start LocalStack");
        let ls = LocalStack { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ls.healthy() {
            assert!(
                Instant::now() < deadline,
                "LocalStack did not come up: {}",
                std::fs::read_to_string(dir.join("localstack.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(ls)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its health endpoint says CloudWatch is available.
    pub fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /_localstack/health HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains(r#""cloudwatch": "available""#) || body.contains(r#""cloudwatch": "running""#)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
