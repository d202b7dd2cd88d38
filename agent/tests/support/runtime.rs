//! A tokio runtime for the synchronous tests that drive async jobs or peers.

/// Two workers, as the agent's own.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
