//! Shared by the reliability suite (agent/tests/reliability.rs): a seeded RNG, the agent daemon
//! as a child process that can be killed with SIGKILL, frozen and restarted, a read-only
//! snapshot of the catalog, `kvs-edge-agent check`, a TCP proxy that cuts and stalls
//! connections, and the summary table.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const BIN: &str = env!("CARGO_BIN_EXE_kvs-edge-agent");
pub const THING: &str = "hub-1";

// --- randomness ---------------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough to pick kill instants.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi exclusive; `lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// RELIABILITY_SEED when set (to replay a run), else a fresh seed.
pub fn seed() -> u64 {
    if let Some(s) = std::env::var_os("RELIABILITY_SEED") {
        let s = s.to_string_lossy();
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RELIABILITY_SEED={s:?} is not a u64"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// RELIABILITY_LONG=1: more faults, longer runs (for humans, not CI).
pub fn long_mode() -> bool {
    std::env::var("RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 10 ms until it holds; `Err` with `what` after `limit`. The conditions read
/// state for which there is no event to wait on (the catalog, a log file, a counter).
pub fn poll_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- the agent daemon ---------------------------------------------------------------------------

/// `kvs-edge-agent run` in its own directory; each start logs to its own file.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    /// Recording directory; the catalog lives in it (the default state directory).
    pub rec: PathBuf,
    pub config: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// One log per start, in order.
    pub logs: Vec<PathBuf>,
    /// The catalog, when not in the recording directory (`state_directory`).
    pub db: Option<PathBuf>,
}

impl Daemon {
    /// Writes the settings file (`yaml`) and remembers how to start the agent.
    pub fn new(dir: &Path, yaml: &str, args: &[String], env: &[(String, String)]) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        Daemon {
            child: None,
            dir: dir.to_owned(),
            rec: dir.join("rec"),
            config,
            args: args.to_vec(),
            env: env.to_vec(),
            logs: Vec::new(),
            db: None,
        }
    }

    pub fn catalog(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.rec.join(kvs_edge_agent::catalog::FILE_NAME))
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        let log = self.dir.join(format!("agent-{}.log", self.logs.len()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &self.rec)
            .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", self.dir.join("log"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info,rumqttd=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the agent");
        self.child = Some(child);
        self.logs.push(log);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// The log of the current (or last) start.
    pub fn log(&self) -> String {
        self.logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last lines of every start's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL. Fails when the agent had already exited (a crash of its own).
    pub fn kill9(&mut self) -> Result<(), String> {
        let mut c = self.child.take().expect("agent running");
        if let Some(status) = c.try_wait().unwrap() {
            return Err(format!("the agent exited on its own: {status:?}"));
        }
        c.kill().unwrap();
        let status = c.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(9) {
            return Err(format!("the agent ended with {status:?}, not by SIGKILL"));
        }
        Ok(())
    }

    /// SIGTERM, bounded to 15 s.
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let mut c = self.child.take().expect("agent running");
        signal(c.id(), "-TERM");
        let t0 = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return Ok(status);
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                return Err("the agent did not exit within 15 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP: the agent is frozen wherever it is, as a crash would leave it, but can go on.
    pub fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    pub fn thaw(&self) {
        signal(self.pid(), "-CONT");
    }

    /// `kvs-edge-agent check [--repair]` on this agent's store.
    pub fn check(&self, repair: bool) -> Check {
        let mut c = Command::new(BIN);
        c.arg("check")
            .arg("--recording-dir")
            .arg(&self.rec)
            .arg("--catalog")
            .arg(self.catalog())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("RUST_LOG", "warn");
        if repair {
            c.arg("--repair");
        }
        let out = c.output().expect("run check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Check {
            ok: out.status.success(),
            problems: stdout
                .lines()
                .filter_map(|l| l.strip_prefix("problem: "))
                .map(str::to_owned)
                .collect(),
            agree: stdout.contains("catalog and disk agree"),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_quiet(c.id(), "-CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn signal_quiet(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// What `check` said.
#[derive(Debug, Clone)]
pub struct Check {
    /// Exit status 0.
    pub ok: bool,
    pub agree: bool,
    pub problems: Vec<String>,
    pub output: String,
}

impl Check {
    /// Problems other than those a crash (or a frozen agent) may leave on the newest segment:
    /// the unindexed tail of the OPEN segment (written and fsynced, row not yet committed), and a
    /// file created but not yet indexed, newer than every row. Recovery repairs both.
    pub fn unexpected(&self, snap: &Snapshot) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| !crash_residue(p, snap))
            .cloned()
            .collect()
    }
}

fn crash_residue(problem: &str, snap: &Snapshot) -> bool {
    let Some((path, what)) = problem.split_once(": ") else {
        return false;
    };
    if what.contains("past the indexed size") {
        return snap.segments.get(path).is_some_and(|s| s.state == "OPEN");
    }
    if what == "file with no catalog row" {
        let Some(start) = file_start_ms(path) else {
            return false;
        };
        let newest = snap.segments.values().map(|s| s.start_ms).max();
        return newest.is_none_or(|n| start >= n);
    }
    false
}

/// The start time in a segment file's name (`{ms}.mkv` or `{ms}-{n}.mkv`).
pub fn file_start_ms(path: &str) -> Option<i64> {
    let name = Path::new(path)
        .file_name()?
        .to_str()?
        .strip_suffix(".mkv")?;
    name.split('-').next()?.parse().ok()
}

// --- catalog snapshots --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    pub id: i64,
    pub path: String,
    pub state: String,
    pub start_ms: i64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frag {
    pub segment: String,
    pub offset: u64,
    pub size: u64,
    pub timecode_ms: i64,
    pub duration_ms: i64,
    pub frame_count: u32,
    pub upload_state: String,
    pub fragment_number: Option<String>,
}

/// One stream's segments and fragments, read in one transaction. Segments are keyed by path and
/// fragments by (path, offset): SQLite reuses the row ids of deleted rows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub segments: BTreeMap<String, Seg>,
    pub frags: BTreeMap<(String, u64), Frag>,
}

impl Snapshot {
    pub fn committed(&self) -> usize {
        self.frags.len()
    }

    pub fn uploaded(&self) -> usize {
        self.frags
            .values()
            .filter(|f| f.upload_state == "UPLOADED")
            .count()
    }

    pub fn newest_timecode(&self) -> Option<i64> {
        self.frags.values().map(|f| f.timecode_ms).max()
    }
}

/// Reads the catalog read-only with rusqlite (an empty snapshot while it does not exist yet).
pub fn snapshot(db: &Path, stream: &str) -> Snapshot {
    if !db.exists() {
        return Snapshot::default();
    }
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut snap = Snapshot::default();
    let has_tables: i64 = conn
        .query_row(
            "select count(*) from sqlite_master where name in ('segment', 'fragment')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if has_tables < 2 {
        return snap;
    }
    conn.execute_batch("begin").unwrap();
    {
        let mut st = conn
            .prepare("select id, path, state, start_ms, size from segment where stream_name = ?1")
            .unwrap();
        let rows = st
            .query_map([stream], |r| {
                Ok(Seg {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    start_ms: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                })
            })
            .unwrap();
        for s in rows {
            let s = s.unwrap();
            snap.segments.insert(s.path.clone(), s);
        }
        let mut st = conn
            .prepare(
                "select s.path, f.offset, f.size, f.timecode_ms, f.frame_count, f.upload_state, \
                 f.fragment_number, f.duration_ms from fragment f join segment s on s.id = f.segment_id \
                 where s.stream_name = ?1",
            )
            .unwrap();
        let rows = st
            .query_map([stream], |r| {
                Ok(Frag {
                    segment: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    size: r.get::<_, i64>(2)? as u64,
                    timecode_ms: r.get(3)?,
                    frame_count: r.get::<_, i64>(4)? as u32,
                    upload_state: r.get(5)?,
                    fragment_number: r.get(6)?,
                    duration_ms: r.get(7)?,
                })
            })
            .unwrap();
        for f in rows {
            let f = f.unwrap();
            snap.frags.insert((f.segment.clone(), f.offset), f);
        }
    }
    conn.execute_batch("commit").unwrap();
    snap
}

/// The job status the catalog holds: (status, details).
pub fn job_status(db: &Path, stream: &str, job: &str) -> Option<(String, Option<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(10)).ok()?;
    conn.query_row(
        "select status, details from job_status where stream_name = ?1 and job = ?2",
        [stream, job],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// Why a fragment committed in `before` may be absent from `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its segment was being deleted (a DELETING row) when `before` was taken.
    FinishedDeletion,
    /// Its whole segment went, and every fragment of it had been uploaded (DeleteAfterUpload).
    DeletedAfterUpload,
    /// Its whole segment went, older than every segment kept (size limit or retention).
    DeletedOldest,
    /// Its whole segment went, not all uploaded when `before` was taken and not the oldest
    /// (uploaded and deleted since, or lost: the cloud's record decides).
    DeletedUnproven,
}

/// Compares two snapshots of one stream: every fragment committed in `before` must be in
/// `after` unchanged (same segment, offset, size, timecode; an upload never undone), unless the
/// janitor deleted its whole segment by policy. Returns the reasons for the absences, or the
/// list of losses. Each absence comes with the fragment's timecode, so that a caller can also
/// require it to have reached the cloud.
pub fn compare(before: &Snapshot, after: &Snapshot) -> Result<Vec<(Gone, i64)>, Vec<String>> {
    let mut gone = Vec::new();
    let mut lost = Vec::new();
    let oldest_kept = after
        .segments
        .values()
        .filter(|s| s.state != "DELETING")
        .map(|s| s.start_ms)
        .min();
    for (key, f) in &before.frags {
        match after.frags.get(key) {
            Some(now) => {
                let same = (now.size, now.timecode_ms, now.frame_count)
                    == (f.size, f.timecode_ms, f.frame_count);
                if !same {
                    lost.push(format!("{key:?} changed: {f:?} -> {now:?}"));
                }
                if f.upload_state == "UPLOADED"
                    && (now.upload_state != "UPLOADED" || now.fragment_number != f.fragment_number)
                {
                    lost.push(format!("{key:?} upload undone: {f:?} -> {now:?}"));
                }
            }
            None => {
                let seg = &before.segments[&f.segment];
                let whole = !after.segments.contains_key(&f.segment)
                    && !after.frags.keys().any(|(p, _)| *p == f.segment);
                let all_uploaded = before
                    .frags
                    .values()
                    .filter(|g| g.segment == f.segment)
                    .all(|g| g.upload_state == "UPLOADED");
                if !whole {
                    lost.push(format!("{key:?} gone from a segment still indexed: {f:?}"));
                } else if seg.state == "DELETING" {
                    gone.push((Gone::FinishedDeletion, f.timecode_ms));
                } else if all_uploaded {
                    gone.push((Gone::DeletedAfterUpload, f.timecode_ms));
                } else if oldest_kept.is_none_or(|o| seg.start_ms < o) {
                    gone.push((Gone::DeletedOldest, f.timecode_ms));
                } else {
                    // Uploaded (then deleted) after `before` was taken, or lost: the caller
                    // decides, with the cloud's record.
                    gone.push((Gone::DeletedUnproven, f.timecode_ms));
                }
            }
        }
    }
    if lost.is_empty() { Ok(gone) } else { Err(lost) }
}

/// `mkvmerge -J` recognises the file as Matroska with one H.264 video track and no errors.
pub fn mkvmerge_ok(path: &Path) -> Result<(), String> {
    let out = Command::new("mkvmerge")
        .arg("-J")
        .arg(path)
        .output()
        .map_err(|e| format!("mkvmerge: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("mkvmerge -J {}: no JSON ({e})", path.display()))?;
    let container_ok = v["container"]["recognized"] == true
        && v["container"]["supported"] == true
        && v["container"]["type"] == "Matroska";
    let errors = v["errors"].as_array().map_or(0, |e| e.len());
    let h264 = v["tracks"]
        .as_array()
        .is_some_and(|t| t.len() == 1 && t[0]["codec"].as_str().is_some_and(|c| c.contains("AVC")));
    if out.status.code() == Some(2) || !container_ok || errors > 0 || !h264 {
        return Err(format!(
            "mkvmerge -J rejects {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
}

/// ffprobe decodes the file and counts `frames` frames.
pub fn ffprobe_frames_ok(path: &Path, frames: u64) -> Result<(), String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("h264,{frames}");
    if !out.status.success() || text.trim() != want {
        return Err(format!(
            "ffprobe on {}: {:?} (want {want:?}) {err}",
            path.display(),
            text.trim()
        ));
    }
    Ok(())
}

// --- the TCP proxy ------------------------------------------------------------------------------

/// Counters and switches shared by the proxy's connections.
#[derive(Default)]
pub struct ProxyState {
    /// PutMedia connections opened.
    pub putmedia_conns: AtomicU64,
    /// PutMedia connections open now.
    pub putmedia_open: AtomicU64,
    /// Body bytes forwarded on the PutMedia connection open now (reset at each one).
    pub putmedia_body_now: AtomicU64,
    /// Connections cut while a PutMedia body was under way.
    pub cut_mid_body: AtomicU64,
    /// Stalls that held a PutMedia connection with its body under way.
    pub stalled_mid_body: AtomicU64,
    /// GetDataEndpoint answers rewritten to point at the proxy.
    pub rewrites: AtomicU64,
    stalled: AtomicBool,
}

/// Forwards 127.0.0.1:port to `upstream`, rewriting the DataEndpoint of GetDataEndpoint answers
/// to itself (so PutMedia goes through it too). `cut()` drops every open connection, `stall()`
/// stops forwarding (both ways) until `resume()`.
pub struct Proxy {
    pub port: u16,
    pub state: Arc<ProxyState>,
    cut_tx: watch::Sender<u64>,
    stall_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let from = format!("http://127.0.0.1:{upstream}").into_bytes();
        let to = format!("http://127.0.0.1:{port}").into_bytes();
        assert_eq!(from.len(), to.len(), "the rewrite keeps Content-Length");
        let state = Arc::new(ProxyState::default());
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let (stall_tx, stall_rx) = watch::channel(false);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (st, cut, stall) = (st.clone(), cut_rx.clone(), stall_rx.clone());
                let (from, to) = (from.clone(), to.clone());
                tokio::spawn(connection(client, server, st, cut, stall, from, to));
            }
        });
        Proxy {
            port,
            state,
            cut_tx,
            stall_tx,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection now (RST).
    pub fn cut(&self) {
        self.cut_tx.send_modify(|g| *g += 1);
    }

    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
        self.stall_tx.send_replace(true);
    }

    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        self.stall_tx.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(
    client: TcpStream,
    server: TcpStream,
    st: Arc<ProxyState>,
    mut cut: watch::Receiver<u64>,
    stall: watch::Receiver<bool>,
    from: Vec<u8>,
    to: Vec<u8>,
) {
    cut.borrow_and_update();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let putmedia = Arc::new(AtomicBool::new(false));
    // Body bytes forwarded on this connection.
    let body_here = Arc::new(AtomicU64::new(0));
    let up = {
        let (st, stall, putmedia) = (st.clone(), stall.clone(), putmedia.clone());
        let body_here = body_here.clone();
        async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut first = true;
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut body = n as u64;
                if first {
                    first = false;
                    if buf[..n].starts_with(b"POST /putMedia") {
                        putmedia.store(true, Ordering::SeqCst);
                        st.putmedia_conns.fetch_add(1, Ordering::SeqCst);
                        st.putmedia_open.fetch_add(1, Ordering::SeqCst);
                        st.putmedia_body_now.store(0, Ordering::SeqCst);
                        let head = buf[..n]
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(n, |p| p + 4);
                        body = (n - head) as u64;
                    }
                }
                wait_unstalled(&stall).await;
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                // Counted once forwarded: what the emulator may have received.
                if putmedia.load(Ordering::SeqCst) {
                    st.putmedia_body_now.fetch_add(body, Ordering::SeqCst);
                    body_here.fetch_add(body, Ordering::SeqCst);
                }
            }
        }
    };
    let down = {
        let st = st.clone();
        let stall = stall.clone();
        async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &mut buf[..n];
                if let Some(p) = chunk.windows(from.len()).position(|w| w == from) {
                    chunk[p..p + to.len()].copy_from_slice(&to);
                    st.rewrites.fetch_add(1, Ordering::SeqCst);
                }
                wait_unstalled(&stall).await;
                if cw.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let pm = putmedia.clone();
    let st2 = st.clone();
    // Either side closing ends the connection (both sockets dropped).
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {
            if pm.load(Ordering::SeqCst) && body_here.load(Ordering::SeqCst) > 0 {
                st2.cut_mid_body.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    if putmedia.load(Ordering::SeqCst) {
        st.putmedia_open.fetch_sub(1, Ordering::SeqCst);
    }
    // Dropping the halves closes both sockets (the select dropped the pumps).
}

async fn wait_unstalled(stall: &watch::Receiver<bool>) {
    let mut s = stall.clone();
    let _ = s.wait_for(|v| !*v).await;
}

// --- the summary --------------------------------------------------------------------------------

/// One row of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub faults: String,
    pub recovered: String,
    pub lost: String,
    pub result: String,
}

pub fn table(rows: &[Row], header: &str) -> String {
    let cols = [
        "scenario",
        "faults injected",
        "recovered",
        "fragments lost",
        "result",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.faults.clone(),
                r.recovered.clone(),
                r.lost.clone(),
                r.result.clone(),
            ]
        })
        .collect();
    let mut width = cols.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = format!("{header}\n");
    out += &line(&cols.map(str::to_owned));
    out += &line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        out += &line(c);
    }
    out
}
