//! Validation of untrusted edge-configuration JSON against the API reference.
//!
//! Hand-written rather than `#[serde(deny_unknown_fields)]`, because serde stops at the first
//! problem, while an operator fixing a configuration wants every problem at once, each named by
//! its JSON path: `EdgeConfig.RecorderConfig.ScheduleConfig.DurationInSeconds: 59 is below the
//! minimum 60`. One pass over the `serde_json::Value` builds the typed value and collects the
//! errors; the typed value is returned only when there are none.
//!
//! Every constraint comes from the API reference (the seed): lengths in characters, the ARN and
//! name patterns (matched whole, as the service matches them), integer ranges, enum values,
//! required fields. `null` is treated as an absent field, as the AWS SDKs treat it.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::*;
use crate::input::quote;

/// One problem in a configuration, at a JSON path such as `EdgeConfig.HubDeviceArn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("{}", display_all(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// Every problem found, one per entry (a syntax error is one entry with an empty path).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Syntax(m) => vec![FieldError {
                path: String::new(),
                message: format!("not valid JSON: {m}"),
            }],
            ConfigError::Invalid(errors) => errors.clone(),
        }
    }
}

fn display_all(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A string constraint of the API reference: length range in characters and a whole-match
/// pattern, kept with the pattern's text as the reference spells it for error messages.
struct StrRule {
    min: usize,
    max: usize,
    pattern: Option<(&'static str, &'static LazyLock<Regex>)>,
}

macro_rules! pattern {
    ($name:ident, $text:literal) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(concat!("^(?:", $text, ")$")).expect("valid pattern"));
    };
}

pattern!(
    STREAM_ARN_RE,
    r"arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+"
);
pattern!(STREAM_NAME_RE, r"[a-zA-Z0-9_.-]+");
pattern!(
    HUB_DEVICE_ARN_RE,
    r"arn:[a-z\d-]+:iot:[a-z0-9-]+:[0-9]+:thing/[a-zA-Z0-9_.-]+"
);
pattern!(
    SECRET_ARN_RE,
    r"arn:[a-z\d-]+:secretsmanager:[a-z0-9-]+:[0-9]+:secret:[a-zA-Z0-9_.-]+"
);
pattern!(SCHEDULE_EXPRESSION_RE, r"[^\n]{11,100}");
pattern!(NEXT_TOKEN_RE, r"[a-zA-Z0-9+/=]*");

const STREAM_ARN: StrRule = StrRule {
    min: 1,
    max: 1024,
    pattern: Some((
        r"arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+",
        &STREAM_ARN_RE,
    )),
};
const STREAM_NAME: StrRule = StrRule {
    min: 1,
    max: 256,
    pattern: Some((r"[a-zA-Z0-9_.-]+", &STREAM_NAME_RE)),
};
const HUB_DEVICE_ARN: StrRule = StrRule {
    min: 1,
    max: 1024,
    pattern: Some((
        r"arn:[a-z\d-]+:iot:[a-z0-9-]+:[0-9]+:thing/[a-zA-Z0-9_.-]+",
        &HUB_DEVICE_ARN_RE,
    )),
};
const MEDIA_URI_SECRET_ARN: StrRule = StrRule {
    min: 20,
    max: 2048,
    pattern: Some((
        r"arn:[a-z\d-]+:secretsmanager:[a-z0-9-]+:[0-9]+:secret:[a-zA-Z0-9_.-]+",
        &SECRET_ARN_RE,
    )),
};
const SCHEDULE_EXPRESSION: StrRule = StrRule {
    min: 11,
    max: 100,
    pattern: Some((r"[^\n]{11,100}", &SCHEDULE_EXPRESSION_RE)),
};
const NEXT_TOKEN: StrRule = StrRule {
    min: 0,
    max: 512,
    pattern: Some((r"[a-zA-Z0-9+/=]*", &NEXT_TOKEN_RE)),
};

/// Whether `s` is a valid stream or thing name (`[a-zA-Z0-9_.-]+`).
pub fn is_resource_name(s: &str) -> bool {
    STREAM_NAME_RE.is_match(s)
}

/// Whether `s` can be this agent's thing: an AWS IoT thing name (1 to 128 of `[a-zA-Z0-9:_-]`)
/// that a HubDeviceArn (`thing/[a-zA-Z0-9_.-]+`) can also name.
pub fn is_thing_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The stream name inside a stream ARN (`...:stream/{name}/{creation-time}`).
pub fn stream_name_from_arn(arn: &str) -> Option<&str> {
    if !STREAM_ARN_RE.is_match(arn) {
        return None;
    }
    let resource = arn.splitn(6, ':').nth(5)?;
    resource.split('/').nth(1)
}

