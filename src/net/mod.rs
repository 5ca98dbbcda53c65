//! Network awareness: whether the box has a usable network right now.
//!
//! The supervisor must know at once when the box loses its way to the server (stop burning
//! retry attempts) and when it comes back (retry now instead of waiting out a backoff). The
//! [`NetworkMonitor`] listens to the kernel over rtnetlink and publishes a [`NetworkStatus`] on
//! a watch channel: once at start, then on every change.
//!
//! - `decide.rs`: the pure decision over a snapshot of links, addresses and routes.
//! - `debounce.rs`: one evaluation per burst of netlink messages, within 50 ms.
//! - `netlink.rs`: the socket: subscribe, dump, ask the kernel for its route to the server.
//! - `monitor.rs`: the task that ties them together, and the server-name resolver.

mod debounce;
mod decide;
mod monitor;
mod netlink;

use crate::config::NetworkConfig;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the network monitor reports: whether the box can reach its server now, and which
/// watched interfaces are usable (up, carrier, address).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NetworkStatus {
    pub online: bool,
    pub interfaces: Vec<String>,
}

impl fmt::Display for NetworkStatus {
    /// `online eth0,wlan0` / `offline` / `online` (server on this box, no interface needed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.online { "online" } else { "offline" })?;
        if !self.interfaces.is_empty() {
            write!(f, " {}", self.interfaces.join(","))?;
        }
        Ok(())
    }
}

/// The server whose reachability "online" means: the host of the output URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// An IP literal: the kernel is asked for its route to it.
    Ip(IpAddr),
    /// A host name, resolved with the system resolver off the runtime's threads and
    /// re-resolved after network changes. Until it resolves, a default route via a usable
    /// interface stands in for the route to the server.
    Name(String),
}

impl ServerAddr {
    /// From a URL's host part: an IP literal (IPv6 with or without brackets) or a name.
    pub fn from_host(host: &str) -> ServerAddr {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => ServerAddr::Ip(ip),
            Err(_) => ServerAddr::Name(host.to_string()),
        }
    }
}

impl FromStr for ServerAddr {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ServerAddr::from_host(s))
    }
}

impl From<IpAddr> for ServerAddr {
    fn from(ip: IpAddr) -> Self {
        ServerAddr::Ip(ip)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Ip(ip) => write!(f, "{ip}"),
            ServerAddr::Name(name) => f.write_str(name),
        }
    }
}

/// Why the network monitor could not start (or had to reconnect).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open and subscribe a NETLINK_ROUTE socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot set the netlink socket's receive buffer: {0}")]
    ReceiveBuffer(#[source] std::io::Error),
    #[error("netlink request ({what}) failed: {source}")]
    Request {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink request ({what}) got no complete answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("shut down before the initial network status was known")]
    Shutdown,
}

/// Watches the kernel's links, addresses and routes and publishes [`NetworkStatus`].
///
/// Owns one task, which stops (and closes its socket) when the `shutdown` token passed to
/// [`NetworkMonitor::start`] is cancelled; [`NetworkMonitor::join`] waits for that. Receivers
/// from [`NetworkMonitor::subscribe`] see `changed()` return `Err` once the task has stopped.
pub struct NetworkMonitor {
    status: watch::Receiver<NetworkStatus>,
    task: JoinHandle<()>,
}

impl NetworkMonitor {
    /// Opens the socket, subscribes, dumps, and returns once the initial status is known.
    ///
    /// `server` is the host of the output URL (`None`: a default route via a usable
    /// interface is enough). With `config.netlink == false` no socket is opened and the
    /// status is a constant "online" (for benchmarks of the backoff timer alone).
    pub async fn start(
        config: &NetworkConfig,
        server: Option<ServerAddr>,
        shutdown: CancellationToken,
    ) -> Result<NetworkMonitor, NetError> {
        let (status, task) = monitor::start(config.clone(), server, shutdown).await?;
        Ok(NetworkMonitor { status, task })
    }

    /// Current status; `changed()` wakes on every reported change.
    pub fn subscribe(&self) -> watch::Receiver<NetworkStatus> {
        self.status.clone()
    }

    /// The status right now.
    pub fn status(&self) -> NetworkStatus {
        self.status.borrow().clone()
    }

    /// Waits until the task has stopped after `shutdown` was cancelled, its socket closed.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            log::error!("network: monitor task failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn server_addr_from_url_hosts() {
        assert_eq!(
            ServerAddr::from_host("192.0.2.1"),
            ServerAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            ServerAddr::from_host("[2001:db8::1]"),
            ServerAddr::Ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
        );
        assert_eq!(
            ServerAddr::from_host("whip.example.com"),
            ServerAddr::Name("whip.example.com".into())
        );
    }

    #[test]
    fn status_display() {
        let status = NetworkStatus {
            online: true,
            interfaces: vec!["eth0".into(), "wlan0".into()],
        };
        assert_eq!(status.to_string(), "online eth0,wlan0");
        assert_eq!(NetworkStatus::default().to_string(), "offline");
    }
}
