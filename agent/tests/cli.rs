//! The binary's verbs as an operator runs them.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/example-edge-configuration.json"
);

fn agent() -> Command {
    // Start each run from a clean environment of the agent's own variables.
    let mut c = bin::command();
    // `run` logs to files too: never into the source tree (the default is ./log).
    let log_dir =
        std::env::temp_dir().join(format!("kvs-edge-agent-cli-log-{}", std::process::id()));
    c.env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", log_dir);
    c
}

#[test]
fn help_lists_every_verb() {
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for verb in [
        "run",
        "check-config",
        "schedule",
        "record",
        "check",
        "recordings",
    ] {
        assert!(
            text.contains(&format!("  {verb} ")),
            "--help lists {verb}:\n{text}"
        );
        let sub = agent().args([verb, "--help"]).output().unwrap();
        assert!(sub.status.success(), "{verb} --help");
    }
}

#[test]
fn check_config_prints_the_normalised_request() {
    for arg in [EXAMPLE.to_owned(), format!("file://{EXAMPLE}")] {
        let out = agent().args(["check-config", &arg]).output().unwrap();
        process::assert_success(&out);
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
        assert_eq!(
            printed, original,
            "the example states every default already"
        );
    }
}

#[test]
fn check_config_fills_defaults_from_stdin() {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    doc["EdgeConfig"]
        .as_object_mut()
        .unwrap()
        .remove("DeletionConfig");
    let mut child = agent()
        .args(["check-config", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["EdgeConfig"]["DeletionConfig"],
        serde_json::json!({"EdgeRetentionInHours": 720, "DeleteAfterUpload": true})
    );
}

#[test]
fn check_config_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"StreamName": "cam", "EdgeConfig": {"HubDeviceArn": "arn:aws:iot:us-west-2:1:thing/t",
            "RecorderConfig": {"MediaSourceConfig": {"MediaUriSecretArn": "arn:aws:secretsmanager:us-west-2:1:secret:s", "MediaUriType": "RTSP_URI"},
            "ScheduleConfig": {"ScheduleExpression": "0 0 9 * * ? *", "DurationInSeconds": 59}},
            "DeletionConfig": {"EdgeRetentionInHours": 721}}}"#,
    )
    .unwrap();
    let out = agent()
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 59 is below the minimum 60\n\
         EdgeConfig.DeletionConfig.EdgeRetentionInHours: 721 is above the maximum 720\n"
    );

    std::fs::write(&bad, "{\"StreamName\": ").unwrap();
    let out = agent()
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("not valid JSON: "));

    let out = agent()
        .args(["check-config", "file:///nonexistent/x.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read the request /nonexistent/x.json")
    );
}

#[test]
fn run_refuses_bad_settings_naming_the_variable() {
    let out = agent()
        .arg("run")
        .env("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT: 0 is below the minimum 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_refuses_a_log_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = agent()
        .arg("run")
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", file.join("log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create the log directory") && stderr.contains("a-file/log"),
        "{stderr}"
    );
}

/// A control plane that dies takes the daemon down with a failure (systemd restarts it), rather
/// than leave it recording deaf to the cloud.
#[test]
fn a_crashed_control_plane_stops_the_daemon_with_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["run", "--broker", "mqtt://127.0.0.1:9"])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
        .env("KVS_EDGE_AGENT_FAULT", "panic-control:agent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the control plane crashed"), "{stderr}");
}

#[test]
fn run_opens_the_catalog_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = agent()
        .arg("run")
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .env("AWS_KVS_EDGE_LOG_LEVEL", "info")
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = stderr
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("ready"));
    assert!(ready, "agent logs that it is ready");
    assert!(dir.path().join("kvs-edge-agent.db").is_file());
    // The daemon ignores SIGPIPE (a peer closing a socket is an error to handle, not death),
    // though the verbs take its default.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SigIgn {ignored:x}"
    );
    process::signal(child.id(), "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    // The log file has every line, the last one ("stopped", logged just before exit) included.
    let file = std::fs::read_to_string(dir.path().join("log/kvs-edge-agent.log")).unwrap();
    assert!(
        file.contains("starting") && file.contains("ready"),
        "{file}"
    );
    assert!(file.lines().last().unwrap().contains("stopped"), "{file}");
    assert!(!file.contains("\x1b["), "no colour codes in the file");
}

