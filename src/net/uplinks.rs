//! Which uplink carries the stream: the preference order, the settle time before returning
//! to a preferred uplink, and the damping of one that keeps flapping.
//!
//! A box has Ethernet and Wi-Fi (or an LTE modem). When the uplink in use dies the stream
//! must move at once to the best one left; when a preferred uplink comes back it must have
//! been usable for a while first, or a loose cable (carrier every 1–2 s) would bounce the
//! stream on every blink. Each time an uplink dies within [`FLAP_WINDOW`] of an earlier death
//! its settle time doubles, up to [`MAX_HOLD`]: a cable that flapped for half a minute is
//! trusted again only after it has held for a minute.
//!
//! Pure: the caller passes a snapshot's uplinks and the time in; the answer says which uplink
//! to use and when to ask again.

use super::decide::{Usability, interface_address, usability};
use super::interface_patterns::{preference, watches};
use super::snapshot::{Link, NextHop, Route, RouteKind, Snapshot};
use super::{UplinkKind, UplinkState, UplinkStatus};
use crate::config::NetworkConfig;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Deaths within this window count towards an uplink's flap damping.
pub const FLAP_WINDOW: Duration = Duration::from_secs(120);
/// The longest a flapping uplink is held back (unless `settle` itself is longer).
pub const MAX_HOLD: Duration = Duration::from_secs(60);
/// Uplinks remembered; beyond this, the one gone longest is forgotten.
const MAX_KNOWN: usize = 16;
/// Deaths remembered per uplink (enough to reach `MAX_HOLD` from any sane settle time).
const MAX_LOSSES: usize = 16;

/// An interface as an uplink, as one snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub index: u32,
    pub name: String,
    /// `Usable`, or why not (`NoRoute` when it has no default route).
    pub state: UplinkState,
    /// It has a default route (what makes an interface an uplink at all).
    pub routed: bool,
    pub gateway: Option<IpAddr>,
    /// The source address its traffic carries.
    pub local: Option<IpAddr>,
    /// Metric of its default route (the kernel's own preference).
    pub metric: u32,
    /// Position in `network.prefer` (`prefer.len()` when no pattern matches).
    pub preference: usize,
}

impl Candidate {
    fn rank(&self) -> (usize, u32, &str) {
        (self.preference, self.metric, &self.name)
    }

    fn usable(&self) -> bool {
        self.state == UplinkState::Usable
    }
}

/// The watched, non-loopback interfaces of `snapshot` as uplinks. `family` (a server address)
/// picks which default route counts when an interface has one per address family.
pub fn candidates(
    config: &NetworkConfig,
    snapshot: &Snapshot,
    family: Option<IpAddr>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for link in snapshot
        .links
        .iter()
        .filter(|l| !l.loopback && watches(config, &l.name))
    {
        let route = default_route_via(snapshot, link, family);
        let (gateway, metric, linkdown, prefsrc) = match route {
            Some((route, hop)) => (hop.gateway, route.metric, hop.linkdown, route.prefsrc),
            None => (None, u32::MAX, false, None),
        };
        let local = prefsrc.or_else(|| interface_address(snapshot, link.index, gateway.or(family)));
        let state = match usability(config, snapshot, link) {
            Usability::Usable if linkdown => UplinkState::NoCarrier,
            Usability::Usable if route.is_none() => UplinkState::NoRoute,
            Usability::Usable if local.is_none() => UplinkState::NoAddress,
            Usability::Usable => UplinkState::Usable,
            Usability::Gone | Usability::Ignored => UplinkState::Gone,
            Usability::Down => UplinkState::Down,
            Usability::NoCarrier => UplinkState::NoCarrier,
            Usability::Dormant => UplinkState::Dormant,
            Usability::NoAddress => UplinkState::NoAddress,
        };
        out.push(Candidate {
            index: link.index,
            name: link.name.clone(),
            state,
            routed: route.is_some(),
            gateway,
            local,
            metric,
            preference: preference(config, &link.name),
        });
    }
    out
}

/// The lowest-metric default route through `link` (not one of ours), preferring the family
/// of `family`.
fn default_route_via<'a>(
    snapshot: &'a Snapshot,
    link: &Link,
    family: Option<IpAddr>,
) -> Option<(&'a Route, &'a NextHop)> {
    let same_family = |hop: &NextHop| match (hop.gateway, family) {
        (Some(g), Some(f)) => g.is_ipv4() == f.is_ipv4(),
        _ => true,
    };
    snapshot
        .default_routes
        .iter()
        .filter(|r| r.kind == RouteKind::Unicast && !r.ours)
        .flat_map(|r| r.nexthops.iter().map(move |h| (r, h)))
        .filter(|(_, h)| h.oif == link.index)
        .min_by_key(|(r, h)| (!same_family(h), r.metric))
}

