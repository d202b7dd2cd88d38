use serde_json::{Value, json};

use super::*;

const EXAMPLE: &str = include_str!("../../../config/example-edge-configuration.json");

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

/// Sets (or with `None`, removes) the field at a dotted path of the example.
fn with(path: &str, value: Option<Value>) -> Value {
    let mut doc = example();
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = &mut doc;
    for p in parts {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p)
            .or_insert_with(|| json!({}));
    }
    let map = cur.as_object_mut().unwrap();
    match value {
        Some(v) => {
            map.insert(last.to_owned(), v);
        }
        None => {
            map.remove(last);
        }
    }
    doc
}

fn errors(doc: &Value) -> Vec<String> {
    match validate::validate_start_request(doc) {
        Ok(_) => vec![],
        Err(e) => e.field_errors().iter().map(ToString::to_string).collect(),
    }
}

/// Every field of the request: a valid value that must pass and an invalid one whose exact
/// error text is checked.
#[test]
fn every_field_valid_and_invalid() {
    struct Case {
        path: &'static str,
        value: Option<Value>,
        error: Option<&'static str>,
    }
    let ok = |path, value: Value| Case {
        path,
        value: Some(value),
        error: None,
    };
    let bad = |path, value: Option<Value>, error| Case {
        path,
        value,
        error: Some(error),
    };
    let cases = [
        ok(
            "StreamARN",
            json!("arn:aws-cn:kinesisvideo:cn-north-1:1:stream/a.b_c-d/1"),
        ),
        bad(
            "StreamARN",
            Some(json!("arn:aws:kinesisvideo:us-west-2:acct:stream/s/1")),
            "StreamARN: \"arn:aws:kinesisvideo:us-west-2:acct:stream/s/1\" does not match the pattern arn:[a-z\\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+",
        ),
        bad(
            "StreamARN",
            Some(json!("")),
            "StreamARN: length 0 is below the minimum length 1",
        ),
        bad(
            "StreamARN",
            Some(json!(12)),
            "StreamARN: expected a string, found number 12",
        ),
        bad(
            "StreamARN",
            None,
            "one of StreamName and StreamARN is required",
        ),
        bad(
            "StreamName",
            Some(json!("cam")),
            "specify either StreamName or StreamARN, not both",
        ),
        bad(
            "EdgeConfig.HubDeviceArn",
            Some(json!("arn:aws:iot:us-west-2:123456789012:thingy/x")),
            "EdgeConfig.HubDeviceArn: \"arn:aws:iot:us-west-2:123456789012:thingy/x\" does not match the pattern arn:[a-z\\d-]+:iot:[a-z0-9-]+:[0-9]+:thing/[a-zA-Z0-9_.-]+",
        ),
        bad(
            "EdgeConfig.HubDeviceArn",
            None,
            "EdgeConfig.HubDeviceArn: is required",
        ),
        ok(
            "EdgeConfig.HubDeviceArn",
            json!("arn:aws:iot:eu-central-1:000000000001:thing/my_thing.1-a"),
        ),
        bad(
            "EdgeConfig.RecorderConfig",
            None,
            "EdgeConfig.RecorderConfig: is required",
        ),
        bad(
            "EdgeConfig.RecorderConfig",
            Some(json!([])),
            "EdgeConfig.RecorderConfig: expected an object, found an array",
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig",
            None,
            "EdgeConfig.RecorderConfig.MediaSourceConfig: is required",
        ),
        ok(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn",
            json!("arn:aws:secretsmanager:us-east-1:1:secret:a"),
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn",
            Some(json!("arn:aws:secretsmanag")),
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn: \"arn:aws:secretsmanag\" does not match the pattern arn:[a-z\\d-]+:secretsmanager:[a-z0-9-]+:[0-9]+:secret:[a-zA-Z0-9_.-]+",
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn",
            Some(json!("arn:aws:secret")),
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn: length 14 is below the minimum length 20",
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn",
            None,
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn: is required",
        ),
        ok(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType",
            json!("FILE_URI"),
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType",
            Some(json!("rtsp_uri")),
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType: \"rtsp_uri\" is not one of RTSP_URI, FILE_URI",
        ),
        bad(
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType",
            None,
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType: is required",
        ),
        ok("EdgeConfig.RecorderConfig.ScheduleConfig", Value::Null),
        ok(
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression",
            json!("0 0 9-16 ? * MON-FRI *"),
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression",
            Some(json!("0 0 9 * *")),
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression: length 9 is below the minimum length 11",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression",
            Some(json!("0 0 9 * * ?\n*")),
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression: \"0 0 9 * * ?\\n*\" does not match the pattern [^\\n]{11,100}",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression",
            Some(json!("0 0 9-16 * * MON-FRI *")),
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression: \"0 0 9-16 * * MON-FRI *\" is not a valid Quartz cron expression: Support for specifying both a day-of-week AND a day-of-month parameter is not implemented.",
        ),
        bad(
            "EdgeConfig.UploaderConfig.ScheduleConfig.ScheduleExpression",
            Some(json!("0 0 25 ? * * *")),
            "EdgeConfig.UploaderConfig.ScheduleConfig.ScheduleExpression: \"0 0 25 ? * * *\" is not a valid Quartz cron expression: Hour values must be between 0 and 23",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression",
            None,
            "EdgeConfig.RecorderConfig.ScheduleConfig.ScheduleExpression: is required",
        ),
        ok(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            json!(60),
        ),
        ok(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            json!(3600),
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(59)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 59 is below the minimum 60",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(3601)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 3601 is above the maximum 3600",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(60.5)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: expected a whole number from 60 to 3600, found 60.5",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(1e2)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: expected a whole number from 60 to 3600, found 100.0; write it without a fraction or an exponent",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(-0.0)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 0 is below the minimum 60",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!(u64::MAX)),
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 18446744073709551615 is above the maximum 3600",
        ),
        bad(
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds",
            None,
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: is required",
        ),
        ok("EdgeConfig.UploaderConfig", Value::Null),
        bad(
            "EdgeConfig.UploaderConfig.ScheduleConfig",
            None,
            "EdgeConfig.UploaderConfig.ScheduleConfig: is required",
        ),
        bad(
            "EdgeConfig.UploaderConfig.ScheduleConfig.DurationInSeconds",
            Some(json!("3599")),
            "EdgeConfig.UploaderConfig.ScheduleConfig.DurationInSeconds: expected a whole number from 60 to 3600, found string \"3599\"",
        ),
        bad(
            "EdgeConfig.UploaderConfig.ScheduleConfig.ScheduleExpression",
            Some(json!(true)),
            "EdgeConfig.UploaderConfig.ScheduleConfig.ScheduleExpression: expected a string, found boolean true",
        ),
        ok("EdgeConfig.DeletionConfig", json!({})),
        ok("EdgeConfig.DeletionConfig.EdgeRetentionInHours", json!(1)),
        ok("EdgeConfig.DeletionConfig.EdgeRetentionInHours", json!(720)),
        bad(
            "EdgeConfig.DeletionConfig.EdgeRetentionInHours",
            Some(json!(0)),
            "EdgeConfig.DeletionConfig.EdgeRetentionInHours: 0 is below the minimum 1",
        ),
        bad(
            "EdgeConfig.DeletionConfig.EdgeRetentionInHours",
            Some(json!(721)),
            "EdgeConfig.DeletionConfig.EdgeRetentionInHours: 721 is above the maximum 720",
        ),
        ok("EdgeConfig.DeletionConfig.DeleteAfterUpload", json!(false)),
        bad(
            "EdgeConfig.DeletionConfig.DeleteAfterUpload",
            Some(json!("true")),
            "EdgeConfig.DeletionConfig.DeleteAfterUpload: expected a boolean, found string \"true\"",
        ),
        ok(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB",
            json!(64),
        ),
        ok(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB",
            json!(2_000_000),
        ),
        bad(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB",
            Some(json!(63)),
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB: 63 is below the minimum 64",
        ),
        bad(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB",
            Some(json!(2_000_001)),
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB: 2000001 is above the maximum 2000000",
        ),
        bad(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB",
            Some(json!(-1)),
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB: -1 is below the minimum 64",
        ),
        ok(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.StrategyOnFullSize",
            json!("DENY_NEW_MEDIA"),
        ),
        bad(
            "EdgeConfig.DeletionConfig.LocalSizeConfig.StrategyOnFullSize",
            Some(json!("DELETE_NEWEST_MEDIA")),
            "EdgeConfig.DeletionConfig.LocalSizeConfig.StrategyOnFullSize: \"DELETE_NEWEST_MEDIA\" is not one of DELETE_OLDEST_MEDIA, DENY_NEW_MEDIA",
        ),
        bad(
            "EdgeConfig.DeletionConfig.Retention",
            Some(json!(5)),
            "EdgeConfig.DeletionConfig.Retention: unknown field (expected EdgeRetentionInHours, LocalSizeConfig, DeleteAfterUpload)",
        ),
        bad(
            "EdgeConfig.Extra",
            Some(json!(1)),
            "EdgeConfig.Extra: unknown field (expected HubDeviceArn, RecorderConfig, UploaderConfig, DeletionConfig)",
        ),
    ];
    for case in cases {
        let doc = with(case.path, case.value.clone());
        let got = errors(&doc);
        match case.error {
            None => assert!(got.is_empty(), "{} = {:?}: {got:?}", case.path, case.value),
            Some(want) => assert_eq!(got, vec![want.to_string()], "{}", case.path),
        }
    }
}

