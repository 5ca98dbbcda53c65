//! The pure "is the box online" decision.
//!
//! The monitor (netlink.rs) copies what the kernel knows into a [`Snapshot`]; this file decides
//! from it alone, with no socket and no clock, so every rule is unit-tested without a kernel.
//!
//! Online means the kernel has a route to the server through a usable interface. A usable
//! interface is watched (per [`watches`]), admin-up, has carrier, is not dormant
//! and has an address that is not link-local. A route whose output device is the loopback
//! device (the server is this box) counts as online although loopback is never watched. When
//! the server's address is not known, a default route via a usable interface stands in for the
//! route to the server.

use super::interface_patterns::watches;
use super::snapshot::{Link, Lookup, NextHop, OperState, Route, RouteKind, ServerLookup, Snapshot};
use super::{NetworkStatus, Path};
use crate::config::NetworkConfig;
use std::fmt;
use std::net::IpAddr;

/// Why an interface can or cannot carry the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    Usable,
    Gone,
    Ignored,
    Down,
    NoCarrier,
    Dormant,
    NoAddress,
}

impl Usability {
    /// Wording for a state found at start or on an interface that was not in use.
    fn state(self) -> &'static str {
        match self {
            Usability::Usable => "is usable",
            Usability::Gone => "is missing",
            Usability::Ignored => "is not watched (config network.interfaces/ignore)",
            Usability::Down => "is down",
            Usability::NoCarrier => "has no carrier",
            Usability::Dormant => "is dormant",
            Usability::NoAddress => "has no usable address",
        }
    }

    /// Wording for what just happened to the interface that carried the stream.
    fn transition(self) -> &'static str {
        match self {
            Usability::Usable => "is usable",
            Usability::Gone => "disappeared",
            Usability::Ignored => "is no longer watched",
            Usability::Down => "went down",
            Usability::NoCarrier => "lost carrier",
            Usability::Dormant => "went dormant",
            Usability::NoAddress => "lost its address",
        }
    }
}

/// How the verdict was reached, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    /// The kernel's route to the server's address.
    #[default]
    ServerRoute,
    /// Server address unknown: a default route.
    DefaultRoute,
}

/// The decision and what a person needs to understand it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub status: NetworkStatus,
    /// The interface that carries traffic to the server (`lo` when the server is local).
    pub via: Option<String>,
    /// The whole path: interface, source address, gateway.
    pub path: Option<Path>,
    /// Why the box is offline (`None` when online).
    pub reason: Option<String>,
    pub basis: Basis,
}

fn is_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether `link` can carry the stream under `config`.
pub fn usability(config: &NetworkConfig, snapshot: &Snapshot, link: &Link) -> Usability {
    if !watches(config, &link.name) {
        Usability::Ignored
    } else if !link.admin_up {
        Usability::Down
    } else if link.oper == OperState::Dormant {
        Usability::Dormant
    } else if !link.carrier || link.oper == OperState::NotUp {
        Usability::NoCarrier
    } else if !snapshot
        .addresses
        .iter()
        .any(|a| a.index == link.index && !a.tentative && !is_link_local(&a.addr))
    {
        Usability::NoAddress
    } else {
        Usability::Usable
    }
}

fn usability_of(config: &NetworkConfig, snapshot: &Snapshot, index: u32) -> Usability {
    match snapshot.link(index) {
        Some(link) => usability(config, snapshot, link),
        None => Usability::Gone,
    }
}

/// Whether traffic sent through `hop` leaves (or stays on) the box usefully. `Err` says why not.
fn hop_ok(config: &NetworkConfig, snapshot: &Snapshot, hop: &NextHop) -> Result<String, String> {
    let name = snapshot.name(hop.oif);
    if snapshot.link(hop.oif).is_some_and(|l| l.loopback) {
        return Ok(name);
    }
    match usability_of(config, snapshot, hop.oif) {
        Usability::Usable if hop.linkdown => Err(format!("{name} has no carrier (route linkdown)")),
        Usability::Usable => Ok(name),
        other => Err(format!("{name} {}", other.state())),
    }
}

