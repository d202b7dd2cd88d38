//! The agent as the control-plane tests drive it: settings naming a secrets file that maps each
//! stream `cam-N` to the sample clip, and the requests that configure those streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{Agent, THING};
use crate::bin::BIN;
use crate::poll::wait_until_async;
use crate::sample::sample_clip;

pub fn secret_arn(stream: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}-uri")
}

impl Agent {
    /// Writes the settings (`yaml` is appended) and the secrets file (each stream `cam-N`
    /// maps to the sample clip; `extra_secrets` lines are appended), then starts the agent.
    #[allow(dead_code, reason = "for some of the control-plane tests only")]
    pub fn launch(dir: &Path, yaml: &str, extra_secrets: &str) -> Agent {
        Self::launch_env(dir, yaml, extra_secrets, &[])
    }

    /// With extra environment variables.
    pub fn launch_env(dir: &Path, yaml: &str, extra_secrets: &str, env: &[(&str, &str)]) -> Agent {
        Self::launch_bin(dir, yaml, extra_secrets, env, Path::new(BIN), &[])
    }

    /// With another binary (the release build) and arguments for `run`.
    pub fn launch_bin(
        dir: &Path,
        yaml: &str,
        extra_secrets: &str,
        env: &[(&str, &str)],
        bin: &Path,
        args: &[&str],
    ) -> Agent {
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
        // A `yaml` naming its own secrets file keeps it.
        let own = if yaml.contains("secrets_file:") {
            String::new()
        } else {
            format!("secrets_file: {}\n", secrets.display())
        };
        let settings = format!(
            "{own}recorder:\n  min_fragment_duration_ms: 1000\n  segment_duration_secs: 10\n{yaml}"
        );
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut a = Agent::new(dir, &settings, &args, &env).inheriting_env(bin);
        a.start();
        a
    }

    /// Waits until the logs hold `needle` `count` times (bounded).
    pub async fn wait_log(&self, needle: &str, count: usize, limit: Duration) {
        let what = format!("{count}x {needle:?} in the agent log");
        wait_until_async(&what, limit, || {
            self.log_text().matches(needle).count() >= count
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", self.log_text()));
    }

    /// The stream's segment files on disk.
    #[allow(dead_code, reason = "for some of the control-plane tests only")]
    pub fn segment_files(&self, stream: &str) -> Vec<PathBuf> {
        crate::recording::segment_files(&self.rec, stream)
    }

    /// Fragments the catalog holds for the stream.
    pub fn fragment_count(&self, stream: &str) -> usize {
        let Ok(cat) = kvs_edge_agent::catalog::Catalog::open_read_only(&self.catalog()) else {
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
        let what = format!("{at_least} fragments of {stream}");
        wait_until_async(&what, limit, || self.fragment_count(stream) >= at_least)
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()));
    }
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

/// Writes the request `body` to `dir/name` and sends it with `ctl start-edge-configuration-update`,
/// which must succeed.
#[allow(dead_code, reason = "for some of the control-plane tests only")]
pub async fn apply(broker: &str, dir: &Path, name: &str, body: &str) {
    let req = write_request(dir, name, body);
    let out = crate::ctl::ctl_start(broker, &req).await;
    assert!(out.status.success(), "{}", crate::ctl::stderr(&out));
}
