//! The network monitor's task: it owns the netlink session, turns bursts of kernel messages
//! into one fresh snapshot each, decides, and publishes and logs only real changes. It also
//! owns the resolver task that keeps the server's host name resolved, the uplink choice, and
//! the steering that carries it out (installed while it runs, removed when it stops).
//!
//! Each interface's kind (wired, Wi-Fi, tether, modem) is read from sysfs once per interface;
//! the Wi-Fi and modem facts come from watcher tasks of their own (field/watch.rs), told here
//! which interfaces to watch, and are folded into each uplink's status.
//!
//! Failure handling: an overrun (messages lost) reopens the socket with a bigger receive
//! buffer and re-reads everything; a broken connection is reopened after a short delay. The
//! last status stays published meanwhile: not knowing is not the same as being offline.

use super::debounce::Debounce;
use super::decide::{Verdict, change_line, evaluate};
use super::field::{self, FieldFacts, Interfaces, Reconfigured, UplinkKind};
use super::netlink::{Event, Querier, Session};
use super::snapshot::{Plan, Snapshot};
use super::steer;
use super::uplinks::{self, Candidate, Choice, Uplinks};
use super::{NetError, NetworkStatus, Path, ServerAddr, UplinkState, UplinkStatus};
use crate::config::{NetworkConfig, PathsMode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Receive buffer asked for at start (the kernel caps it at `net.core.rmem_max`, doubled).
const INITIAL_RCVBUF: usize = 256 * 1024;
/// Largest receive buffer asked for after repeated overruns.
const MAX_RCVBUF: usize = 4 * 1024 * 1024;
/// Kinds remembered by name for interfaces that are gone (a bound on a box where interfaces
/// come and go).
const MAX_REMEMBERED_KINDS: usize = 64;
/// Wait before reopening a connection that failed.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Re-resolve the server name this often while it resolves...
const RESOLVE_REFRESH: Duration = Duration::from_secs(300);
/// ...and this often while it does not.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// Never resolve more often than this, however often the network changes.
const RESOLVE_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Give up on one resolution after this long (the system resolver's own timeouts are longer).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ask the kernel about at most this many of the server's addresses.
const MAX_SERVER_IPS: usize = 4;

/// Where the server's addresses come from.
enum Server {
    /// No server given: default routes decide.
    None,
    Fixed(Vec<IpAddr>),
    /// A host name before the resolver task is started.
    Name(String),
    /// A host name being kept resolved by the resolver task; empty until the first success.
    Resolved {
        addrs: watch::Receiver<Vec<IpAddr>>,
        poke: Arc<Notify>,
        task: JoinHandle<()>,
    },
}

impl Server {
    fn ips(&self) -> Option<Vec<IpAddr>> {
        match self {
            Server::None | Server::Name(_) => None,
            Server::Fixed(ips) => Some(ips.clone()),
            Server::Resolved { addrs, .. } => {
                let ips = addrs.borrow().clone();
                (!ips.is_empty()).then_some(ips)
            }
        }
    }
}

/// Whether the monitor steers the server's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Steering {
    /// `network.paths` is not `steer`: the kernel's routes decide.
    Off,
    On,
    /// The kernel refused (no CAP_NET_ADMIN): said once, the kernel's routes decide.
    Refused,
}

struct Monitor {
    config: NetworkConfig,
    server: Server,
    /// `None` between a failure and the reopen scheduled at `resync_at`.
    session: Option<Session>,
    /// Receive buffer to ask for when (re)opening.
    rcvbuf: usize,
    verdict: Verdict,
    status: watch::Sender<NetworkStatus>,
    debounce: Debounce,
    /// When to reopen the session and re-read everything.
    resync_at: Option<Instant>,
    /// A failure was logged and nothing has succeeded since (log failures once, not per retry).
    failing: bool,
    /// The pending resync is for an overrun (logged once the new buffer size is known).
    overrun: bool,
    uplinks: Uplinks,
    /// Evaluate again then: a preferred uplink will have settled.
    recheck_at: Option<Instant>,
    steering: Steering,
    /// Our rules and routes are in the kernel now.
    steered: bool,
    /// Steps of the steering the kernel refused last time (each logged once).
    steer_failures: Vec<String>,
    switches: u64,
    last_switch: Option<String>,
    /// Each interface's kind, by index (with its name: an index can be reused).
    kinds: HashMap<u32, (String, UplinkKind)>,
    /// The last kind known by name, for an uplink that is gone (an unplugged phone is still
    /// a phone in `onair status`).
    last_kinds: HashMap<String, UplinkKind>,
    /// The last snapshot's uplink candidates (for interfaces that never had a route).
    seen: Vec<Candidate>,
    /// Tells the field watchers which interfaces are Wi-Fi and modems...
    field_interfaces: watch::Sender<Interfaces>,
    /// ...and what they read.
    facts: watch::Receiver<FieldFacts>,
    field_task: JoinHandle<()>,
}

/// What `start` hands the [`super::NetworkMonitor`].
pub(super) struct Started {
    pub status: watch::Receiver<NetworkStatus>,
    pub task: JoinHandle<()>,
    pub reconfigured: Option<Reconfigured>,
}

pub(super) async fn start(
    config: NetworkConfig,
    server: Option<ServerAddr>,
    shutdown: CancellationToken,
) -> Result<Started, NetError> {
    if !config.netlink {
        log::info!("network: netlink monitoring off (config network.netlink); assuming online");
        let (tx, rx) = watch::channel(NetworkStatus {
            online: true,
            ..NetworkStatus::default()
        });
        // Keep the sender until shutdown so that receivers do not see a closed channel.
        let task = tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(tx);
        });
        return Ok(Started {
            status: rx,
            task,
            reconfigured: None,
        });
    }

    let server = match server {
        None => Server::None,
        Some(ServerAddr::Ip(ip)) => Server::Fixed(vec![ip]),
        Some(ServerAddr::Name(name)) => Server::Name(name),
    };
    let session = Session::open(INITIAL_RCVBUF)?;
    let (tx, rx) = watch::channel(NetworkStatus::default());
    let steering = match config.paths {
        PathsMode::Steer => Steering::On,
        PathsMode::Follow | PathsMode::Ignore => Steering::Off,
    };
    let (field_interfaces, interfaces_rx) = watch::channel(Interfaces::default());
    let (reconfigured, reconfigured_rx) = Reconfigured::new();
    let (facts, field_task) = field::start_watchers(
        std::path::PathBuf::from(field::WPA_CTRL_DIR),
        interfaces_rx,
        reconfigured_rx,
        shutdown.child_token(),
    );
    let mut monitor = Monitor {
        rcvbuf: INITIAL_RCVBUF,
        config,
        server,
        session: None,
        verdict: Verdict::default(),
        status: tx,
        debounce: Debounce::default(),
        resync_at: None,
        failing: false,
        overrun: false,
        uplinks: Uplinks::new(),
        recheck_at: None,
        steering,
        steered: false,
        steer_failures: Vec::new(),
        switches: 0,
        last_switch: None,
        kinds: HashMap::new(),
        last_kinds: HashMap::new(),
        seen: Vec::new(),
        field_interfaces,
        facts,
        field_task,
    };
    let querier = session.querier();
    let steers = monitor.steering == Steering::On;
    let first = async {
        if monitor.steering == Steering::On {
            // What a killed daemon left behind would steer with stale choices.
            monitor.flush(&querier).await?;
        }
        monitor.evaluate(&querier, Instant::now(), true).await
    };
    let started = tokio::select! {
        _ = shutdown.cancelled() => {
            if steers {
                // Best effort: a start that never finished leaves no routing behind.
                let _ = querier.flush().await;
            }
            Err(NetError::Shutdown)
        }
        result = first => result,
    };
    if let Err(e) = started {
        monitor.field_task.abort();
        return Err(e);
    }
    monitor.session = Some(session);
    monitor.server = match monitor.server {
        Server::Name(name) => spawn_resolver(name, shutdown.clone()),
        other => other,
    };
    Ok(Started {
        status: rx,
        task: tokio::spawn(monitor.run(shutdown)),
        reconfigured: Some(reconfigured),
    })
}

