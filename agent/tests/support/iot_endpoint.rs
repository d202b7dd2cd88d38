//! The stand-in for the AWS IoT credentials provider endpoint (tests/iot_credentials/server.py):
//! HTTPS that requires a device certificate, with a test PKI made by `openssl` here.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::certs::openssl;
use crate::process::{Killed, ready_line};

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

fn make_ca(dir: &Path, name: &str) {
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    args.extend(["-keyout", &key, "-out", &pem, "-subj", &subj]);
    openssl(dir, &args);
}

fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    let (key, csr, pem, subj, ext_file) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={name}"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext_file,
        ],
    );
}

/// In `dir`: the CA `ca` with the endpoint's certificate `server` and the device's `device`,
/// and a rogue CA `rogue-ca` with a device certificate `rogue` the endpoint must refuse.
pub fn make_pki(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "rogue-ca");
    make_leaf(
        dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    make_leaf(dir, "ca", "device", CLIENT_EXT);
    make_leaf(dir, "rogue-ca", "rogue", CLIENT_EXT);
}

/// The endpoint, serving from `dir` (made by [`make_pki`]); killed when dropped.
pub struct IotEndpoint {
    _child: Killed,
    pub port: u16,
    dir: PathBuf,
}

impl IotEndpoint {
    /// `extra`: more arguments of server.py, such as `--register EMULATOR_URL`.
    pub fn start(dir: &Path, extra: &[&str]) -> IotEndpoint {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/iot_credentials/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--cert",
                "server.pem",
                "--key",
                "server.key",
                "--client-ca",
                "ca.pem",
            ])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let child = Killed(child);
        let port = ready_line(&mut stdout, "the credentials server", |line| {
            line.parse().ok()
        });
        IotEndpoint {
            _child: child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The keys issued with `--register`: (access key, expiry in Unix ms), in order.
    #[allow(
        dead_code,
        reason = "for the tests that register keys with the emulator"
    )]
    pub fn issued(&self) -> Vec<(String, i64)> {
        std::fs::read_to_string(self.dir.join("issued.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["access_key"].as_str().unwrap().to_owned(),
                    v["expires_ms"].as_i64().unwrap(),
                )
            })
            .collect()
    }
}
