//! `kvs-edge-agent ctl VERB`: the AWS CLI's edge verbs (`aws kinesisvideo ...`), with the same
//! flags and JSON shapes, spoken over the agent's MQTT protocol instead of the cloud API.
//!
//! - `start-edge-configuration-update` publishes the request (retained) on the stream's
//!   `desired` topic and waits, bounded by `--wait-seconds`, until `reported` shows the agent's
//!   verdict (SYNCING, then IN_SYNC or SYNC_FAILED); it prints that response. SYNC_FAILED exits
//!   254 with the FailedStatusDetails on stderr.
//! - `delete-edge-configuration` publishes the delete request and waits until the agent has
//!   cleared the stream's topics (prints nothing, as the API's response is empty).
//! - `describe-edge-configuration` and `list-edge-agent-configurations` have no request topic
//!   in the protocol: they read the retained `reported` topics (the agent keeps one per stream),
//!   collecting retained messages until a short quiet period after the subscription.
//!
//! - `upload-media`, `start-live` and `stop-live` have no AWS CLI counterpart (the Greengrass
//!   edge connector offers them over MQTT): they publish a request on the stream's `uploads` or
//!   `live` topic, wait for the agent's answer on `upload-answers`, and `upload-media` then
//!   follows the retained `upload-status` until the request is DONE or FAILED.
//!
//! Exit codes follow the AWS CLI: 0 success, 252 invalid parameters, 254 an error answer
//! (`An error occurred (Code) when calling the Op operation: message`), 255 anything else
//! (broker unreachable, no answer in time).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::time::Instant;