#[test]
fn stream_name_alone_is_valid_and_names_the_stream() {
    let mut doc = with("StreamARN", None);
    doc["StreamName"] = json!("front-door.cam_1");
    let r = validate::validate_start_request(&doc).unwrap();
    assert_eq!(r.stream_name(), "front-door.cam_1");
    let mut long = doc.clone();
    long["StreamName"] = json!("a".repeat(257));
    assert_eq!(
        errors(&long),
        ["StreamName: length 257 is above the maximum length 256"]
    );
    // The API's pattern admits them; the store gives them a directory of their own.
    for dots in ["..", "."] {
        let mut d = doc.clone();
        d["StreamName"] = json!(dots);
        assert_eq!(
            validate::validate_start_request(&d).unwrap().stream_name(),
            dots
        );
    }
    let mut arn = with(
        "StreamARN",
        Some(json!("arn:aws:kinesisvideo:us-west-2:1:stream/../1")),
    );
    assert_eq!(
        validate::validate_start_request(&arn)
            .unwrap()
            .stream_name(),
        ".."
    );
    arn["StreamARN"] = json!("arn:aws:kinesisvideo:us-west-2:1:stream/.../1");
    assert!(errors(&arn).is_empty(), "three dots is an ordinary name");
    doc["StreamName"] = json!("front door");
    assert_eq!(
        errors(&doc),
        ["StreamName: \"front door\" does not match the pattern [a-zA-Z0-9_.-]+"]
    );
}

