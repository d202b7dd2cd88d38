//! systemd integration (`Type=notify`): READY=1 once the stored configurations are resumed,
//! STATUS= lines an operator sees in `systemctl status`, STOPPING=1 at shutdown, and watchdog
//! pings that are sent only while the agent is healthy.
//!
//! Healthy means the supervisor answers (its lock is not stuck behind a hung job) and the catalog
//! answers a trivial read (its connection lock is not stuck behind a hung disk). When either does
//! not, the ping is withheld, so systemd (`WatchdogSec=`) kills and restarts the agent, which
//! then resumes every stored configuration: a wedged agent records nothing, a restarted one does.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (not run by systemd), and the watchdog only
//! runs when systemd asked for it (`WATCHDOG_USEC`, for this process when `WATCHDOG_PID` is set).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::supervisor::Supervisor;

/// Why the agent is not healthy (the watchdog ping is withheld).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("the supervisor did not answer within {0:.1?}")]
    SupervisorStuck(Duration),
    #[error("the catalog did not answer within {0:.1?}")]
    CatalogStuck(Duration),
    #[error("the catalog failed a trivial read: {0}")]
    Catalog(#[from] CatalogError),
    #[error("the catalog probe failed: {0}")]
    Probe(#[from] tokio::task::JoinError),
}

/// Sends one notification; a failure is logged once (a socket that went away is no reason to
/// stop recording, and would otherwise be logged at every ping).
fn send(states: &[NotifyState<'_>]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// One line for STATUS= (the protocol is line based: a newline would end the message early).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Tells the service manager what the agent is doing (`systemctl status` shows it).
pub fn status(text: &str) {
    send(&[NotifyState::Status(&one_line(text))]);
}

/// Something that says whether the agent is healthy, by `deadline`; `Ok` carries the number of
/// running streams for the status line.
pub trait Health: Send {
    fn check(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<usize, HealthError>> + Send;
}

/// The agent's health: the supervisor's lock and the catalog's connection both answer.
pub struct AgentHealth {
    supervisor: Supervisor,
    /// A catalog probe that did not finish by its deadline. It is awaited again at the next
    /// check rather than replaced, so a stuck catalog holds one blocking thread, not one per
    /// check.
    catalog_probe: Option<JoinHandle<Result<i32, CatalogError>>>,
}

impl AgentHealth {
    pub fn new(supervisor: Supervisor) -> AgentHealth {
        AgentHealth {
            supervisor,
            catalog_probe: None,
        }
    }
}

impl Health for AgentHealth {
    async fn check(&mut self, deadline: Instant) -> Result<usize, HealthError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let streams = tokio::time::timeout_at(deadline, self.supervisor.running_streams())
            .await
            .map_err(|_| HealthError::SupervisorStuck(budget))?;
        let mut probe = match self.catalog_probe.take() {
            Some(probe) => probe,
            None => {
                let catalog: Arc<Catalog> = self.supervisor.catalog().clone();
                tokio::task::spawn_blocking(move || catalog.schema_version())
            }
        };
        match tokio::time::timeout_at(deadline, &mut probe).await {
            Err(_) => {
                self.catalog_probe = Some(probe);
                Err(HealthError::CatalogStuck(budget))
            }
            Ok(joined) => {
                joined??;
                Ok(streams.len())
            }
        }
    }
}

/// How long before systemd's deadline a check must have finished, so the ping still lands in
/// time.
fn margin(period: Duration) -> Duration {
    (period / 10).min(Duration::from_secs(1))
}

/// Checks the agent's health every `period` of `clock`, pinging the watchdog (when `ping`) while healthy and
/// keeping the STATUS= line current (`streams` is the count the last line showed). A check may
/// take up to `period` (less a margin): with `period` half of `WatchdogSec`, a slow but finishing
/// check still pings before systemd's deadline, and only an agent unhealthy for about `period`
/// is restarted. Runs until aborted. The check's own deadline bounds its I/O on tokio's timer.
pub async fn monitor(
    clock: Arc<dyn Clock>,
    period: Duration,
    ping: bool,
    mut streams: usize,
    mut health: impl Health,
    mut send: impl FnMut(&[NotifyState<'_>]) + Send,
) {
    let mut healthy = true;
    let mut next = clock.monotonic();
    loop {
        clock.sleep(next.saturating_sub(clock.monotonic())).await;
        let started = clock.monotonic();
        match health.check(Instant::now() + period - margin(period)).await {
            Ok(now) => {
                if !healthy {
                    info!("healthy again");
                }
                let line = (!healthy || now != streams).then(|| format!("running: {now} streams"));
                let mut states = Vec::with_capacity(2);
                if ping {
                    states.push(NotifyState::Watchdog);
                }
                if let Some(line) = &line {
                    states.push(NotifyState::Status(line));
                }
                if !states.is_empty() {
                    send(&states);
                }
                streams = now;
                healthy = true;
            }
            Err(e) => {
                let withheld = if ping { "; watchdog ping withheld" } else { "" };
                warn!(error = %e, "unhealthy{withheld}");
                let line = one_line(&format!("unhealthy: {e}{withheld}"));
                send(&[NotifyState::Status(&line)]);
                healthy = false;
            }
        }
        next = started + period;
    }
}

/// How often the STATUS= line is refreshed when systemd asked for no watchdog.
const STATUS_PERIOD: Duration = Duration::from_secs(30);

/// The agent as a systemd service, from READY=1 to STOPPING=1.
pub struct Service {
    /// The [`monitor`] task, under systemd.
    monitor: Option<JoinHandle<()>>,
}

impl Service {
    /// Sends READY=1 (call it once the stored configurations are resumed and the startup ones
    /// applied) and, under systemd, starts the health checks: watchdog pings when systemd asked
    /// for them, STATUS= updates in any case, every period of `clock`.
    pub async fn ready(supervisor: &Supervisor, clock: Arc<dyn Clock>) -> Service {
        let streams = supervisor.running_streams().await.len();
        let line = format!("running: {streams} streams");
        send(&[NotifyState::Ready, NotifyState::Status(&line)]);
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Service { monitor: None };
        }
        // A zero interval would spin; systemd never sends one, a hand-made environment might.
        let (period, ping) = match sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) {
            Some(interval) => {
                info!(period = ?interval / 2, "systemd watchdog: pinging while healthy");
                (interval / 2, true)
            }
            None => (STATUS_PERIOD, false),
        };
        let health = AgentHealth::new(supervisor.clone());
        let task = tokio::spawn(monitor(clock, period, ping, streams, health, send));
        Service {
            monitor: Some(task),
        }
    }

    /// Stops the pings, then sends STOPPING=1 (none follows it).
    pub async fn stopping(self) {
        if let Some(task) = self.monitor {
            task.abort();
            let _ = task.await;
        }
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// Answers from a script, one per check; `None` hangs until the deadline.
    struct Scripted(VecDeque<Option<Result<usize, HealthError>>>);

    impl Health for Scripted {
        async fn check(&mut self, deadline: Instant) -> Result<usize, HealthError> {
            match self.0.pop_front().flatten() {
                Some(r) => r,
                None => {
                    tokio::time::sleep_until(deadline).await;
                    Err(HealthError::SupervisorStuck(Duration::ZERO))
                }
            }
        }
    }

    /// Each notification sent, with when (from the test's start) and its lines.
    type Sent = Arc<Mutex<Vec<(Duration, String)>>>;

    fn recorded() -> (Sent, impl FnMut(&[NotifyState<'_>]) + Send) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let sink = log.clone();
        let send = move |states: &[NotifyState<'_>]| {
            let text: Vec<String> = states.iter().map(ToString::to_string).collect();
            sink.lock()
                .unwrap()
                .push((start.elapsed(), text.join("\n")));
        };
        (log, send)
    }

    fn paused() -> Arc<dyn Clock> {
        Arc::new(crate::clock::PausedClock::new(
            "2026-03-29T00:30:00Z".parse().unwrap(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn pings_only_while_healthy() {
        let script = Scripted(VecDeque::from([
            Some(Ok(1)),
            Some(Ok(1)),
            Some(Err(HealthError::CatalogStuck(Duration::from_secs(9)))),
            None,
            Some(Ok(2)),
        ]));
        let (log, send) = recorded();
        let period = Duration::from_secs(10);
        let task = tokio::spawn(monitor(paused(), period, true, 1, script, send));
        tokio::time::sleep(Duration::from_secs(45)).await;
        task.abort();
        let log = log.lock().unwrap().clone();
        let at = |s: u64| Duration::from_secs(s);
        assert_eq!(
            log,
            vec![
                (at(0), "WATCHDOG=1".to_owned()),
                (at(10), "WATCHDOG=1".to_owned()),
                (
                    at(20),
                    "STATUS=unhealthy: the catalog did not answer within 9.0s; watchdog ping withheld"
                        .to_owned()
                ),
                (
                    at(39),
                    "STATUS=unhealthy: the supervisor did not answer within 0.0ns; watchdog ping withheld"
                        .to_owned()
                ),
                (
                    at(40),
                    "WATCHDOG=1\nSTATUS=running: 2 streams".to_owned()
                ),
            ],
            "a hung check ends a margin before systemd's deadline; pings resume once healthy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_only_changes_are_told() {
        let script = Scripted(VecDeque::from([
            Some(Ok(0)),
            Some(Ok(2)),
            Some(Ok(2)),
            Some(Err(HealthError::SupervisorStuck(Duration::from_secs(27)))),
            Some(Ok(2)),
        ]));
        let (log, send) = recorded();
        let task = tokio::spawn(monitor(paused(), STATUS_PERIOD, false, 0, script, send));
        tokio::time::sleep(Duration::from_secs(125)).await;
        task.abort();
        let log = log.lock().unwrap().clone();
        let at = |s: u64| Duration::from_secs(s);
        assert_eq!(
            log,
            vec![
                (at(30), "STATUS=running: 2 streams".to_owned()),
                (
                    at(90),
                    "STATUS=unhealthy: the supervisor did not answer within 27.0s".to_owned()
                ),
                (at(120), "STATUS=running: 2 streams".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn a_live_supervisor_and_catalog_are_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Supervisor::new(
            Arc::new(Catalog::open_in_memory().unwrap()),
            Arc::new(crate::clock::RealClock),
            crate::supervisor::SupervisorConfig {
                recording_dir: dir.path().to_owned(),
                max_streams: 1,
                fragmenter: Default::default(),
                rtsp: Default::default(),
                time_zone: jiff::tz::TimeZone::UTC,
                disk_reserve: crate::settings::DiskReserveFile::default().reserve(),
                request_limits: Default::default(),
            },
            Arc::new(crate::secrets::NoSecrets),
            None,
            tx,
        );
        let mut health = AgentHealth::new(supervisor);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(health.check(deadline).await.unwrap(), 0);
        assert!(health.catalog_probe.is_none());
    }

    #[test]
    fn status_lines_stay_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