use kvs_edge_agent::control::client::{Message, Session, SessionError};
use kvs_edge_agent::control::mqtt::BrokerOptions;
use kvs_edge_agent::control::topics::{Kind, Topics, valid_prefix};
use kvs_edge_agent::edge_config::validate::{validate_list_request, validate_stream_request};
use kvs_edge_agent::edge_config::{
    ConfigError, DEFAULT_LIST_MAX_RESULTS, DescribeEdgeConfigurationResponse,
    ListEdgeAgentConfigurationsResponse, SyncStatus, parse_start_request, thing_name_from_arn,
};
use kvs_edge_agent::input::{json, quote};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(clap::Args, Debug)]
pub struct ConnArgs {
    /// The MQTT broker the agent listens on: mqtt://host:1883 or mqtts://host:8883.
    #[arg(long, global = true, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// First level of the control topics (the agent's mqtt.topic_prefix).
    #[arg(long, global = true, default_value = "kvs-edge")]
    pub topic_prefix: String,
    /// CA certificate (PEM) for mqtts.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// How long to wait for the agent's answer.
    #[arg(long, global = true, default_value_t = 30)]
    pub wait_seconds: u64,
    /// The agent's thing, when the stream's cannot be found from its `reported` topic.
    #[arg(long, global = true)]
    pub thing_name: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Send a stream's edge configuration to the agent and wait until it is IN_SYNC.
    StartEdgeConfigurationUpdate {
        /// The request JSON: file://PATH, a path, `-` (stdin) or the JSON itself.
        #[arg(long)]
        cli_input_json: Option<String>,
        #[arg(long)]
        stream_name: Option<String>,
        #[arg(long = "stream-arn")]
        stream_arn: Option<String>,
        /// The EdgeConfig JSON.
        #[arg(long)]
        edge_config: Option<String>,
    },
    /// Print a stream's edge configuration, sync status and job status.
    DescribeEdgeConfiguration(StreamRef),
    /// Delete a stream's edge configuration and its media on the agent.
    DeleteEdgeConfiguration(StreamRef),
    /// Upload a stream's media of a time range now, ahead of the scheduled backlog, and wait
    /// until it is uploaded.
    UploadMedia {
        #[arg(long)]
        stream_name: String,
        /// ISO 8601 (2026-12-04T14:00:00Z) or epoch seconds.
        #[arg(long)]
        start_time: String,
        #[arg(long)]
        end_time: String,
    },
    /// Send a stream live: what it records goes out as it is recorded, ahead of any backlog.
    StartLive {
        #[arg(long)]
        stream_name: String,
        /// How long (the agent's uploader.live_default_secs when not given).
        #[arg(long)]
        duration_seconds: Option<u64>,
    },
    /// End a stream's live upload.
    StopLive {
        #[arg(long)]
        stream_name: String,
    },
    /// List the edge configurations of an agent (hub device).
    ListEdgeAgentConfigurations {
        #[arg(long)]
        hub_device_arn: Option<String>,
        #[arg(long)]
        max_results: Option<i64>,
        #[arg(long)]
        next_token: Option<String>,
        #[arg(long)]
        cli_input_json: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct StreamRef {
    #[arg(long)]
    pub stream_name: Option<String>,
    #[arg(long = "stream-arn")]
    pub stream_arn: Option<String>,
    #[arg(long)]
    pub cli_input_json: Option<String>,
}

/// How a verb ended.
enum Failure {
    /// 252: the parameters are invalid.
    Params(String),
    /// 254: an AWS-shaped error answer.
    Service {
        code: &'static str,
        operation: &'static str,
        message: String,
    },
    /// 255: anything else.
    Other(String),
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Failure {
        Failure::Other(e.to_string())
    }
}

type VerbResult = Result<Option<Value>, Failure>;

fn params(e: ConfigError) -> Failure {
    Failure::Params(
        e.field_errors()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// `--cli-input-json`: file://PATH, PATH, `-`, or inline JSON.
fn read_json_input(input: &str) -> Result<String, Failure> {
    let t = input.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return Ok(input.to_owned());
    }
    super::check_config::read_input(input).map_err(|e| Failure::Params(format!("{e:#}")))
}

/// Merges `--cli-input-json` with explicit flags (flags win), as the AWS CLI does.
fn merged(input: Option<&str>, flags: Vec<(&str, Option<Value>)>) -> Result<Value, Failure> {
    let mut v = match input {
        Some(i) => {
            let text = read_json_input(i)?;
            json::from_str::<Value>(&text)
                .map_err(|e| Failure::Params(format!("--cli-input-json is not valid JSON: {e}")))?
        }
        None => Value::Object(Default::default()),
    };
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Failure::Params("--cli-input-json must be a JSON object".into()))?;
    for (k, val) in flags {
        if let Some(val) = val {
            obj.insert(k.to_owned(), val);
        }
    }
    Ok(v)
}

fn print_json(v: &Value) {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("JSON serialises");
    println!("{}", String::from_utf8_lossy(&out));
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run_verb(args));
    Ok(match result {
        Ok(Some(v)) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(Failure::Params(m)) => {
            eprintln!("\nParameter validation failed:\n{m}");
            ExitCode::from(252)
        }
        Err(Failure::Service {
            code,
            operation,
            message,
        }) => {
            eprintln!(
                "\nAn error occurred ({code}) when calling the {operation} operation: {message}"
            );
            ExitCode::from(254)
        }
        Err(Failure::Other(m)) => {
            eprintln!("\n{m}");
            ExitCode::from(255)
        }
    })
}

struct Ctx {
    broker: BrokerOptions,
    topics: Topics,
    wait: Duration,
    thing: Option<String>,
}

const CONNECT_WITHIN: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);
const COLLECT_AT_MOST: Duration = Duration::from_secs(5);

impl Ctx {
    async fn session(&self) -> Result<Session, Failure> {
        Session::connect(
            &self.broker,
            CONNECT_WITHIN.min(self.wait.max(Duration::from_secs(1))),
        )
        .await
        .map_err(Failure::from)
    }

    /// The retained `reported` of `stream` (of any thing unless one is given), newest first.
    async fn find_reported(
        &self,
        session: &mut Session,
        stream: &str,
    ) -> Result<Vec<(String, DescribeEdgeConfigurationResponse)>, Failure> {
        let filter = format!(
            "{}/{}/streams/{stream}/reported",
            self.topics.prefix,
            self.thing.as_deref().unwrap_or("+")
        );
        let msgs = session
            .retained(&filter, QUIET, COLLECT_AT_MOST)
            .await
            .map_err(Failure::from)?;
        let mut found: Vec<(String, DescribeEdgeConfigurationResponse)> = msgs
            .into_iter()
            .filter_map(|m| {
                let t = self.topics.parse(&m.topic)?;
                let d = json::from_slice(&m.payload).ok()?;
                Some((t.thing, d))
            })
            .collect();
        found.sort_by_key(|(_, d): &(String, DescribeEdgeConfigurationResponse)| {
            std::cmp::Reverse(d.last_updated_time)
        });
        Ok(found)
    }
}

