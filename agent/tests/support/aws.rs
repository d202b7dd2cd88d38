//! AWS stand-ins: moto (Secrets Manager) and LocalStack (CloudWatch), each a child process on a
//! free port, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::free_port;
use crate::peer::python;
use crate::poll::wait_until;
use crate::process::{Killed, ready_line};

/// moto serving on a free port: the process (killed when dropped) and the port, once it says
/// it listens.
#[allow(dead_code, reason = "for the tests of Secrets Manager")]
pub fn start_moto() -> Option<(Killed, u16)> {
    if !python("moto.server", "python3 -m pip install 'moto[server]'") {
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
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let moto = Killed(child);
    ready_line(&mut stderr, "moto", |line| {
        line.contains("Running on").then_some(())
    });
    // Keep draining its request log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Some((moto, port))
}

/// LocalStack (community, no Docker) serving CloudWatch on a free port; killed when dropped.
#[allow(dead_code, reason = "for the tests of CloudWatch")]
pub struct LocalStack {
    _child: Killed,
    port: u16,
}

#[allow(dead_code, reason = "for the tests of CloudWatch")]
impl LocalStack {
    pub fn start(dir: &Path) -> Option<LocalStack> {
        if !python("localstack.runtime.main", "see tests/ci.sh") {
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
        let ls = LocalStack {
            _child: Killed(child),
            port,
        };
        if let Err(e) = wait_until("LocalStack", Duration::from_secs(60), || ls.healthy()) {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(dir.join("localstack.log")).unwrap_or_default()
            );
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