/// The thing name inside an IoT thing ARN (`...:thing/{name}`).
pub fn thing_name_from_arn(arn: &str) -> Option<&str> {
    if !HUB_DEVICE_ARN_RE.is_match(arn) {
        return None;
    }
    arn.rsplit_once("thing/").map(|(_, name)| name)
}

/// Collects errors while one JSON document is walked.
#[derive(Default)]
struct Walk {
    errors: Vec<FieldError>,
}

impl Walk {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(ConfigError::Invalid(self.errors)),
        }
    }

    /// Opens an object; the fields it has that are never asked for are reported as unknown.
    fn object<'a>(&mut self, path: &str, v: &'a Value) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj {
                path: path.to_owned(),
                map,
                asked: Vec::new(),
            }),
            other => {
                self.error(
                    path,
                    format!("expected an object, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, path: &str, v: &Value, rule: &StrRule) -> Option<String> {
        let Value::String(s) = v else {
            self.error(path, format!("expected a string, found {}", describe(v)));
            return None;
        };
        let len = s.chars().count();
        let mut ok = true;
        if len < rule.min {
            self.error(
                path,
                format!("length {len} is below the minimum length {}", rule.min),
            );
            ok = false;
        } else if len > rule.max {
            self.error(
                path,
                format!("length {len} is above the maximum length {}", rule.max),
            );
            ok = false;
        }
        if let Some((text, re)) = rule.pattern
            && ok
            && !re.is_match(s)
        {
            self.error(
                path,
                format!("{} does not match the pattern {text}", quote(s)),
            );
            ok = false;
        }
        ok.then(|| s.clone())
    }

    fn integer(&mut self, path: &str, v: &Value, min: u32, max: u32) -> Option<u32> {
        let expected = || format!("expected a whole number from {min} to {max}");
        let Value::Number(n) = v else {
            self.error(path, format!("{}, found {}", expected(), describe(v)));
            return None;
        };
        // `-0` is an integer in JSON's grammar, which serde_json reads as a float.
        let i = n
            .as_i64()
            .or_else(|| (n.as_f64() == Some(0.0)).then_some(0));
        let Some(i) = i else {
            let message = if n.is_u64() {
                format!("{n} is above the maximum {max}")
            } else if n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                // 1e2 or 100.0: a whole value, but not written as an integer.
                format!(
                    "{}, found {n}; write it without a fraction or an exponent",
                    expected()
                )
            } else {
                format!("{}, found {n}", expected())
            };
            self.error(path, message);
            return None;
        };
        if i < i64::from(min) {
            self.error(path, format!("{i} is below the minimum {min}"));
            None
        } else if i > i64::from(max) {
            self.error(path, format!("{i} is above the maximum {max}"));
            None
        } else {
            u32::try_from(i).ok()
        }
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    path,
                    format!("expected a boolean, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn enumeration<E: std::str::FromStr<Err = super::UnknownWireName>>(
        &mut self,
        path: &str,
        v: &Value,
    ) -> Option<E> {
        let Value::String(s) = v else {
            self.error(path, format!("expected a string, found {}", describe(v)));
            return None;
        };
        s.parse::<E>()
            .map_err(|e| self.error(path, e.to_string()))
            .ok()
    }
}

struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    asked: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    /// The field's value and path; `None` when absent or null.
    fn get(&mut self, name: &'static str) -> Option<(&'a Value, String)> {
        self.asked.push(name);
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        };
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some((v, path)),
        }
    }

    fn required(&mut self, w: &mut Walk, name: &'static str) -> Option<(&'a Value, String)> {
        let got = self.get(name);
        if got.is_none() {
            let path = if self.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.path)
            };
            w.error(&path, "is required");
        }
        got
    }

    /// Reports the fields nobody asked for: the API rejects unknown members, and a misspelt
    /// optional field would otherwise silently fall back to its default.
    fn close(self, w: &mut Walk) {
        for key in self.map.keys() {
            if !self.asked.contains(&key.as_str()) {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                w.error(
                    &path,
                    format!("unknown field (expected {})", self.asked.join(", ")),
                );
            }
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn parse_json(text: &str) -> Result<Value, ConfigError> {
    crate::input::json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
}

/// `StreamName` and `StreamARN`: exactly one must be given.
fn stream_ref(w: &mut Walk, obj: &mut Obj<'_>) -> (Option<String>, Option<String>, bool) {
    let name = obj
        .get("StreamName")
        .map(|(v, p)| (w.string(&p, v, &STREAM_NAME), p));
    let arn = obj
        .get("StreamARN")
        .map(|(v, p)| (w.string(&p, v, &STREAM_ARN), p));
    let ok = match (&name, &arn) {
        (None, None) => {
            w.error(
                &obj.path,
                "one of StreamName and StreamARN is required".to_string(),
            );
            false
        }
        (Some(_), Some(_)) => {
            w.error(
                &obj.path,
                "specify either StreamName or StreamARN, not both".to_string(),
            );
            false
        }
        // Every name the pattern admits works, `.` and `..` included: the store maps names
        // that cannot be a directory's (`store::layout`).
        (Some((v, _)), None) | (None, Some((v, _))) => v.is_some(),
    };
    (name.and_then(|n| n.0), arn.and_then(|a| a.0), ok)
}

/// Parses and validates a StartEdgeConfigurationUpdate request.
pub fn parse_start_request(text: &str) -> Result<StartEdgeConfigurationUpdateRequest, ConfigError> {
    validate_start_request(&parse_json(text)?)
}

pub fn validate_start_request(
    v: &Value,
) -> Result<StartEdgeConfigurationUpdateRequest, ConfigError> {
    let mut w = Walk::default();
    let request = w.object("", v).and_then(|mut obj| {
        let (stream_name, stream_arn, stream_ok) = stream_ref(&mut w, &mut obj);
        let edge_config = obj
            .required(&mut w, "EdgeConfig")
            .and_then(|(v, p)| edge_config(&mut w, &p, v));
        obj.close(&mut w);
        Some(StartEdgeConfigurationUpdateRequest {
            stream_name,
            stream_arn,
            edge_config: edge_config?,
        })
        .filter(|_| stream_ok)
    });
    w.finish(request)
}

fn edge_config(w: &mut Walk, path: &str, v: &Value) -> Option<EdgeConfig> {
    let mut obj = w.object(path, v)?;
    let hub_device_arn = obj
        .required(w, "HubDeviceArn")
        .and_then(|(v, p)| w.string(&p, v, &HUB_DEVICE_ARN));
    let recorder_config = obj
        .required(w, "RecorderConfig")
        .and_then(|(v, p)| recorder_config(w, &p, v));
    let uploader_config = obj
        .get("UploaderConfig")
        .map(|(v, p)| uploader_config(w, &p, v));
    let deletion_config = obj
        .get("DeletionConfig")
        .map(|(v, p)| deletion_config(w, &p, v));
    obj.close(w);
    Some(EdgeConfig {
        hub_device_arn: hub_device_arn?,
        recorder_config: recorder_config?,
        uploader_config: uploader_config.map(|u| u.ok_or(())).transpose().ok()?,
        deletion_config: deletion_config.map(|d| d.ok_or(())).transpose().ok()?,
    })
}

fn recorder_config(w: &mut Walk, path: &str, v: &Value) -> Option<RecorderConfig> {
    let mut obj = w.object(path, v)?;
    let media_source_config = obj
        .required(w, "MediaSourceConfig")
        .and_then(|(v, p)| media_source_config(w, &p, v));
    let schedule_config = obj
        .get("ScheduleConfig")
        .map(|(v, p)| schedule_config(w, &p, v));
    obj.close(w);
    Some(RecorderConfig {
        media_source_config: media_source_config?,
        schedule_config: schedule_config.map(|s| s.ok_or(())).transpose().ok()?,
    })
}

fn media_source_config(w: &mut Walk, path: &str, v: &Value) -> Option<MediaSourceConfig> {
    let mut obj = w.object(path, v)?;
    let arn = obj
        .required(w, "MediaUriSecretArn")
        .and_then(|(v, p)| w.string(&p, v, &MEDIA_URI_SECRET_ARN));
    let uri_type = obj
        .required(w, "MediaUriType")
        .and_then(|(v, p)| w.enumeration::<MediaUriType>(&p, v));
    obj.close(w);
    Some(MediaSourceConfig {
        media_uri_secret_arn: arn?,
        media_uri_type: uri_type?,
    })
}

fn schedule_config(w: &mut Walk, path: &str, v: &Value) -> Option<ScheduleConfig> {
    let mut obj = w.object(path, v)?;
    let expression = obj.required(w, "ScheduleExpression").and_then(|(v, p)| {
        let expr = w.string(&p, v, &SCHEDULE_EXPRESSION)?;
        if let Some(e) = quartz_error(&expr) {
            w.error(
                &p,
                format!(
                    "{} is not a valid Quartz cron expression: {e}",
                    quote(&expr)
                ),
            );
            return None;
        }
        Some(expr)
    });
    let duration = obj
        .required(w, "DurationInSeconds")
        .and_then(|(v, p)| w.integer(&p, v, 60, 3600));
    obj.close(w);
    Some(ScheduleConfig {
        schedule_expression: expression?,
        duration_in_seconds: duration?,
    })
}

fn uploader_config(w: &mut Walk, path: &str, v: &Value) -> Option<UploaderConfig> {
    let mut obj = w.object(path, v)?;
    let schedule = obj
        .required(w, "ScheduleConfig")
        .and_then(|(v, p)| schedule_config(w, &p, v));
    obj.close(w);
    Some(UploaderConfig {
        schedule_config: schedule?,
    })
}

fn deletion_config(w: &mut Walk, path: &str, v: &Value) -> Option<DeletionConfig> {
    let mut obj = w.object(path, v)?;
    let before = w.errors.len();
    let retention = obj
        .get("EdgeRetentionInHours")
        .and_then(|(v, p)| w.integer(&p, v, 1, 720));
    let local_size = obj
        .get("LocalSizeConfig")
        .and_then(|(v, p)| local_size_config(w, &p, v));
    let delete_after_upload = obj
        .get("DeleteAfterUpload")
        .and_then(|(v, p)| w.boolean(&p, v));
    obj.close(w);
    (w.errors.len() == before).then_some(DeletionConfig {
        edge_retention_in_hours: retention,
        local_size_config: local_size,
        delete_after_upload,
    })
}

fn local_size_config(w: &mut Walk, path: &str, v: &Value) -> Option<LocalSizeConfig> {
    let mut obj = w.object(path, v)?;
    let before = w.errors.len();
    let max = obj
        .get("MaxLocalMediaSizeInMB")
        .and_then(|(v, p)| w.integer(&p, v, 64, 2_000_000));
    let strategy = obj
        .get("StrategyOnFullSize")
        .and_then(|(v, p)| w.enumeration::<StrategyOnFullSize>(&p, v));
    obj.close(w);
    (w.errors.len() == before).then_some(LocalSizeConfig {
        max_local_media_size_in_mb: max,
        strategy_on_full_size: strategy,
    })
}

/// Parses and validates a DescribeEdgeConfiguration request.
pub fn parse_describe_request(text: &str) -> Result<DescribeEdgeConfigurationRequest, ConfigError> {
    validate_stream_request(&parse_json(text)?)
}

/// Parses and validates a DeleteEdgeConfiguration request.
pub fn parse_delete_request(text: &str) -> Result<DeleteEdgeConfigurationRequest, ConfigError> {
    validate_stream_request(&parse_json(text)?)
}

pub fn validate_stream_request(v: &Value) -> Result<DescribeEdgeConfigurationRequest, ConfigError> {
    let mut w = Walk::default();
    let request = w.object("", v).and_then(|mut obj| {
        let (stream_name, stream_arn, ok) = stream_ref(&mut w, &mut obj);
        obj.close(&mut w);
        ok.then_some(DescribeEdgeConfigurationRequest {
            stream_name,
            stream_arn,
        })
    });
    w.finish(request)
}

/// Parses and validates a ListEdgeAgentConfigurations request.
pub fn parse_list_request(text: &str) -> Result<ListEdgeAgentConfigurationsRequest, ConfigError> {
    validate_list_request(&parse_json(text)?)
}

pub fn validate_list_request(v: &Value) -> Result<ListEdgeAgentConfigurationsRequest, ConfigError> {
    let mut w = Walk::default();
    let request = w.object("", v).and_then(|mut obj| {
        let hub = obj
            .required(&mut w, "HubDeviceArn")
            .and_then(|(v, p)| w.string(&p, v, &HUB_DEVICE_ARN));
        let max_results = obj.get("MaxResults").map(|(v, p)| w.integer(&p, v, 1, 10));
        let next_token = obj
            .get("NextToken")
            .map(|(v, p)| w.string(&p, v, &NEXT_TOKEN));
        obj.close(&mut w);
        Some(ListEdgeAgentConfigurationsRequest {
            hub_device_arn: hub?,
            max_results: max_results.map(|m| m.ok_or(())).transpose().ok()?,
            next_token: next_token.map(|t| t.ok_or(())).transpose().ok()?,
        })
    });
    w.finish(request)
}

/// Why Quartz would reject `expr`, if it would.
fn quartz_error(expr: &str) -> Option<String> {
    crate::schedule::CronSchedule::parse(expr)
        .err()
        .map(|e| e.reason)
}
