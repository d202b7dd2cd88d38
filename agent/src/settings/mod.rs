//! The agent's settings: the environment variables the original agent documents (same names,
//! ranges and defaults, so a unit file written for it works here) and an optional YAML file
//! (`--config`) for what has no variable.
//!
//! The variables the original agent needed only for its GStreamer/JNI plumbing
//! (`GST_PLUGIN_PATH`, `LD_LIBRARY_PATH`, `GST_DEBUG`, `GST_DEBUG_FILE`) are accepted and ignored.
//!
//! A bad value stops startup with a message naming the variable (or YAML key) and the value.

mod file;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use crate::input::{cut, quote};
use crate::logging::{LogFormat, LogLevel, LogSettings};

pub use file::{AgentFile, CloudWatchFile, DiskReserveFile, MqttFile, RecorderFile};

/// The process environment, as a map so tests can supply their own.
#[derive(Clone, Debug, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Env {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Env(iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }
}

/// One bad setting, named as the user wrote it (a variable or a YAML key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    pub name: String,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<SettingError>),
    #[error(transparent)]
    Read(#[from] crate::input::ReadError),
    #[error("configuration file {path}: {message}")]
    Yaml { path: PathBuf, message: String },
}

/// How the agent reaches the cloud, decided from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No IoT settings: local MQTT, local secrets, no CloudWatch.
    Local,
    /// The original agent's non-Greengrass mode: the `AWS_IOT_*` variables.
    Iot(IotSettings),
    /// Running as a Greengrass v2 component; IoT settings come from the nucleus' effective
    /// configuration under this root.
    Greengrass { root: PathBuf },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IotSettings {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub private_key: PathBuf,
    pub credential_endpoint: String,
    pub data_ats_endpoint: String,
    pub role_alias: String,
    pub thing_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub region: Option<String>,
    pub mode: Mode,
    pub cloudwatch_enabled: bool,
    pub log: LogSettings,
    pub recording_directory: PathBuf,
    pub file: AgentFile,
}

impl Settings {
    /// Where the catalog lives: the YAML `state_directory`, else beside the recordings, so that
    /// media and the index describing it move together.
    pub fn state_directory(&self) -> &Path {
        self.file
            .state_directory
            .as_deref()
            .unwrap_or(&self.recording_directory)
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.state_directory().join(crate::catalog::FILE_NAME)
    }

    /// The IoT thing this agent runs as, when the mode names one.
    pub fn thing_name(&self) -> Option<&str> {
        match &self.mode {
            Mode::Iot(iot) => Some(&iot.thing_name),
            _ => self.file.mqtt.thing_name.as_deref(),
        }
    }
}

/// The `AWS_IOT_*` variables: any of them set means IoT mode, which needs them all.
pub const IOT_VARIABLES: &[&str] = VARIABLES.split_at(1).1.split_at(7).0;

/// Every variable an operator may set for the agent (the seed's list): the packaging (systemd
/// unit, Greengrass recipe, Dockerfile) is checked against it, so none of them sets a misspelt
/// name that the agent would silently ignore.
pub const VARIABLES: &[&str] = &[
    "AWS_REGION",
    "AWS_IOT_CA_CERT",
    "AWS_IOT_CORE_CERT",
    "AWS_IOT_CORE_CREDENTIAL_ENDPOINT",
    "AWS_IOT_CORE_DATA_ATS_ENDPOINT",
    "AWS_IOT_CORE_PRIVATE_KEY",
    "AWS_IOT_CORE_ROLE_ALIAS",
    "AWS_IOT_CORE_THING_NAME",
    "AWS_KVS_EDGE_CLOUDWATCH_ENABLED",
    "AWS_KVS_EDGE_LOG_LEVEL",
    "AWS_KVS_EDGE_LOG_MAX_FILE_SIZE",
    "AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY",
    "AWS_KVS_EDGE_LOG_ROLLOVER_COUNT",
    "AWS_KVS_EDGE_RECORDING_DIRECTORY",
    "GREENGRASS_ROOT_DIRECTORY",
    "GST_PLUGIN_PATH",
    "LD_LIBRARY_PATH",
    "GST_DEBUG",
    "GST_DEBUG_FILE",
    "RUST_LOG",
];

