//! The socket side of the network monitor: one NETLINK_ROUTE connection that is subscribed to
//! link, address and route changes, and that reads the kernel's state into a [`Snapshot`].
//!
//! Changes are only triggers here: after a burst of them the monitor takes a fresh snapshot
//! and asks the kernel for its route to the server (RTM_GETROUTE). Tracking state message by
//! message would be fragile (the kernel drops IPv4 routes on link-down without telling anyone)
//! and lose everything on a buffer overrun; a dump of a box's handful of links and routes takes
//! well under a millisecond.

use super::NetError;
use super::decide::{
    Address, Link, Lookup, NextHop, OperState, Route, RouteKind, ServerLookup, Snapshot,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::MulticastGroup;
use rtnetlink::sys::AsyncSocket;
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

/// Asks the kernel for its state over a [`Session`]'s connection.
#[derive(Clone)]
pub struct Querier {
    handle: rtnetlink::Handle,
}

impl Querier {
    /// Reads links, addresses and default routes, and the kernel's route to each of
    /// `server` (when the server's addresses are known).
    pub async fn snapshot(&self, server: Option<&[IpAddr]>) -> Result<Snapshot, NetError> {
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
        let server = match server {
            None => None,
            Some(ips) => {
                let mut lookups = Vec::with_capacity(ips.len());
                for &ip in ips {
                    lookups.push(ServerLookup {
                        ip,
                        lookup: self.route_to(ip).await?,
                    });
                }
                Some(lookups)
            }
        };
        Ok(Snapshot {
            links: links.iter().filter_map(link).collect(),
            addresses: addresses.iter().filter_map(address).collect(),
            default_routes: routes.iter().filter_map(default_route).collect(),
            server,
        })
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
    let mut hops = Vec::new();
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(oif) => hops.push(NextHop {
                oif: *oif,
                linkdown: route_down,
            }),
            RouteAttribute::MultiPath(paths) => hops.extend(paths.iter().map(|p| {
                NextHop {
                    oif: p.interface_index,
                    linkdown: p
                        .flags
                        .intersects(RouteNextHopFlags::Linkdown | RouteNextHopFlags::Dead),
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
    })
}
