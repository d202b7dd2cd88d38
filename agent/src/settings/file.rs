//! The optional YAML settings file (`--config`), for what the original agent has no environment
//! variable for. `config/agent.yaml` documents every key. Unknown keys are errors: a misspelt
//! key silently falling back to its default is worse than refusing to start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{SettingError, SettingsError};
use crate::input::quote;
use crate::janitor::policy::DiskReserve;
use crate::logging::LogFormat;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentFile {
    /// Where the catalog (SQLite) lives; default: the recording directory.
    pub state_directory: Option<PathBuf>,
    /// Most edge configurations the agent runs at once (the original agent's hard limit is 16).
    #[serde(deserialize_with = "whole_number")]
    pub max_streams: u32,
    /// Local mode: a YAML file mapping each `MediaUriSecretArn` to its media URI.
    pub secrets_file: Option<PathBuf>,
    pub mqtt: MqttFile,
    pub recorder: RecorderFile,
    pub uploader: UploaderFile,
    pub disk_reserve: DiskReserveFile,
    pub cloudwatch: CloudWatchFile,
    pub http: HttpFile,
    /// The rolled log files' format: `text` (as stderr) or `json` (one object per line, for
    /// log shippers).
    pub log_format: LogFormat,
}

impl Default for AgentFile {
    fn default() -> Self {
        AgentFile {
            state_directory: None,
            max_streams: 16,
            secrets_file: None,
            mqtt: MqttFile::default(),
            recorder: RecorderFile::default(),
            uploader: UploaderFile::default(),
            disk_reserve: DiskReserveFile::default(),
            cloudwatch: CloudWatchFile::default(),
            http: HttpFile::default(),
            log_format: LogFormat::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttFile {
    /// First level of every control topic: `{topic_prefix}/{thing}/...`.
    pub topic_prefix: String,
    /// The thing name in local mode (IoT mode takes AWS_IOT_CORE_THING_NAME).
    pub thing_name: Option<String>,
    /// The broker to connect to (`mqtt://host:port`, `mqtts://host:port`); default: in IoT
    /// mode the IoT data endpoint, in local mode the embedded broker.
    pub broker_url: Option<String>,
    /// Local mode without `broker_url`: where the embedded broker listens.
    pub embedded_broker_listen: String,
    /// IoT and Greengrass modes without `broker_url`: the IoT data endpoint's port, 8883 or 443
    /// (for networks that only let HTTPS out; ALPN `x-amzn-mqtt-ca` is then offered).
    #[serde(deserialize_with = "whole_number")]
    pub iot_port: u16,
}

impl Default for MqttFile {
    fn default() -> Self {
        MqttFile {
            topic_prefix: "kvs-edge".into(),
            thing_name: None,
            broker_url: None,
            embedded_broker_listen: "127.0.0.1:1883".into(),
            iot_port: 8883,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderFile {
    /// A fragment closes at the first key frame after this long.
    #[serde(deserialize_with = "whole_number")]
    pub min_fragment_duration_ms: u32,
    /// A segment file closes at the first fragment boundary after this long.
    #[serde(deserialize_with = "whole_number")]
    pub segment_duration_secs: u32,
}

impl Default for RecorderFile {
    fn default() -> Self {
        RecorderFile {
            min_fragment_duration_ms: 2000,
            segment_duration_secs: 60,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploaderFile {
    /// A PutMedia session is replaced after this long (and earlier when its credentials
    /// expire); the producer libraries' 40 minutes is the most.
    #[serde(deserialize_with = "whole_number")]
    pub max_session_secs: u32,
    /// The scheduled backlog's order: `oldest` first (the seed's) or `newest` first.
    pub backlog_order: crate::uploader::agenda::BacklogOrder,
    /// The longest time range one upload request may ask for.
    #[serde(deserialize_with = "whole_number")]
    pub max_range_secs: u32,
    /// How long live lasts when a request does not say.
    #[serde(deserialize_with = "whole_number")]
    pub live_default_secs: u32,
    /// The longest live a request may ask for.
    #[serde(deserialize_with = "whole_number")]
    pub max_live_secs: u32,
    /// All uploads of the agent together, in kbit/s (0: no cap).
    #[serde(deserialize_with = "whole_number")]
    pub max_kbps: u32,
    /// Windows with a cap of their own.
    pub bandwidth_windows: Vec<BandwidthWindowFile>,
}

/// A Quartz schedule, a duration and the cap while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthWindowFile {
    pub schedule: String,
    #[serde(deserialize_with = "whole_number")]
    pub duration_secs: u32,
    #[serde(deserialize_with = "whole_number")]
    pub max_kbps: u32,
}

impl UploaderFile {
    /// The bandwidth caps, schedules evaluated in `tz` (checked when the file was read).
    pub fn bandwidth(&self, tz: &jiff::tz::TimeZone) -> crate::uploader::budget::Caps {
        use crate::schedule::{CronSchedule, Windows};
        let windows = self
            .bandwidth_windows
            .iter()
            .filter_map(|w| {
                let schedule = CronSchedule::parse(&w.schedule).ok()?;
                Some(crate::uploader::budget::CapWindow {
                    windows: Windows::new(
                        schedule,
                        std::time::Duration::from_secs(w.duration_secs.into()),
                        tz.clone(),
                    ),
                    kbps: w.max_kbps,
                })
            })
            .collect();
        crate::uploader::budget::Caps {
            default_kbps: self.max_kbps,
            windows,
        }
    }

    pub fn request_limits(&self) -> crate::uploader::request::Limits {
        crate::uploader::request::Limits {
            max_range_secs: self.max_range_secs,
            live_default_secs: self.live_default_secs,
            max_live_secs: self.max_live_secs,
        }
    }
}

impl Default for UploaderFile {
    fn default() -> Self {
        UploaderFile {
            max_session_secs: 2400,
            backlog_order: crate::uploader::agenda::BacklogOrder::Oldest,
            max_range_secs: 86_400,
            live_default_secs: 600,
            max_live_secs: 3600,
            max_kbps: 0,
            bandwidth_windows: Vec::new(),
        }
    }
}

/// Free space the file system keeps whatever the configurations allow: recording pauses below
/// the larger of the two.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskReserveFile {
    #[serde(deserialize_with = "whole_number")]
    pub min_free_mb: u32,
    #[serde(deserialize_with = "whole_number")]
    pub min_free_percent: u32,
}

impl DiskReserveFile {
    /// The janitor's reserve these keys ask for.
    pub fn reserve(&self) -> DiskReserve {
        DiskReserve {
            min_free_bytes: u64::from(self.min_free_mb) << 20,
            min_free_percent: self.min_free_percent.min(100) as u8,
        }
    }
}

impl Default for DiskReserveFile {
    fn default() -> Self {
        DiskReserveFile {
            min_free_mb: 1024,
            min_free_percent: 5,
        }
    }
}

/// The CloudWatch metrics publisher (on with AWS_KVS_EDGE_CLOUDWATCH_ENABLED=TRUE).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchFile {
    /// How often the periodic metrics (Alive, Running, the counts) are sampled and sent.
    #[serde(deserialize_with = "whole_number")]
    pub interval_secs: u32,
    /// Most datums kept while CloudWatch cannot be reached; the oldest go first.
    #[serde(deserialize_with = "whole_number")]
    pub buffer_datums: u32,
}

impl Default for CloudWatchFile {
    fn default() -> Self {
        CloudWatchFile {
            interval_secs: 60,
            buffer_datums: 100_000,
        }
    }
}

/// The read-only HTTP server: health, Prometheus metrics, the JSON API, export and the page.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFile {
    /// `host:port` to listen on; empty turns the server off.
    pub listen: String,
    /// A file holding the bearer token every request must carry; required to listen anywhere
    /// but on a loopback address.
    pub token_file: Option<PathBuf>,
    /// The longest time range one export may ask for.
    #[serde(deserialize_with = "whole_number")]
    pub max_export_secs: u32,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            listen: "127.0.0.1:8080".into(),
            token_file: None,
            max_export_secs: 3600,
        }
    }
}

impl HttpFile {
    /// The address to listen on; `None` when the server is off.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Largest settings file read: far more than every key takes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A whole-number key; serde-saphyr's own message for `max_streams: sixteen` is "invalid u32".
fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, Visitor};
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("expected a whole number, found {v}, below 0")))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            Err(E::custom(format!(
                "expected a whole number, found {v} (written with a fraction or an exponent)"
            )))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<u64, E> {
            Err(E::custom(format!(
                "expected a whole number, found {}",
                quote(v)
            )))
        }
    }
    let v = d.deserialize_any(Whole)?;
    T::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large for this key")))
}