#[test]
fn recordings_list_and_du_read_the_catalog() {
    use kvs_edge_agent::catalog::{Catalog, NewFragment, NewSegment};
    use kvs_edge_agent::edge_config::{SyncStatus, parse_start_request};

    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap();
    let mut request = parse_start_request(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    request.stream_arn = None;
    request.stream_name = Some("cam1".into());
    let now = jiff::Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01T00:00:00Z
    c.put_config(&request, SyncStatus::InSync, now).unwrap();
    let seg = c
        .insert_segment(&NewSegment {
            stream_name: "cam1".into(),
            path: "cam1/2026-01-01/1767225600000.mkv".into(),
            codec_id: "V_MPEG4/ISO/AVC".into(),
            codec_private: vec![1, 2, 3],
            width: 640,
            height: 360,
            header_size: 1 << 20,
            start_ms: 1_767_225_600_000,
        })
        .unwrap();
    let frag = |i: u64| NewFragment {
        offset: (1 << 20) + i * (100 << 20),
        size: 100 << 20,
        timecode_ms: 1_767_225_600_000 + i as i64 * 2000,
        duration_ms: 2000,
        frame_count: 50,
        key_frame_count: 1,
        // The second recorded before the box's clock was synchronised.
        clock_unsynced: i == 1,
    };
    let first = c.add_fragment(seg, &frag(0)).unwrap();
    c.add_fragment(seg, &frag(1)).unwrap();
    c.mark_fragment_uploaded(first, "1", now).unwrap();
    drop(c);

    let out = agent()
        .args(["recordings", "list"])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .output()
        .unwrap();
    process::assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cam1/2026-01-01/1767225600000.mkv"), "{text}");
    assert!(text.contains("2026-01-01T00:00:00Z"), "{text}");
    assert!(
        text.contains(
            "total cam1: 1 segments, 201.0 MiB, 2 fragments (1 uploaded, 0 failed, 1 pending); \
             1 recorded while the clock was not synchronised"
        ),
        "{text}"
    );
    // UNSYNC is the column before STATE.
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("cam1 "))
        .unwrap()
        .split_whitespace()
        .collect();
    let state = row.iter().position(|c| *c == "OPEN").unwrap();
    assert_eq!(row[state - 1], "1", "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("FAILED  UNSYNC STATE"),
        "{text}"
    );

    let out = agent()
        .args(["recordings", "du"])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("cam1"))
        .expect("a row for cam1");
    let mut cols: Vec<&str> = row.split_whitespace().collect();
    // The oldest pending fragment's age grows with the test machine's clock.
    let oldest = cols.remove(10);
    assert!(oldest.contains('d') && oldest.ends_with('h'), "{text}");
    assert_eq!(
        cols,
        [
            "cam1",
            "1",
            "201.0",
            "MiB",
            "2.73",
            "GiB",
            "7.2",
            "DELETE_OLDEST_MEDIA",
            "1",
            "100.0MiB",
            "15h"
        ],
        "{text}"
    );
    assert!(
        text.contains("PENDING  TO_UPLOAD    OLDEST RETENTION"),
        "{text}"
    );

    let missing = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["recordings", "list"])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", missing.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "no catalog is an error, not an empty list"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("kvs-edge-agent.db"));
}