/// Variables the Greengrass nucleus sets for every component it runs.
const GREENGRASS_MARKERS: &[&str] = &[
    "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
    "SVCUID",
];

const DEFAULT_GREENGRASS_ROOT: &str = "/greengrass/v2";

/// The shape of every Region of every partition in the AWS SDK's partition table
/// (`^(us|eu|ap|...)-\w+-\d+$`, `^us\-gov\-\w+\-\d+$`, `^eusc\-(de)\-\w+\-\d+$`, ...):
/// a lower-case partition prefix, lower-case words and a number. The SDK itself puts any
/// string into an endpoint host name.
static REGION_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z]{2,4}(-[a-z]{1,16}){1,3}-[0-9]{1,2}$").expect("valid pattern")
});

/// A thing name no HubDeviceArn can name.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is not 1 to 128 of a-z, A-Z, 0-9, _ and - (an AWS IoT thing name a HubDeviceArn can name)",
    quote(.0)
)]
struct BadThingName(String);

/// Why `thing` cannot be this agent's thing name, if it cannot.
fn check_thing_name(thing: &str) -> Result<(), BadThingName> {
    if crate::edge_config::validate::is_thing_name(thing) {
        Ok(())
    } else {
        Err(BadThingName(thing.to_owned()))
    }
}

/// Reads the settings from the environment and, when given, the YAML file.
pub fn load(env: &Env, config_file: Option<&Path>) -> Result<Settings, SettingsError> {
    let file = match config_file {
        Some(path) => file::read(path)?,
        None => AgentFile::default(),
    };
    let mut errors = Vec::new();
    let mut bad = |name: &str, message: String| {
        errors.push(SettingError {
            name: name.to_owned(),
            message,
        })
    };

    let cloudwatch_enabled = cloudwatch_enabled(env, &mut bad);
    let log = log_settings(env, file.log_format, &mut bad);
    let recording_directory =
        PathBuf::from(env.get("AWS_KVS_EDGE_RECORDING_DIRECTORY").unwrap_or("."));
    let region = region(env, &mut bad);

    let mode = decide_mode(env, &file, &mut bad);
    if matches!(mode, Mode::Iot(_)) && region.is_none() {
        bad(
            "AWS_REGION",
            "is required when the AWS_IOT_* variables are set".into(),
        );
    }
    if cloudwatch_enabled && mode == Mode::Local && region.is_none() {
        bad(
            "AWS_KVS_EDGE_CLOUDWATCH_ENABLED",
            "TRUE needs AWS: set AWS_REGION (with credentials the AWS SDK finds), the \
             AWS_IOT_* variables, or run under Greengrass"
                .into(),
        );
    }

    if !errors.is_empty() {
        return Err(SettingsError::Invalid(errors));
    }
    Ok(Settings {
        region,
        mode,
        cloudwatch_enabled,
        log,
        recording_directory,
        file,
    })
}

fn cloudwatch_enabled(env: &Env, bad: &mut impl FnMut(&str, String)) -> bool {
    match env.get("AWS_KVS_EDGE_CLOUDWATCH_ENABLED") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            bad(
                "AWS_KVS_EDGE_CLOUDWATCH_ENABLED",
                format!("{} is not TRUE or FALSE", quote(v)),
            );
            false
        }
    }
}

