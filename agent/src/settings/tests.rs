use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs.iter().copied().collect()
}

fn errors(e: SettingsError) -> Vec<String> {
    match e {
        SettingsError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    }
}

#[test]
fn defaults_are_the_seeds() {
    let s = load(&Env::default(), None).unwrap();
    assert_eq!(s.mode, Mode::Local);
    assert!(!s.cloudwatch_enabled);
    assert_eq!(s.log.level, LogLevel::Info);
    assert_eq!(s.log.max_file_size_mb, 20);
    assert_eq!(s.log.rollover_count, 10);
    assert_eq!(s.log.output_directory, PathBuf::from("./log"));
    assert_eq!(s.recording_directory, PathBuf::from("."));
    assert_eq!(s.file.max_streams, 16);
    assert_eq!(s.file.mqtt.topic_prefix, "kvs-edge");
    assert_eq!(s.file.recorder.min_fragment_duration_ms, 2000);
    assert_eq!(s.file.recorder.segment_duration_secs, 60);
    assert_eq!(s.catalog_path(), PathBuf::from("./kvs-edge-agent.db"));
}

#[test]
fn each_variable_accepts_its_range_and_names_itself_when_wrong() {
    let cases: &[(&str, &str, Result<(), &str>)] = &[
        ("AWS_KVS_EDGE_CLOUDWATCH_ENABLED", "false", Ok(())),
        ("AWS_KVS_EDGE_CLOUDWATCH_ENABLED", "FaLsE", Ok(())),
        (
            "AWS_KVS_EDGE_CLOUDWATCH_ENABLED",
            "yes",
            Err("AWS_KVS_EDGE_CLOUDWATCH_ENABLED: \"yes\" is not TRUE or FALSE"),
        ),
        ("AWS_KVS_EDGE_LOG_LEVEL", "debug", Ok(())),
        ("AWS_KVS_EDGE_LOG_LEVEL", "OFF", Ok(())),
        (
            "AWS_KVS_EDGE_LOG_LEVEL",
            "VERBOSE",
            Err(
                "AWS_KVS_EDGE_LOG_LEVEL: \"VERBOSE\" is not one of OFF, ALL, FATAL, ERROR, WARN, INFO, DEBUG, TRACE",
            ),
        ),
        ("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE", "0", Ok(())),
        ("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE", "10000", Ok(())),
        (
            "AWS_KVS_EDGE_LOG_MAX_FILE_SIZE",
            "10001",
            Err("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE: 10001 is above the maximum 10000"),
        ),
        (
            "AWS_KVS_EDGE_LOG_MAX_FILE_SIZE",
            "5MB",
            Err("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE: \"5MB\" is not a whole number"),
        ),
        ("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT", "1", Ok(())),
        ("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT", "100", Ok(())),
        (
            "AWS_KVS_EDGE_LOG_ROLLOVER_COUNT",
            "0",
            Err("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT: 0 is below the minimum 1"),
        ),
        (
            "AWS_KVS_EDGE_LOG_ROLLOVER_COUNT",
            "101",
            Err("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT: 101 is above the maximum 100"),
        ),
        ("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", "/var/log/kvs", Ok(())),
        ("AWS_KVS_EDGE_RECORDING_DIRECTORY", "/media/kvs", Ok(())),
        ("GST_PLUGIN_PATH", "/opt/gst", Ok(())),
        ("LD_LIBRARY_PATH", "/opt/lib", Ok(())),
    ];
    for (name, value, want) in cases {
        let got = load(&env(&[(name, value)]), None)
            .map(|_| ())
            .map_err(errors);
        match want {
            Ok(()) => assert!(got.is_ok(), "{name}={value}: {got:?}"),
            Err(msg) => assert_eq!(got.unwrap_err(), vec![msg.to_string()], "{name}={value}"),
        }
    }
}