/// What [`Uplinks::update`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The uplink the stream should use (`None`: none is usable).
    pub chosen: Option<Candidate>,
    /// Why the choice moved from one uplink to another (`None` when it did not).
    pub switched: Option<String>,
    /// Ask again at this time (a preferred uplink will have settled by then).
    pub recheck_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Known {
    last: Candidate,
    usable: bool,
    /// When it last became usable.
    usable_since: Instant,
    /// When it may be chosen over a worse uplink that works (its settle time ends).
    eligible_at: Instant,
    losses: VecDeque<Instant>,
    flaps: u64,
    /// When it was last seen in a snapshot (for forgetting the one gone longest).
    seen: Instant,
}

/// The uplinks seen since start and the one in use.
#[derive(Debug, Default)]
pub struct Uplinks {
    known: Vec<Known>,
    chosen: Option<String>,
    started: bool,
}

impl Uplinks {
    pub fn new() -> Self {
        Uplinks::default()
    }

    /// Number of interfaces that have had a default route since start.
    pub fn count(&self) -> usize {
        self.known.len()
    }

    /// Takes one snapshot's uplinks in and decides which one to use.
    pub fn update(&mut self, config: &NetworkConfig, now: Instant, seen: Vec<Candidate>) -> Choice {
        let first = !std::mem::replace(&mut self.started, true);
        for k in &mut self.known {
            if !seen.iter().any(|c| c.name == k.last.name) {
                k.last.state = UplinkState::Gone;
            }
        }
        for c in seen {
            match self.known.iter_mut().find(|k| k.last.name == c.name) {
                Some(k) => {
                    k.seen = now;
                    k.last = c;
                }
                // Only an interface with a default route is an uplink.
                None if !c.routed => {}
                None => {
                    if self.known.len() == MAX_KNOWN {
                        self.forget_one();
                    }
                    if self.known.len() < MAX_KNOWN {
                        self.known.push(Known {
                            usable: c.usable(),
                            usable_since: now,
                            // Usable at start: no reason to wait. One that appears later
                            // (DHCP just finished, a modem plugged in) settles first.
                            eligible_at: if first { now } else { now + config.settle },
                            last: c,
                            losses: VecDeque::new(),
                            flaps: 0,
                            seen: now,
                        });
                    }
                }
            }
        }
        for k in &mut self.known {
            let usable = k.last.usable();
            if k.usable && !usable {
                k.flaps += 1;
                if k.losses.len() == MAX_LOSSES {
                    k.losses.pop_front();
                }
                k.losses.push_back(now);
            } else if !k.usable && usable {
                // Every return starts the settle time over.
                k.usable_since = now;
                k.eligible_at = now + hold(config.settle, recent(&k.losses, now));
            }
            k.usable = usable;
        }
        self.choose(now)
    }

    fn forget_one(&mut self) {
        if let Some(i) = self
            .known
            .iter()
            .enumerate()
            .filter(|(_, k)| k.last.state == UplinkState::Gone)
            .min_by_key(|(_, k)| k.seen)
            .map(|(i, _)| i)
        {
            self.known.remove(i);
        }
    }

    fn choose(&mut self, now: Instant) -> Choice {
        let current = self
            .chosen
            .as_ref()
            .and_then(|name| self.known.iter().find(|k| &k.last.name == name));
        let best = |filter: &dyn Fn(&Known) -> bool| {
            self.known
                .iter()
                .filter(|k| k.usable && filter(k))
                .min_by(|a, b| a.last.rank().cmp(&b.last.rank()))
        };
        let best_settled = best(&|k| k.eligible_at <= now);
        let (next, why) = match current {
            Some(cur) if cur.usable => match best_settled {
                Some(b) if b.last.rank() < cur.last.rank() => (
                    Some(b),
                    Some(format!(
                        "{} is preferred and has been usable for {:.1} s",
                        b.last.name,
                        now.saturating_duration_since(b.usable_since).as_secs_f64()
                    )),
                ),
                _ => (Some(cur), None),
            },
            // Anything beats nothing: an uplink still settling is better than none.
            _ => (
                best_settled.or_else(|| best(&|_| true)),
                current.map(|cur| format!("{} {}", cur.last.name, lost(cur.last.state))),
            ),
        };
        let next_name = next.map(|k| k.last.name.clone());
        let switched = match (&self.chosen, &next_name) {
            (Some(a), Some(b)) if a != b => why,
            _ => None,
        };
        let chosen = next.map(|k| k.last.clone());
        let recheck_at = self
            .known
            .iter()
            .filter(|k| k.usable && k.eligible_at > now)
            .filter(|k| chosen.as_ref().is_none_or(|c| k.last.rank() < c.rank()))
            .map(|k| k.eligible_at)
            .min();
        self.chosen = next_name;
        Choice {
            chosen,
            switched,
            recheck_at,
        }
    }

