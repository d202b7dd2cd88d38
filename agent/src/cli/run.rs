//! `kvs-edge-agent run`: the daemon.
//!
//! Startup: settings -> catalog -> the supervisor resumes every stored configuration (before,
//! and without, any broker) -> the embedded broker in local mode when no broker URL is set ->
//! the MQTT control plane. SIGTERM or SIGINT: stop accepting configurations, stop every job
//! (each recorder writes its fragment in flight and closes its segment), publish `offline`,
//! exit 0, all within 10 s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info, warn};

use kvs_edge_agent::aws::greengrass::GreengrassConfig;
use kvs_edge_agent::aws::greengrass_ipc::GreengrassSecretSource;
use kvs_edge_agent::aws::iot_credentials::IotCredentialsProvider;
use kvs_edge_agent::aws::metrics::{self, CloudWatchSink, PublisherConfig};
use kvs_edge_agent::aws::secrets::SecretsManagerSource;
use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::{Clock, RealClock};
use kvs_edge_agent::control::mqtt::{BrokerOptions, ControlConfig};
use kvs_edge_agent::control::topics::Topics;
use kvs_edge_agent::edge_config::ApiTimestamp;
use kvs_edge_agent::janitor::policy::DiskReserve;
use kvs_edge_agent::recorder::fragmenter::FragmenterConfig;
use kvs_edge_agent::recorder::rtsp::RtspOptions;
use kvs_edge_agent::settings::{Mode, Settings};
use kvs_edge_agent::supervisor::secrets::{LocalSecretsFile, NoSecrets, SecretSource};
use kvs_edge_agent::supervisor::{Supervisor, SupervisorConfig};
use kvs_edge_agent::uploader::{Options as UploadOptions, Uploader};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Optional YAML settings file (see config/agent.yaml); environment variables still apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The MQTT broker (mqtt://host:1883, mqtts://host:8883); overrides mqtt.broker_url.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Local secrets file (MediaUriSecretArn -> media URI); overrides secrets_file.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// A StartEdgeConfigurationUpdate request to apply at start, as if received over MQTT
    /// (repeatable): for sites configured from files rather than from the cloud. Applied only
    /// when it differs from the stored configuration, so a restart does not restart its jobs.
    #[arg(long, value_name = "FILE")]
    pub edge_config: Vec<String>,
}

/// The whole shutdown is bounded by this (systemd's default stop timeout is 90 s; the issue
/// asks for 10 s).
const JOBS_STOP_WITHIN: Duration = Duration::from_secs(7);
const CONTROL_STOP_WITHIN: Duration = Duration::from_millis(2500);
/// The metrics publisher's last flush (FatalError, Completed) is bounded by its own 2 s.
const METRICS_STOP_WITHIN: Duration = Duration::from_millis(2500);

/// What the control plane connects to, if anything.
enum BrokerPlan {
    Connect(BrokerOptions),
    #[cfg_attr(not(feature = "embedded-broker"), allow(dead_code))]
    Embedded(std::net::SocketAddr),
    None(&'static str),
}

fn broker_plan(
    settings: &Settings,
    flag: Option<&str>,
    greengrass: Option<&GreengrassConfig>,
) -> anyhow::Result<BrokerPlan> {
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
            settings
                .thing_name()
                .unwrap_or(kvs_edge_agent::control::topics::LOCAL_THING)
        ),
    };
    let plain = |url: &str| BrokerOptions {
        url: url.to_owned(),
        client_id: client_id.clone(),
        ..BrokerOptions::default()
    };
    if let Some(url) = flag.or(settings.file.mqtt.broker_url.as_deref()) {
        let mut o = plain(url);
        if let Some(iot) = &iot
            && url.starts_with("mqtts")
        {
            o.ca_file = Some(iot.ca_cert.clone());
            o.cert_file = Some(iot.cert.clone());
            o.key_file = Some(iot.private_key.clone());
        }
        o.mqtt_options().map_err(anyhow::Error::msg)?;
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
                .context("mqtt.embedded_broker_listen")?;
            if cfg!(feature = "embedded-broker") {
                Ok(BrokerPlan::Embedded(listen))
            } else {
                Ok(BrokerPlan::Connect(plain(&format!("mqtt://{listen}"))))
            }
        }
    }
}