fn not_found(operation: &'static str, stream: &str) -> Failure {
    Failure::Service {
        code: "StreamEdgeConfigurationNotFoundException",
        operation,
        message: format!(
            "The edge configuration of the stream {stream} was not found on any agent reachable through this broker."
        ),
    }
}

async fn run_verb(args: Args) -> VerbResult {
    let c = &args.conn;
    if !valid_prefix(&c.topic_prefix) {
        return Err(Failure::Params(format!(
            "--topic-prefix {} must be a topic without wildcards or a leading or trailing '/'",
            quote(&c.topic_prefix)
        )));
    }
    if let Some(t) = &c.thing_name
        && !kvs_edge_agent::edge_config::validate::is_thing_name(t)
    {
        return Err(Failure::Params(format!(
            "--thing-name {} is not 1 to 128 of a-z, A-Z, 0-9, _ and -",
            quote(t)
        )));
    }
    let broker = BrokerOptions {
        url: c.broker.clone(),
        ca_file: c.ca_file.clone(),
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
        ..BrokerOptions::default()
    };
    broker
        .mqtt_options()
        .map_err(|e| Failure::Params(e.to_string()))?;
    let ctx = Ctx {
        broker,
        topics: Topics::new(c.topic_prefix.clone(), c.thing_name.clone()),
        wait: Duration::from_secs(c.wait_seconds.max(1)),
        thing: c.thing_name.clone(),
    };
    let s = |o: &Option<String>| o.clone().map(Value::String);
    match args.verb {
        Verb::StartEdgeConfigurationUpdate {
            cli_input_json,
            stream_name,
            stream_arn,
            edge_config,
        } => {
            let edge = match edge_config {
                Some(e) => Some(json::from_str::<Value>(&read_json_input(&e)?).map_err(|e| {
                    Failure::Params(format!("--edge-config is not valid JSON: {e}"))
                })?),
                None => None,
            };
            let text = match (&cli_input_json, &stream_name, &stream_arn, &edge) {
                // The exact text the operator wrote goes on the wire when it is all there is.
                (Some(i), None, None, None) => read_json_input(i)?,
                _ => merged(
                    cli_input_json.as_deref(),
                    vec![
                        ("StreamName", s(&stream_name)),
                        ("StreamARN", s(&stream_arn)),
                        ("EdgeConfig", edge),
                    ],
                )?
                .to_string(),
            };
            start(&ctx, text.trim().to_owned()).await
        }
        Verb::DescribeEdgeConfiguration(r) => {
            let v = merged(
                r.cli_input_json.as_deref(),
                vec![
                    ("StreamName", s(&r.stream_name)),
                    ("StreamARN", s(&r.stream_arn)),
                ],
            )?;
            let req = validate_stream_request(&v).map_err(params)?;
            let mut session = ctx.session().await?;
            let found = ctx.find_reported(&mut session, req.stream_name()).await?;
            session.close().await;
            match found.into_iter().next() {
                Some((_, d)) => Ok(Some(serde_json::to_value(d).expect("serialises"))),
                None => Err(not_found("DescribeEdgeConfiguration", req.stream_name())),
            }
        }
        Verb::DeleteEdgeConfiguration(r) => {
            let v = merged(
                r.cli_input_json.as_deref(),
                vec![
                    ("StreamName", s(&r.stream_name)),
                    ("StreamARN", s(&r.stream_arn)),
                ],
            )?;
            let req = validate_stream_request(&v).map_err(params)?;
            delete(&ctx, req.stream_name(), v.to_string()).await
        }
        Verb::UploadMedia {
            stream_name,
            start_time,
            end_time,
        } => {
            let start = time_arg("--start-time", &start_time)?;
            let end = time_arg("--end-time", &end_time)?;
            let body = serde_json::json!({"StartTime": start, "EndTime": end});
            upload_request(&ctx, &stream_name, Kind::Uploads, body).await
        }
        Verb::StartLive {
            stream_name,
            duration_seconds,
        } => {
            let mut body = serde_json::json!({"Action": "START"});
            if let Some(d) = duration_seconds {
                body["DurationInSeconds"] = d.into();
            }
            upload_request(&ctx, &stream_name, Kind::Live, body).await
        }
        Verb::StopLive { stream_name } => {
            let body = serde_json::json!({"Action": "STOP"});
            upload_request(&ctx, &stream_name, Kind::Live, body).await
        }
        Verb::ListEdgeAgentConfigurations {
            hub_device_arn,
            max_results,
            next_token,
            cli_input_json,
        } => {
            let v = merged(
                cli_input_json.as_deref(),
                vec![
                    ("HubDeviceArn", s(&hub_device_arn)),
                    ("MaxResults", max_results.map(Value::from)),
                    ("NextToken", s(&next_token)),
                ],
            )?;
            let req = validate_list_request(&v).map_err(params)?;
            list(&ctx, &req.hub_device_arn, req.max_results, req.next_token).await
        }
    }
}

