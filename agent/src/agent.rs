//! The agent assembled: the composition root (as mini-redis's `server::run`). The binary parses
//! arguments, sets up logging and signals and calls [`run`]; everything the daemon is, is here.
//!
//! Startup ([`Agent::open`], before any task): the state and recording directories, the
//! catalog (refused when damaged), the recording directory bound to it (refused when it holds
//! another catalog's media), the IoT or Greengrass identity, the broker to use. Then
//! ([`Agent::run`]): the AWS SDK configuration, the secret source, the uploader, the
//! supervisor resuming every stored configuration (before, and without, any broker), the
//! configurations given at start, the metrics publisher, the embedded broker in local mode
//! when no broker URL is set, the MQTT control plane, `READY=1`. When `shutdown` resolves: stop
//! accepting configurations, stop every job (each recorder writes its fragment in flight and
//! closes its segment), publish `offline` and flush the metrics, all within 10 s.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::aws::greengrass::GreengrassConfig;
use crate::aws::greengrass_ipc::GreengrassSecretSource;
use crate::aws::iot_credentials::IotCredentialsProvider;
use crate::aws::metrics::{self, CloudWatchSink, PublisherConfig};
use crate::aws::secrets::SecretsManagerSource;
use crate::catalog::{Catalog, CatalogError};
use crate::clock::{Clock, RealClock};
use crate::control::mqtt::{BrokerError, BrokerOptions, ControlConfig};
use crate::control::topics::{LOCAL_THING, Topics};
use crate::edge_config::{ApiTimestamp, StartEdgeConfigurationUpdateRequest};
use crate::http::HttpConfig;
use crate::recorder::fragmenter::FragmenterConfig;
use crate::recorder::rtsp::RtspOptions;
use crate::secrets::{LocalSecretsFile, NoSecrets, SecretSource};
use crate::settings::{Mode, Settings};
use crate::store::directory::{Bind, BindError, bind};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::uploader::{Options as UploadOptions, Uploader};

/// The whole shutdown is bounded by these (systemd's default stop timeout is 90 s; the agent
/// takes at most 10 s).
const JOBS_STOP_WITHIN: Duration = Duration::from_secs(7);
const CONTROL_STOP_WITHIN: Duration = Duration::from_millis(2500);
/// The metrics publisher's last flush (FatalError, Completed) is bounded by its own 2 s.
const METRICS_STOP_WITHIN: Duration = Duration::from_millis(2500);
/// Requests in progress (an export) are cut after this.
const HTTP_STOP_WITHIN: Duration = Duration::from_secs(1);

/// What the agent is given rather than builds.
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    /// Where media URIs come from; `None`: chosen from the settings ([`secret_source`]).
    pub secrets: Option<Arc<dyn SecretSource>>,
    /// StartEdgeConfigurationUpdate requests applied at start, as if received over MQTT (sites
    /// configured from files): applied only when they differ from the stored configuration.
    pub startup_configs: Vec<StartEdgeConfigurationUpdateRequest>,
}