#[test]
fn values_are_applied() {
    let s = load(
        &env(&[
            ("AWS_KVS_EDGE_LOG_LEVEL", "fatal"),
            ("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE", "5"),
            ("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT", "3"),
            ("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", "/tmp/l"),
            ("AWS_KVS_EDGE_RECORDING_DIRECTORY", "/tmp/r"),
            ("AWS_REGION", "eu-west-1"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(s.log.level, LogLevel::Fatal);
    assert_eq!(s.log.level.filter_directive(), "error");
    assert_eq!(s.log.max_file_size_mb, 5);
    assert_eq!(s.log.rollover_count, 3);
    assert_eq!(s.log.output_directory, PathBuf::from("/tmp/l"));
    assert_eq!(s.catalog_path(), PathBuf::from("/tmp/r/kvs-edge-agent.db"));
    assert_eq!(s.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn iot_mode_needs_every_iot_variable_and_readable_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, "pem").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
    let full = [
        ("AWS_REGION", "us-west-2"),
        ("AWS_IOT_CA_CERT", ca.as_str()),
        ("AWS_IOT_CORE_CERT", cert.as_str()),
        ("AWS_IOT_CORE_PRIVATE_KEY", key.as_str()),
        (
            "AWS_IOT_CORE_CREDENTIAL_ENDPOINT",
            "c.credentials.iot.us-west-2.amazonaws.com",
        ),
        (
            "AWS_IOT_CORE_DATA_ATS_ENDPOINT",
            "a-ats.iot.us-west-2.amazonaws.com",
        ),
        ("AWS_IOT_CORE_ROLE_ALIAS", "kvs-edge-role-alias"),
        ("AWS_IOT_CORE_THING_NAME", "my-edge-device-thing"),
    ];
    let s = load(&env(&full), None).unwrap();
    let Mode::Iot(iot) = &s.mode else {
        panic!("expected IoT mode, got {:?}", s.mode)
    };
    assert_eq!(iot.role_alias, "kvs-edge-role-alias");
    assert_eq!(s.thing_name(), Some("my-edge-device-thing"));

    let partial = env(&[
        ("AWS_IOT_CORE_THING_NAME", "t"),
        ("AWS_IOT_CORE_CERT", "/nonexistent/cert.pem"),
    ]);
    assert_eq!(
        errors(load(&partial, None).unwrap_err()),
        [
            "AWS_IOT_CA_CERT: is required when AWS_IOT_CORE_CERT is set (IoT mode)",
            "AWS_IOT_CORE_CREDENTIAL_ENDPOINT: is required when AWS_IOT_CORE_CERT is set (IoT mode)",
            "AWS_IOT_CORE_DATA_ATS_ENDPOINT: is required when AWS_IOT_CORE_CERT is set (IoT mode)",
            "AWS_IOT_CORE_PRIVATE_KEY: is required when AWS_IOT_CORE_CERT is set (IoT mode)",
            "AWS_IOT_CORE_ROLE_ALIAS: is required when AWS_IOT_CORE_CERT is set (IoT mode)",
            "AWS_IOT_CORE_CERT: /nonexistent/cert.pem is not a readable file",
            "AWS_REGION: is required when the AWS_IOT_* variables are set",
        ]
    );
}

#[test]
fn greengrass_mode_is_detected() {
    let s = load(
        &env(&[("SVCUID", "abc"), ("AWS_REGION", "us-east-1")]),
        None,
    )
    .unwrap();
    assert_eq!(
        s.mode,
        Mode::Greengrass {
            root: PathBuf::from("/greengrass/v2")
        }
    );
    let s = load(&env(&[("GREENGRASS_ROOT_DIRECTORY", "/gg")]), None).unwrap();
    assert_eq!(
        s.mode,
        Mode::Greengrass {
            root: PathBuf::from("/gg")
        }
    );
}

#[test]
fn cloudwatch_needs_credentials() {
    assert_eq!(
        errors(load(&env(&[("AWS_KVS_EDGE_CLOUDWATCH_ENABLED", "TRUE")]), None).unwrap_err()),
        [
            "AWS_KVS_EDGE_CLOUDWATCH_ENABLED: TRUE needs AWS: set AWS_REGION (with credentials the AWS SDK finds), the AWS_IOT_* variables, or run under Greengrass"
        ]
    );
    let s = load(
        &env(&[
            ("AWS_KVS_EDGE_CLOUDWATCH_ENABLED", "true"),
            ("AWS_REGION", "eu-west-1"),
        ]),
        None,
    )
    .unwrap();
    assert!(s.cloudwatch_enabled);
}

#[test]
fn shipped_agent_yaml_is_the_defaults() {
    let text = include_str!("../../../config/agent.yaml");
    let parsed = match file::parse(text) {
        Ok(f) => f,
        Err(_) => panic!("config/agent.yaml must parse"),
    };
    assert_eq!(parsed, AgentFile::default());
}

#[test]
fn yaml_file_values_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "state_directory: /var/lib/kvs\nmax_streams: 4\nmqtt:\n  topic_prefix: site/7\n  thing_name: box-1\nrecorder:\n  segment_duration_secs: 120\n",
    )
    .unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    assert_eq!(
        s.catalog_path(),
        PathBuf::from("/var/lib/kvs/kvs-edge-agent.db")
    );
    assert_eq!(s.file.max_streams, 4);
    assert_eq!(s.file.mqtt.topic_prefix, "site/7");
    assert_eq!(s.thing_name(), Some("box-1"));
    assert_eq!(s.file.recorder.segment_duration_secs, 120);
    assert_eq!(s.file.recorder.min_fragment_duration_ms, 2000);

    std::fs::write(&path, "max_streams: 0\nmqtt:\n  topic_prefix: a/+/b\n  thing_name: 'bad thing'\nrecorder:\n  min_fragment_duration_ms: 500\n  segment_duration_secs: 4000\n").unwrap();
    assert_eq!(
        errors(load(&Env::default(), Some(&path)).unwrap_err()),
        [
            "max_streams: 0 is outside 1..=256",
            "recorder.min_fragment_duration_ms: 500 is outside 1000..=10000",
            "recorder.segment_duration_secs: 4000 is outside 10..=3600",
            "mqtt.topic_prefix: \"a/+/b\" must be a non-empty topic without wildcards or a leading or trailing '/'",
            "mqtt.thing_name: \"bad thing\" is not 1 to 128 of a-z, A-Z, 0-9, _ and - (an AWS IoT thing name a HubDeviceArn can name)",
        ]
    );

    std::fs::write(&path, "max_stream: 4\n").unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.contains("agent.yaml") && e.contains("max_stream"), "{e}");

    std::fs::write(&path, "max_streams: [1\n").unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.starts_with("configuration file "), "{e}");

    std::fs::write(&path, "max_streams: many\n").unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.contains("max_streams") || e.contains("many"), "{e}");

    let missing = dir.path().join("nope.yaml");
    let e = load(&Env::default(), Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read the configuration file") && e.contains("nope.yaml"),
        "{e}"
    );
}