fn parse_reported(m: &Message) -> Option<DescribeEdgeConfigurationResponse> {
    json::from_slice(&m.payload).ok()
}

async fn start(ctx: &Ctx, text: String) -> VerbResult {
    const OP: &str = "StartEdgeConfigurationUpdate";
    let request = parse_start_request(&text).map_err(params)?;
    let stream = request.stream_name().to_owned();
    let thing = thing_name_from_arn(&request.edge_config.hub_device_arn)
        .unwrap_or_default()
        .to_owned();
    let mut session = ctx.session().await?;
    let reported = ctx.topics.reported(&thing, &stream);
    let mut seen = session
        .subscribe(&reported, ctx.wait)
        .await
        .map_err(Failure::from)?;
    session
        .publish_retained(
            &ctx.topics.desired(&thing, &stream),
            text.into_bytes(),
            ctx.wait,
            &mut seen,
        )
        .await
        .map_err(Failure::from)?;
    let deadline = Instant::now() + ctx.wait;
    let mut syncing = false;
    let mut pending = seen.into_iter();
    loop {
        let Some(m) = next_live(&mut session, &mut pending, deadline, &reported).await? else {
            session.close().await;
            return Err(Failure::Other(format!(
                "The agent did not answer within {} s (is it running and connected to \
                 {}?). The configuration stays on the broker and applies when the agent \
                 connects; check with describe-edge-configuration.",
                ctx.wait.as_secs(),
                kvs_edge_agent::control::mqtt::redact(&ctx.broker.url)
            )));
        };
        let Some(mut d) = parse_reported(&m) else {
            continue;
        };
        match d.sync_status {
            Some(SyncStatus::Syncing) => syncing = true,
            Some(SyncStatus::InSync)
                if syncing && d.edge_config.as_ref() == Some(&request.edge_config) =>
            {
                session.close().await;
                d.edge_agent_status = None;
                return Ok(Some(serde_json::to_value(d).expect("serialises")));
            }
            Some(SyncStatus::SyncFailed) if syncing => {
                session.close().await;
                d.edge_agent_status = None;
                print_json(&serde_json::to_value(&d).expect("serialises"));
                return Err(Failure::Service {
                    code: "SyncFailed",
                    operation: OP,
                    message: d.failed_status_details.unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
}

/// A time flag, as epoch seconds for the request.
fn time_arg(flag: &str, s: &str) -> Result<f64, Failure> {
    kvs_edge_agent::input::parse_time(s)
        .map(|ms| ms as f64 / 1000.0)
        .map_err(|e| Failure::Params(format!("{flag} {e}")))
}

/// Publishes an upload or live request for `stream` with a fresh RequestId, waits for the
/// agent's answer, and for a range then until it is DONE or FAILED (bounded by --wait-seconds).
async fn upload_request(ctx: &Ctx, stream: &str, kind: Kind, mut body: Value) -> VerbResult {
    const OP: &str = "UploadRequest";
    if !kvs_edge_agent::edge_config::validate::is_resource_name(stream) {
        return Err(Failure::Params(format!(
            "--stream-name {} is not 1 to 256 of a-z, A-Z, 0-9, _, . and -",
            quote(stream)
        )));
    }
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    let id = format!(
        "ctl-{}",
        r.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    body["RequestId"] = Value::String(id.clone());
    let mut session = ctx.session().await?;
    let thing = match &ctx.thing {
        Some(t) => t.clone(),
        None => match ctx
            .find_reported(&mut session, stream)
            .await?
            .into_iter()
            .next()
        {
            Some((thing, _)) => thing,
            None => {
                session.close().await;
                return Err(not_found(OP, stream));
            }
        },
    };
    let answers = ctx.topics.stream(&thing, stream, Kind::UploadAnswers);
    let status = ctx.topics.stream(&thing, stream, Kind::UploadStatus);
    let mut seen = session
        .subscribe(&answers, ctx.wait)
        .await
        .map_err(Failure::from)?;
    seen.extend(
        session
            .subscribe(&status, ctx.wait)
            .await
            .map_err(Failure::from)?,
    );
    session
        .publish(
            &ctx.topics.stream(&thing, stream, kind),
            body.to_string().into_bytes(),
            false,
            ctx.wait,
            &mut seen,
        )
        .await
        .map_err(Failure::from)?;
    let deadline = Instant::now() + ctx.wait;
    let mut pending = seen.into_iter();
    let mut answered = false;
    let mut last: Option<Value> = None;
    let outcome = loop {
        let Some(m) = pull(&mut session, &mut pending, deadline).await? else {
            break None;
        };
        let Ok(v) = json::from_slice::<Value>(&m.payload) else {
            continue;
        };
        let state = if m.topic == answers && !m.retained {
            if v["RequestId"] != Value::String(id.clone()) {
                continue;
            }
            answered = true;
            v
        } else if m.topic == status && answered {
            match v["Requests"].as_array().and_then(|rs| {
                rs.iter()
                    .find(|r| r["RequestId"] == Value::String(id.clone()))
            }) {
                Some(r) => r.clone(),
                None => continue,
            }
        } else {
            continue;
        };
        let s = state["Status"].as_str().unwrap_or_default().to_owned();
        last = Some(state.clone());
        match s.as_str() {
            "FAILED" | "DONE" => break Some(state),
            // Live runs on by itself: its answer is the outcome.
            "QUEUED" | "UPLOADING" if kind == Kind::Live => break Some(state),
            _ => {}
        }
    };
    session.close().await;
    match outcome {
        Some(v) if v["Status"] == "FAILED" => {
            print_json(&v);
            Err(Failure::Service {
                code: "InvalidArgumentException",
                operation: OP,
                message: v["Details"].as_str().unwrap_or_default().to_owned(),
            })
        }
        Some(v) => Ok(Some(v)),
        None => {
            if let Some(v) = &last {
                print_json(v);
            }
            Err(Failure::Other(if answered {
                format!(
                    "Request {id} is not finished after {} s; the agent goes on with it (see                      its upload-status topic).",
                    ctx.wait.as_secs()
                )
            } else {
                format!(
                    "The agent did not answer within {} s (is it running and connected to {}?).",
                    ctx.wait.as_secs(),
                    kvs_edge_agent::control::mqtt::redact(&ctx.broker.url)
                )
            }))
        }
    }
}

/// The next message: first from those already seen, then from the broker until `deadline`.
async fn pull(
    session: &mut Session,
    seen: &mut impl Iterator<Item = Message>,
    deadline: Instant,
) -> Result<Option<Message>, Failure> {
    match seen.next() {
        Some(m) => Ok(Some(m)),
        None => session.next_message(deadline).await.map_err(Failure::from),
    }
}

/// The next live (not retained) message on `topic`: first from those already seen, then from
/// the broker until `deadline`; `None` when the deadline passes.
async fn next_live(
    session: &mut Session,
    seen: &mut impl Iterator<Item = Message>,
    deadline: Instant,
    topic: &str,
) -> Result<Option<Message>, Failure> {
    loop {
        let Some(m) = pull(session, seen, deadline).await? else {
            return Ok(None);
        };
        if !m.retained && m.topic == topic {
            return Ok(Some(m));
        }
    }
}

async fn delete(ctx: &Ctx, stream: &str, text: String) -> VerbResult {
    const OP: &str = "DeleteEdgeConfiguration";
    let mut session = ctx.session().await?;
    let found = ctx.find_reported(&mut session, stream).await?;
    let Some((thing, _)) = found.into_iter().next() else {
        session.close().await;
        return Err(not_found(OP, stream));
    };
    let reported = ctx.topics.reported(&thing, stream);
    let mut seen = Vec::new();
    session
        .publish_retained(
            &ctx.topics.desired(&thing, stream),
            text.into_bytes(),
            ctx.wait,
            &mut seen,
        )
        .await
        .map_err(Failure::from)?;
    let deadline = Instant::now() + ctx.wait;
    let mut pending = seen.into_iter();
    loop {
        let Some(m) = next_live(&mut session, &mut pending, deadline, &reported).await? else {
            session.close().await;
            return Err(Failure::Other(format!(
                "The agent did not confirm the deletion within {} s; the request stays on \
                 the broker and applies when the agent connects.",
                ctx.wait.as_secs()
            )));
        };
        if m.payload.is_empty() {
            session.close().await;
            return Ok(None);
        }
        if let Some(d) = parse_reported(&m)
            && d.sync_status == Some(SyncStatus::DeleteFailed)
        {
            session.close().await;
            return Err(Failure::Service {
                code: "DeleteFailed",
                operation: OP,
                message: d.failed_status_details.unwrap_or_default(),
            });
        }
    }
}

/// NextToken: the base64 of the last stream name returned.
pub fn encode_token(stream: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(stream)
}

pub fn decode_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn list(
    ctx: &Ctx,
    hub: &str,
    max_results: Option<u32>,
    next_token: Option<String>,
) -> VerbResult {
    const OP: &str = "ListEdgeAgentConfigurations";
    let after = match next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(decode_token(t).ok_or_else(|| Failure::Service {
            code: "InvalidArgumentException",
            operation: OP,
            message: "NextToken is not a token this command returned".into(),
        })?),
        None => None,
    };
    let thing = thing_name_from_arn(hub).unwrap_or_default();
    let mut session = ctx.session().await?;
    let msgs = session
        .retained(
            &ctx.topics.filter(Some(thing), Kind::Reported),
            QUIET,
            COLLECT_AT_MOST,
        )
        .await
        .map_err(Failure::from)?;
    session.close().await;
    let mut entries: Vec<DescribeEdgeConfigurationResponse> = msgs
        .iter()
        .filter_map(parse_reported)
        .filter(|d| d.stream_name.is_some())
        .map(|mut d| {
            d.edge_agent_status = None;
            d
        })
        .collect();
    entries.sort_by(|a, b| a.stream_name.cmp(&b.stream_name));
    entries.dedup_by(|a, b| a.stream_name == b.stream_name);
    let limit = max_results.unwrap_or(DEFAULT_LIST_MAX_RESULTS) as usize;
    let mut page: Vec<_> = entries
        .into_iter()
        .filter(|d| {
            after
                .as_deref()
                .is_none_or(|a| d.stream_name.as_deref() > Some(a))
        })
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_token = if more {
        page.last()
            .and_then(|d| d.stream_name.as_deref())
            .map(encode_token)
    } else {
        None
    };
    let response = ListEdgeAgentConfigurationsResponse {
        edge_configs: page,
        next_token,
    };
    Ok(Some(serde_json::to_value(response).expect("serialises")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_match_the_api_pattern() {
        for s in ["cam", "a.b-c_d", "x"] {
            let t = encode_token(s);
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            );
            assert_eq!(decode_token(&t).as_deref(), Some(s));
        }
        assert_eq!(decode_token("!!"), None);
        assert_eq!(decode_token("//8="), None);
    }

    #[test]
    fn inputs_merge_flags_over_json() {
        let v = merged(
            Some(r#"{"StreamName":"a","MaxResults":3}"#),
            vec![("StreamName", Some(Value::String("b".into()))), ("X", None)],
        )
        .ok()
        .unwrap();
        assert_eq!(v, serde_json::json!({"StreamName":"b","MaxResults":3}));
        assert!(matches!(
            merged(Some("[1]"), vec![]),
            Err(Failure::Params(_))
        ));
        assert!(matches!(merged(Some("{"), vec![]), Err(Failure::Params(_))));
    }
}