impl Default for Deps {
    fn default() -> Self {
        Deps {
            clock: Arc::new(RealClock),
            secrets: None,
            startup_configs: Vec::new(),
        }
    }
}

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Settings or stored state the agent must not run with (a damaged catalog, another
    /// catalog's media, invalid identity files): the operator must act. Exit status 2.
    #[error("{0}")]
    Refused(String),
    /// Anything else (a directory that cannot be created): exit status 1.
    #[error("{0}")]
    Failed(String),
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` resolved.
    Asked,
    /// The control plane crashed (a panic): the agent stopped so that its service manager
    /// restarts it, rather than record on deaf to the cloud.
    ControlCrashed,
}

/// Opens and runs the agent until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, StartError> {
    Agent::open(settings)?.run(deps, shutdown).await
}

/// The agent opened: its stored state checked, its identity and broker known.
pub struct Agent {
    settings: Settings,
    catalog: Arc<Catalog>,
    iot_credentials: Option<IotCredentialsProvider>,
    greengrass: Option<GreengrassConfig>,
    broker: BrokerPlan,
    /// The HTTP server's settings, its token read; `None` when it is off.
    http: Option<HttpConfig>,
}

impl Agent {
    pub fn open(settings: Settings) -> Result<Agent, StartError> {
        let failed =
            |what: String| move |e: std::io::Error| StartError::Failed(format!("{what}: {e}"));
        let state_dir = settings.state_directory();
        std::fs::create_dir_all(state_dir).map_err(failed(format!(
            "cannot create the state directory {}",
            state_dir.display()
        )))?;
        let dir = &settings.recording_directory;
        crate::store::layout::create_root(dir).map_err(failed(format!(
            "cannot create the recording directory {}",
            dir.display()
        )))?;
        let catalog = match Catalog::open(&settings.catalog_path()) {
            Ok(c) => Arc::new(c),
            Err(e @ CatalogError::Damaged { .. }) => {
                return Err(StartError::Refused(e.to_string()));
            }
            Err(e) => return Err(StartError::Failed(e.to_string())),
        };
        match bind(
            &catalog,
            &settings.catalog_path(),
            &settings.recording_directory,
            Bind::Open,
        ) {
            Ok(_) => {}
            // A directory not writable yet: recording reports it and retries; the binding is
            // made at a later start.
            Err(BindError::Io(e)) => warn!(error = %e, "cannot bind the recording directory yet"),
            // Another catalog's media, or media this catalog never indexed: refusing is the
            // only way not to treat it as garbage.
            Err(e) => return Err(StartError::Refused(e.to_string())),
        }
        // Counted only: the supervisor reads each configuration when it resumes them.
        let stored = catalog
            .config_count()
            .map_err(|e| StartError::Failed(e.to_string()))?;
        info!(
            catalog = %settings.catalog_path().display(),
            streams = stored,
            "catalog open"
        );
        if stored > settings.file.max_streams as usize {
            warn!(
                stored,
                max_streams = settings.file.max_streams,
                "more stored configurations than max_streams"
            );
        }
        let invalid =
            |e: &dyn std::fmt::Display| StartError::Refused(format!("invalid settings: {e}"));
        // IoT mode: every AWS client's credentials come from the device certificate.
        let iot_credentials = match &settings.mode {
            Mode::Iot(iot) => Some(IotCredentialsProvider::new(iot).map_err(|e| invalid(&e))?),
            _ => None,
        };
        // Greengrass mode: the region (unless AWS_REGION is set) from the nucleus'
        // configuration, credentials from its token exchange service.
        let greengrass = match &settings.mode {
            Mode::Greengrass { root } => {
                let c = GreengrassConfig::load(root).map_err(|e| invalid(&e))?;
                info!(
                    thing = c.thing_name,
                    region = c.region,
                    "Greengrass nucleus configuration"
                );
                Some(c)
            }
            _ => None,
        };
        let broker = broker_plan(&settings, greengrass.as_ref()).map_err(|e| invalid(&e))?;
        let mut agent = Agent {
            settings,
            catalog,
            iot_credentials,
            greengrass,
            broker,
            http: None,
        };
        let thing = agent.thing().unwrap_or_else(|| LOCAL_THING.to_owned());
        agent.http = http_config(&agent.settings, thing).map_err(|e| invalid(&e))?;
        Ok(agent)
    }

    /// The thing the agent answers for: IoT mode's, the nucleus' under Greengrass, else the
    /// settings file's (local mode may serve every thing).
    fn thing(&self) -> Option<String> {
        self.greengrass
            .as_ref()
            .map(|g| g.thing_name.clone())
            .or_else(|| self.settings.thing_name().map(str::to_owned))
    }

    fn supervisor_config(&self) -> SupervisorConfig {
        let settings = &self.settings;
        let rec = &settings.file.recorder;
        SupervisorConfig {
            recording_dir: settings.recording_directory.clone(),
            max_streams: settings.file.max_streams as usize,
            fragmenter: FragmenterConfig {
                min_fragment_ms: i64::from(rec.min_fragment_duration_ms),
                segment_duration_ms: 1000 * i64::from(rec.segment_duration_secs),
                ..FragmenterConfig::default()
            },
            rtsp: RtspOptions::default(),
            time_zone: jiff::tz::TimeZone::system(),
            disk_reserve: settings.file.disk_reserve.reserve(),
            request_limits: settings.file.uploader.request_limits(),
        }
    }

    /// One SDK configuration (region, credentials, endpoints) for every AWS client; `None`
    /// without a region (local mode without AWS_REGION records only).
    async fn sdk(&mut self) -> Option<aws_config::SdkConfig> {
        match (&self.greengrass, &self.settings.region) {
            (Some(gg), _) => Some(crate::aws::greengrass::sdk_config(gg).await),
            (None, Some(_)) => {
                if let Some(p) = self.iot_credentials.take() {
                    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                    return Some(loader.credentials_provider(p).load().await);
                }
                match crate::aws::env_credentials::sdk_config().await {
                    Ok(sdk) => Some(sdk),
                    Err(e) => {
                        warn!(error = %e, "ignoring the credentials' expiry");
                        Some(
                            aws_config::defaults(aws_config::BehaviorVersion::latest())
                                .load()
                                .await,
                        )
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn uploader(
        &self,
        sdk: Option<&aws_config::SdkConfig>,
        clock: &Arc<dyn Clock>,
    ) -> Option<Uploader> {
        let Some(sdk) = sdk else {
            info!("no AWS_REGION: recording only, uploads are off");
            return None;
        };
        match Uploader::new(
            sdk,
            self.catalog.clone(),
            self.settings.recording_directory.clone(),
            clock.clone(),
            UploadOptions {
                rotate_after: Duration::from_secs(
                    self.settings.file.uploader.max_session_secs.into(),
                ),
                backlog_order: self.settings.file.uploader.backlog_order,
                bandwidth: self
                    .settings
                    .file
                    .uploader
                    .bandwidth(&jiff::tz::TimeZone::system()),
                ..UploadOptions::default()
            },
        ) {
            Ok(u) => Some(u),
            Err(e) => {
                warn!(error = %e, "uploads are off");
                None
            }
        }
    }

    pub async fn run(
        mut self,
        deps: Deps,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Stopped, StartError> {
        let clock = deps.clock.clone();
        let start_time = ApiTimestamp(clock.now());
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let sdk = self.sdk().await;
        let secrets = match deps.secrets {
            Some(s) => s,
            None => secret_source(&self.settings, sdk.as_ref()).await,
        };
        let uploader = self.uploader(sdk.as_ref(), &clock);
        let supervisor = Supervisor::new(
            self.catalog.clone(),
            clock.clone(),
            self.supervisor_config(),
            secrets,
            uploader,
            events_tx,
        );
        crate::service::status("resuming the stored configurations");
        supervisor.resume().await;
        for request in deps.startup_configs {
            let thing = request.edge_config.thing();
            let stream = request.stream_name().to_owned();
            let status = supervisor.apply(&thing, request, false).await;
            info!(stream, ?status, "applied --edge-config");
        }
        let thing = self.thing();
        let (metrics_stop, metrics) = self.start_metrics(&supervisor, sdk.as_ref(), &thing, &clock);
        let (http_stop, http) = start_http(self.http.take(), &supervisor, &clock).await;
        let topics = Topics::new(self.settings.file.mqtt.topic_prefix.clone(), thing);
        let (control_stop, mut control) = match start_broker(self.broker, &topics) {
            Some(broker) => {
                let (tx, rx) = crate::stop::channel();
                let cfg = ControlConfig {
                    broker,
                    topics,
                    start_time,
                    clock: clock.clone(),
                };
                let task = tokio::spawn(crate::control::mqtt::run(
                    cfg,
                    supervisor.clone(),
                    events_rx,
                    rx,
                ));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        info!("ready");
        let service = crate::service::Service::ready(&supervisor, clock).await;
        // A control plane that crashes (a panic) stops the agent; one that cannot start (its
        // TLS files, say) says why and the stored configurations run on, as without one.
        let control_crashed = async {
            loop {
                if let Some(handle) = control.as_mut() {
                    match handle.await {
                        Err(e) => return e,
                        Ok(Ok(())) => warn!("the control plane stopped"),
                        Ok(Err(e)) => error!(
                            error = %e,
                            "no control plane; stored configurations run as they are"
                        ),
                    }
                }
                control = None;
                std::future::pending::<()>().await;
            }
        };
        let stopped = tokio::select! {
            () = shutdown => Stopped::Asked,
            e = control_crashed => {
                error!(error = %e, "the control plane crashed; stopping");
                control = None;
                Stopped::ControlCrashed
            }
        };
        service.stopping().await;
        supervisor.shutdown(JOBS_STOP_WITHIN).await;
        if let Some(tx) = control_stop {
            tx.stop();
        }
        metrics_stop.stop();
        http_stop.stop();
        // The control plane's `offline` and the metrics' last batch leave side by side.
        let control_stopped = async {
            if let Some(control) = control
                && let Ok(Ok(Err(e))) = tokio::time::timeout(CONTROL_STOP_WITHIN, control).await
            {
                warn!(error = %e, "control plane");
            }
        };
        let metrics_stopped = async {
            if let Some(m) = metrics {
                let _ = tokio::time::timeout(METRICS_STOP_WITHIN, m).await;
            }
        };
        let http_stopped = async {
            if let Some(mut h) = http
                && tokio::time::timeout(HTTP_STOP_WITHIN, &mut h)
                    .await
                    .is_err()
            {
                h.abort();
            }
        };
        tokio::join!(control_stopped, metrics_stopped, http_stopped);
        Ok(stopped)
    }

    /// The CloudWatch publisher, when enabled and there is an AWS configuration.
    fn start_metrics(
        &self,
        supervisor: &Supervisor,
        sdk: Option<&aws_config::SdkConfig>,
        thing: &Option<String>,
        clock: &Arc<dyn Clock>,
    ) -> (crate::stop::Stopper, Option<tokio::task::JoinHandle<()>>) {
        let (stop, stop_rx) = crate::stop::channel();
        let settings = &self.settings;
        if !settings.cloudwatch_enabled {
            return (stop, None);
        }
        let Some(sdk) = sdk else {
            warn!("AWS_KVS_EDGE_CLOUDWATCH_ENABLED but no AWS configuration: metrics are off");
            return (stop, None);
        };
        let cfg = PublisherConfig {
            thing: thing.clone().unwrap_or_else(|| LOCAL_THING.to_owned()),
            interval: Duration::from_secs(u64::from(settings.file.cloudwatch.interval_secs)),
            buffer: settings.file.cloudwatch.buffer_datums as usize,
            link: supervisor.stats().cloudwatch.clone(),
        };
        let task = tokio::spawn(metrics::run(
            Arc::new(supervisor.clone()),
            Arc::new(CloudWatchSink::new(sdk)),
            clock.clone(),
            cfg,
            stop_rx,
        ));
        (stop, Some(task))
    }
}

/// The HTTP server's settings with its token read; `None` when `http.listen` is empty.
fn http_config(
    settings: &Settings,
    thing: String,
) -> Result<Option<HttpConfig>, crate::http::HttpError> {
    let h = &settings.file.http;
    let Some(listen) = h.address() else {
        return Ok(None);
    };
    let token = h
        .token_file
        .as_deref()
        .map(crate::http::read_token)
        .transpose()?;
    Ok(Some(HttpConfig {
        listen,
        token,
        max_export: Duration::from_secs(h.max_export_secs.into()),
        thing,
    }))
}

/// The HTTP server, when configured and its port free: one that cannot bind is warned about
/// and the agent records on without it (the page matters less than the media).
async fn start_http(
    cfg: Option<HttpConfig>,
    supervisor: &Supervisor,
    clock: &Arc<dyn Clock>,
) -> (crate::stop::Stopper, Option<tokio::task::JoinHandle<()>>) {
    let (stop, stop_rx) = crate::stop::channel();
    let Some(cfg) = cfg else {
        info!("http.listen is empty: no HTTP server");
        return (stop, None);
    };
    match crate::http::bind(cfg.listen).await {
        Ok(listener) => {
            let task = tokio::spawn(crate::http::serve(
                listener,
                cfg,
                supervisor.clone(),
                clock.clone(),
                stop_rx,
            ));
            (stop, Some(task))
        }
        Err(e) => {
            warn!(error = %e, "no HTTP server; recording goes on");
            (stop, None)
        }
    }
}

/// Why the broker settings cannot be used.
#[derive(Debug, thiserror::Error)]
enum BrokerPlanError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("mqtt.embedded_broker_listen: {0}")]
    Listen(std::net::AddrParseError),
}

/// What the control plane connects to, if anything.
enum BrokerPlan {
    Connect(BrokerOptions),
    #[cfg_attr(not(feature = "embedded-broker"), allow(dead_code))]
    Embedded(std::net::SocketAddr),
    None(&'static str),
}

fn broker_plan(
    settings: &Settings,
    greengrass: Option<&GreengrassConfig>,
) -> Result<BrokerPlan, BrokerPlanError> {
    // AWS IoT Core policies usually allow a thing to connect only as itself
    // (client/${iot:Connection.Thing.ThingName}), so in IoT mode the client id is the thing name.
    // Under Greengrass the nucleus holds that id (a second connection with it would throw the
    // nucleus off), so the agent takes the `{thing}#...` form Greengrass uses for its own extra
    // connections, which the Greengrass core device policy (`client/{thing}*`) allows.
    let iot = match (&settings.mode, greengrass) {
        (Mode::Iot(iot), _) => Some(iot.clone()),
        (Mode::Greengrass { .. }, Some(gg)) => Some(gg.iot_settings()),
        _ => None,
    };
    let client_id = match (&settings.mode, &iot) {
        (Mode::Iot(iot), _) => iot.thing_name.clone(),
        (Mode::Greengrass { .. }, Some(gg)) => format!("{}#kvs-edge-agent", gg.thing_name),
        _ => format!(
            "kvs-edge-agent-{}",
            settings.thing_name().unwrap_or(LOCAL_THING)
        ),
    };
    let plain = |url: &str| BrokerOptions {
        url: url.to_owned(),
        client_id: client_id.clone(),
        ..BrokerOptions::default()
    };
    if let Some(url) = settings.file.mqtt.broker_url.as_deref() {
        let mut o = plain(url);
        if let Some(iot) = &iot
            && url.starts_with("mqtts")
        {
            o.ca_file = Some(iot.ca_cert.clone());
            o.cert_file = Some(iot.cert.clone());
            o.key_file = Some(iot.private_key.clone());
        }
        o.mqtt_options()?;
        return Ok(BrokerPlan::Connect(o));
    }
    match (&settings.mode, iot) {
        (Mode::Iot(_) | Mode::Greengrass { .. }, Some(iot)) => {
            Ok(BrokerPlan::Connect(BrokerOptions {
                url: format!(
                    "mqtts://{}:{}",
                    iot.data_ats_endpoint, settings.file.mqtt.iot_port
                ),
                ca_file: Some(iot.ca_cert),
                cert_file: Some(iot.cert),
                key_file: Some(iot.private_key),
                client_id,
                ..BrokerOptions::default()
            }))
        }
        (Mode::Iot(_) | Mode::Greengrass { .. }, None) => Ok(BrokerPlan::None(
            "no Greengrass nucleus configuration to connect with; set mqtt.broker_url",
        )),
        (Mode::Local, _) => {
            let listen: std::net::SocketAddr = settings
                .file
                .mqtt
                .embedded_broker_listen
                .parse()
                .map_err(BrokerPlanError::Listen)?;
            if cfg!(feature = "embedded-broker") {
                Ok(BrokerPlan::Embedded(listen))
            } else {
                Ok(BrokerPlan::Connect(plain(&format!("mqtt://{listen}"))))
            }
        }
    }
}