#[test]
fn mqtt_broker_and_secrets_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "secrets_file: /etc/kvs/secrets.yaml\nmqtt:\n  broker_url: mqtt://127.0.0.1:18830\n  embedded_broker_listen: 127.0.0.1:0\n",
    )
    .unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    assert_eq!(
        s.file.secrets_file,
        Some(PathBuf::from("/etc/kvs/secrets.yaml"))
    );
    assert_eq!(
        s.file.mqtt.broker_url.as_deref(),
        Some("mqtt://127.0.0.1:18830")
    );
    assert_eq!(s.file.mqtt.embedded_broker_listen, "127.0.0.1:0");

    std::fs::write(
        &path,
        "mqtt:\n  broker_url: http://u:hunter2@h/\n  embedded_broker_listen: localhost\n",
    )
    .unwrap();
    let errs = errors(load(&Env::default(), Some(&path)).unwrap_err());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("mqtt.broker_url: ") && !errs[0].contains("hunter2"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("mqtt.embedded_broker_listen: "),
        "{errs:?}"
    );
    std::fs::write(&path, "mqtt:\n  broker_url: mqtt://\n").unwrap();
    assert!(load(&Env::default(), Some(&path)).is_err());
}

#[test]
fn disk_reserve_is_configurable_within_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "disk_reserve:\n  min_free_mb: 256\n  min_free_percent: 0\n",
    )
    .unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    assert_eq!(s.file.disk_reserve.min_free_mb, 256);
    assert_eq!(s.file.disk_reserve.min_free_percent, 0);
    std::fs::write(&path, "disk_reserve:\n  min_free_percent: 80\n").unwrap();
    assert_eq!(
        errors(load(&Env::default(), Some(&path)).unwrap_err()),
        ["disk_reserve.min_free_percent: 80 is outside 0..=50"]
    );
}

#[test]
fn the_files_default_reserve_is_the_janitors() {
    assert_eq!(
        DiskReserveFile::default().reserve(),
        crate::janitor::policy::DiskReserve::default(),
        "the settings file's defaults are the reserve's"
    );
}