/// A usable address of interface `index`, of `family`'s family when one is given (the
/// source a default route would pick when it names none).
pub fn interface_address(
    snapshot: &Snapshot,
    index: u32,
    family: Option<IpAddr>,
) -> Option<IpAddr> {
    let mut usable = snapshot
        .addresses
        .iter()
        .filter(|a| a.index == index && !a.tentative && !is_link_local(&a.addr))
        .map(|a| a.addr);
    match family {
        Some(f) => usable.find(|a| a.is_ipv4() == f.is_ipv4()),
        None => usable.next(),
    }
}

/// The decision: online or not, through which path, and why not.
pub fn evaluate(config: &NetworkConfig, snapshot: &Snapshot) -> Verdict {
    let mut interfaces: Vec<String> = snapshot
        .links
        .iter()
        .filter(|l| usability(config, snapshot, l) == Usability::Usable)
        .map(|l| l.name.clone())
        .collect();
    interfaces.sort();

    let (basis, outcome) = match &snapshot.server {
        Some(lookups) => (
            Basis::ServerRoute,
            via_server_route(config, snapshot, lookups),
        ),
        None => (Basis::DefaultRoute, via_default_route(config, snapshot)),
    };
    let (path, reason) = match outcome {
        Ok(path) => (Some(path), None),
        Err(reason) => (None, Some(reason)),
    };
    Verdict {
        status: NetworkStatus {
            online: path.is_some(),
            interfaces,
            path: path.clone(),
            ..NetworkStatus::default()
        },
        via: path.as_ref().map(|p| p.interface.clone()),
        path,
        reason,
        basis,
    }
}

fn via_server_route(
    config: &NetworkConfig,
    snapshot: &Snapshot,
    lookups: &[ServerLookup],
) -> Result<Path, String> {
    let mut first_reason = None;
    for ServerLookup { ip, lookup } in lookups {
        let outcome = match lookup {
            Lookup::NoRoute(error) => Err(format!("no route to {ip}: {error}")),
            Lookup::Route {
                kind: RouteKind::Local,
                nexthop,
                source,
            } => Ok(Path {
                interface: nexthop
                    .map(|h| snapshot.name(h.oif))
                    .unwrap_or_else(|| "lo".to_string()),
                local: *source,
                gateway: None,
            }),
            Lookup::Route {
                kind: RouteKind::Unicast,
                nexthop: Some(hop),
                source,
            } => hop_ok(config, snapshot, hop).map(|interface| Path {
                interface,
                local: source.or_else(|| interface_address(snapshot, hop.oif, Some(*ip))),
                gateway: hop.gateway,
            }),
            Lookup::Route { .. } => Err(format!("no usable route to {ip}")),
        };
        match outcome {
            Ok(path) => return Ok(path),
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Err(first_reason.unwrap_or_else(|| "server address unknown".to_string()))
}

fn via_default_route(config: &NetworkConfig, snapshot: &Snapshot) -> Result<Path, String> {
    let mut first_reason = None;
    let mut routes: Vec<&Route> = snapshot
        .default_routes
        .iter()
        .filter(|r| r.kind == RouteKind::Unicast && !r.ours)
        .collect();
    // The kernel's order: the lowest metric first.
    routes.sort_by_key(|r| r.metric);
    for route in routes {
        for hop in &route.nexthops {
            match hop_ok(config, snapshot, hop) {
                Ok(interface) => {
                    return Ok(Path {
                        interface,
                        local: route
                            .prefsrc
                            .or_else(|| interface_address(snapshot, hop.oif, hop.gateway)),
                        gateway: hop.gateway,
                    });
                }
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                }
            }
        }
    }
    Err(first_reason.unwrap_or_else(|| "no default route".to_string()))
}

/// The one log line for a change of verdict (`None` when nothing a person cares about
/// changed). `previous` is `None` at start.
pub fn change_line(
    config: &NetworkConfig,
    previous: Option<&Verdict>,
    current: &Verdict,
    snapshot: &Snapshot,
) -> Option<String> {
    if previous.is_some_and(|p| {
        p.status.online == current.status.online
            && p.status.interfaces == current.status.interfaces
            && p.path == current.path
    }) {
        return None;
    }
    let usable = UsableList(&current.status.interfaces);
    if let (Some(via), Some(path)) = (&current.via, &current.path) {
        let mut line = format!("network: online via {path}");
        if snapshot.link_by_name(via).is_some_and(|l| l.loopback) {
            line.push_str(" (server is on this box)");
        } else if current.basis == Basis::DefaultRoute {
            line.push_str(" (default route; server address not known)");
        }
        if current.status.interfaces.len() > 1 {
            line.push_str(&format!(", usable: {usable}"));
        }
        return Some(line);
    }
    // Offline. Name what happened to the interface that carried the stream, if we know it.
    let lost = previous.and_then(|p| p.via.as_ref()).and_then(|via| {
        let state = match snapshot.link_by_name(via) {
            Some(link) if link.loopback => return None,
            Some(link) => usability(config, snapshot, link),
            None => Usability::Gone,
        };
        (state != Usability::Usable).then(|| format!("{via} {}", state.transition()))
    });
    let reason = lost
        .or_else(|| current.reason.clone())
        .unwrap_or_else(|| "no route".to_string());
    let mut line = format!("network: offline ({reason})");
    if !current.status.interfaces.is_empty() {
        line.push_str(&format!(", usable: {usable}"));
    }
    Some(line)
}

struct UsableList<'a>(&'a [String]);