/// The `AWS_KVS_EDGE_LOG_*` variables, with the files' `format` from the YAML file.
fn log_settings(env: &Env, format: LogFormat, bad: &mut impl FnMut(&str, String)) -> LogSettings {
    let level = match env.get("AWS_KVS_EDGE_LOG_LEVEL") {
        None => LogLevel::Info,
        Some(v) => LogLevel::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(v.trim()))
            .map(|(_, l)| *l)
            .unwrap_or_else(|| {
                let names: Vec<&str> = LogLevel::NAMES.iter().map(|(n, _)| *n).collect();
                bad(
                    "AWS_KVS_EDGE_LOG_LEVEL",
                    format!("{} is not one of {}", quote(v), names.join(", ")),
                );
                LogLevel::Info
            }),
    };
    let mut int = |name: &str, min: u32, max: u32, default: u32| match env.get(name) {
        None => default,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(i) if i < i64::from(min) => {
                bad(name, format!("{i} is below the minimum {min}"));
                default
            }
            Ok(i) if i > i64::from(max) => {
                bad(name, format!("{i} is above the maximum {max}"));
                default
            }
            Ok(i) => i as u32,
            Err(_) => {
                bad(name, format!("{} is not a whole number", quote(v)));
                default
            }
        },
    };
    let max_file_size_mb = int("AWS_KVS_EDGE_LOG_MAX_FILE_SIZE", 0, 10_000, 20);
    let rollover_count = int("AWS_KVS_EDGE_LOG_ROLLOVER_COUNT", 1, 100, 10);
    let output_directory = PathBuf::from(
        env.get("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY")
            .unwrap_or("./log"),
    );
    LogSettings {
        level,
        max_file_size_mb,
        rollover_count,
        output_directory,
        format,
    }
}

fn region(env: &Env, bad: &mut impl FnMut(&str, String)) -> Option<String> {
    let region = env.get("AWS_REGION").map(str::to_owned);
    if let Some(r) = &region
        && !REGION_RE.is_match(r)
    {
        bad(
            "AWS_REGION",
            format!(
                "{} is not an AWS Region name like us-east-1 or us-gov-west-1",
                quote(r)
            ),
        );
    }
    region
}

fn decide_mode(env: &Env, file: &AgentFile, bad: &mut impl FnMut(&str, String)) -> Mode {
    let greengrass_root = env.get("GREENGRASS_ROOT_DIRECTORY");
    let under_nucleus = GREENGRASS_MARKERS.iter().any(|v| env.get(v).is_some());
    if under_nucleus || greengrass_root.is_some() {
        return Mode::Greengrass {
            root: PathBuf::from(greengrass_root.unwrap_or(DEFAULT_GREENGRASS_ROOT)),
        };
    }
    let given: Vec<&str> = IOT_VARIABLES
        .iter()
        .copied()
        .filter(|v| env.get(v).is_some())
        .collect();
    if given.is_empty() {
        return Mode::Local;
    }
    for missing in IOT_VARIABLES.iter().filter(|v| !given.contains(v)) {
        bad(
            missing,
            format!("is required when {} is set (IoT mode)", given[0]),
        );
    }
    let var = |name: &str| env.get(name).unwrap_or_default().to_owned();
    let mut path = |name: &str| {
        let p = PathBuf::from(var(name));
        if given.contains(&name) && !p.is_file() {
            bad(
                name,
                format!("{} is not a readable file", cut(&p.display().to_string())),
            );
        }
        p
    };
    let iot = IotSettings {
        ca_cert: path("AWS_IOT_CA_CERT"),
        cert: path("AWS_IOT_CORE_CERT"),
        private_key: path("AWS_IOT_CORE_PRIVATE_KEY"),
        credential_endpoint: var("AWS_IOT_CORE_CREDENTIAL_ENDPOINT"),
        data_ats_endpoint: var("AWS_IOT_CORE_DATA_ATS_ENDPOINT"),
        role_alias: var("AWS_IOT_CORE_ROLE_ALIAS"),
        thing_name: var("AWS_IOT_CORE_THING_NAME"),
    };
    if given.contains(&"AWS_IOT_CORE_THING_NAME")
        && let Err(e) = check_thing_name(&iot.thing_name)
    {
        bad("AWS_IOT_CORE_THING_NAME", e.to_string());
    }
    if let Some(thing) = &file.mqtt.thing_name
        && *thing != iot.thing_name
    {
        bad(
            "mqtt.thing_name",
            format!(
                "{} differs from AWS_IOT_CORE_THING_NAME {}; leave it out in IoT mode",
                quote(thing),
                quote(&iot.thing_name)
            ),
        );
    }
    Mode::Iot(iot)
}

#[cfg(test)]
mod tests;
