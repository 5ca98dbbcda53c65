//! What the kernel knows, copied at one instant: links, addresses, default routes, its answers
//! to "how would you send to the server", and the steering of ours it holds.
//!
//! Plain data, no logic: `netlink.rs` fills it in, the pure decisions (`decide.rs`,
//! `uplinks.rs`, `steer.rs`) read it. Kept apart from all of them so that none of them has to
//! import another's types the wrong way round.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// RFC 2863 operational state, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Up,
    /// Drivers that do not track operstate (dummy, tun, loopback) report unknown.
    Unknown,
    /// Carrier is there but something else is pending (Wi-Fi before WPA completes).
    Dormant,
    /// Down, lower layer down, not present, testing.
    NotUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFF_UP`.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`.
    pub carrier: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    pub oper: OperState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: IpAddr,
    /// IPv6 duplicate address detection still running or failed: not usable yet.
    pub tentative: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub oif: u32,
    /// `RTNH_F_LINKDOWN` or `RTNH_F_DEAD`: the kernel knows this path cannot carry traffic.
    pub linkdown: bool,
    /// `None` for a destination on the link itself.
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    /// Delivered on this box (`local` table, or the server is one of our own addresses).
    Local,
    /// Unreachable, blackhole, prohibit and other kinds that carry no traffic out.
    Other,
}

/// A route from the dump. Only default routes matter to the decision; the monitor keeps
/// only those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub table: u32,
    pub nexthops: Vec<NextHop>,
    /// The route's metric (`RTA_PRIORITY`): lower wins.
    pub metric: u32,
    /// `RTA_PREFSRC`: the source address the route asks for.
    pub prefsrc: Option<IpAddr>,
    /// Installed by this daemon's steering (never an uplink of its own).
    pub ours: bool,
}

/// The kernel's answer to "how would you send to this address" (RTM_GETROUTE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Route {
        kind: RouteKind,
        nexthop: Option<NextHop>,
        /// The source address the kernel picked (`RTA_PREFSRC` of the answer).
        source: Option<IpAddr>,
    },
    /// The kernel refused: the text of its error ("Network is unreachable").
    NoRoute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLookup {
    pub ip: IpAddr,
    pub lookup: Lookup,
}

/// What the kernel knows, copied at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    /// Default routes (destination prefix length 0), both families, all tables but `local`.
    pub default_routes: Vec<Route>,
    /// One answer per server address; `None` when the server's address is not known (no
    /// server given, or its host name is not resolved yet): then default routes decide.
    pub server: Option<Vec<ServerLookup>>,
    /// The steering the kernel holds now: our routes (and rules, when they were read).
    pub ours: Plan,
}

impl Snapshot {
    pub(super) fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub(super) fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub(super) fn name(&self, index: u32) -> String {
        self.link(index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("interface #{index}"))
    }
}

// Our steering, as the kernel holds it (read back into a snapshot) or as `steer.rs` plans it.

/// `ip rule` priority of `lookup main suppress_prefixlength 0`.
pub const PRIORITY_MAIN: u32 = 8500;
/// `ip rule` priority of the `from ADDRESS` rules: before the rule towards the server, so a
/// socket bound to one uplink's address never leaves by another.
pub const PRIORITY_FROM: u32 = 8501;
/// `ip rule` priority of the `to SERVER` rule.
pub const PRIORITY_TO: u32 = 8502;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `lookup main suppress_prefixlength 0`, per address family.
    MainUnlessDefault { v6: bool },
    /// `to SERVER lookup TABLE`.
    ToServer { server: IpAddr, table: u32 },
    /// `from LOCAL lookup TABLE`.
    FromLocal { local: IpAddr, table: u32 },
}

impl Rule {
    pub fn priority(&self) -> u32 {
        match self {
            Rule::MainUnlessDefault { .. } => PRIORITY_MAIN,
            Rule::FromLocal { .. } => PRIORITY_FROM,
            Rule::ToServer { .. } => PRIORITY_TO,
        }
    }

    pub fn v6(&self) -> bool {
        match self {
            Rule::MainUnlessDefault { v6 } => *v6,
            Rule::ToServer { server: ip, .. } | Rule::FromLocal { local: ip, .. } => ip.is_ipv6(),
        }
    }
}

/// One route in one of our tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSpec {
    pub table: u32,
    /// A host route to this address; `None` for a default route.
    pub destination: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// 0 for an `unreachable` route.
    pub oif: u32,
    pub source: Option<IpAddr>,
    pub v6: bool,
    pub metric: u32,
    /// `unreachable`: the lookup ends here with an error.
    pub unreachable: bool,
}

/// Everything the kernel must hold for the steering: empty when there is nothing to steer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub rules: BTreeSet<Rule>,
    pub routes: BTreeSet<RouteSpec>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.routes.is_empty()
    }
}