#[test]
fn stream_arn_names_the_stream() {
    let r = parse_start_request(EXAMPLE).unwrap();
    assert_eq!(r.stream_name(), "your-stream");
    assert_eq!(
        thing_name_from_arn(&r.edge_config.hub_device_arn),
        Some("kvs-edge-agent-demo")
    );
    assert_eq!(stream_name_from_arn("arn:aws:iot:x:1:thing/a"), None);
}

#[test]
fn every_problem_is_reported_at_once() {
    let doc = json!({
        "StreamName": "cam 1",
        "EdgeConfig": {
            "HubDeviceArn": 7,
            "RecorderConfig": {
                "MediaSourceConfig": {"MediaUriType": "HTTP"},
                "ScheduleConfig": {"ScheduleExpression": "0 0 9 * * ? *", "DurationInSeconds": 30}
            },
            "DeletionConfig": {"EdgeRetentionInHours": 0, "LocalSizeConfig": {"MaxLocalMediaSizeInMB": 1}},
            "Colour": "blue"
        }
    });
    assert_eq!(
        errors(&doc),
        [
            "StreamName: \"cam 1\" does not match the pattern [a-zA-Z0-9_.-]+",
            "EdgeConfig.HubDeviceArn: expected a string, found number 7",
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn: is required",
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriType: \"HTTP\" is not one of RTSP_URI, FILE_URI",
            "EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 30 is below the minimum 60",
            "EdgeConfig.DeletionConfig.EdgeRetentionInHours: 0 is below the minimum 1",
            "EdgeConfig.DeletionConfig.LocalSizeConfig.MaxLocalMediaSizeInMB: 1 is below the minimum 64",
            "EdgeConfig.Colour: unknown field (expected HubDeviceArn, RecorderConfig, UploaderConfig, DeletionConfig)",
        ]
    );
}