#[test]
fn iot_variables_are_the_seven_aws_iot_ones_of_the_list() {
    assert_eq!(IOT_VARIABLES.len(), 7);
    assert!(IOT_VARIABLES.iter().all(|v| v.starts_with("AWS_IOT_")));
    assert_eq!(
        VARIABLES
            .iter()
            .filter(|v| v.starts_with("AWS_IOT_"))
            .count(),
        7
    );
}

#[test]
fn cloudwatch_iot_port_and_log_format_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "log_format: json\nmqtt:\n  iot_port: 443\ncloudwatch:\n  interval_secs: 5\n  buffer_datums: 2000\n",
    )
    .unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.file.mqtt.iot_port, 443);
    assert_eq!(s.file.cloudwatch.interval_secs, 5);
    assert_eq!(s.file.cloudwatch.buffer_datums, 2000);

    std::fs::write(
        &path,
        "mqtt:\n  iot_port: 1883\ncloudwatch:\n  interval_secs: 0\n  buffer_datums: 10\n",
    )
    .unwrap();
    assert_eq!(
        errors(load(&Env::default(), Some(&path)).unwrap_err()),
        [
            "cloudwatch.interval_secs: 0 is outside 1..=3600",
            "cloudwatch.buffer_datums: 10 is outside 1000..=10000000",
            "mqtt.iot_port: 1883 is not 8883 or 443",
        ]
    );
    std::fs::write(&path, "log_format: xml\n").unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.contains("agent.yaml") && e.contains("xml"), "{e}");
}

#[test]
fn settings_that_cannot_work_are_refused_and_echoes_cut() {
    let region = |v: &str| load(&env(&[("AWS_REGION", v)]), None).map_err(errors);
    for ok in [
        "us-east-1",
        "eu-west-3",
        "ap-southeast-5",
        "il-central-1",
        "mx-central-1",
        "cn-northwest-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "us-isof-south-1",
        "eu-isoe-west-1",
        "eusc-de-east-1",
    ] {
        assert!(region(ok).is_ok(), "{ok}");
    }
    let long = "a".repeat(100_000);
    for bad in [
        "-1",
        "é日本",
        "US-EAST-1",
        "us-east",
        "us_east_1",
        "us-east-1 ",
        &long,
    ] {
        let e = region(bad).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("AWS_REGION: ") && e[0].contains("is not an AWS Region name"),
            "{e:?}"
        );
        assert!(e[0].len() < 200, "the value is cut: {}", e[0]);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    let yaml_errors = |text: &str| {
        std::fs::write(&path, text).unwrap();
        load(&Env::default(), Some(&path))
            .map(|_| ())
            .map_err(errors)
    };
    let e = yaml_errors(&format!("mqtt:\n  thing_name: {}\n", "t".repeat(100_000))).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!("mqtt.thing_name: \"{}\"...", "t".repeat(64)))
            && e[0].len() < 250,
        "{e:?}"
    );
    assert!(yaml_errors(&format!("mqtt:\n  thing_name: {}\n", "t".repeat(128))).is_ok());
    assert!(
        yaml_errors("mqtt:\n  thing_name: hub:1\n").is_err(),
        "no HubDeviceArn names it"
    );
    assert_eq!(
        yaml_errors("state_directory: ''\n").unwrap_err(),
        ["state_directory: is empty; leave the key out for the default"]
    );
    let e = yaml_errors("max_streams: sixteen\n").unwrap_err();
    assert!(
        e[0].contains("max_streams") && e[0].contains("expected a whole number, found \"sixteen\""),
        "{e:?}"
    );
    let e = yaml_errors("max_streams: 1e2\n").unwrap_err();
    assert!(e[0].contains("expected a whole number, found 100"), "{e:?}");
    let e = yaml_errors("mqtt:\n  iot_port: 70000\n").unwrap_err();
    assert!(e[0].contains("70000 is too large"), "{e:?}");
    let e = yaml_errors("max_streams: 4\nmax_streams: 5\n").unwrap_err();
    assert!(
        e[0].contains("max_streams"),
        "a repeated key is refused: {e:?}"
    );

    let iot = load(&env(&[("AWS_IOT_CORE_THING_NAME", &"x".repeat(129))]), None)
        .map_err(errors)
        .unwrap_err();
    assert!(
        iot.iter()
            .any(|e| e.starts_with("AWS_IOT_CORE_THING_NAME: ") && e.contains("is not 1 to 128")),
        "{iot:?}"
    );
}

