//! The agent's HTTP server from outside: GET with an optional bearer token, and `/metrics`
//! read by the Prometheus project's own parser (tests/http/parse_metrics.py).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::sample::repo_root;

/// A response: status, content type and body.
pub struct Got {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub async fn get(url: &str, token: Option<&str>) -> Got {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.bytes().await.unwrap().to_vec();
    Got {
        status,
        content_type,
        body,
    }
}

/// GETs each `(path, status, says)` under `base`: the status must be `status` and the JSON
/// error's message must contain `says`. Returns the bodies.
pub async fn assert_refused<P: AsRef<str>>(base: &str, cases: &[(P, u16, &str)]) -> Vec<String> {
    let mut bodies = Vec::new();
    for (path, status, says) in cases {
        let path = path.as_ref();
        let r = get(&format!("{base}{path}"), None).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{path}: {msg}");
        bodies.push(r.text());
    }
    bodies
}

/// One sample: its name and labels (sorted), and its value.
#[allow(dead_code, reason = "for the tests that read /metrics")]
pub type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// `text` parsed by prometheus_client's OpenMetrics parser; panics with its message when the
/// text is not valid.
#[allow(dead_code, reason = "for the tests that read /metrics")]
pub fn parse_metrics(text: &str) -> Samples {
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/http/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                (s["name"].as_str().unwrap().to_owned(), labels),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The value of `name` with exactly `labels`.
#[allow(dead_code, reason = "for the tests that read /metrics")]
pub fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    samples.get(&(name.to_owned(), l)).copied()
}
