//! The socket side of the network monitor: one NETLINK_ROUTE connection that is subscribed to
//! link, address and route changes, and that reads the kernel's state into a [`Snapshot`].
//!
//! Changes are only triggers here: after a burst of them the monitor takes a fresh snapshot
//! and asks the kernel for its route to the server (RTM_GETROUTE). Tracking state message by
//! message would be fragile (the kernel drops IPv4 routes on link-down without telling anyone)
//! and lose everything on a buffer overrun; a dump of a box's handful of links and routes takes
//! well under a millisecond.
//!
//! It also carries out the steering plan (`steer.rs`): it reads which of our rules and routes
//! the kernel holds, and adds and removes the difference.

use super::NetError;
use super::snapshot::{
    Address, Link, Lookup, NextHop, OperState, PRIORITY_FROM, PRIORITY_MAIN, PRIORITY_TO, Plan,
    Route, RouteKind, RouteSpec, Rule, ServerLookup, Snapshot,
};
use super::steer::{Changes, RTPROT_ONAIR};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{IpVersion, MulticastGroup, RouteMessageBuilder};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long one dump or route query may take before the connection is presumed broken (a dump
/// whose end was lost in an overrun would otherwise wait forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The `local` routing table: routes to the box's own addresses, never a way out.
const RT_TABLE_LOCAL: u32 = 255;

/// The groups whose messages may change the verdict.
const GROUPS: [MulticastGroup; 5] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
];

/// The subscription's messages (rtnetlink hands them out on a futures channel).
type Messages = BoxStream<
    'static,
    (
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    ),
>;

/// What the subscription delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Something relevant changed (or may have): re-read the state.
    Change,
    /// The socket's receive buffer overflowed: messages were lost.
    Overrun,
    /// The connection ended; it must be reopened.
    Closed,
}

/// One open NETLINK_ROUTE connection. Dropping it stops the connection task, which closes the
/// socket.
pub struct Session {
    handle: rtnetlink::Handle,
    messages: Messages,
    connection: JoinHandle<()>,
    /// The receive buffer the kernel actually granted, in bytes.
    pub rcvbuf: usize,
}

impl Session {
    /// Opens the socket, asks for a `rcvbuf`-byte receive buffer and subscribes to the groups.
    /// The caller dumps afterwards, so no change between subscription and dump is lost. Must
    /// run inside a tokio runtime (it spawns the connection task).
    pub fn open(rcvbuf: usize) -> Result<Session, NetError> {
        let (mut connection, handle, messages) =
            rtnetlink::new_multicast_connection(&GROUPS).map_err(NetError::Open)?;
        let socket = connection.socket_mut().socket_mut();
        socket
            .set_rx_buf_sz(rcvbuf)
            .map_err(NetError::ReceiveBuffer)?;
        let rcvbuf = socket.get_rx_buf_sz().map_err(NetError::ReceiveBuffer)?;
        let connection = tokio::spawn(connection);
        Ok(Session {
            handle,
            messages: messages.boxed(),
            connection,
            rcvbuf,
        })
    }

    /// The next subscription message, reduced to what the monitor does about it.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let Some((message, _)) = self.messages.next().await else {
                return Event::Closed;
            };
            match message.payload {
                NetlinkPayload::Overrun(_) => return Event::Overrun,
                NetlinkPayload::InnerMessage(inner) if relevant(&inner) => return Event::Change,
                _ => {}
            }
        }
    }

    /// A handle for queries that does not borrow the session (whose message stream is not
    /// `Sync`), so that queries can run while the session is borrowed elsewhere.
    pub fn querier(&self) -> Querier {
        Querier {
            handle: self.handle.clone(),
        }
    }

    /// Stops the connection task and waits until it (and with it the socket) is gone.
    pub async fn close(mut self) {
        self.connection.abort();
        // The only outcome left is "cancelled" (or a panic inside netlink-proto, already
        // reported by tokio): either way the socket is closed now.
        let _ = (&mut self.connection).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// What [`Querier::flush`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub rules: usize,
    pub routes: usize,
}