#[test]
fn malformed_documents_get_clear_errors() {
    for (text, want) in [
        (
            "",
            "not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            "{",
            "not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
        ("[]", "expected an object, found an array"),
        ("null", "expected an object, found null"),
        ("\"x\"", "expected an object, found string \"x\""),
        ("{\"StreamName\":\"a\"}", "EdgeConfig: is required"),
        (
            "{\"StreamName\":\"a\",\"EdgeConfig\":{}}",
            "EdgeConfig.HubDeviceArn: is required; EdgeConfig.RecorderConfig: is required",
        ),
        (
            r#"{"StreamName":"a","StreamName":"b","EdgeConfig":{}}"#,
            r#"not valid JSON: duplicate key "StreamName" at line 1 column 30"#,
        ),
        (
            r#"{"StreamName":"a","EdgeConfig":{"HubDeviceArn":"x","RecorderConfig":{"MediaSourceConfig":{"MediaUriType":"RTSP_URI","MediaUriType":"FILE_URI"}}}}"#,
            r#"not valid JSON: duplicate key "MediaUriType" at line 1 column 130"#,
        ),
    ] {
        let err = parse_start_request(text).unwrap_err();
        assert_eq!(err.to_string(), want, "input {text:?}");
    }
    let huge = format!("{{\"StreamName\":\"{}\"}}", "x".repeat(100_000));
    let err = parse_start_request(&huge).unwrap_err().to_string();
    assert!(
        err.len() < 300,
        "long values are shortened in errors: {err}"
    );
}

/// The seed's example, verbatim, has placeholders (`your-account-id`) that its own ARN
/// patterns reject; with them filled in (config/example-edge-configuration.json) it passes.
#[test]
fn seed_example_verbatim_names_its_placeholder_fields() {
    let verbatim = include_str!("../../tests/fixtures/seed-example-verbatim.json");
    let errs: Vec<String> = parse_start_request(verbatim)
        .unwrap_err()
        .field_errors()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        errs,
        [
            "StreamARN",
            "EdgeConfig.HubDeviceArn",
            "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn"
        ]
    );
}

#[test]
fn example_round_trips_byte_for_byte() {
    let r = parse_start_request(EXAMPLE).unwrap();
    let out = serde_json::to_string_pretty(&r).unwrap() + "\n";
    assert_eq!(out, EXAMPLE);
    assert_eq!(
        r.edge_config.normalized(),
        r.edge_config,
        "the example states every defaulted field"
    );
}

#[test]
fn normalized_fills_documented_defaults_only() {
    let doc = with("EdgeConfig.DeletionConfig", None);
    let r = validate::validate_start_request(&doc).unwrap();
    assert_eq!(r.edge_config.edge_retention_in_hours(), 720);
    assert!(r.edge_config.delete_after_upload());
    assert!(r.edge_config.local_size_config().is_none());
    let n = serde_json::to_value(r.edge_config.normalized()).unwrap();
    assert_eq!(
        n["DeletionConfig"],
        json!({"EdgeRetentionInHours": 720, "DeleteAfterUpload": true})
    );
    let partial = with(
        "EdgeConfig.DeletionConfig",
        Some(json!({"DeleteAfterUpload": false})),
    );
    let r = validate::validate_start_request(&partial).unwrap();
    let n = serde_json::to_value(r.edge_config.normalized()).unwrap();
    assert_eq!(
        n["DeletionConfig"],
        json!({"EdgeRetentionInHours": 720, "DeleteAfterUpload": false})
    );
}

#[test]
fn describe_delete_and_list_requests() {
    assert_eq!(
        parse_describe_request("{\"StreamName\":\"cam\"}")
            .unwrap()
            .stream_name(),
        "cam"
    );
    assert_eq!(
        parse_delete_request("{\"StreamARN\":\"arn:aws:kinesisvideo:us-west-2:1:stream/cam/9\"}")
            .unwrap()
            .stream_name(),
        "cam"
    );
    assert_eq!(
        parse_delete_request("{}").unwrap_err().to_string(),
        "one of StreamName and StreamARN is required"
    );
    assert_eq!(
        parse_describe_request("{\"StreamName\":\"cam\",\"X\":1}")
            .unwrap_err()
            .to_string(),
        "X: unknown field (expected StreamName, StreamARN)"
    );
    let l = parse_list_request(
        "{\"HubDeviceArn\":\"arn:aws:iot:us-west-2:1:thing/t\",\"MaxResults\":10,\"NextToken\":\"YQ==\"}",
    )
    .unwrap();
    assert_eq!(l.max_results, Some(10));
    assert_eq!(
        parse_list_request("{\"HubDeviceArn\":\"arn:aws:iot:us-west-2:1:thing/t\",\"MaxResults\":11,\"NextToken\":\"a b\"}")
            .unwrap_err()
            .to_string(),
        "MaxResults: 11 is above the maximum 10; NextToken: \"a b\" does not match the pattern [a-zA-Z0-9+/=]*"
    );
    assert_eq!(
        parse_list_request("{}").unwrap_err().to_string(),
        "HubDeviceArn: is required"
    );
}

#[test]
fn enums_use_the_wire_names() {
    for s in SyncStatus::ALL {
        assert_eq!(s.as_str().parse::<SyncStatus>().unwrap(), *s);
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    assert_eq!(
        SyncStatus::WIRE_NAMES,
        [
            "SYNCING",
            "ACKNOWLEDGED",
            "IN_SYNC",
            "SYNC_FAILED",
            "DELETING",
            "DELETE_FAILED",
            "DELETING_ACKNOWLEDGED"
        ]
    );
    assert_eq!(
        JobStatus::WIRE_NAMES,
        ["SUCCESS", "USER_ERROR", "SYSTEM_ERROR"]
    );
}

#[test]
fn describe_response_serialises_in_api_shape() {
    let r = parse_start_request(EXAMPLE).unwrap();
    let resp = DescribeEdgeConfigurationResponse {
        creation_time: ApiTimestamp::from_millis(1_700_000_000_000),
        edge_agent_status: Some(EdgeAgentStatus {
            last_recorder_status: Some(LastRecorderStatus {
                job_status_details: Some("recording".into()),
                last_collected_time: ApiTimestamp::from_millis(1_700_000_001_500),
                last_updated_time: ApiTimestamp::from_millis(1_700_000_001_500),
                recorder_status: Some(JobStatus::Success),
            }),
            last_uploader_status: None,
        }),
        edge_config: Some(r.edge_config.clone()),
        failed_status_details: None,
        last_updated_time: ApiTimestamp::from_millis(1_700_000_000_000),
        stream_arn: r.stream_arn.clone(),
        stream_name: Some("your-stream".into()),
        sync_status: Some(SyncStatus::InSync),
    };
    let v = serde_json::to_value(&resp).unwrap();
    assert_eq!(v["SyncStatus"], json!("IN_SYNC"));
    assert_eq!(v["CreationTime"], json!(1_700_000_000));
    assert_eq!(
        v["EdgeAgentStatus"]["LastRecorderStatus"]["LastCollectedTime"],
        json!(1_700_000_001.5)
    );
    assert_eq!(
        v["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"],
        json!("SUCCESS")
    );
    assert!(v.get("FailedStatusDetails").is_none());
    let back: DescribeEdgeConfigurationResponse = serde_json::from_value(v).unwrap();
    assert_eq!(back, resp);
}

/// Every field of the example replaced by every kind of wrong value: never a panic, and each
/// error names the field that was changed (or a field inside it).
#[test]
fn mutations_never_panic_and_name_their_field() {
    fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Object(map) = v {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                paths(child, &p, out);
            }
        }
    }
    let mut all = Vec::new();
    paths(&example(), "", &mut all);
    assert!(all.len() >= 17, "{all:?}");
    let wrong = [
        json!(true),
        json!(0),
        json!(-1),
        json!(1e20),
        json!(u64::MAX),
        json!(""),
        json!("x".repeat(3000)),
        json!("\u{0}\n\u{feff}"),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!({"a": {"b": 1}}),
    ];
    for path in &all {
        for value in &wrong {
            let doc = with(path, Some(value.clone()));
            if let Err(e) = validate::validate_start_request(&doc) {
                for fe in e.field_errors() {
                    let related = fe.path.starts_with(path.as_str())
                        || (path.starts_with("Stream") && fe.path.is_empty());
                    assert!(related, "{path} = {value}: unrelated error {fe}");
                }
            }
        }
    }
}