pub(super) fn read(path: &Path) -> Result<AgentFile, SettingsError> {
    let text = crate::input::read_regular_text(path, MAX_FILE_BYTES, "the configuration file")?;
    parse(&text).map_err(|e| match e {
        ParseError::Yaml(message) => SettingsError::Yaml {
            path: path.to_owned(),
            message,
        },
        ParseError::Invalid(errors) => SettingsError::Invalid(errors),
    })
}

pub(super) enum ParseError {
    Yaml(String),
    Invalid(Vec<SettingError>),
}

pub(super) fn parse(text: &str) -> Result<AgentFile, ParseError> {
    // An empty file (or one of comments only) is the defaults.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(AgentFile::default());
    }
    let file: AgentFile =
        serde_saphyr::from_str(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
    let mut errors = out_of_range(&file);
    errors.extend(bad_topic_naming(&file.mqtt));
    errors.extend(empty_paths(&file));
    errors.extend(bad_broker_addresses(&file.mqtt));
    errors.extend(bad_bandwidth_windows(&file.uploader));
    errors.extend(bad_http(&file.http));
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(ParseError::Invalid(errors))
    }
}

fn setting_error(name: &str, message: String) -> SettingError {
    SettingError {
        name: name.to_owned(),
        message,
    }
}

fn bad_bandwidth_windows(u: &UploaderFile) -> Vec<SettingError> {
    let mut errors = Vec::new();
    for (i, w) in u.bandwidth_windows.iter().enumerate() {
        let name = |field: &str| format!("uploader.bandwidth_windows[{i}].{field}");
        if let Err(e) = crate::schedule::CronSchedule::parse(&w.schedule) {
            errors.push(setting_error(&name("schedule"), e.to_string()));
        }
        if !(1..=604_800).contains(&w.duration_secs) {
            let message = format!("{} is outside 1..=604800", w.duration_secs);
            errors.push(setting_error(&name("duration_secs"), message));
        }
        if !(8..=10_000_000).contains(&w.max_kbps) {
            let message = format!("{} is outside 8..=10000000", w.max_kbps);
            errors.push(setting_error(&name("max_kbps"), message));
        }
    }
    errors
}