/// The broker the control plane connects to; in local mode without one, the embedded broker
/// started first (a broker already listening there, Mosquitto or another agent's, is used
/// instead).
fn start_broker(plan: BrokerPlan, topics: &Topics) -> Option<BrokerOptions> {
    match plan {
        BrokerPlan::Connect(o) => Some(o),
        #[cfg(feature = "embedded-broker")]
        BrokerPlan::Embedded(listen) => {
            if let Err(e) = crate::control::broker::start(listen) {
                warn!(error = %e, "using the MQTT broker already listening there");
            }
            Some(BrokerOptions {
                url: format!("mqtt://{listen}"),
                client_id: format!(
                    "kvs-edge-agent-{}",
                    topics.thing.as_deref().unwrap_or(LOCAL_THING)
                ),
                ..BrokerOptions::default()
            })
        }
        #[cfg(not(feature = "embedded-broker"))]
        BrokerPlan::Embedded(_) => None,
        BrokerPlan::None(why) => {
            warn!(
                why,
                "no control plane; stored configurations run as they are"
            );
            None
        }
    }
}

/// Where media URIs come from: a local secrets file when one is given (any mode), else in
/// Greengrass mode the Secret Manager component over IPC when the nucleus answers, else AWS
/// Secrets Manager whenever there is an SDK configuration (a region).
pub async fn secret_source(
    settings: &Settings,
    sdk: Option<&aws_config::SdkConfig>,
) -> Arc<dyn SecretSource> {
    if let Some(path) = settings.file.secrets_file.clone() {
        let s = LocalSecretsFile::new(path);
        match s.load() {
            Ok(map) => {
                info!(file = %s.path().display(), secrets = map.len(), "local secrets file")
            }
            Err(e) => warn!(error = %e, "the local secrets file is unreadable for now"),
        }
        return Arc::new(s);
    }
    if let Mode::Greengrass { .. } = settings.mode {
        match GreengrassSecretSource::from_env().await {
            Ok(s) => {
                let socket = s.socket().display().to_string();
                info!(
                    socket,
                    "media URIs from the Greengrass Secret Manager component (IPC)"
                );
                return Arc::new(s);
            }
            Err(why) => info!(
                why = why.to_string(),
                "no Greengrass IPC, so AWS Secrets Manager"
            ),
        }
    }
    match (&settings.mode, sdk) {
        (Mode::Local, None) => warn!(
            "no secrets file (secrets_file, --secrets-file) and no AWS_REGION: every \
             MediaUriSecretArn is unknown"
        ),
        (_, None) => {
            warn!(
                "no AWS_REGION: AWS Secrets Manager cannot be asked; every MediaUriSecretArn is unknown"
            )
        }
        // Local mode with AWS_REGION (an EC2 instance role, a Snowball, keys in the
        // environment) reads Secrets Manager like the other modes.
        (_, Some(sdk)) => {
            info!("media URIs from AWS Secrets Manager");
            return Arc::new(SecretsManagerSource::new(sdk));
        }
    }
    Arc::new(NoSecrets)
}