    /// The uplinks for `onair status`, best first. `in_use` names the interface the traffic
    /// to the server actually leaves by.
    pub fn view(&self, now: Instant, in_use: Option<&str>) -> Vec<UplinkStatus> {
        let chosen_rank = self
            .chosen
            .as_ref()
            .and_then(|n| self.known.iter().find(|k| &k.last.name == n))
            .map(|k| k.last.rank());
        let mut known: Vec<&Known> = self.known.iter().collect();
        known.sort_by(|a, b| a.last.rank().cmp(&b.last.rank()));
        known
            .into_iter()
            .map(|k| {
                let state = if !k.usable {
                    k.last.state
                } else if in_use == Some(k.last.name.as_str()) {
                    UplinkState::InUse
                } else if k.eligible_at > now && chosen_rank.is_some_and(|r| k.last.rank() < r) {
                    UplinkState::Settling
                } else {
                    UplinkState::Usable
                };
                UplinkStatus {
                    name: k.last.name.clone(),
                    // The monitor adds what it knows of the interface (field/).
                    kind: UplinkKind::default(),
                    state,
                    usable: state.usable(),
                    flaps: k.flaps,
                    wifi: None,
                    modem: None,
                }
            })
            .collect()
    }
}

/// Deaths within the flap window.
fn recent(losses: &VecDeque<Instant>, now: Instant) -> usize {
    losses
        .iter()
        .filter(|&&t| now.saturating_duration_since(t) < FLAP_WINDOW)
        .count()
}

/// How long an uplink that died `deaths` times in the flap window must hold before the
/// stream returns to it: `settle`, doubled for every further death, capped.
pub fn hold(settle: Duration, deaths: usize) -> Duration {
    let doublings = deaths.saturating_sub(1).min(16) as u32;
    let cap = MAX_HOLD.max(settle);
    settle.saturating_mul(1 << doublings).min(cap)
}

