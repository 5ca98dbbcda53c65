//! The policy routing that carries the uplink choice out, as a plan: which rules and routes
//! the kernel must hold. Pure; `netlink.rs` compares the plan with what the kernel holds and
//! adds and removes the difference.
//!
//! Binding a socket to a source address does not choose the interface its packets leave by:
//! the kernel looks routes up by destination. A packet that leaves one uplink with the other
//! uplink's address dies at any ISP that filters by reverse path. So, as multi-WAN routers do:
//!
//! - `priority 8500: lookup main suppress_prefixlength 0` — every route of the main table more
//!   specific than a default route (the LAN, a VPN) keeps deciding, for everything;
//! - `priority 8501: from ADDRESS lookup T+ifindex` — each uplink's own table holds its
//!   default route, so a socket bound to an uplink's address (the WHIP peer's, a TCP
//!   connection once it has its source) leaves by that uplink whatever the destination (the
//!   server's ICE candidates may be other addresses) — also after the choice moved on. Below
//!   it an `unreachable` default: when the uplink is dead (and the kernel ignores its route),
//!   such a socket's packets fail on the box instead of leaking out of another uplink with
//!   the wrong source address (where they would be dropped, and their ARP requests, sent from
//!   that wrong address, ignored by a provider that checks — delaying the new connection's
//!   first packets by a second);
//! - `priority 8502: to SERVER lookup T` — table `T` (`network.route_table`) holds one route
//!   to the server, via the chosen uplink: a new unbound socket (HTTP, rtmp2sink's TCP, which
//!   cannot bind) follows the choice.
//!
//! Our routes carry protocol [`RTPROT_ONAIR`]; our rules are those at our three priorities.

use super::snapshot::{Plan, RouteSpec, Rule};
use super::uplinks::Candidate;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Route protocol number marking our routes (`ip route show proto 111`).
pub const RTPROT_ONAIR: u8 = 111;

/// Tables the kernel reserves (unspec, compat, default, main, local).
const RESERVED_TABLES: [u32; 5] = [0, 252, 253, 254, 255];
/// Metric of the `unreachable` default under each uplink's own default route.
pub const UNREACHABLE_METRIC: u32 = 4_000_000_000;

/// The table of uplink `index`: `table + index`, or `None` when that would overflow or hit a
/// table the kernel reserves.
pub fn uplink_table(table: u32, index: u32) -> Option<u32> {
    table
        .checked_add(index)
        .filter(|t| !RESERVED_TABLES.contains(t))
}

/// The plan for steering the traffic to `servers` to `chosen`, with every uplink in
/// `uplinks` reachable by its own source address. `uplinks` are a snapshot's candidates:
/// those with a default route and an address get their own table (also while their carrier
/// is down, so that a flapping cable does not rewrite the rules on every blink).
pub fn plan(
    table: u32,
    uplinks: &[Candidate],
    chosen: Option<&Candidate>,
    servers: &[IpAddr],
) -> Plan {
    use super::UplinkState::{Gone, NoAddress, NoRoute};
    let mut plan = Plan::default();
    for u in uplinks {
        if matches!(u.state, NoRoute | Gone | NoAddress) {
            continue;
        }
        let (Some(local), Some(own)) = (u.local, uplink_table(table, u.index)) else {
            continue;
        };
        plan.routes.insert(RouteSpec {
            table: own,
            destination: None,
            gateway: u.gateway,
            oif: u.index,
            source: Some(local),
            v6: local.is_ipv6(),
            metric: 0,
            unreachable: false,
        });
        plan.routes.insert(RouteSpec {
            table: own,
            destination: None,
            gateway: None,
            oif: 0,
            source: None,
            v6: local.is_ipv6(),
            metric: UNREACHABLE_METRIC,
            unreachable: true,
        });
        plan.rules.insert(Rule::FromLocal { local, table: own });
    }
    if let Some(c) = chosen
        && let Some(local) = c.local
    {
        for &server in servers
            .iter()
            .filter(|s| s.is_ipv4() == local.is_ipv4() && !s.is_loopback())
        {
            plan.routes.insert(RouteSpec {
                table,
                destination: Some(server),
                gateway: c.gateway,
                oif: c.index,
                source: Some(local),
                v6: local.is_ipv6(),
                metric: 0,
                unreachable: false,
            });
            plan.rules.insert(Rule::ToServer { server, table });
        }
    }
    let families: BTreeSet<bool> = plan.rules.iter().map(Rule::v6).collect();
    for v6 in families {
        plan.rules.insert(Rule::MainUnlessDefault { v6 });
    }
    plan
}

/// What turns `current` into `desired`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub add_routes: Vec<RouteSpec>,
    pub add_rules: Vec<Rule>,
    pub remove_rules: Vec<Rule>,
    pub remove_routes: Vec<RouteSpec>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add_routes.is_empty()
            && self.add_rules.is_empty()
            && self.remove_rules.is_empty()
            && self.remove_routes.is_empty()
    }
}

