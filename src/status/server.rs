//! The daemon's end of the status socket: answers `onair status`, `--history` and `retry`.
//!
//! The socket is a diagnostics aid and must never get in the way of streaming: every client
//! is served by its own task under read and write deadlines, the number of clients at once is
//! bounded, and a client that connects and then does nothing only ever holds up itself. Idle
//! connections (a slow-loris) cannot lock `onair status` out: connections that have not sent
//! their request yet are held apart from the clients being answered, and when too many wait,
//! the one that has waited longest is closed for the newcomer — a real client sends its request
//! at once, so it is always among the newest.
//! The protocol is in [`super::protocol`].
//!
//! Binding is separate from serving so that the daemon binds first, before it touches the
//! camera or the server: a second daemon started by mistake must stop there, and never take
//! over the socket of one that is running. The socket file is removed when the server is
//! dropped (at shutdown, or when start-up fails later on), but only while it is still ours.

use super::protocol::{ErrorReply, MAX_REQUEST_BYTES, Request, RetryReply};
use super::{FlightRecorder, StatusSources};
use crate::supervisor::{Event, Reply, RetryAnswer};
use serde::Serialize;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Owner and group may talk to the daemon; put the people who may run `onair status` in the
/// socket's group.
pub const SOCKET_MODE: u32 = 0o660;

/// How long the start-up check waits for an existing socket to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A pause after a failed `accept` (out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a `retry` waits for the watchdog's answer (it answers in microseconds unless it
/// is tearing a connection down).
const RETRY_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "status socket {}: another onair daemon is already answering on it; stop that one first",
        path.display()
    )]
    AlreadyRunning { path: PathBuf },
    #[error("status socket {}: cannot create its directory {}: {source}", path.display(), dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "status socket {}: something that is not a socket is in the way; remove it or set another `status.socket`",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("status socket {}: cannot check for a running daemon: {source}", path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("status socket {}: cannot remove the stale socket file: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("status socket {}: cannot listen: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("status socket {}: cannot set its mode to 0660: {source}", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StatusError {
    /// Another daemon owns the socket: the one thing about the status socket that must stop
    /// this daemon (everything else only costs `onair status`).
    pub fn is_already_running(&self) -> bool {
        matches!(self, StatusError::AlreadyRunning { .. })
    }
}

/// How much the server gives each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clients answered at once (they have sent their request); one more is told the daemon
    /// is busy.
    pub max_clients: usize,
    /// Connections that have not sent their request yet; when one more arrives, the one that
    /// has waited longest is closed.
    pub max_waiting: usize,
    /// Time for a client to send its request line (`onair status` sends it at once).
    pub read_timeout: Duration,
    /// Time for a client to take the answer.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 8,
            max_waiting: 32,
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(2),
        }
    }
}

/// A client being served, as the accept loop sees it.
struct Slot {
    id: Id,
    accepted: Instant,
    /// Set once the client's request line is in: from then on it is never evicted.
    asked: Arc<AtomicBool>,
    /// A second descriptor of the client's socket, to see whether it has sent anything that
    /// its task has not read yet (a task may not have run since it was spawned).
    probe: Option<std::os::fd::OwnedFd>,
    task: AbortHandle,
}

impl Slot {
    /// Whether the client has sent anything: its request is read, or waiting to be.
    fn has_spoken(&self) -> bool {
        self.asked.load(Ordering::Acquire) || self.probe.as_ref().is_some_and(has_data)
    }
}