/// Where media URIs come from: a local secrets file when one is given (any mode), else in
/// Greengrass mode the Secret Manager component over IPC when the nucleus answers, else AWS
/// Secrets Manager whenever there is an SDK configuration (a region).
async fn secrets(
    settings: &Settings,
    flag: Option<PathBuf>,
    sdk: Option<&aws_config::SdkConfig>,
) -> Arc<dyn SecretSource> {
    if let Some(path) = flag.or_else(|| settings.file.secrets_file.clone()) {
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
            Err(why) => info!(why, "no Greengrass IPC, so AWS Secrets Manager"),
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
        (_, Some(sdk)) => match SecretsManagerSource::new(sdk) {
            Ok(s) => {
                info!("media URIs from AWS Secrets Manager");
                return Arc::new(s);
            }
            Err(e) => warn!(error = %e, "cannot start the AWS Secrets Manager client"),
        },
    }
    Arc::new(NoSecrets)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let mut startup_configs = Vec::new();
    for input in &args.edge_config {
        let text = super::check_config::read_input(input)?;
        match kvs_edge_agent::edge_config::parse_start_request(&text) {
            Ok(request) => startup_configs.push(request),
            Err(e) => {
                for error in e.field_errors() {
                    eprintln!("kvs-edge-agent: {input}: {error}");
                }
                return Ok(ExitCode::from(2));
            }
        }
    }
    // rumqttd logs every client's connect and disconnect (the latter as an error): quiet it
    // unless debugging. RUST_LOG overrides all of this.
    let level = settings.log.level.filter_directive();
    let directive = match level {
        "debug" | "trace" => level.to_owned(),
        _ => format!("{level},rumqttd=off"),
    };
    // Held to the end of `run`: dropping it flushes the last lines ("stopped") to the file.
    let _log_guard = match kvs_edge_agent::logging::init_with_files(&directive, &settings.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kvs-edge-agent: invalid settings: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mode = match &settings.mode {
        Mode::Local => "local".to_owned(),
        Mode::Iot(iot) => format!("iot (thing {})", iot.thing_name),
        Mode::Greengrass { root } => format!("greengrass (root {})", root.display()),
    };
    info!(version = env!("CARGO_PKG_VERSION"), mode, "starting");

    let state_dir = settings.state_directory();
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        let dir = &settings.recording_directory;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the recording directory {}", dir.display()))?;
    }
    let catalog = match Catalog::open(&settings.catalog_path()) {
        Ok(c) => Arc::new(c),
        Err(e @ kvs_edge_agent::catalog::CatalogError::Damaged { .. }) => {
            error!("{e}");
            eprintln!("kvs-edge-agent: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    {
        use kvs_edge_agent::store::directory::{Bind, BindError, bind};
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
            Err(e) => {
                // Another catalog's media, or media this catalog never indexed: refusing is the
                // only way not to treat it as garbage.
                error!("{e}");
                eprintln!("kvs-edge-agent: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let configs = catalog.configs()?;
    info!(
        catalog = %settings.catalog_path().display(),
        streams = configs.len(),
        "catalog open"
    );
    if configs.len() > settings.file.max_streams as usize {
        warn!(
            stored = configs.len(),
            max_streams = settings.file.max_streams,
            "more stored configurations than max_streams"
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let start_time = ApiTimestamp(clock.now());
    let rec = &settings.file.recorder;
    let sup_cfg = SupervisorConfig {
        recording_dir: settings.recording_directory.clone(),
        max_streams: settings.file.max_streams as usize,
        fragmenter: FragmenterConfig {
            min_fragment_ms: i64::from(rec.min_fragment_duration_ms),
            segment_duration_ms: 1000 * i64::from(rec.segment_duration_secs),
            ..FragmenterConfig::default()
        },
        rtsp: RtspOptions::default(),
        time_zone: jiff::tz::TimeZone::system(),
        disk_reserve: DiskReserve::of(&settings.file.disk_reserve),
    };
    let secrets_settings = settings.clone();
    // IoT mode: every AWS client's credentials come from the device certificate.
    let iot_credentials = match &settings.mode {
        Mode::Iot(iot) => match IotCredentialsProvider::new(iot) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("kvs-edge-agent: invalid settings: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    };
    // Greengrass mode: the region (unless AWS_REGION is set) from the nucleus' configuration,
    // credentials from its token exchange service.
    let greengrass = match &settings.mode {
        Mode::Greengrass { root } => match GreengrassConfig::load(root) {
            Ok(c) => {
                info!(
                    thing = c.thing_name,
                    region = c.region,
                    "Greengrass nucleus configuration"
                );
                Some(c)
            }
            Err(e) => {
                eprintln!("kvs-edge-agent: invalid settings: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    };
    let plan = match broker_plan(&settings, args.broker.as_deref(), greengrass.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kvs-edge-agent: invalid settings: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    // The thing the agent answers for: IoT mode's, the nucleus' under Greengrass, else the
    // settings file's (local mode may serve every thing).
    let agent_thing = greengrass
        .as_ref()
        .map(|g| g.thing_name.clone())
        .or_else(|| settings.thing_name().map(str::to_owned));
    let topics = Topics::new(settings.file.mqtt.topic_prefix.clone(), agent_thing.clone());

    let region = settings.region.clone();
    let recording_dir = settings.recording_directory.clone();
    let metrics_cfg = settings.cloudwatch_enabled.then(|| PublisherConfig {
        thing: agent_thing
            .clone()
            .unwrap_or_else(|| kvs_edge_agent::control::topics::LOCAL_THING.to_owned()),
        interval: Duration::from_secs(u64::from(settings.file.cloudwatch.interval_secs)),
        buffer: settings.file.cloudwatch.buffer_datums as usize,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers are installed first, so a stop request is never lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        // Uploads need a region (and credentials from the SDK's chain); local mode without
        // AWS_REGION records only.
        // One SDK configuration (region, credentials, endpoints) for every AWS client.
        let sdk = match (&greengrass, &region) {
            (Some(gg), _) => Some(kvs_edge_agent::aws::greengrass::sdk_config(gg).await),
            (None, Some(_)) => {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(p) = iot_credentials {
                    loader = loader.credentials_provider(p);
                }
                Some(loader.load().await)
            }
            (None, None) => None,
        };
        let secrets = secrets(&secrets_settings, args.secrets_file, sdk.as_ref()).await;
        let uploader = match &sdk {
            Some(sdk) => match Uploader::new(
                sdk,
                catalog.clone(),
                recording_dir,
                clock.clone(),
                UploadOptions::default(),
            ) {
                Ok(u) => Some(u),
                Err(e) => {
                    warn!(error = %e, "uploads are off");
                    None
                }
            },
            None => {
                info!("no AWS_REGION: recording only, uploads are off");
                None
            }
        };
        let agent_clock = clock.clone();
        let supervisor = Supervisor::new(catalog, clock, sup_cfg, secrets, uploader, events_tx);
        kvs_edge_agent::service::status("resuming the stored configurations");
        supervisor.resume().await;
        for request in startup_configs {
            let thing = kvs_edge_agent::supervisor::thing_of(&request.edge_config);
            let stream = request.stream_name().to_owned();
            let status = supervisor.apply(&thing, request, false).await;
            info!(stream, ?status, "applied --edge-config");
        }
        let (metrics_stop, metrics_stop_rx) = kvs_edge_agent::stop::channel();
        let metrics = match (metrics_cfg, &sdk) {
            (Some(cfg), Some(sdk)) => Some(tokio::spawn(metrics::run(
                Arc::new(supervisor.clone()),
                Arc::new(CloudWatchSink::new(sdk)),
                Arc::new(RealClock),
                cfg,
                metrics_stop_rx,
            ))),
            (Some(_), None) => {
                warn!("AWS_KVS_EDGE_CLOUDWATCH_ENABLED but no AWS configuration: metrics are off");
                None
            }
            (None, _) => None,
        };

        let broker = match plan {
            BrokerPlan::Connect(o) => Some(o),
            #[cfg(feature = "embedded-broker")]
            BrokerPlan::Embedded(listen) => {
                // A broker already listening there (Mosquitto, another agent's) is used instead.
                if let Err(e) = kvs_edge_agent::control::broker::start(listen) {
                    warn!(error = %e, "using the MQTT broker already listening there");
                }
                Some(BrokerOptions {
                    url: format!("mqtt://{listen}"),
                    client_id: format!(
                        "kvs-edge-agent-{}",
                        topics
                            .thing
                            .as_deref()
                            .unwrap_or(kvs_edge_agent::control::topics::LOCAL_THING)
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
        };
        let (stop_tx, stop_rx) = kvs_edge_agent::stop::channel();
        let mut control = broker.map(|broker| {
            tokio::spawn(kvs_edge_agent::control::mqtt::run(
                ControlConfig {
                    broker,
                    topics,
                    start_time,
                    clock: agent_clock.clone(),
                },
                supervisor.clone(),
                events_rx,
                stop_rx,
            ))
        });
        info!("ready");
        let service = kvs_edge_agent::service::Service::ready(&supervisor, agent_clock).await;
        // A control plane that crashes (a panic) stops the agent with a failure so that systemd
        // restarts it, rather than leave it recording deaf to the cloud. One that cannot start
        // (its TLS files, say) says why and the stored configurations run on, as without one.
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
        let code = tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); ExitCode::SUCCESS }
            _ = int.recv() => { info!("SIGINT: stopping"); ExitCode::SUCCESS }
            e = control_crashed => {
                error!(error = %e, "the control plane crashed; stopping");
                control = None;
                ExitCode::FAILURE
            }
        };
        service.stopping().await;
        supervisor.shutdown(JOBS_STOP_WITHIN).await;
        stop_tx.stop();
        metrics_stop.stop();
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
        tokio::join!(control_stopped, metrics_stopped);
        anyhow::Ok(code)
    })?;
    // Jobs still blocked (a stuck camera, a stuck disk) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(300));
    info!("stopped");
    Ok(code)
}