/// The difference, to be applied in field order: new routes first (a route replaced in place
/// switches the uplink in one step), then rules, then what is no longer wanted.
pub fn changes(current: &Plan, desired: &Plan) -> Changes {
    // A route with the same table and destination is replaced, not removed and re-added.
    let same_key = |a: &RouteSpec, b: &RouteSpec| {
        a.table == b.table && a.destination == b.destination && a.v6 == b.v6 && a.metric == b.metric
    };
    Changes {
        add_routes: desired
            .routes
            .difference(&current.routes)
            .cloned()
            .collect(),
        add_rules: desired.rules.difference(&current.rules).copied().collect(),
        remove_rules: current.rules.difference(&desired.rules).copied().collect(),
        remove_routes: current
            .routes
            .difference(&desired.routes)
            .filter(|old| !desired.routes.iter().any(|new| same_key(old, new)))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::UplinkState;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    fn uplink(index: u32, name: &str, local: &str, gateway: &str, state: UplinkState) -> Candidate {
        Candidate {
            index,
            name: name.into(),
            state,
            routed: true,
            gateway: Some(ip(gateway)),
            local: Some(ip(local)),
            metric: 100,
            preference: 0,
        }
    }

    fn box2() -> Vec<Candidate> {
        vec![
            uplink(2, "eth0", "192.0.2.2", "192.0.2.1", UplinkState::Usable),
            uplink(
                3,
                "wlan0",
                "198.51.100.2",
                "198.51.100.1",
                UplinkState::NoCarrier,
            ),
        ]
    }

    #[test]
    fn steering_to_the_chosen_uplink_with_a_table_per_uplink() {
        let u = box2();
        let p = plan(1100, &u, Some(&u[0]), &[ip("203.0.113.1")]);
        let rules: Vec<Rule> = p.rules.iter().copied().collect();
        assert_eq!(
            rules,
            vec![
                Rule::MainUnlessDefault { v6: false },
                Rule::ToServer {
                    server: ip("203.0.113.1"),
                    table: 1100
                },
                Rule::FromLocal {
                    local: ip("192.0.2.2"),
                    table: 1102
                },
                Rule::FromLocal {
                    local: ip("198.51.100.2"),
                    table: 1103
                },
            ]
        );
        let to_server = p
            .routes
            .iter()
            .find(|r| r.table == 1100)
            .expect("a route to the server");
        assert_eq!(to_server.destination, Some(ip("203.0.113.1")));
        assert_eq!(to_server.oif, 2);
        assert_eq!(to_server.gateway, Some(ip("192.0.2.1")));
        assert_eq!(to_server.source, Some(ip("192.0.2.2")));
        let mut wlan: Vec<(u32, bool, u32)> = p
            .routes
            .iter()
            .filter(|r| r.table == 1103)
            .map(|r| (r.metric, r.unreachable, r.oif))
            .collect();
        wlan.sort();
        assert_eq!(
            wlan,
            vec![(0, false, 3), (UNREACHABLE_METRIC, true, 0)],
            "its default route, and an unreachable one below it"
        );
        assert_eq!(p.routes.len(), 5);
    }

    #[test]
    fn switching_uplinks_replaces_the_route_to_the_server_in_place() {
        let u = box2();
        let servers = [ip("203.0.113.1")];
        let before = plan(1100, &u, Some(&u[0]), &servers);
        let after = plan(1100, &u, Some(&u[1]), &servers);
        let c = changes(&before, &after);
        assert_eq!(c.add_routes.len(), 1);
        assert_eq!(c.add_routes[0].oif, 3);
        assert!(c.add_rules.is_empty() && c.remove_rules.is_empty());
        assert!(c.remove_routes.is_empty(), "replaced, not removed: {c:?}");
        assert!(changes(&after, &after).is_empty());
    }

    #[test]
    fn nothing_chosen_leaves_only_the_source_rules_and_nothing_at_all_is_empty() {
        let u = box2();
        let p = plan(1100, &u, None, &[ip("203.0.113.1")]);
        assert!(!p.rules.iter().any(|r| matches!(r, Rule::ToServer { .. })));
        assert!(plan(1100, &[], None, &[ip("203.0.113.1")]).is_empty());
        let c = changes(&p, &Plan::default());
        assert_eq!(c.remove_rules.len(), 3);
        assert_eq!(c.remove_routes.len(), 4);
    }

    #[test]
    fn families_and_odd_cases() {
        let mut u = box2();
        // A server only reachable over IPv6 is not steered by an IPv4 uplink.
        let p = plan(1100, &u, Some(&u[0]), &[ip("2001:db8::1")]);
        assert!(!p.rules.iter().any(|r| matches!(r, Rule::ToServer { .. })));
        // A server on this box is never steered.
        let p = plan(1100, &u, Some(&u[0]), &[ip("127.0.0.1")]);
        assert!(!p.rules.iter().any(|r| matches!(r, Rule::ToServer { .. })));
        // An uplink without an address has nothing to steer by.
        u[1].state = UplinkState::NoAddress;
        u[1].local = None;
        let p = plan(1100, &u, Some(&u[0]), &[]);
        assert_eq!(p.routes.len(), 2);
        assert_eq!(uplink_table(1100, 2), Some(1102));
        assert_eq!(uplink_table(u32::MAX, 2), None);
        assert_eq!(uplink_table(250, 4), None, "254 is main");
    }
}