/// What happened to the uplink in use, in words.
fn lost(state: UplinkState) -> &'static str {
    match state {
        UplinkState::Down => "went down",
        UplinkState::NoCarrier => "lost carrier",
        UplinkState::Dormant => "went dormant",
        UplinkState::NoAddress => "lost its address",
        UplinkState::NoRoute => "lost its default route",
        UplinkState::Gone => "disappeared",
        UplinkState::InUse | UplinkState::Usable | UplinkState::Settling => "is usable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::snapshot::{Address, OperState};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(prefer: &[&str], settle_ms: u64) -> NetworkConfig {
        NetworkConfig {
            prefer: prefer.iter().map(|s| s.to_string()).collect(),
            settle: ms(settle_ms),
            ..NetworkConfig::default()
        }
    }

    fn up(config: &NetworkConfig, index: u32, name: &str, metric: u32) -> Candidate {
        Candidate {
            index,
            name: name.into(),
            state: UplinkState::Usable,
            routed: true,
            gateway: Some(format!("192.0.{index}.1").parse().expect("literal")),
            local: Some(format!("192.0.{index}.2").parse().expect("literal")),
            metric,
            preference: preference(config, name),
        }
    }

    fn down(c: &Candidate) -> Candidate {
        Candidate {
            state: UplinkState::NoCarrier,
            ..c.clone()
        }
    }

    fn name(choice: &Choice) -> Option<&str> {
        choice.chosen.as_ref().map(|c| c.name.as_str())
    }

    /// Two uplinks; the kernel prefers wlan0 (lower metric), the config prefers eth0.
    struct Box2 {
        config: NetworkConfig,
        uplinks: Uplinks,
        eth: Candidate,
        wlan: Candidate,
        t0: Instant,
    }

    impl Box2 {
        fn new(prefer: &[&str], settle_ms: u64) -> Box2 {
            let config = config(prefer, settle_ms);
            let eth = up(&config, 2, "eth0", 200);
            let wlan = up(&config, 3, "wlan0", 100);
            Box2 {
                config,
                uplinks: Uplinks::new(),
                eth,
                wlan,
                t0: Instant::now(),
            }
        }

        fn at(&mut self, t_ms: u64, eth_up: bool, wlan_up: bool) -> Choice {
            let eth = if eth_up {
                self.eth.clone()
            } else {
                down(&self.eth)
            };
            let wlan = if wlan_up {
                self.wlan.clone()
            } else {
                down(&self.wlan)
            };
            self.uplinks
                .update(&self.config, self.t0 + ms(t_ms), vec![eth, wlan])
        }
    }

    #[test]
    fn the_preference_order_beats_the_kernels_metric_and_no_order_follows_it() {
        let mut b = Box2::new(&["eth*", "wlan*"], 5000);
        assert_eq!(name(&b.at(0, true, true)), Some("eth0"));
        let mut b = Box2::new(&[], 5000);
        assert_eq!(
            name(&b.at(0, true, true)),
            Some("wlan0"),
            "without prefer, the lower metric wins"
        );
        let mut b = Box2::new(&["wlan0"], 5000);
        assert_eq!(name(&b.at(0, true, true)), Some("wlan0"));
    }

    #[test]
    fn losing_the_uplink_in_use_switches_at_once_and_says_why() {
        let mut b = Box2::new(&["eth*"], 5000);
        b.at(0, true, true);
        let c = b.at(1000, false, true);
        assert_eq!(name(&c), Some("wlan0"));
        assert_eq!(c.switched.as_deref(), Some("eth0 lost carrier"));
        let c = b.at(1100, false, true);
        assert_eq!(c.switched, None, "a switch is reported once");
        let c = b.at(1200, false, false);
        assert_eq!(name(&c), None, "nothing usable");
        assert_eq!(c.switched, None, "going offline is not a switch");
    }

    #[test]
    fn a_preferred_uplink_that_comes_back_is_used_after_the_settle_time() {
        let mut b = Box2::new(&["eth*"], 5000);
        b.at(0, true, true);
        b.at(1000, false, true);
        let c = b.at(3000, true, true);
        assert_eq!(name(&c), Some("wlan0"), "eth0 must settle first");
        assert_eq!(c.recheck_at, Some(b.t0 + ms(8000)));
        let view = b.uplinks.view(b.t0 + ms(3000), Some("wlan0"));
        assert_eq!(
            view.iter()
                .map(|u| (u.name.as_str(), u.state))
                .collect::<Vec<_>>(),
            vec![
                ("eth0", UplinkState::Settling),
                ("wlan0", UplinkState::InUse)
            ]
        );
        assert_eq!(name(&b.at(7999, true, true)), Some("wlan0"));
        let c = b.at(8000, true, true);
        assert_eq!(name(&c), Some("eth0"));
        assert_eq!(
            c.switched.as_deref(),
            Some("eth0 is preferred and has been usable for 5.0 s")
        );
        assert_eq!(c.recheck_at, None);
    }

    #[test]
    fn a_settling_uplink_is_taken_at_once_when_nothing_else_works() {
        let mut b = Box2::new(&["eth*"], 5000);
        b.at(0, true, true);
        b.at(1000, false, true);
        b.at(2000, true, true); // eth0 settling until 7000
        let c = b.at(3000, true, false);
        assert_eq!(name(&c), Some("eth0"));
        assert_eq!(c.switched.as_deref(), Some("wlan0 lost carrier"));
    }

    #[test]
    fn a_new_uplink_settles_before_it_takes_over_but_the_first_is_taken_at_once() {
        let config = config(&["eth*", "wlan*"], 5000);
        let eth = up(&config, 2, "eth0", 100);
        let wlan = up(&config, 3, "wlan0", 100);
        let mut u = Uplinks::new();
        let t0 = Instant::now();
        assert_eq!(name(&u.update(&config, t0, vec![])), None);
        let c = u.update(&config, t0 + ms(1000), vec![wlan.clone()]);
        assert_eq!(name(&c), Some("wlan0"), "the only uplink is used at once");
        let c = u.update(&config, t0 + ms(2000), vec![eth.clone(), wlan.clone()]);
        assert_eq!(
            name(&c),
            Some("wlan0"),
            "eth0 just appeared: it settles first"
        );
        assert_eq!(c.recheck_at, Some(t0 + ms(7000)));
        let c = u.update(&config, t0 + ms(7000), vec![eth, wlan]);
        assert_eq!(name(&c), Some("eth0"));
    }

    #[test]
    fn a_flapping_uplink_never_takes_the_stream_back_and_is_counted() {
        let mut b = Box2::new(&["eth*"], 3000);
        b.at(0, true, true);
        let mut switches = 0;
        // Carrier toggles every 1.5 s for 30 s, starting with a loss.
        let mut t = 1000;
        let mut eth_up = false;
        while t <= 31_000 {
            let c = b.at(t, eth_up, true);
            switches += usize::from(c.switched.is_some());
            assert!(t == 1000 || name(&c) == Some("wlan0"), "at {t} ms: {c:?}");
            eth_up = !eth_up;
            t += 1500;
        }
        assert_eq!(switches, 1, "one switch away, none back while it flaps");
        let view = b.uplinks.view(b.t0 + ms(t), Some("wlan0"));
        assert_eq!(view[0].flaps, 11, "{view:?}");
        // The cable holds from 32.5 s on: with 11 deaths in the window the hold is the cap,
        // so the stream returns a minute later, not before.
        let c = b.at(32_500, true, true);
        assert_eq!(c.recheck_at, Some(b.t0 + ms(32_500) + MAX_HOLD));
        assert_eq!(name(&b.at(32_500 + 59_999, true, true)), Some("wlan0"));
        assert_eq!(name(&b.at(32_500 + 60_000, true, true)), Some("eth0"));
    }

    #[test]
    fn the_hold_doubles_per_death_and_is_capped() {
        let s = Duration::from_secs(3);
        assert_eq!(hold(s, 0), s);
        assert_eq!(hold(s, 1), s);
        assert_eq!(hold(s, 2), s * 2);
        assert_eq!(hold(s, 4), s * 8);
        assert_eq!(hold(s, 10), MAX_HOLD);
        assert_eq!(hold(Duration::ZERO, 10), Duration::ZERO);
        let long = Duration::from_secs(300);
        assert_eq!(hold(long, 5), long, "a long settle is not cut by the cap");
    }

    #[test]
    fn deaths_older_than_the_window_are_forgiven() {
        let mut b = Box2::new(&["eth*"], 2000);
        b.at(0, true, true);
        b.at(1000, false, true);
        b.at(2000, true, true);
        b.at(3000, false, true);
        let c = b.at(4000, true, true);
        assert_eq!(c.recheck_at, Some(b.t0 + ms(8000)), "two deaths: 2 × 2 s");
        b.at(5000, false, true);
        // Long after: only this death counts.
        let t = 5000 + FLAP_WINDOW.as_millis() as u64;
        let c = b.at(t, true, true);
        assert_eq!(c.recheck_at, Some(b.t0 + ms(t + 2000)));
    }

    #[test]
    fn candidates_come_from_default_routes() {
        let config = NetworkConfig::default();
        let link = |index, name: &str, carrier| Link {
            index,
            name: name.into(),
            admin_up: true,
            carrier,
            loopback: index == 1,
            oper: OperState::Up,
        };
        let hop = |oif, gw: &str, linkdown| NextHop {
            oif,
            linkdown,
            gateway: Some(gw.parse().expect("literal")),
        };
        let route = |nexthops, metric, prefsrc: Option<&str>, ours| Route {
            kind: RouteKind::Unicast,
            table: 254,
            nexthops,
            metric,
            prefsrc: prefsrc.map(|p| p.parse().expect("literal")),
            ours,
        };
        let addr = |index, a: &str| Address {
            index,
            addr: a.parse().expect("literal"),
            tentative: false,
        };
        let snapshot = Snapshot {
            links: vec![
                link(1, "lo", true),
                link(2, "eth0", false),
                link(3, "wlan0", true),
                link(4, "eth1", true),
            ],
            addresses: vec![
                addr(2, "192.0.2.2"),
                addr(3, "198.51.100.2"),
                addr(3, "198.51.100.3"),
                addr(4, "203.0.113.9"),
            ],
            default_routes: vec![
                route(vec![hop(2, "192.0.2.1", true)], 100, None, false),
                route(
                    vec![hop(3, "198.51.100.1", false)],
                    600,
                    Some("198.51.100.3"),
                    false,
                ),
                // Our own steering table: never an uplink of its own.
                route(vec![hop(4, "203.0.113.1", false)], 0, None, true),
            ],
            server: None,
            ours: Default::default(),
        };
        let c = candidates(&config, &snapshot, None);
        let summary: Vec<_> = c
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.state,
                    c.local.map(|a| a.to_string()),
                    c.metric,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "eth0",
                    UplinkState::NoCarrier,
                    Some("192.0.2.2".into()),
                    100
                ),
                (
                    "wlan0",
                    UplinkState::Usable,
                    Some("198.51.100.3".into()),
                    600
                ),
                (
                    "eth1",
                    UplinkState::NoRoute,
                    Some("203.0.113.9".into()),
                    u32::MAX
                ),
            ]
        );
        let mut u = Uplinks::new();
        u.update(&config, Instant::now(), c);
        assert_eq!(
            u.count(),
            2,
            "an interface without a default route is no uplink"
        );
    }
}
