//! Ports on the loopback interface.

use std::time::Duration;

/// A port nothing listens on now (the OS picks it; a peer then binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something accepts TCP connections on `port` within `limit`.
#[allow(dead_code, reason = "for the tests that start a listening peer")]
pub fn wait_listening(port: u16, limit: Duration) -> bool {
    crate::poll::wait_until(&format!("a listener on {port}"), limit, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .is_ok()
}