#[test]
fn a_settings_file_that_is_not_a_regular_file_is_refused_at_once() {
    let e = load(&Env::default(), Some(Path::new("/dev/zero")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "the configuration file /dev/zero is a character device, not a regular file"
    );
}

#[test]
fn upload_requests_order_and_bandwidth_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "uploader:\n  backlog_order: newest\n  max_kbps: 4000\n  max_range_secs: 3600\n  bandwidth_windows:\n    - schedule: \"0 0 8 ? * MON-FRI\"\n      duration_secs: 36000\n      max_kbps: 2000\n",
    )
    .unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    let u = &s.file.uploader;
    assert_eq!(
        u.backlog_order,
        crate::uploader::agenda::BacklogOrder::Newest
    );
    assert_eq!(u.request_limits().max_range_secs, 3600);
    let caps = u.bandwidth(&jiff::tz::TimeZone::UTC);
    let monday_9 = "2026-01-05T09:00:00Z".parse().unwrap();
    let monday_19 = "2026-01-05T19:00:00Z".parse().unwrap();
    assert_eq!(caps.at(monday_9).0, Some(250_000.0));
    assert_eq!(caps.at(monday_19).0, Some(500_000.0));

    std::fs::write(&path, "uploader:\n  backlog_order: sideways\n").unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.contains("sideways") || e.contains("backlog_order"), "{e}");
    std::fs::write(
        &path,
        "uploader:\n  max_kbps: 20000000\n  bandwidth_windows:\n    - schedule: \"0 0 25 * * ?\"\n      duration_secs: 0\n      max_kbps: 1\n",
    )
    .unwrap();
    let got = errors(load(&Env::default(), Some(&path)).unwrap_err());
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got[0].starts_with("uploader.max_kbps: 20000000 is outside"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("uploader.bandwidth_windows[0].schedule: "),
        "{got:?}"
    );
    assert_eq!(
        got[2],
        "uploader.bandwidth_windows[0].duration_secs: 0 is outside 1..=604800"
    );
    assert_eq!(
        got[3],
        "uploader.bandwidth_windows[0].max_kbps: 1 is outside 8..=10000000"
    );
    std::fs::write(
        &path,
        "uploader:\n  bandwidth_windows:\n    - schedule: \"* * * * * ?\"\n      duration_secs: 60\n      max_kbps: 100\n      when: always\n",
    )
    .unwrap();
    let e = load(&Env::default(), Some(&path)).unwrap_err().to_string();
    assert!(e.contains("when"), "{e}");
}

#[test]
fn the_http_server_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    let s = load(&Env::default(), Some(&path));
    assert!(s.is_err(), "a missing file is an error, not the defaults");
    std::fs::write(&path, "http:\n  listen: \"\"\n").unwrap();
    let s = load(&Env::default(), Some(&path)).unwrap();
    assert_eq!(s.file.http.address(), None, "empty turns it off");
    std::fs::write(
        &path,
        "http:\n  listen: 0.0.0.0:9000\n  token_file: /etc/token\n  max_export_secs: 600\n",
    )
    .unwrap();
    let h = load(&Env::default(), Some(&path)).unwrap().file.http;
    assert_eq!(h.address(), Some("0.0.0.0:9000".parse().unwrap()));
    assert_eq!(h.max_export_secs, 600);
    let bad = [
        (
            "http:\n  listen: localhost\n",
            "http.listen: \"localhost\" is not an address",
        ),
        (
            "http:\n  listen: 192.168.1.5:8080\n",
            "http.token_file: is required to listen on 192.168.1.5:8080",
        ),
        (
            "http:\n  listen: \"[::]:8080\"\n",
            "http.token_file: is required",
        ),
        (
            "http:\n  max_export_secs: 0\n",
            "http.max_export_secs: 0 is outside 1..=86400",
        ),
        ("http:\n  token_file: \"\"\n", "http.token_file: is empty"),
    ];
    for (yaml, want) in bad {
        std::fs::write(&path, yaml).unwrap();
        let got = errors(load(&Env::default(), Some(&path)).unwrap_err());
        assert!(got.iter().any(|e| e.starts_with(want)), "{yaml}: {got:?}");
    }
    std::fs::write(&path, "http:\n  listen: \"[::1]:8080\"\n").unwrap();
    assert!(
        load(&Env::default(), Some(&path)).is_ok(),
        "IPv6 loopback needs no token"
    );
}