/// Asks the kernel for its state over a [`Session`]'s connection.
#[derive(Clone)]
pub struct Querier {
    handle: rtnetlink::Handle,
}

impl Querier {
    /// Links, addresses and routes (default routes, and the routes of our steering in
    /// `ours.routes`); no route lookups (`server` stays `None`).
    pub async fn state(&self) -> Result<Snapshot, NetError> {
        let links = request(
            "dump links",
            self.handle.link().get().execute().try_collect::<Vec<_>>(),
        )
        .await?;
        let addresses = request(
            "dump addresses",
            self.handle
                .address()
                .get()
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .await?;
        let routes = self.routes().await?;
        Ok(Snapshot {
            links: links.iter().filter_map(link).collect(),
            addresses: addresses.iter().filter_map(address).collect(),
            default_routes: routes.iter().filter_map(default_route).collect(),
            server: None,
            ours: Plan {
                rules: Default::default(),
                routes: routes.iter().filter_map(our_route).collect(),
            },
        })
    }

    /// The kernel's route to each of `server` (`None` when the addresses are not known).
    pub async fn lookups(
        &self,
        server: Option<&[IpAddr]>,
    ) -> Result<Option<Vec<ServerLookup>>, NetError> {
        let Some(ips) = server else {
            return Ok(None);
        };
        let mut lookups = Vec::with_capacity(ips.len());
        for &ip in ips {
            lookups.push(ServerLookup {
                ip,
                lookup: self.route_to(ip).await?,
            });
        }
        Ok(Some(lookups))
    }

    /// The rules at our priorities that have our shape.
    pub async fn our_rules(&self) -> Result<std::collections::BTreeSet<Rule>, NetError> {
        Ok(self.rules().await?.iter().filter_map(our_rule).collect())
    }

    /// Carries `changes` out, in order. Each step is tried even if an earlier one failed;
    /// the failures come back as text (the caller logs them once). `Err` only when the
    /// kernel refuses us the right to change routing at all.
    pub async fn apply(&self, changes: &Changes) -> Result<Vec<String>, NetError> {
        let mut failures = Vec::new();
        for route in &changes.add_routes {
            let result = self
                .handle
                .route()
                .add(route_message(route))
                .replace()
                .execute()
                .await;
            note(&mut failures, result, || {
                format!("add {}", describe_route(route))
            })?;
        }
        for rule in &changes.add_rules {
            let mut add = self.handle.rule().add();
            *add.message_mut() = rule_message(rule);
            let result = match add.execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc_eexist() => Ok(()),
                other => other,
            };
            note(&mut failures, result, || {
                format!("add {}", describe_rule(rule))
            })?;
        }
        for rule in &changes.remove_rules {
            let result = self.handle.rule().del(rule_message(rule)).execute().await;
            note(&mut failures, gone_is_fine(result), || {
                format!("remove {}", describe_rule(rule))
            })?;
        }
        for route in &changes.remove_routes {
            let result = self
                .handle
                .route()
                .del(route_message(route))
                .execute()
                .await;
            note(&mut failures, gone_is_fine(result), || {
                format!("remove {}", describe_route(route))
            })?;
        }
        Ok(failures)
    }

    /// Removes every rule and route of ours, whatever their shape (left by a daemon that
    /// was killed, or by an older version): rules at our priorities marked with our protocol,
    /// routes marked with it. An administrator's rule at the same priority, unmarked, stays.
    pub async fn flush(&self) -> Result<Removed, NetError> {
        let mut removed = Removed::default();
        let strays = self.rules().await?.into_iter().filter(|r| {
            matches!(
                rule_priority(r),
                Some(PRIORITY_MAIN | PRIORITY_FROM | PRIORITY_TO)
            ) && rule_is_marked(r)
        });
        for rule in strays {
            let result = self.handle.rule().del(rule).execute().await;
            removed.rules += usize::from(result.is_ok());
            note(&mut Vec::new(), gone_is_fine(result), String::new)?;
        }
        for route in self.routes().await?.into_iter().filter(is_ours) {
            let result = self.handle.route().del(route).execute().await;
            removed.routes += usize::from(result.is_ok());
            note(&mut Vec::new(), gone_is_fine(result), String::new)?;
        }
        Ok(removed)
    }

