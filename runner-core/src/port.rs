//! Small helpers for picking and watching TCP ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How often `wait_for_port_unbound` re-checks (the kernel offers no event for it).
const PORT_POLL: Duration = Duration::from_millis(20);

/// Asks the OS for a free TCP port on 127.0.0.1 and returns it.
pub fn find_free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("bind an ephemeral port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the bound address", e))?
        .port();
    Ok(port)
}

/// True when nothing is bound to `port` on 127.0.0.1 nor on the wildcard address.
pub fn is_free_port(port: u16) -> bool {
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
    ];
    addrs.iter().all(|a| TcpListener::bind(a).is_ok())
}

/// Waits until `port` is free (see [`is_free_port`]); returns `Ok(false)` if it is
/// still bound when `timeout` expires.
pub async fn wait_for_port_unbound(port: u16, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_free_port(port) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(PORT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn free_port_lifecycle() {
        let port = find_free_port().unwrap();
        assert!(is_free_port(port));
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        assert!(!is_free_port(port));
        assert!(!wait_for_port_unbound(port, Duration::from_millis(60))
            .await
            .unwrap());
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        assert!(wait_for_port_unbound(port, Duration::from_secs(5))
            .await
            .unwrap());
        release.await.unwrap();
    }
}