fn bad_http(h: &HttpFile) -> Vec<SettingError> {
    let mut errors = Vec::new();
    if h.listen.is_empty() {
        return errors;
    }
    match h.listen.parse::<std::net::SocketAddr>() {
        Err(_) => errors.push(setting_error(
            "http.listen",
            format!(
                "{} is not an address like 127.0.0.1:8080 (empty turns the server off)",
                quote(&h.listen)
            ),
        )),
        Ok(a) if !a.ip().is_loopback() && h.token_file.is_none() => errors.push(setting_error(
            "http.token_file",
            format!(
                "is required to listen on {a}, which is not a loopback address: every request \
                 must then carry its bearer token"
            ),
        )),
        Ok(_) => {}
    }
    errors
}

fn out_of_range(file: &AgentFile) -> Vec<SettingError> {
    [
        ("max_streams", file.max_streams, 1, 256),
        (
            "recorder.min_fragment_duration_ms",
            file.recorder.min_fragment_duration_ms,
            1000,
            10_000,
        ),
        (
            "recorder.segment_duration_secs",
            file.recorder.segment_duration_secs,
            10,
            3600,
        ),
        (
            "uploader.max_session_secs",
            file.uploader.max_session_secs,
            10,
            2400,
        ),
        (
            "uploader.max_range_secs",
            file.uploader.max_range_secs,
            1,
            2_592_000,
        ),
        (
            "uploader.live_default_secs",
            file.uploader.live_default_secs,
            10,
            86_400,
        ),
        (
            "uploader.max_live_secs",
            file.uploader.max_live_secs,
            10,
            86_400,
        ),
        ("uploader.max_kbps", file.uploader.max_kbps, 0, 10_000_000),
        (
            "disk_reserve.min_free_mb",
            file.disk_reserve.min_free_mb,
            0,
            10_000_000,
        ),
        (
            "cloudwatch.interval_secs",
            file.cloudwatch.interval_secs,
            1,
            3600,
        ),
        (
            "cloudwatch.buffer_datums",
            file.cloudwatch.buffer_datums,
            1000,
            10_000_000,
        ),
        ("http.max_export_secs", file.http.max_export_secs, 1, 86_400),
        (
            "disk_reserve.min_free_percent",
            file.disk_reserve.min_free_percent,
            0,
            50,
        ),
    ]
    .into_iter()
    .filter(|&(_, v, min, max)| v < min || v > max)
    .map(|(name, v, min, max)| setting_error(name, format!("{v} is outside {min}..={max}")))
    .collect()
}