    /// Every rule of both address families.
    async fn rules(&self) -> Result<Vec<RuleMessage>, NetError> {
        let mut rules = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let dump = self
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect::<Vec<_>>();
            rules.extend(request("dump rules", dump).await?);
        }
        Ok(rules)
    }

    /// Every route of both address families, in all tables.
    async fn routes(&self) -> Result<Vec<RouteMessage>, NetError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let dump = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect::<Vec<_>>();
            routes.extend(request("dump routes", dump).await?);
        }
        Ok(routes)
    }

    /// RTM_GETROUTE: how the kernel would send a packet to `ip` from this box right now.
    async fn route_to(&self, ip: IpAddr) -> Result<Lookup, NetError> {
        let mut query = RouteMessage::default();
        query.header.address_family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        query.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        query
            .attributes
            .push(RouteAttribute::Destination(ip.into()));
        let answer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.handle
                .route()
                .get(query)
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| NetError::Timeout {
            what: "route lookup",
            after: REQUEST_TIMEOUT,
        })?;
        match answer {
            Ok(routes) => Ok(routes.first().map_or_else(
                || Lookup::NoRoute("empty answer".to_string()),
                |r| Lookup::Route {
                    kind: kind(r),
                    nexthop: nexthops(r).into_iter().next(),
                    source: prefsrc(r),
                },
            )),
            // The kernel answers "no route" with an error (ENETUNREACH, EHOSTUNREACH...).
            Err(rtnetlink::Error::NetlinkError(e)) => Ok(Lookup::NoRoute(
                nix::errno::Errno::from_raw(-e.raw_code())
                    .desc()
                    .to_string(),
            )),
            Err(source) => Err(NetError::Request {
                what: "route lookup",
                source,
            }),
        }
    }
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

/// A removal of something already gone is a success.
fn gone_is_fine(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e))
            if [nix::errno::Errno::ENOENT, nix::errno::Errno::ESRCH]
                .contains(&nix::errno::Errno::from_raw(-e.raw_code())) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Records a failed step; a refusal of the right to change routing ends the whole apply.
fn note(
    failures: &mut Vec<String>,
    result: Result<(), rtnetlink::Error>,
    what: impl FnOnce() -> String,
) -> Result<(), NetError> {
    match result {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if nix::errno::Errno::from_raw(-e.raw_code()) == nix::errno::Errno::EPERM =>
        {
            Err(NetError::Request {
                what: "change routing (needs CAP_NET_ADMIN)",
                source: rtnetlink::Error::NetlinkError(e),
            })
        }
        Err(e) => {
            failures.push(format!("{}: {e}", what()));
            Ok(())
        }
    }
}

fn describe_route(r: &RouteSpec) -> String {
    let mut text = match r.destination {
        Some(d) => format!("route {d}"),
        None => "default route".to_string(),
    };
    if r.unreachable {
        return format!("unreachable {text} table {} metric {}", r.table, r.metric);
    }
    if let Some(g) = r.gateway {
        text.push_str(&format!(" via {g}"));
    }
    text.push_str(&format!(" dev #{} table {}", r.oif, r.table));
    if let Some(s) = r.source {
        text.push_str(&format!(" src {s}"));
    }
    text
}

