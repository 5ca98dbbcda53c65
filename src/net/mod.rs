//! Network awareness: whether the box has a usable network right now, and which path its
//! traffic to the server takes.
//!
//! The supervisor must know at once when the box loses its way to the server (stop burning
//! retry attempts), when it comes back (retry now instead of waiting out a backoff), and when
//! the way changes (the connection is bound to a path that no longer exists: reconnect over
//! the new one). The [`NetworkMonitor`] listens to the kernel over rtnetlink and publishes a
//! [`NetworkStatus`] on a watch channel: once at start, then on every change.
//!
//! - `decide.rs`: the pure decision over a snapshot of links, addresses and routes.
//! - `uplinks.rs`: the pure choice of uplink: preference order, settle time, flap damping.
//! - `steer.rs`: the pure plan of policy routes and rules that carry the choice out.
//! - `debounce.rs`: one evaluation per burst of netlink messages, within 50 ms.
//! - `netlink.rs`: the socket: subscribe, dump, ask the kernel for its route to the server,
//!   install and remove the steering.
//! - `monitor.rs`: the task that ties them together, and the server-name resolver.

mod debounce;
mod decide;
mod monitor;
mod netlink;
mod steer;
mod uplinks;

use crate::config::NetworkConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the network monitor reports: whether the box can reach its server now, which
/// watched interfaces are usable (up, carrier, address), the path its traffic to the server
/// takes, and the uplinks it knows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NetworkStatus {
    pub online: bool,
    pub interfaces: Vec<String>,
    /// The kernel's route to the server right now (`None` while offline).
    pub path: Option<Path>,
    /// Every interface that has had a default route since start, in order of preference.
    pub uplinks: Vec<UplinkStatus>,
    /// Times the path changed while the box stayed online.
    pub switches: u64,
    /// The last change of path: from, to and why.
    pub last_switch: Option<String>,
    /// The daemon steers the server's traffic with policy routing right now.
    pub steered: bool,
}

/// The way packets to the server leave the box: what `ip route get SERVER` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Path {
    pub interface: String,
    /// The source address the kernel picks (the box's address on that interface).
    pub local: Option<IpAddr>,
    /// `None` when the server is on the link itself (or on this box).
    pub gateway: Option<IpAddr>,
}

impl fmt::Display for Path {
    /// `eth0 src 192.0.2.2 gw 192.0.2.1`, as `ip route get` would put it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.interface)?;
        if let Some(local) = self.local {
            write!(f, " src {local}")?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " gw {gateway}")?;
        }
        Ok(())
    }
}

/// One uplink as `onair status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub name: String,
    pub state: UplinkState,
    /// Could carry the stream now (`in_use`, `usable` or `settling`).
    pub usable: bool,
    /// Times it stopped being usable since the daemon started.
    pub flaps: u64,
}

/// An uplink's state. The names are a public contract (`onair status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkState {
    /// Carries the traffic to the server.
    InUse,
    /// Could carry it; not preferred (or the kernel routes elsewhere).
    Usable,
    /// Preferred and usable again, waiting out its settle time before the stream returns.
    Settling,
    Down,
    NoCarrier,
    Dormant,
    NoAddress,
    /// Up and addressed, but no default route through it.
    NoRoute,
    Gone,
}

impl UplinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkState::InUse => "in_use",
            UplinkState::Usable => "usable",
            UplinkState::Settling => "settling",
            UplinkState::Down => "down",
            UplinkState::NoCarrier => "no_carrier",
            UplinkState::Dormant => "dormant",
            UplinkState::NoAddress => "no_address",
            UplinkState::NoRoute => "no_route",
            UplinkState::Gone => "gone",
        }
    }

    pub fn usable(self) -> bool {
        matches!(
            self,
            UplinkState::InUse | UplinkState::Usable | UplinkState::Settling
        )
    }
}

impl fmt::Display for UplinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for NetworkStatus {
    /// `online eth0,wlan0 (path eth0 src 192.0.2.2 gw 192.0.2.1)` / `offline` / `online (path
    /// lo src 127.0.0.1)` (server on this box, no interface needed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.online { "online" } else { "offline" })?;
        if !self.interfaces.is_empty() {
            write!(f, " {}", self.interfaces.join(","))?;
        }
        if let Some(path) = &self.path {
            write!(f, " (path {path})")?;
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
        let mut status = NetworkStatus {
            online: true,
            interfaces: vec!["eth0".into(), "wlan0".into()],
            ..NetworkStatus::default()
        };
        assert_eq!(status.to_string(), "online eth0,wlan0");
        status.path = Some(Path {
            interface: "eth0".into(),
            local: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        });
        assert_eq!(
            status.to_string(),
            "online eth0,wlan0 (path eth0 src 192.0.2.2 gw 192.0.2.1)"
        );
        assert_eq!(NetworkStatus::default().to_string(), "offline");
    }
}