async fn facts_changed(facts: &mut watch::Receiver<FieldFacts>) {
    if facts.changed().await.is_err() {
        // The watchers stopped (shutdown): nothing more will come.
        std::future::pending::<()>().await;
    }
}

async fn next_event(session: &mut Option<Session>) -> Event {
    match session {
        Some(session) => session.next_event().await,
        None => std::future::pending().await,
    }
}

async fn resolved(server: &mut Server) {
    if let Server::Resolved { addrs, .. } = server
        && addrs.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

impl Monitor {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let deadline = earliest(&[self.debounce.deadline(), self.resync_at, self.recheck_at]);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = next_event(&mut self.session) => match event {
                    Event::Change => self.debounce.event(Instant::now()),
                    Event::Overrun => {
                        self.rcvbuf = (self.rcvbuf * 2).min(MAX_RCVBUF);
                        self.overrun = true;
                        self.session = None;
                        self.resync_at = Some(Instant::now());
                    }
                    Event::Closed => {
                        self.fail("netlink connection closed");
                        self.session = None;
                        self.resync_at = Some(Instant::now() + RETRY_DELAY);
                    }
                },
                _ = resolved(&mut self.server) => self.debounce.event(Instant::now()),
                _ = facts_changed(&mut self.facts) => {
                    let verdict = self.verdict.clone();
                    self.publish(&verdict, Instant::now());
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() =>
                {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.due(Instant::now()) => {}
                    }
                }
            }
        }
        self.unsteer().await;
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        if let Server::Resolved { task, .. } = self.server
            && let Err(e) = task.await
        {
            log::error!("network: resolver task failed: {e}");
        }
        if let Err(e) = self.field_task.await {
            log::error!("network: uplink watchers failed: {e}");
        }
        log::debug!("network: monitor stopped");
    }

    /// Does whatever is due at `now`: reopen the session, or evaluate a finished burst or a
    /// settle time that ran out.
    async fn due(&mut self, now: Instant) {
        if self.resync_at.is_some_and(|at| at <= now) {
            self.resync_at = None;
            // A new session re-reads everything: a pending burst is covered.
            self.debounce = Debounce::default();
            if let Some(old) = self.session.take() {
                old.close().await;
            }
            match Session::open(self.rcvbuf) {
                Ok(session) => {
                    let granted = session.rcvbuf / 1024;
                    if std::mem::take(&mut self.overrun) {
                        // The kernel caps the request at net.core.rmem_max (doubled).
                        log::warn!(
                            "network: netlink messages lost (receive buffer full); re-reading \
                             the kernel's state with a {granted} KiB buffer"
                        );
                    } else {
                        log::debug!("network: netlink socket reopened ({granted} KiB buffer)");
                    }
                    self.session = Some(session);
                    self.refresh().await;
                }
                Err(e) => {
                    self.fail(&e.to_string());
                    self.resync_at = Some(now + RETRY_DELAY);
                }
            }
        } else if self.debounce.fire(now) || self.recheck_at.is_some_and(|at| at <= now) {
            self.recheck_at = None;
            self.refresh().await;
        }
    }

    /// Takes a snapshot, decides, and publishes and logs the verdict if it changed.
    async fn refresh(&mut self) {
        let Some(querier) = self.session.as_ref().map(Session::querier) else {
            return;
        };
        if let Err(e) = self.evaluate(&querier, Instant::now(), false).await {
            self.fail(&e.to_string());
            self.session = None;
            self.resync_at = Some(Instant::now() + RETRY_DELAY);
            return;
        }
        if self.failing {
            log::info!("network: netlink monitoring recovered");
            self.failing = false;
        }
    }

    /// One evaluation: read the kernel's state, choose the uplink, steer to it, ask the
    /// kernel for its route to the server, and publish what changed.
    async fn evaluate(
        &mut self,
        querier: &Querier,
        now: Instant,
        first: bool,
    ) -> Result<(), NetError> {
        let ips = self.server.ips();
        let mut snapshot = querier.state().await?;
        let family = ips.as_ref().and_then(|ips| ips.first().copied());
        self.learn_kinds(&snapshot);
        let seen = uplinks::candidates(&self.config, &snapshot, family);
        self.seen = seen.clone();
        let choice = self.uplinks.update(&self.config, now, seen.clone());
        self.recheck_at = choice.recheck_at;
        self.steer(querier, &mut snapshot, &seen, &choice, ips.as_deref())
            .await?;
        snapshot.server = querier.lookups(ips.as_deref()).await?;
        let verdict = evaluate(&self.config, &snapshot);
        let previous = (!first).then_some(&self.verdict);
        if let Some(line) = change_line(&self.config, previous, &verdict, &snapshot) {
            if verdict.status.online {
                log::info!("{line}");
            } else {
                log::warn!("{line}");
            }
        }
        if let (Some(old), Some(new)) = (&self.verdict.path, &verdict.path)
            && !first
            && old != new
        {
            self.switches += 1;
            let why = choice
                .switched
                .clone()
                .unwrap_or_else(|| describe_switch(old, new));
            let line = format!("{old} -> {new} ({why})");
            log::info!("network: path switch {}: {line}", self.switches);
            self.last_switch = Some(line);
        }
        self.publish(&verdict, now);
        self.verdict = verdict;
        Ok(())
    }

    /// Reads the kind of every interface not seen before (by index and name) and tells the
    /// field watchers which ones are Wi-Fi and modems.
    fn learn_kinds(&mut self, snapshot: &Snapshot) {
        self.kinds.retain(|index, (name, _)| {
            snapshot
                .links
                .iter()
                .any(|l| l.index == *index && l.name == *name)
        });
        let sys = std::path::Path::new(field::SYS_CLASS_NET);
        for link in snapshot.links.iter().filter(|l| !l.loopback) {
            let known = self
                .kinds
                .get(&link.index)
                .is_some_and(|(name, _)| *name == link.name);
            if !known {
                let kind = UplinkKind::from_facts(&field::read_facts(sys, &link.name));
                self.kinds.insert(link.index, (link.name.clone(), kind));
                if self.last_kinds.len() >= MAX_REMEMBERED_KINDS {
                    // Forget the names no interface has now (the uplinks keep at most 16).
                    let present: Vec<&str> =
                        snapshot.links.iter().map(|l| l.name.as_str()).collect();
                    self.last_kinds
                        .retain(|name, _| present.contains(&name.as_str()));
                }
                self.last_kinds.insert(link.name.clone(), kind);
            }
        }
        let mut wanted = Interfaces::default();
        for link in &snapshot.links {
            if !super::interface_patterns::watches(&self.config, &link.name) {
                continue;
            }
            match self.kinds.get(&link.index).map(|(_, k)| *k) {
                Some(UplinkKind::Wifi) => {
                    wanted.wifi.insert(link.name.clone());
                }
                Some(UplinkKind::Modem) => {
                    wanted.modems.insert(link.name.clone());
                }
                _ => {}
            }
        }
        self.field_interfaces.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
    }

    fn kind_of(&self, name: &str) -> UplinkKind {
        self.kinds
            .values()
            .find(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .or_else(|| self.last_kinds.get(name).copied())
            .unwrap_or_default()
    }

    /// Each uplink's kind and field facts; and the Wi-Fi and modem interfaces that never had
    /// a route (a radio that cannot join still says why), after the uplinks.
    fn decorate(&self, uplinks: &mut Vec<UplinkStatus>) {
        let facts = self.facts.borrow();
        for candidate in &self.seen {
            let kind = self.kind_of(&candidate.name);
            let has_facts = match kind {
                UplinkKind::Wifi => facts.wifi.contains_key(&candidate.name),
                UplinkKind::Modem => true,
                _ => false,
            };
            if has_facts && !uplinks.iter().any(|u| u.name == candidate.name) {
                uplinks.push(UplinkStatus {
                    name: candidate.name.clone(),
                    kind,
                    state: candidate.state,
                    usable: false,
                    flaps: 0,
                    wifi: None,
                    modem: None,
                });
            }
        }
        for u in uplinks.iter_mut() {
            u.kind = self.kind_of(&u.name);
            u.wifi = facts.wifi.get(&u.name).cloned();
            u.modem = facts.modems.get(&u.name).cloned();
        }
    }

    fn publish(&mut self, verdict: &Verdict, now: Instant) {
        let in_use = verdict.path.as_ref().map(|p| p.interface.as_str());
        let mut uplinks = self.uplinks.view(now, in_use);
        if self.steering != Steering::On {
            // Without steering the kernel's routes decide: nothing waits to settle.
            for u in &mut uplinks {
                if u.state == UplinkState::Settling {
                    u.state = UplinkState::Usable;
                }
            }
        }
        self.decorate(&mut uplinks);
        let status = NetworkStatus {
            uplinks,
            switches: self.switches,
            last_switch: self.last_switch.clone(),
            steered: self.steered,
            ..verdict.status.clone()
        };
        let changed = self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
        if changed
            && (self.verdict.status.online, &self.verdict.status.interfaces)
                != (verdict.status.online, &verdict.status.interfaces)
            && let Server::Resolved { poke, .. } = &self.server
        {
            // The network changed: the name may resolve now, or differently.
            poke.notify_one();
        }
    }

    /// Brings the kernel's steering in line with `choice` (only with two or more uplinks:
    /// one uplink needs no policy routing, and a box with one should not get any).
    async fn steer(
        &mut self,
        querier: &Querier,
        snapshot: &mut Snapshot,
        seen: &[Candidate],
        choice: &Choice,
        servers: Option<&[IpAddr]>,
    ) -> Result<(), NetError> {
        if self.steering != Steering::On {
            return Ok(());
        }
        let wanted = if self.uplinks.count() >= 2 {
            steer::plan(
                self.config.route_table,
                seen,
                choice.chosen.as_ref(),
                servers.unwrap_or_default(),
            )
        } else {
            Plan::default()
        };
        snapshot.ours.rules = querier.our_rules().await?;
        let changes = steer::changes(&snapshot.ours, &wanted);
        if changes.is_empty() {
            self.steered = !wanted.is_empty();
            return Ok(());
        }
        match querier.apply(&changes).await {
            Ok(failures) => {
                for f in failures.iter().filter(|f| !self.steer_failures.contains(f)) {
                    log::warn!("network: steering: cannot {f}");
                }
                self.steer_failures = failures;
                if !self.steered && !wanted.is_empty() {
                    log::info!(
                        "network: steering the server's traffic with policy routing (table {})",
                        self.config.route_table
                    );
                }
                self.steered = !wanted.is_empty();
            }
            Err(e) => {
                log::warn!(
                    "network: cannot steer the server's traffic ({e}); the kernel's routes \
                     decide which uplink carries the stream"
                );
                self.steering = Steering::Refused;
                self.steered = false;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, querier: &Querier) -> Result<(), NetError> {
        match querier.flush().await {
            Ok(_) => Ok(()),
            Err(e @ NetError::Request { .. }) if self.steering == Steering::On => {
                log::warn!(
                    "network: cannot steer the server's traffic ({e}); the kernel's routes \
                     decide which uplink carries the stream"
                );
                self.steering = Steering::Refused;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes our steering on the way out: a box without the daemon routes as it did
    /// before it started.
    async fn unsteer(&mut self) {
        if self.steering != Steering::On {
            return;
        }
        let querier = match &self.session {
            Some(session) => session.querier(),
            None => match Session::open(INITIAL_RCVBUF) {
                Ok(session) => {
                    self.session = Some(session);
                    self.session
                        .as_ref()
                        .map(Session::querier)
                        .expect("just set")
                }
                Err(e) => {
                    log::warn!("network: cannot remove the steering: {e}");
                    return;
                }
            },
        };
        if let Err(e) = querier.flush().await {
            log::warn!("network: cannot remove the steering: {e}");
        }
    }

    fn fail(&mut self, what: &str) {
        if !self.failing {
            log::error!(
                "network: {what}; retrying every {RETRY_DELAY:?}, keeping the last status ({})",
                &*self.status.borrow()
            );
            self.failing = true;
        }
    }
}

/// Why the path changed when the uplink choice did not say (the kernel's routes changed).
fn describe_switch(old: &Path, new: &Path) -> String {
    if old.interface != new.interface {
        format!("the kernel now routes via {}", new.interface)
    } else if old.local != new.local {
        format!("{} changed its address", new.interface)
    } else {
        format!("{} has a new gateway", new.interface)
    }
}

/// Starts the task that keeps `name` resolved; it stops on `shutdown`.
fn spawn_resolver(name: String, shutdown: CancellationToken) -> Server {
    let (tx, addrs) = watch::channel(Vec::new());
    let poke = Arc::new(Notify::new());
    let task = tokio::spawn(resolve_loop(name, tx, Arc::clone(&poke), shutdown));
    Server::Resolved { addrs, poke, task }
}

async fn resolve_loop(
    name: String,
    tx: watch::Sender<Vec<IpAddr>>,
    poke: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failure_logged = false;
    loop {
        // tokio's lookup_host runs getaddrinfo on the blocking pool: the runtime stays free.
        let lookup =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)));
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = lookup => result,
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        let error = match result {
            Ok(Ok(found)) => {
                for addr in found {
                    if !ips.contains(&addr.ip()) && ips.len() < MAX_SERVER_IPS {
                        ips.push(addr.ip());
                    }
                }
                "no addresses".to_string()
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {RESOLVE_TIMEOUT:?}"),
        };
        let wait = if ips.is_empty() {
            if !failure_logged {
                let fallback = if tx.borrow().is_empty() {
                    "deciding by the default route until it resolves".to_string()
                } else {
                    format!("keeping {}", list(&tx.borrow()))
                };
                log::info!("network: cannot resolve server {name} ({error}); {fallback}");
                failure_logged = true;
            }
            RESOLVE_RETRY
        } else {
            failure_logged = false;
            let line = format!("network: server {name} resolves to {}", list(&ips));
            if tx.send_if_modified(|current| {
                let changed = *current != ips;
                *current = ips;
                changed
            }) {
                log::info!("{line}");
            }
            RESOLVE_REFRESH
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESOLVE_MIN_INTERVAL) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = poke.notified() => {}
            _ = tokio::time::sleep(wait.saturating_sub(RESOLVE_MIN_INTERVAL)) => {}
        }
    }
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