fn describe_rule(r: &Rule) -> String {
    match r {
        Rule::MainUnlessDefault { v6 } => format!(
            "rule {}priority {PRIORITY_MAIN} lookup main suppress_prefixlength 0",
            if *v6 { "(IPv6) " } else { "" }
        ),
        Rule::ToServer { server, table } => {
            format!("rule priority {PRIORITY_TO} to {server} lookup {table}")
        }
        Rule::FromLocal { local, table } => {
            format!("rule priority {PRIORITY_FROM} from {local} lookup {table}")
        }
    }
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The message that adds (or, sent to delete, removes) `r`.
fn route_message(r: &RouteSpec) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .table_id(r.table)
        .protocol(RouteProtocol::Other(RTPROT_ONAIR))
        .priority(r.metric);
    if r.unreachable {
        builder = builder.kind(RouteType::Unreachable);
    } else {
        builder = builder
            .output_interface(r.oif)
            .scope(if r.gateway.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            });
    }
    builder.get_mut().header.address_family = family(r.v6);
    // The builder refuses only a mismatch of address families, which a plan never has.
    if let Some(d) = r.destination
        && let Ok(b) = builder.clone().destination_prefix(d, host_len(&d))
    {
        builder = b;
    }
    if let Some(s) = r.source
        && let Ok(b) = builder.clone().pref_source(s)
    {
        builder = b;
    }
    if let Some(g) = r.gateway
        && let Ok(b) = builder.clone().gateway(g)
    {
        builder = b;
    }
    builder.build()
}

/// The message that adds (or removes) `r`.
fn rule_message(r: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family(r.v6());
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Priority(r.priority()));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_ONAIR)));
    let table = match *r {
        Rule::MainUnlessDefault { .. } => {
            m.attributes.push(RuleAttribute::SuppressPrefixLen(0));
            254
        }
        Rule::ToServer { server, table } => {
            m.header.dst_len = host_len(&server);
            m.attributes.push(RuleAttribute::Destination(server));
            table
        }
        Rule::FromLocal { local, table } => {
            m.header.src_len = host_len(&local);
            m.attributes.push(RuleAttribute::Source(local));
            table
        }
    };
    if table > 255 {
        m.attributes.push(RuleAttribute::Table(table));
    } else {
        m.header.table = table as u8;
    }
    m
}

/// Marked as ours: the rule's protocol is ours (`ip rule` shows `proto 111`).
fn rule_is_marked(r: &RuleMessage) -> bool {
    r.attributes
        .contains(&RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_ONAIR)))
}

fn rule_priority(r: &RuleMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RuleAttribute::Priority(p) => Some(*p),
        _ => None,
    })
}

/// A dumped rule as one of ours, if it is at our priorities, has our shape and our mark.
fn our_rule(r: &RuleMessage) -> Option<Rule> {
    if !rule_is_marked(r) {
        return None;
    }
    let priority = rule_priority(r)?;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    let v6 = r.header.family == AddressFamily::Inet6;
    let find = |want_dst: bool| {
        r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Destination(ip) if want_dst => Some(*ip),
            RuleAttribute::Source(ip) if !want_dst => Some(*ip),
            _ => None,
        })
    };
    let suppress = r.attributes.iter().find_map(|a| match a {
        RuleAttribute::SuppressPrefixLen(n) => Some(*n),
        _ => None,
    });
    if r.header.action != RuleAction::ToTable {
        return None;
    }
    match (priority, find(true), find(false)) {
        (PRIORITY_MAIN, None, None) if table == 254 && suppress == Some(0) => {
            Some(Rule::MainUnlessDefault { v6 })
        }
        (PRIORITY_TO, Some(server), None) if r.header.dst_len == host_len(&server) => {
            Some(Rule::ToServer { server, table })
        }
        (PRIORITY_FROM, None, Some(local)) if r.header.src_len == host_len(&local) => {
            Some(Rule::FromLocal { local, table })
        }
        _ => None,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn prefsrc(route: &RouteMessage) -> Option<IpAddr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(a) => route_ip(a),
        _ => None,
    })
}

