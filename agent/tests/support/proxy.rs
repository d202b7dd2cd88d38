//! A TCP proxy between the agent and the KVS emulator that cuts and stalls connections, and
//! counts what it saw of PutMedia.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
