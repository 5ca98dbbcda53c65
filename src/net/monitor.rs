//! The network monitor's task: it owns the netlink session, turns bursts of kernel messages
//! into one fresh snapshot each, decides, and publishes and logs only real changes. It also
//! owns the resolver task that keeps the server's host name resolved.
//!
//! Failure handling: an overrun (messages lost) reopens the socket with a bigger receive
//! buffer and re-reads everything; a broken connection is reopened after a short delay. The
//! last status stays published meanwhile: not knowing is not the same as being offline.

use super::debounce::Debounce;
use super::decide::{Verdict, change_line, evaluate};
use super::netlink::{Event, Session};
use super::{NetError, NetworkStatus, ServerAddr};
use crate::config::NetworkConfig;
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
}

pub(super) async fn start(
    config: NetworkConfig,
    server: Option<ServerAddr>,
    shutdown: CancellationToken,
) -> Result<(watch::Receiver<NetworkStatus>, JoinHandle<()>), NetError> {
    if !config.netlink {
        log::info!("network: netlink monitoring off (config network.netlink); assuming online");
        let (tx, rx) = watch::channel(NetworkStatus {
            online: true,
            interfaces: Vec::new(),
        });
        // Keep the sender until shutdown so that receivers do not see a closed channel.
        let task = tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(tx);
        });
        return Ok((rx, task));
    }

    let server = match server {
        None => Server::None,
        Some(ServerAddr::Ip(ip)) => Server::Fixed(vec![ip]),
        Some(ServerAddr::Name(name)) => Server::Name(name),
    };
    let session = Session::open(INITIAL_RCVBUF)?;
    let querier = session.querier();
    let ips = server.ips();
    let snapshot = tokio::select! {
        _ = shutdown.cancelled() => return Err(NetError::Shutdown),
        snapshot = querier.snapshot(ips.as_deref()) => snapshot?,
    };
    let verdict = evaluate(&config, &snapshot);
    if let Some(line) = change_line(&config, None, &verdict, &snapshot) {
        log::info!("{line}");
    }
    let (tx, rx) = watch::channel(verdict.status.clone());
    let server = match server {
        Server::Name(name) => spawn_resolver(name, shutdown.clone()),
        other => other,
    };
    let monitor = Monitor {
        rcvbuf: INITIAL_RCVBUF,
        config,
        server,
        session: Some(session),
        verdict,
        status: tx,
        debounce: Debounce::default(),
        resync_at: None,
        failing: false,
        overrun: false,
    };
    Ok((rx, tokio::spawn(monitor.run(shutdown))))
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

impl Monitor {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let deadline = match (self.debounce.deadline(), self.resync_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        if let Server::Resolved { task, .. } = self.server
            && let Err(e) = task.await
        {
            log::error!("network: resolver task failed: {e}");
        }
        log::debug!("network: monitor stopped");
    }

    /// Does whatever is due at `now`: reopen the session, or evaluate a finished burst.
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
        } else if self.debounce.fire(now) {
            self.refresh().await;
        }
    }

    /// Takes a snapshot, decides, and publishes and logs the verdict if it changed.
    async fn refresh(&mut self) {
        let Some(querier) = self.session.as_ref().map(Session::querier) else {
            return;
        };
        let snapshot = match querier.snapshot(self.server.ips().as_deref()).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.fail(&e.to_string());
                self.session = None;
                self.resync_at = Some(Instant::now() + RETRY_DELAY);
                return;
            }
        };
        if self.failing {
            log::info!("network: netlink monitoring recovered");
            self.failing = false;
        }
        let verdict = evaluate(&self.config, &snapshot);
        if let Some(line) = change_line(&self.config, Some(&self.verdict), &verdict, &snapshot) {
            if verdict.status.online {
                log::info!("{line}");
            } else {
                log::warn!("{line}");
            }
        }
        let changed = self.status.send_if_modified(|status| {
            let changed = *status != verdict.status;
            if changed {
                *status = verdict.status.clone();
            }
            changed
        });
        if changed && let Server::Resolved { poke, .. } = &self.server {
            // The network changed: the name may resolve now, or differently.
            poke.notify_one();
        }
        self.verdict = verdict;
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
