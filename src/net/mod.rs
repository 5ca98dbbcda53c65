//! Network awareness: whether the box has a usable network right now, and which path its
//! traffic to the server takes.
//!
//! The supervisor must know at once when the box loses its way to the server (stop burning
//! retry attempts), when it comes back (retry now instead of waiting out a backoff), and when
//! the way changes (the connection is bound to a path that no longer exists: reconnect over
//! the new one). The [`NetworkMonitor`] listens to the kernel over rtnetlink and publishes a
//! [`NetworkStatus`] on a watch channel: once at start, then on every change.
//!
//! - `snapshot.rs`: what the kernel knows at one instant (links, addresses, routes, our
//!   steering), the data the pure parts below share.
//! - `decide.rs`: the pure decision over a snapshot of links, addresses and routes.
//! - `interface_patterns.rs`: the config's interface patterns: which interfaces are watched,
//!   and each uplink's rank in the preference order.
//! - `uplinks.rs`: the pure choice of uplink: preference order, settle time, flap damping.
//! - `steer.rs`: the pure plan of policy routes and rules that carry the choice out.
//! - `debounce.rs`: one evaluation per burst of netlink messages, within 50 ms.
//! - `netlink.rs`: the socket: subscribe, dump, ask the kernel for its route to the server,
//!   install and remove the steering.
//! - `monitor.rs`: the task that ties them together, and the server-name resolver.
//! - `claim.rs`: one daemon per network namespace steers (a second refuses to start).
//! - `field/`: the field uplinks (Wi-Fi, a phone, a modem): each uplink's kind, the operating
//!   system's files rendered from the config, and the Wi-Fi and modem facts read back.

mod claim;
mod debounce;
mod decide;
pub mod field;
mod interface_patterns;
mod monitor;
mod netlink;
mod snapshot;
mod steer;
mod uplinks;

use crate::config::NetworkConfig;
pub use field::{ModemStatus, UplinkKind, WifiState, WifiStatus};
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
    /// Wired, Wi-Fi, a tethering phone or a modem.
    #[serde(default)]
    pub kind: UplinkKind,
    pub state: UplinkState,
    /// Could carry the stream now (`in_use`, `usable` or `settling`).
    pub usable: bool,
    /// Times it stopped being usable since the daemon started.
    pub flaps: u64,
    /// A Wi-Fi uplink's network, state, signal and rate (from its wpa_supplicant).
    #[serde(default)]
    pub wifi: Option<WifiStatus>,
    /// A modem's state, operator and signal (from ModemManager), when known.
    #[serde(default)]
    pub modem: Option<ModemStatus>,
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

/// What a new status means for the watchdog (see [`NetworkStatus::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// Online or offline; or, ignoring paths, the usable interfaces changed.
    Network { online: bool },
    /// The path to the server changed while online: from, to and why.
    Path { reason: String },
}