/// Whether a socket has bytes waiting to be read (looked at, not taken).
fn has_data(fd: &impl std::os::fd::AsRawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    matches!(
        recv(fd.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

/// What the server answers from.
pub struct StatusContext {
    pub sources: StatusSources,
    pub recorder: FlightRecorder,
    /// The watchdog's inputs, for `retry`.
    pub events: mpsc::Sender<Event>,
}

/// A bound, not yet serving status socket. Dropping it removes the socket file.
pub struct StatusServer {
    listener: UnixListener,
    file: SocketFile,
    limits: Limits,
}

impl StatusServer {
    /// Creates the socket's directory if missing, replaces a stale socket file, binds and sets
    /// mode 0660. Refuses with [`StatusError::AlreadyRunning`] when a daemon answers on `path`.
    pub async fn bind(path: &Path) -> Result<StatusServer, StatusError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StatusError::CreateDir {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        remove_if_stale(path).await?;
        let listener = UnixListener::bind(path).map_err(|source| match source.kind() {
            // Another daemon bound it between our check and our bind.
            io::ErrorKind::AddrInUse => StatusError::AlreadyRunning {
                path: path.to_path_buf(),
            },
            _ => StatusError::Bind {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let file = SocketFile::of(path).map_err(|source| StatusError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        // From here on, dropping `file` removes the socket, whatever fails next.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
            |source| StatusError::Permissions {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(StatusServer {
            listener,
            file,
            limits: Limits::default(),
        })
    }

    pub fn with_limits(mut self, limits: Limits) -> StatusServer {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Answers clients until `shutdown`; then stops every client task and removes the socket.
    pub async fn serve(self, ctx: StatusContext, shutdown: CancellationToken) {
        let ctx = Arc::new(ctx);
        let limits = self.limits;
        let mut clients = JoinSet::new();
        let mut slots: Vec<Slot> = Vec::new();
        let serving = Arc::new(tokio::sync::Semaphore::new(limits.max_clients));
        log::debug!("status socket: listening on {}", self.path().display());
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            while let Some(done) = clients.try_join_next_with_id() {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        if !e.is_cancelled() {
                            log::error!("status socket: a client task failed: {e}");
                        }
                        e.id()
                    }
                };
                slots.retain(|s| s.id != id);
            }
            match accepted {
                Ok((stream, _)) => {
                    let waiting = slots.iter().filter(|s| !s.has_spoken()).count();
                    if waiting >= limits.max_waiting {
                        close_longest_waiting(&mut slots);
                    }
                    if slots.len() >= limits.max_waiting + limits.max_clients {
                        log::debug!(
                            "status socket: {} clients already; refusing one",
                            slots.len()
                        );
                        refuse_busy(&stream);
                        continue;
                    }
                    let asked = Arc::new(AtomicBool::new(false));
                    let probe = {
                        use std::os::fd::AsFd;
                        stream.as_fd().try_clone_to_owned().ok()
                    };
                    let task = clients.spawn(serve_client(
                        stream,
                        ctx.clone(),
                        limits,
                        asked.clone(),
                        serving.clone(),
                    ));
                    slots.push(Slot {
                        id: task.id(),
                        accepted: Instant::now(),
                        asked,
                        probe,
                        task,
                    });
                }
                Err(e) => {
                    log::warn!("status socket: accept failed: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        clients.shutdown().await;
        log::debug!("status socket: closed {}", self.path().display());
        // Dropping `self` closes the listener and removes the socket file.
    }
}

/// The socket file as we created it, removed on drop unless someone replaced it since.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!(
                        "status socket {}: cannot remove it: {e}",
                        self.path.display()
                    );
                }
            }
            Ok(_) => log::debug!(
                "status socket {}: replaced by someone else; leaving it",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// Removes a socket file nobody answers on (left by a daemon that was killed); refuses when
/// a daemon answers, or when the file is not a socket at all.
async fn remove_if_stale(path: &Path) -> Result<(), StatusError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StatusError::Probe {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(StatusError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let already_running = || StatusError::AlreadyRunning {
        path: path.to_path_buf(),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(_)) => return Err(already_running()),
        // A listener whose backlog is full is alive, only busy.
        Err(_) => return Err(already_running()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Err(already_running()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(Err(source)) => {
            return Err(StatusError::Probe {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    log::info!(
        "status socket {}: removing a stale socket left by an earlier run",
        path.display()
    );
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StatusError::RemoveStale {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Closes the connection that has waited longest without sending its request, telling it why.
fn close_longest_waiting(slots: &mut Vec<Slot>) {
    let oldest = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.has_spoken())
        .min_by_key(|(_, s)| s.accepted)
        .map(|(i, _)| i);
    if let Some(i) = oldest {
        let slot = slots.swap_remove(i);
        slot.task.abort();
        if let Some(fd) = slot.probe {
            // Never blocks: the descriptor shares the socket's O_NONBLOCK.
            let note = error_line("closed: too many connections waiting without a request");
            let _ = nix::unistd::write(&fd, &note);
        }
        log::debug!("status socket: closed a connection that sent nothing, to take a new one");
    }
}

/// Tells a client over the limit why it is closed, without ever waiting for it.
fn refuse_busy(stream: &UnixStream) {
    let _ = stream.try_write(&error_line(BUSY));
}

const BUSY: &str = "the daemon is busy serving other status clients; try again";

async fn serve_client(
    mut stream: UnixStream,
    ctx: Arc<StatusContext>,
    limits: Limits,
    asked: Arc<AtomicBool>,
    serving: Arc<tokio::sync::Semaphore>,
) {
    let request = tokio::time::timeout(limits.read_timeout, read_request(&mut stream)).await;
    // Only a client that asked something is no longer waiting; one that timed out may still
    // be closed for a newcomer while it is told so.
    if matches!(request, Ok(Ok(_))) {
        asked.store(true, Ordering::Release);
    }
    // Held until the answer is taken.
    let mut _permit = None;
    let reply = match request {
        Ok(Ok(line)) => match (Request::parse(&line), serving.try_acquire()) {
            (None, _) => {
                error_line("unknown request; send one line: status, history, retry or recordings")
            }
            (Some(_), Err(_)) => error_line(BUSY),
            (Some(request), Ok(permit)) => {
                _permit = Some(permit);
                let peer = stream.peer_cred().ok().map(|c| c.uid());
                answer(request, peer, &ctx).await
            }
        },
        Ok(Err(RequestError::TooLong)) => error_line("request too long"),
        Ok(Err(RequestError::Io(e))) => {
            log::debug!("status socket: reading a request failed: {e}");
            return;
        }
        Err(_) => {
            log::debug!("status socket: a client sent no request in time");
            error_line("no request received in time")
        }
    };
    let sent = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::debug!("status socket: writing an answer failed: {e}"),
        Err(_) => log::debug!("status socket: a client did not take its answer in time"),
    }
}

enum RequestError {
    TooLong,
    Io(io::Error),
}

/// One request line: up to `\n` or the end of the client's writing half.
async fn read_request(stream: &mut UnixStream) -> Result<String, RequestError> {
    let mut line = Vec::with_capacity(MAX_REQUEST_BYTES);
    let limited = (&mut *stream).take(MAX_REQUEST_BYTES as u64 + 1);
    BufReader::new(limited)
        .read_until(b'\n', &mut line)
        .await
        .map_err(RequestError::Io)?;
    if line.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLong);
    }
    // Not UTF-8 cannot be a request; the lossy text simply fails to parse.
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn answer(request: Request, peer: Option<u32>, ctx: &StatusContext) -> Vec<u8> {
    match request {
        Request::Status => json_line(&ctx.sources.snapshot()),
        Request::History => json_line(&ctx.recorder.snapshot()),
        Request::Recordings => json_line(&ctx.sources.recordings()),
        Request::Retry => retry(false, ctx).await,
        Request::RetryForce if may_force(peer) => retry(true, ctx).await,
        Request::RetryForce => {
            log::info!("status socket: `retry force` refused to uid {peer:?} (root only)");
            error_line(
                "only root may override the server's Retry-After (`onair retry --force`); \
                 `onair retry` asks without overriding it",
            )
        }
    }
}

/// Overriding the server's `Retry-After` is the owner's call: root, or the daemon's own user.
/// A member of the socket's group may only ask within the server's terms.
fn may_force(peer_uid: Option<u32>) -> bool {
    peer_uid.is_some_and(|uid| uid == 0 || uid == nix::unistd::geteuid().as_raw())
}

/// Hands a retry request to the watchdog and says what it answered: the state it was in, or
/// why it said no.
async fn retry(force: bool, ctx: &StatusContext) -> Vec<u8> {
    let (state, attempt, next_retry_ms) = {
        let view = ctx.sources.view.borrow();
        let wait = view
            .next_retry_at
            .map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
        (view.state, view.attempt, wait.map(|d| d.as_millis() as u64))
    };
    let (reply, answer) = Reply::new();
    let asked = async {
        ctx.events
            .send(Event::RetryRequested { force, reply })
            .await
            .ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(RETRY_ANSWER_TIMEOUT, asked).await {
        Ok(Some(RetryAnswer::Started | RetryAnswer::NothingToDo)) => {
            log::info!("status socket: retry requested while {state}");
            json_line(&RetryReply {
                requested: true,
                state,
                attempt,
                next_retry_ms,
            })
        }
        Ok(Some(RetryAnswer::ServerAskedToWait { remaining })) => error_line(&format!(
            "not now: the server asked the box to wait {} more (Retry-After); \
             `onair retry --force` (root) overrides it",
            crate::status::render::duration(remaining)
        )),
        Ok(Some(RetryAnswer::TooSoon { again_in })) => error_line(&format!(
            "not now: a retry was started less than {} s ago; try again in {:.1} s",
            crate::supervisor::machine::RETRY_REQUEST_INTERVAL.as_secs(),
            again_in.as_secs_f64()
        )),
        Ok(None) => error_line("the daemon is stopping"),
        Err(_) => error_line("the watchdog is busy; try again"),
    }
}

fn error_line(message: &str) -> Vec<u8> {
    json_line(&ErrorReply {
        error: message.into(),
    })
}

/// One JSON document and a newline.
fn json_line<T: Serialize>(value: &T) -> Vec<u8> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            bytes
        }
        // Our types are plain structs and strings: this is a bug, but not one worth a panic
        // in a diagnostics path.
        Err(e) => {
            log::error!("status socket: cannot encode an answer: {e}");
            b"{\"error\":\"internal error encoding the answer\"}\n".to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EncoderConfig, EncoderKind, ReconnectConfig};
    use crate::media::{BitrateHandle, KeyframeRequester, MediaStats};
    use crate::net::NetworkStatus;
    use crate::output::OutputStats;
    use crate::output::adapt::Adaptation;
    use crate::recorder::{Entry, Record};
    use crate::status::{StatusSnapshot, protocol::RetryReply};
    use crate::supervisor::{Machine, MachineView, StreamState};
    use std::time::Instant as StdInstant;
    use tokio::sync::watch;
    use tokio::time::Instant;

    /// A server on a temporary socket with live sources made of real channels and counters.
    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        events: mpsc::Receiver<Event>,
        recorder: FlightRecorder,
        view: watch::Sender<MachineView>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        // Kept alive so the watch channel stays open.
        _network: watch::Sender<NetworkStatus>,
    }

    fn sources() -> (
        StatusSources,
        watch::Sender<MachineView>,
        watch::Sender<NetworkStatus>,
    ) {
        let machine = Machine::new(&ReconnectConfig::default(), true, 1, Instant::now());
        let (view_tx, view_rx) = watch::channel(machine.view());
        let (net_tx, net_rx) = watch::channel(NetworkStatus {
            online: true,
            interfaces: vec!["eth0".into()],
            ..NetworkStatus::default()
        });
        let sources = StatusSources {
            view: view_rx,
            network: net_rx,
            media: Arc::new(MediaStats::default()),
            output_stats: Arc::new(OutputStats::default()),
            keyframes: KeyframeRequester::new(),
            audio: None,
            recording: None,
            adaptation: Arc::new(Adaptation::new(
                &EncoderConfig {
                    kind: EncoderKind::X264,
                    bitrate_kbps: 2500,
                    min_bitrate_kbps: 300,
                    adapt: true,
                    keyframe_interval_ms: 2000,
                },
                BitrateHandle::new(2500),
                crate::recorder::FlightRecorder::new(),
            )),
            clock: watch::channel(crate::clock::ClockView {
                synchronized: true,
                since: Instant::now(),
                set_by: crate::clock::SetBy::Ntp,
                set_from: None,
            })
            .1,
            started: Instant::now(),
            data_partition: None,
            source: "test 320x240@15".into(),
            output_kind: "whip".into(),
            output_url: "http://127.0.0.1:9/api/whip".into(),
            state_dir: std::path::PathBuf::from("/nonexistent/onair"),
        };
        (sources, view_tx, net_tx)
    }

    async fn start(limits: Limits) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory for the test socket");
        // A directory that does not exist yet: the server creates it.
        let path = dir.path().join("run").join("status.sock");
        start_at(dir, path, limits).await
    }

    async fn start_at(dir: tempfile::TempDir, path: PathBuf, limits: Limits) -> Fixture {
        let (sources, view, network) = sources();
        let (events_tx, events) = mpsc::channel(4);
        let recorder = FlightRecorder::new();
        let shutdown = CancellationToken::new();
        let server = StatusServer::bind(&path)
            .await
            .expect("binding a fresh socket in a temporary directory")
            .with_limits(limits);
        let ctx = StatusContext {
            sources,
            recorder: recorder.clone(),
            events: events_tx,
        };
        let task = tokio::spawn(server.serve(ctx, shutdown.clone()));
        Fixture {
            _dir: dir,
            path,
            events,
            recorder,
            view,
            shutdown,
            task,
            _network: network,
        }
    }

    /// Speaks the protocol by hand, with a deadline so a hung server fails the test.
    async fn ask(path: &Path, request: &str) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = UnixStream::connect(path)
                .await
                .expect("connect to the server");
            s.write_all(request.as_bytes()).await.expect("send request");
            crate::status::client::read_answer(&mut s)
                .await
                .expect("read answer")
        })
        .await
        .expect("the server answers within 5 s")
    }

    fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
        assert_eq!(bytes.last(), Some(&b'\n'), "one document and a newline");
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!(
                "not the expected JSON ({e}): {}",
                String::from_utf8_lossy(bytes)
            )
        })
    }

    #[tokio::test]
    async fn two_clients_at_once_both_get_the_snapshot() {
        let f = start(Limits::default()).await;
        let (a, b) = tokio::join!(ask(&f.path, "status\n"), ask(&f.path, "status\n"));
        for answer in [a, b] {
            let s: StatusSnapshot = parse(&answer);
            assert_eq!(s.state, StreamState::Starting);
            assert_eq!(s.source, "test 320x240@15");
            assert_eq!(s.network.interfaces, vec!["eth0".to_string()]);
            assert_eq!(s.output.url, "http://127.0.0.1:9/api/whip");
            assert_eq!(s.pid, std::process::id());
        }
    }

    #[tokio::test]
    async fn the_snapshot_follows_the_watchdog() {
        let f = start(Limits::default()).await;
        let mut view = f.view.borrow().clone();
        view.state = StreamState::Reconnecting;
        view.attempt = 3;
        view.last_error = Some("attempt 3: connection refused".into());
        f.view.send(view).expect("the server holds a receiver");
        let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
        assert_eq!(s.state, StreamState::Reconnecting);
        assert_eq!(s.attempt, 3);
        assert_eq!(
            s.last_error.as_deref(),
            Some("attempt 3: connection refused")
        );
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_another() {
        let limits = Limits {
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let f = start(limits).await;
        // Connects, never writes, never reads.
        let _silent = UnixStream::connect(&f.path).await.expect("connect");
        // Sends its request, never reads.
        let mut deaf = UnixStream::connect(&f.path).await.expect("connect");
        deaf.write_all(b"history\n").await.expect("send");
        let started = StdInstant::now();
        let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
        assert_eq!(s.state, StreamState::Starting);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered in {:?} despite two stuck clients",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_read_deadline() {
        let limits = Limits {
            read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let f = start(limits).await;
        let mut silent = UnixStream::connect(&f.path).await.expect("connect");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut out))
            .await
            .expect("the server closes a silent client")
            .expect("read");
        let e: ErrorReply = parse(&out);
        assert_eq!(e.error, "no request received in time");
    }

    #[tokio::test]
    async fn a_request_with_no_serving_slot_free_is_told_busy() {
        let limits = Limits {
            max_clients: 0,
            ..Limits::default()
        };
        let f = start(limits).await;
        let e: ErrorReply = parse(&ask(&f.path, "status\n").await);
        assert!(e.error.contains("busy"), "{}", e.error);
    }

    #[tokio::test]
    async fn the_connection_waiting_longest_makes_room_and_is_told_why() {
        let limits = Limits {
            max_waiting: 2,
            read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let f = start(limits).await;
        let mut oldest = UnixStream::connect(&f.path).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _second = UnixStream::connect(&f.path).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A third silent one: the oldest goes.
        let _third = UnixStream::connect(&f.path).await.expect("connect");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), oldest.read_to_end(&mut out))
            .await
            .expect("the oldest waiting connection is closed")
            .expect("read");
        let e: ErrorReply = parse(&out);
        assert!(
            e.error.contains("too many connections waiting"),
            "{}",
            e.error
        );
        // A real client still gets its answer.
        let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
        assert_eq!(s.state, StreamState::Starting);
    }

    /// A slow-loris: many more idle connections than slots, held open (and reopened when the
    /// server closes them), must not lock a real client out.
    #[tokio::test]
    async fn idle_connections_cannot_lock_a_real_client_out() {
        let limits = Limits {
            read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let f = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(UnixStream::connect(&f.path).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..5 {
            let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
            assert_eq!(s.state, StreamState::Starting);
            // The idle ones come back, as an attacker's would.
            idle.push(UnixStream::connect(&f.path).await.expect("connect"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Answers the next retry request as the watchdog would; returns whether it was forced.
    async fn answer_next(f: &mut Fixture, answer: RetryAnswer) -> bool {
        let event = tokio::time::timeout(Duration::from_secs(1), f.events.recv())
            .await
            .expect("an event within 1 s");
        match event {
            Some(Event::RetryRequested { force, reply }) => {
                reply.send(answer);
                force
            }
            other => panic!("not a retry request: {other:?}"),
        }
    }

    #[tokio::test]
    async fn retry_reaches_the_watchdog_and_its_answer_the_caller() {
        let mut f = start(Limits::default()).await;
        let path = f.path.clone();
        let asking = tokio::spawn(async move { ask(&path, "retry\n").await });
        assert!(!answer_next(&mut f, RetryAnswer::Started).await);
        let reply: RetryReply = parse(&asking.await.unwrap());
        assert_eq!(
            reply,
            RetryReply {
                requested: true,
                state: StreamState::Starting,
                attempt: 0,
                next_retry_ms: None,
            }
        );
        for (answer, says) in [
            (
                RetryAnswer::ServerAskedToWait {
                    remaining: Duration::from_secs(598),
                },
                "the server asked the box to wait 9m 58s more (Retry-After)",
            ),
            (
                RetryAnswer::TooSoon {
                    again_in: Duration::from_millis(3200),
                },
                "try again in 3.2 s",
            ),
        ] {
            let path = f.path.clone();
            let asking = tokio::spawn(async move { ask(&path, "retry\n").await });
            answer_next(&mut f, answer).await;
            let e: ErrorReply = parse(&asking.await.unwrap());
            assert!(e.error.contains(says), "{}", e.error);
        }
        // This test runs as root or as the daemon's own user: it may force.
        let path = f.path.clone();
        let asking = tokio::spawn(async move { ask(&path, "retry force\n").await });
        assert!(answer_next(&mut f, RetryAnswer::Started).await);
        let _: RetryReply = parse(&asking.await.unwrap());
    }

    #[test]
    fn only_root_and_the_daemons_user_may_override_retry_after() {
        assert!(may_force(Some(0)));
        assert!(may_force(Some(nix::unistd::geteuid().as_raw())));
        let other = if nix::unistd::geteuid().is_root() {
            65534
        } else {
            nix::unistd::geteuid().as_raw() + 1
        };
        assert!(!may_force(Some(other)));
        assert!(!may_force(None));
    }

    #[tokio::test]
    async fn retry_while_the_daemon_stops_says_so() {
        let f = start(Limits::default()).await;
        drop(f.events);
        let e: ErrorReply = parse(&ask(&f.path, "retry\n").await);
        assert_eq!(e.error, "the daemon is stopping");
    }

    #[tokio::test]
    async fn history_returns_the_recorder_oldest_first() {
        let f = start(Limits::default()).await;
        f.recorder.record(Entry::Transition {
            from: "starting".into(),
            to: "connecting".into(),
            reason: "input ready".into(),
        });
        f.recorder.record(Entry::Error {
            message: "attempt 1: connection refused".into(),
        });
        let records: Vec<Record> = parse(&ask(&f.path, "history\n").await);
        let entries: Vec<Entry> = records.into_iter().map(|r| r.entry).collect();
        assert_eq!(entries, {
            let r = f.recorder.snapshot();
            r.into_iter().map(|r| r.entry).collect::<Vec<_>>()
        });
        assert!(matches!(&entries[0], Entry::Transition { to, .. } if to == "connecting"));
        assert!(matches!(&entries[1], Entry::Error { .. }));
    }

    #[tokio::test]
    async fn unknown_and_oversized_requests_are_refused() {
        let f = start(Limits::default()).await;
        let e: ErrorReply = parse(&ask(&f.path, "shutdown\n").await);
        assert!(e.error.starts_with("unknown request"), "{}", e.error);
        let e: ErrorReply = parse(&ask(&f.path, &"x".repeat(10_000)).await);
        assert_eq!(e.error, "request too long");
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        // A socket file nobody listens on, as a killed daemon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let f = start_at(dir, path, Limits::default()).await;
        let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
        assert_eq!(s.state, StreamState::Starting);
    }

    #[tokio::test]
    async fn a_live_socket_makes_a_second_server_refuse_and_stays_served() {
        let f = start(Limits::default()).await;
        let second = StatusServer::bind(&f.path).await;
        match second {
            Err(e) => {
                assert!(e.is_already_running(), "{e}");
                assert!(e.to_string().contains("another onair daemon"), "{e}");
            }
            Ok(_) => panic!("a second server took over a live socket"),
        }
        // The refusal left the first server's socket alone.
        let s: StatusSnapshot = parse(&ask(&f.path, "status\n").await);
        assert_eq!(s.state, StreamState::Starting);
    }

    #[tokio::test]
    async fn something_else_in_the_way_is_not_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        std::fs::write(&path, "not a socket").expect("write");
        let err = StatusServer::bind(&path).await.err().expect("refused");
        assert!(matches!(err, StatusError::NotASocket { .. }), "{err}");
        assert!(!err.is_already_running());
        assert_eq!(
            std::fs::read_to_string(&path).expect("kept"),
            "not a socket"
        );
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let err = StatusServer::bind(&file.join("status.sock"))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, StatusError::CreateDir { .. }), "{err}");
        assert!(
            err.to_string().contains("cannot create its directory"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_socket_is_mode_0660() {
        let f = start(Limits::default()).await;
        let mode = std::fs::metadata(&f.path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660, "mode {:o}", mode & 0o777);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server_and_removes_the_file() {
        let f = start(Limits::default()).await;
        // A client in the middle of nothing must not hold shutdown up.
        let _silent = UnixStream::connect(&f.path).await.expect("connect");
        f.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), f.task)
            .await
            .expect("the server stops within 2 s")
            .expect("the server task did not panic");
        assert!(!f.path.exists(), "socket file left behind");
        assert!(UnixStream::connect(&f.path).await.is_err());
    }

    #[tokio::test]
    async fn a_server_that_fails_to_start_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        let server = StatusServer::bind(&path).await.expect("bind");
        assert!(path.exists());
        drop(server);
        assert!(!path.exists());
    }
}