#[test]
fn run_applies_edge_config_files_at_start() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"StreamName": "x", "EdgeConfig": {"HubDeviceArn": 1}}"#,
    )
    .unwrap();
    let out = agent()
        .args(["run", "--edge-config", bad.to_str().unwrap()])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json: EdgeConfig.HubDeviceArn: expected a string, found number 1"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("kvs-edge-agent.db").exists(),
        "nothing starts on a bad file"
    );

    let mut child = agent()
        .args([
            "run",
            "--secrets-file",
            &format!("{root}/config/secrets.example.yaml"),
            "--edge-config",
            &format!("file://{root}/config/example-local.json"),
        ])
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
        .env("AWS_KVS_EDGE_LOG_LEVEL", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let opened = stderr
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("segment opened") && l.contains("demo-cam"));
    assert!(opened, "the configuration from the file records");
    process::signal(child.id(), "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let c = kvs_edge_agent::catalog::Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap();
    let stored = c
        .config("demo-cam")
        .unwrap()
        .expect("stored like a received configuration");
    assert_eq!(
        stored.sync_status,
        kvs_edge_agent::edge_config::SyncStatus::InSync
    );
    assert!(!c.segments(Some("demo-cam")).unwrap().is_empty());
}

/// Runs `cmd`, its address space capped at 2 GiB so that a regression reading a device for
/// ever fails fast instead of exhausting the machine; killed and failed after 20 s.
fn output_capped(mut cmd: Command) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    const CAP: libc::rlim_t = 2 << 30;
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CAP,
                rlim_max: CAP,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            process::signal_quiet(pid, "-KILL");
            panic!("{cmd:?} did not end within 20 s");
        }
    }
}

fn mkfifo(path: &std::path::Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn every_named_file_must_be_a_regular_file_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap().to_owned();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 70_000]).unwrap();
    let big = big.to_str().unwrap().to_owned();
    let rec = dir.path().join("rec");
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["check-config", "/dev/zero"],
            1,
            "the request /dev/zero is a character device, not a regular file".into(),
        ),
        (
            vec!["check-config", "file:///dev/zero"],
            1,
            "the request /dev/zero is a character device".into(),
        ),
        (
            vec!["check-config", &fifo],
            1,
            format!("the request {fifo} is a FIFO (named pipe), not a regular file"),
        ),
        (
            vec!["check-config", &big],
            1,
            format!("the request {big} is larger than 65536 bytes"),
        ),
        (
            vec!["run", "--config", "/dev/zero"],
            2,
            "invalid settings: the configuration file /dev/zero is a character device".into(),
        ),
        (
            vec!["run", "--config", &fifo],
            2,
            format!("invalid settings: the configuration file {fifo} is a FIFO"),
        ),
        (
            vec!["run", "--edge-config", "file:///dev/zero"],
            1,
            "the request /dev/zero is a character device".into(),
        ),
        (
            vec!["run", "--edge-config", &fifo],
            1,
            format!("the request {fifo} is a FIFO"),
        ),
    ];
    for (args, code, needle) in cases {
        let mut cmd = agent();
        cmd.args(&args)
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &rec);
        let out = output_capped(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
    }
    assert!(!rec.exists(), "nothing starts on a bad file");
}

#[test]
fn a_secrets_file_that_is_a_device_is_reported_and_the_daemon_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    // Killed with the test, should it fail.
    let mut daemon = process::Killed(
        agent()
            .args(["run", "--secrets-file", "/dev/zero"])
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
            .env("AWS_KVS_EDGE_LOG_LEVEL", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(daemon.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut refused = false;
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the agent gets ready within 20 s");
        refused |= line.contains("the secrets file /dev/zero is a character device");
        if line.contains("ready") {
            break;
        }
    }
    assert!(refused, "the device is named, before the agent is ready");
    process::signal(daemon.0.id(), "-TERM");
    assert_eq!(daemon.0.wait().unwrap().code(), Some(0));
}

#[test]
fn a_closed_pipe_ends_a_verb_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = agent()
        .args(["schedule", "next", "0 * * * * ? *", "--count", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped: the pipe is closed, as `| head -1` closes it.
    assert!(!first.is_empty());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "no panic message");
}

#[test]
fn schedule_from_before_1970_starts_at_quartz_first_year() {
    let out = agent()
        .args([
            "schedule",
            "next",
            "0 0 0 1 1 ? *",
            "--from",
            "0001-01-01T00:00:00Z",
            "--count",
            "2",
            "--tz",
            "UTC",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "1970-01-01T00:00:00+00:00\n1971-01-01T00:00:00+00:00\n"
    );
}