impl fmt::Display for UsableList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::snapshot::Address;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LO: u32 = 1;
    const ETH0: u32 = 2;
    const WLAN0: u32 = 3;
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.to_string(),
            admin_up: true,
            carrier: true,
            loopback: index == LO,
            oper: if index == LO {
                OperState::Unknown
            } else {
                OperState::Up
            },
        }
    }

    fn addr(index: u32, addr: &str) -> Address {
        Address {
            index,
            addr: addr.parse().expect("test address literal"),
            tentative: false,
        }
    }

    fn hop(oif: u32) -> NextHop {
        NextHop {
            oif,
            linkdown: false,
            gateway: None,
        }
    }

    fn via(oif: u32) -> Lookup {
        Lookup::Route {
            kind: RouteKind::Unicast,
            nexthop: Some(hop(oif)),
            source: None,
        }
    }

    fn default_route(nexthops: Vec<NextHop>) -> Route {
        Route {
            kind: RouteKind::Unicast,
            table: 254,
            nexthops,
            metric: 0,
            prefsrc: None,
            ours: false,
        }
    }

    /// A box with eth0 up, addressed, default route via eth0, server reached via eth0.
    fn healthy() -> Snapshot {
        Snapshot {
            links: vec![link(LO, "lo"), link(ETH0, "eth0")],
            addresses: vec![
                addr(LO, "127.0.0.1"),
                addr(ETH0, "192.0.2.2"),
                addr(ETH0, "fe80::1"),
            ],
            default_routes: vec![default_route(vec![hop(ETH0)])],
            server: Some(vec![ServerLookup {
                ip: SERVER,
                lookup: via(ETH0),
            }]),
            ours: Default::default(),
        }
    }

    fn all() -> NetworkConfig {
        NetworkConfig {
            netlink: true,
            ..NetworkConfig::default()
        }
    }

    fn link_mut(s: &mut Snapshot, index: u32) -> &mut Link {
        s.links
            .iter_mut()
            .find(|l| l.index == index)
            .expect("test snapshot has this link")
    }

    #[test]
    fn healthy_box_is_online_via_eth0() {
        let v = evaluate(&all(), &healthy());
        assert!(v.status.online);
        assert_eq!(v.status.interfaces, vec!["eth0"]);
        assert_eq!(v.via.as_deref(), Some("eth0"));
        assert_eq!(
            change_line(&all(), None, &v, &healthy()).as_deref(),
            Some("network: online via eth0 src 192.0.2.2")
        );
    }

    #[test]
    fn carrier_lost_is_offline_even_though_the_route_remains() {
        let before = evaluate(&all(), &healthy());
        let mut s = healthy();
        link_mut(&mut s, ETH0).carrier = false;
        link_mut(&mut s, ETH0).oper = OperState::NotUp;
        let v = evaluate(&all(), &s);
        assert!(!v.status.online);
        assert!(v.status.interfaces.is_empty());
        assert_eq!(
            change_line(&all(), Some(&before), &v, &s).as_deref(),
            Some("network: offline (eth0 lost carrier)")
        );
        assert_eq!(v.reason.as_deref(), Some("eth0 has no carrier"));
    }

    #[test]
    fn admin_down_is_offline() {
        let mut s = healthy();
        link_mut(&mut s, ETH0).admin_up = false;
        link_mut(&mut s, ETH0).carrier = false;
        let v = evaluate(&all(), &s);
        assert!(!v.status.online);
        assert_eq!(v.reason.as_deref(), Some("eth0 is down"));
    }

    #[test]
    fn address_removed_is_offline_even_if_the_route_survives() {
        let before = evaluate(&all(), &healthy());
        let mut s = healthy();
        s.addresses.retain(|a| a.addr.to_string() != "192.0.2.2");
        let v = evaluate(&all(), &s);
        assert!(!v.status.online, "a link-local address alone is not usable");
        assert_eq!(
            change_line(&all(), Some(&before), &v, &s).as_deref(),
            Some("network: offline (eth0 lost its address)")
        );
    }

    #[test]
    fn address_and_route_removed_is_offline_with_the_kernel_reason() {
        let mut s = healthy();
        s.addresses.retain(|a| a.addr.to_string() != "192.0.2.2");
        s.default_routes.clear();
        s.server = Some(vec![ServerLookup {
            ip: SERVER,
            lookup: Lookup::NoRoute("Network is unreachable".into()),
        }]);
        let v = evaluate(&all(), &s);
        assert!(!v.status.online);
        assert_eq!(
            v.reason.as_deref(),
            Some("no route to 192.0.2.1: Network is unreachable")
        );
    }

    #[test]
    fn ipv4_link_local_and_tentative_ipv6_are_not_usable_addresses() {
        let mut s = healthy();
        s.addresses = vec![
            addr(ETH0, "169.254.3.4"),
            Address {
                tentative: true,
                ..addr(ETH0, "2001:db8::2")
            },
        ];
        assert!(!evaluate(&all(), &s).status.online);
        s.addresses[1].tentative = false;
        assert!(evaluate(&all(), &s).status.online);
    }

    #[test]
    fn route_flagged_linkdown_is_not_usable() {
        let mut s = healthy();
        s.server = Some(vec![ServerLookup {
            ip: SERVER,
            lookup: Lookup::Route {
                kind: RouteKind::Unicast,
                nexthop: Some(NextHop {
                    linkdown: true,
                    ..hop(ETH0)
                }),
                source: None,
            },
        }]);
        let v = evaluate(&all(), &s);
        assert!(!v.status.online);
        assert_eq!(
            v.reason.as_deref(),
            Some("eth0 has no carrier (route linkdown)")
        );
    }

    #[test]
    fn server_on_loopback_is_online_even_with_every_interface_down() {
        let mut s = healthy();
        link_mut(&mut s, ETH0).carrier = false;
        s.server = Some(vec![ServerLookup {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lookup: Lookup::Route {
                kind: RouteKind::Local,
                nexthop: Some(hop(LO)),
                source: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            },
        }]);
        let v = evaluate(&all(), &s);
        assert!(v.status.online);
        assert_eq!(v.via.as_deref(), Some("lo"));
        assert!(v.status.interfaces.is_empty(), "lo is never listed");
        assert_eq!(
            change_line(&all(), None, &v, &s).as_deref(),
            Some("network: online via lo src 127.0.0.1 (server is on this box)")
        );
    }

    #[test]
    fn ignored_interface_does_not_count() {
        let config = NetworkConfig {
            ignore: vec!["eth*".into()],
            ..all()
        };
        let v = evaluate(&config, &healthy());
        assert!(!v.status.online);
        assert!(v.status.interfaces.is_empty());
        assert_eq!(
            v.reason.as_deref(),
            Some("eth0 is not watched (config network.interfaces/ignore)")
        );
        let only_wlan = NetworkConfig {
            interfaces: vec!["wlan0".into()],
            ..all()
        };
        assert!(!evaluate(&only_wlan, &healthy()).status.online);
    }

    #[test]
    fn dormant_is_not_usable() {
        let mut s = healthy();
        link_mut(&mut s, ETH0).oper = OperState::Dormant;
        let v = evaluate(&all(), &s);
        assert!(!v.status.online);
        assert_eq!(v.reason.as_deref(), Some("eth0 is dormant"));
    }

    #[test]
    fn default_route_fallback_when_the_server_address_is_unknown() {
        let mut s = healthy();
        s.server = None;
        let v = evaluate(&all(), &s);
        assert!(v.status.online);
        assert_eq!(v.basis, Basis::DefaultRoute);
        assert_eq!(
            change_line(&all(), None, &v, &s).as_deref(),
            Some(
                "network: online via eth0 src 192.0.2.2 (default route; server address not known)"
            )
        );

        s.default_routes.clear();
        let v = evaluate(&all(), &s);
        assert!(!v.status.online, "no default route, no server address");
        assert_eq!(v.reason.as_deref(), Some("no default route"));

        // A default route through an interface without carrier does not count.
        let mut s = healthy();
        s.server = None;
        link_mut(&mut s, ETH0).carrier = false;
        assert!(!evaluate(&all(), &s).status.online);

        // Unreachable/blackhole default routes carry nothing.
        let mut s = healthy();
        s.server = None;
        s.default_routes[0].kind = RouteKind::Other;
        assert!(!evaluate(&all(), &s).status.online);
    }

    #[test]
    fn fallback_uses_any_usable_nexthop_of_a_multipath_default() {
        let mut s = healthy();
        s.server = None;
        s.links.push(Link {
            carrier: false,
            ..link(WLAN0, "wlan0")
        });
        s.addresses.push(addr(WLAN0, "2001:db8::5"));
        s.default_routes = vec![default_route(vec![hop(WLAN0), hop(ETH0)])];
        let v = evaluate(&all(), &s);
        assert_eq!(v.via.as_deref(), Some("eth0"));
    }

    #[test]
    fn any_server_address_with_a_usable_route_is_enough() {
        let mut s = healthy();
        s.server = Some(vec![
            ServerLookup {
                ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                lookup: Lookup::NoRoute("Network is unreachable".into()),
            },
            ServerLookup {
                ip: SERVER,
                lookup: via(ETH0),
            },
        ]);
        assert!(evaluate(&all(), &s).status.online);
    }

    #[test]
    fn second_interface_keeps_the_box_online_and_is_listed() {
        let mut s = healthy();
        s.links.push(link(WLAN0, "wlan0"));
        s.addresses.push(addr(WLAN0, "198.51.100.7"));
        let before = evaluate(&all(), &s);
        assert_eq!(before.status.interfaces, vec!["eth0", "wlan0"]);
        assert_eq!(
            change_line(&all(), None, &before, &s).as_deref(),
            Some("network: online via eth0 src 192.0.2.2, usable: eth0, wlan0")
        );

        // eth0 goes away; the kernel now routes via wlan0.
        s.links.retain(|l| l.index != ETH0);
        s.addresses.retain(|a| a.index != ETH0);
        s.server = Some(vec![ServerLookup {
            ip: SERVER,
            lookup: via(WLAN0),
        }]);
        let after = evaluate(&all(), &s);
        assert_eq!(after.via.as_deref(), Some("wlan0"));
        assert_eq!(
            change_line(&all(), Some(&before), &after, &s).as_deref(),
            Some("network: online via wlan0 src 198.51.100.7")
        );
    }

    #[test]
    fn interface_gone_is_named_in_the_offline_line() {
        let before = evaluate(&all(), &healthy());
        let mut s = healthy();
        s.links.retain(|l| l.index != ETH0);
        s.addresses.retain(|a| a.index != ETH0);
        s.default_routes.clear();
        s.server = Some(vec![ServerLookup {
            ip: SERVER,
            lookup: Lookup::NoRoute("Network is unreachable".into()),
        }]);
        let v = evaluate(&all(), &s);
        assert_eq!(
            change_line(&all(), Some(&before), &v, &s).as_deref(),
            Some("network: offline (eth0 disappeared)")
        );
    }

    #[test]
    fn no_line_when_nothing_changed() {
        let v = evaluate(&all(), &healthy());
        assert_eq!(change_line(&all(), Some(&v), &v, &healthy()), None);
    }
}