/// The topic prefix and thing name, which every control topic is made of.
fn bad_topic_naming(mqtt: &MqttFile) -> Vec<SettingError> {
    let mut errors = Vec::new();
    let topic_ok = !mqtt.topic_prefix.is_empty()
        && !mqtt.topic_prefix.contains(['+', '#', '\0'])
        && !mqtt.topic_prefix.starts_with('/')
        && !mqtt.topic_prefix.ends_with('/');
    if !topic_ok {
        errors.push(setting_error(
            "mqtt.topic_prefix",
            format!(
                "{} must be a non-empty topic without wildcards or a leading or trailing '/'",
                quote(&mqtt.topic_prefix)
            ),
        ));
    }
    if let Some(thing) = &mqtt.thing_name
        && let Err(e) = super::check_thing_name(thing)
    {
        errors.push(setting_error("mqtt.thing_name", e.to_string()));
    }
    errors
}

fn empty_paths(file: &AgentFile) -> Vec<SettingError> {
    let empty_path = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
    [
        ("state_directory", &file.state_directory),
        ("secrets_file", &file.secrets_file),
        ("http.token_file", &file.http.token_file),
    ]
    .into_iter()
    .filter(|(_, path)| empty_path(path))
    .map(|(name, _)| setting_error(name, "is empty; leave the key out for the default".into()))
    .collect()
}

fn bad_broker_addresses(mqtt: &MqttFile) -> Vec<SettingError> {
    let mut errors = Vec::new();
    if let Some(url) = &mqtt.broker_url {
        let ok = url::Url::parse(url).ok().is_some_and(|u| {
            ["mqtt", "mqtts", "tcp", "ssl"].contains(&u.scheme())
                && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            errors.push(setting_error(
                "mqtt.broker_url",
                format!(
                    "{} is not a broker URL like mqtt://host:1883 or mqtts://host:8883",
                    quote(&crate::input::redact_url(url))
                ),
            ));
        }
    }
    if mqtt
        .embedded_broker_listen
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        errors.push(setting_error(
            "mqtt.embedded_broker_listen",
            format!(
                "{} is not an address like 127.0.0.1:1883",
                quote(&mqtt.embedded_broker_listen)
            ),
        ));
    }
    if !matches!(mqtt.iot_port, 8883 | 443) {
        errors.push(setting_error(
            "mqtt.iot_port",
            format!("{} is not 8883 or 443", mqtt.iot_port),
        ));
    }
    errors
}