impl NetworkStatus {
    /// What changed since `last` that the watchdog must hear. Online/offline always; a change
    /// of path while online; with `follow_path == false` (`network.paths: ignore`) also a
    /// change of the usable interfaces, which may be the way a waiting retry succeeds.
    /// Following the path, a change beside it (an uplink flapping while another carries the
    /// stream) says nothing, and a path change already retries at once. Counters and uplink
    /// states are for `onair status` only.
    pub fn changes_since(&self, last: &NetworkStatus, follow_path: bool) -> Vec<StatusChange> {
        let mut out = Vec::new();
        let interfaces_changed = self.interfaces != last.interfaces && !follow_path;
        if self.online != last.online || interfaces_changed {
            out.push(StatusChange::Network {
                online: self.online,
            });
        }
        if let (Some(old), Some(new)) = (&last.path, &self.path)
            && old != new
            && self.online
        {
            let reason = match &self.last_switch {
                Some(line) if self.switches != last.switches => line.clone(),
                _ => format!("{old} -> {new}"),
            };
            out.push(StatusChange::Path { reason });
        }
        out
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

pub use claim::{ClaimError, RoutingClaim, claim_routing};
pub use netlink::Removed;

/// Why `onair cleanup-routes` removed nothing.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// A daemon steers: its rules and routes are in use.
    #[error("{0}; nothing removed")]
    Claimed(#[from] ClaimError),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Removes what a daemon that is no longer running left of its steering in this network
/// namespace (rules at 8500-8502 and routes marked with protocol 111; nothing unmarked),
/// after taking the routing claim so that a running daemon's steering is never touched. What
/// the service runs when the daemon has stopped, however it stopped. Needs a tokio runtime.
pub async fn cleanup_routes() -> Result<Removed, CleanupError> {
    let _claim = claim_routing()?;
    let session = netlink::Session::open(64 * 1024)?;
    let removed = session.querier().flush().await;
    session.close().await;
    Ok(removed?)
}

/// Watches the kernel's links, addresses and routes and publishes [`NetworkStatus`].
///
/// Owns one task, which stops (and closes its socket) when the `shutdown` token passed to
/// [`NetworkMonitor::start`] is cancelled; [`NetworkMonitor::join`] waits for that. Receivers
/// from [`NetworkMonitor::subscribe`] see `changed()` return `Err` once the task has stopped.
pub struct NetworkMonitor {
    status: watch::Receiver<NetworkStatus>,
    task: JoinHandle<()>,
    reconfigured: Option<field::Reconfigured>,
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
        let started = monitor::start(config.clone(), server, shutdown).await?;
        Ok(NetworkMonitor {
            status: started.status,
            task: started.task,
            reconfigured: started.reconfigured,
        })
    }

    /// What [`field::apply`] tells when the radios read new networks (the Wi-Fi watchers
    /// then forget an old password's refusal). `None` without netlink monitoring.
    pub fn reconfigured(&self) -> Option<field::Reconfigured> {
        self.reconfigured.clone()
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

    fn path(interface: &str, local: &str) -> Option<Path> {
        Some(Path {
            interface: interface.into(),
            local: Some(local.parse().expect("literal")),
            gateway: None,
        })
    }

    #[test]
    fn what_the_watchdog_hears() {
        let live = NetworkStatus {
            online: true,
            interfaces: vec!["eth0".into(), "wlan0".into()],
            path: path("eth0", "192.0.2.2"),
            ..NetworkStatus::default()
        };
        // wlan0 blinks beside the path: only `ignore` tells the watchdog.
        let blink = NetworkStatus {
            interfaces: vec!["eth0".into()],
            ..live.clone()
        };
        assert_eq!(blink.changes_since(&live, true), vec![]);
        assert_eq!(
            blink.changes_since(&live, false),
            vec![StatusChange::Network { online: true }]
        );
        // Counters alone say nothing.
        let counted = NetworkStatus {
            switches: 4,
            ..live.clone()
        };
        assert_eq!(counted.changes_since(&live, true), vec![]);
        // eth0 dies, wlan0 takes over: a path change with the monitor's reason.
        let moved = NetworkStatus {
            interfaces: vec!["wlan0".into()],
            path: path("wlan0", "198.51.100.2"),
            switches: 1,
            last_switch: Some("eth0 ... -> wlan0 ... (eth0 lost carrier)".into()),
            ..live.clone()
        };
        assert_eq!(
            moved.changes_since(&live, true),
            vec![StatusChange::Path {
                reason: "eth0 ... -> wlan0 ... (eth0 lost carrier)".into()
            }]
        );
        // Offline, then back on another path: no switch, two network changes.
        let offline = NetworkStatus::default();
        assert_eq!(
            offline.changes_since(&live, true),
            vec![StatusChange::Network { online: false }]
        );
        assert_eq!(
            moved.changes_since(&offline, true),
            vec![StatusChange::Network { online: true }]
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