fn metric(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn is_ours(route: &RouteMessage) -> bool {
    route.header.protocol == RouteProtocol::Other(RTPROT_ONAIR)
}

/// A dumped route of ours as the plan describes it.
fn our_route(route: &RouteMessage) -> Option<RouteSpec> {
    if !is_ours(route) {
        return None;
    }
    let destination = match route.header.destination_prefix_length {
        0 => None,
        32 | 128 => Some(route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(d) => route_ip(d),
            _ => None,
        })?),
        _ => return None,
    };
    let v6 = route.header.address_family == AddressFamily::Inet6;
    if route.header.kind == RouteType::Unreachable {
        return Some(RouteSpec {
            table: table(route),
            destination,
            gateway: None,
            oif: 0,
            source: None,
            v6,
            metric: metric(route),
            unreachable: true,
        });
    }
    let hop = nexthops(route).into_iter().next()?;
    Some(RouteSpec {
        table: table(route),
        destination,
        gateway: hop.gateway,
        oif: hop.oif,
        source: prefsrc(route),
        v6,
        metric: metric(route),
        unreachable: false,
    })
}

/// Runs one dump with the request timeout, naming it in errors.
async fn request<T>(
    what: &'static str,
    dump: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, NetError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, dump).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(NetError::Request { what, source }),
        Err(_) => Err(NetError::Timeout {
            what,
            after: REQUEST_TIMEOUT,
        }),
    }
}

/// Whether a subscription message can change the verdict: link, address and route messages.
/// Anything else the groups may carry (now or in later kernels) is ignored.
fn relevant(message: &RouteNetlinkMessage) -> bool {
    matches!(
        message,
        RouteNetlinkMessage::NewLink(_)
            | RouteNetlinkMessage::DelLink(_)
            | RouteNetlinkMessage::NewAddress(_)
            | RouteNetlinkMessage::DelAddress(_)
            | RouteNetlinkMessage::NewRoute(_)
            | RouteNetlinkMessage::DelRoute(_)
    )
}

fn link(message: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut oper = OperState::Unknown;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::OperState(state) => {
                oper = match state {
                    State::Up => OperState::Up,
                    State::Unknown => OperState::Unknown,
                    State::Dormant => OperState::Dormant,
                    _ => OperState::NotUp,
                }
            }
            _ => {}
        }
    }
    let flags = message.header.flags;
    Some(Link {
        index: message.header.index,
        name: name?,
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        loopback: flags.contains(LinkFlags::Loopback),
        oper,
    })
}

fn address(message: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the box's own address on point-to-point links; IFA_ADDRESS otherwise.
    let mut addr = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => addr = Some(*a),
            AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    Some(Address {
        index: message.header.index,
        addr: addr?,
        tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
    })
}

fn kind(route: &RouteMessage) -> RouteKind {
    match route.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        _ => RouteKind::Other,
    }
}

fn table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn nexthops(route: &RouteMessage) -> Vec<NextHop> {
    let route_down = route
        .header
        .flags
        .intersects(RouteFlags::Linkdown | RouteFlags::Dead);
    let gateway = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_ip(g),
        _ => None,
    });
    let mut hops = Vec::new();
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(oif) => hops.push(NextHop {
                oif: *oif,
                linkdown: route_down,
                gateway,
            }),
            RouteAttribute::MultiPath(paths) => hops.extend(paths.iter().map(|p| {
                NextHop {
                    oif: p.interface_index,
                    linkdown: p
                        .flags
                        .intersects(RouteNextHopFlags::Linkdown | RouteNextHopFlags::Dead),
                    gateway: p.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => route_ip(g),
                        _ => None,
                    }),
                }
            })),
            _ => {}
        }
    }
    hops
}

fn default_route(route: &RouteMessage) -> Option<Route> {
    let is_default = route.header.destination_prefix_length == 0;
    let table = table(route);
    (is_default && table != RT_TABLE_LOCAL).then(|| Route {
        kind: kind(route),
        table,
        nexthops: nexthops(route),
        metric: metric(route),
        prefsrc: prefsrc(route),
        ours: is_ours(route),
    })
}
