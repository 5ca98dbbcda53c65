//! Watches the capture device from the outside, so input trouble is known when it happens
//! rather than when the next retry notices:
//! - the device node appearing and disappearing (a USB camera or dongle plugged in or out, a
//!   driver loaded or unloaded), through inotify on the directory that holds it — or on the
//!   nearest directory that exists, for udev's `/dev/v4l/by-id/...` links;
//! - V4L2 `SOURCE_CHANGE` events (an HDMI bridge losing or regaining its signal, new timings),
//!   on a file handle of its own that never streams (the bridge's subdev node, for a
//!   media-controller capture).
//!
//! What it sees goes to the media runner as [`InputEvent`]s; deciding what they mean is
//! `input.rs`'s job. The event handle is closed as soon as the device goes away, so an
//! unplugged driver can be unloaded.

use super::bridge;
use super::input::InputEvent;
use super::v4l2;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A present device whose event handle cannot be opened (busy, not yet ready, not a V4L2
/// node) is tried again this often.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Starts watching `device`; the task ends with `shutdown` or when the runner is gone.
pub fn spawn(
    device: PathBuf,
    events: mpsc::Sender<InputEvent>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let presence = match Presence::new(&device) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!(
                    "media: cannot watch {} for hotplug ({e}); relying on the retry timer",
                    device.display()
                );
                None
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = watch(&device, presence, events) => {}
        }
    })
}

/// The event handle's state: open, not to be asked again until a replug, or to be reopened.
enum Handle {
    Open(EventHandle),
    Unsupported,
    Closed,
}

async fn watch(device: &Path, mut presence: Option<Presence>, events: mpsc::Sender<InputEvent>) {
    let mut present = device.exists();
    let mut handle = Handle::Closed;
    let mut reopen = tokio::time::interval(REOPEN_EVERY);
    reopen.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if present && matches!(handle, Handle::Closed) {
            handle = match EventHandle::open(device) {
                Ok(h) => Handle::Open(h),
                Err(true) => Handle::Unsupported,
                Err(false) => Handle::Closed,
            };
        }
        let retry_open = present && matches!(handle, Handle::Closed);
        let open = match &mut handle {
            Handle::Open(h) => Some(h),
            _ => None,
        };
        let outcome = tokio::select! {
            changed = wait_presence(presence.as_mut()) => Outcome::Presence(changed),
            got = wait_event(open) => Outcome::Event(got),
            _ = reopen.tick(), if retry_open => continue,
        };
        let event = match outcome {
            Outcome::Presence(Ok(())) => {
                let now = device.exists();
                if now == present {
                    continue;
                }
                present = now;
                // A replugged device may be another one: ask it afresh.
                handle = Handle::Closed;
                if now {
                    log::debug!("media: {} appeared", device.display());
                    InputEvent::DeviceAppeared
                } else {
                    log::debug!("media: {} went away", device.display());
                    InputEvent::DeviceGone
                }
            }
            Outcome::Presence(Err(e)) => {
                log::warn!("media: hotplug watch failed ({e}); relying on the retry timer");
                presence = None;
                continue;
            }
            Outcome::Event(Ok(true)) => InputEvent::SourceChanged,
            Outcome::Event(Ok(false)) => continue,
            Outcome::Event(Err(e)) => {
                // ENODEV: the driver let go of the device (a USB disconnect) while the node
                // may linger; the capture sees it too. Closing lets the driver unload.
                log::debug!("media: event handle of {} closed: {e}", device.display());
                handle = Handle::Closed;
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

enum Outcome {
    Presence(std::io::Result<()>),
    Event(Result<bool, nix::errno::Errno>),
}

async fn wait_presence(presence: Option<&mut Presence>) -> std::io::Result<()> {
    match presence {
        Some(p) => p.changed().await,
        None => std::future::pending().await,
    }
}

async fn wait_event(handle: Option<&mut EventHandle>) -> Result<bool, nix::errno::Errno> {
    match handle {
        Some(h) => h.next().await,
        None => std::future::pending().await,
    }
}

/// A file handle subscribed to the device's `SOURCE_CHANGE` events, read by a thread of its
/// own. Devices without such events (most webcams) refuse the subscription; then there is no
/// handle, and the hotplug watch and the stall rule cover them.
///
/// Not on tokio's reactor: epoll registers EPOLLIN with every interest, and on a V4L2 capture
/// node polling for input starts videobuf2's read() emulation — buffers are allocated and the
/// handle owns the queue, so the capture's own `S_FMT` fails with EBUSY. The thread asks
/// `poll()` for POLLPRI (events) only.
struct EventHandle {
    events: mpsc::UnboundedReceiver<Result<bool, nix::errno::Errno>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the event thread waits in `poll()` before it looks at its stop flag.
const EVENT_POLL: u16 = 200;

impl EventHandle {
    /// `Err(true)`: the device has no such events (do not ask again until it is replugged);
    /// `Err(false)`: it cannot be opened now (try again later).
    fn open(device: &Path) -> Result<EventHandle, bool> {
        // A media-controller capture (the Pi 5's) has its bridge's events on the bridge's node.
        let node = bridge::event_node(device);
        let fd = v4l2::open(&node).map_err(|_| false)?;
        let input = v4l2::current_input(&fd).unwrap_or(0);
        if let Err(e) = v4l2::subscribe_source_change(&fd, input) {
            log::debug!(
                "media: {} has no source-change events ({e})",
                node.display()
            );
            return Err(true);
        }
        let (tx, events) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("onair-v4l2-events".into())
                .spawn(move || read_events(fd, &tx, &stop))
                .map_err(|_| false)?
        };
        log::debug!(
            "media: watching {} for source changes (input {input})",
            node.display()
        );
        Ok(EventHandle {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The next event: `Ok(true)` for a source change, `Ok(false)` for anything else.
    async fn next(&mut self) -> Result<bool, nix::errno::Errno> {
        self.events
            .recv()
            .await
            .unwrap_or(Err(nix::errno::Errno::ENODEV))
    }
}

impl Drop for EventHandle {
    /// Closes the handle (within one poll period), so a driver can be unloaded.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_events(
    fd: OwnedFd,
    tx: &mpsc::UnboundedSender<Result<bool, nix::errno::Errno>>,
    stop: &AtomicBool,
) {
    use nix::poll::{PollFd, PollFlags, poll};
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, EVENT_POLL) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
            && !revents.contains(PollFlags::POLLPRI)
        {
            let _ = tx.send(Err(nix::errno::Errno::ENODEV));
            return;
        }
        loop {
            match v4l2::dequeue_event(&fd) {
                Ok(Some(source_change)) => {
                    if tx.send(Ok(source_change)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    }
}

/// inotify on the deepest existing directory on the way to the device node.
struct Presence {
    device: PathBuf,
    fd: AsyncFd<InotifyFd>,
    watched: Option<(PathBuf, WatchDescriptor)>,
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Presence {
    fn new(device: &Path) -> std::io::Result<Presence> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut p = Presence {
            device: device.to_path_buf(),
            // SAFETY: the Inotify owns its descriptor, open and the same for the AsyncFd's life.
            fd: unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            watched: None,
        };
        p.rearm()?;
        Ok(p)
    }

    /// Watches the deepest existing ancestor (directories come and go with udev's links).
    fn rearm(&mut self) -> std::io::Result<()> {
        let target = self
            .device
            .ancestors()
            .skip(1)
            .find(|d| d.is_dir())
            .map(Path::to_path_buf)
            .ok_or_else(|| std::io::Error::other("no directory on the way to the device"))?;
        if self.watched.as_ref().is_some_and(|(dir, _)| *dir == target) {
            return Ok(());
        }
        let inotify = &self.fd.get_ref().0;
        if let Some((_, wd)) = self.watched.take() {
            // Fails harmlessly when the directory itself is gone (the kernel dropped it).
            let _ = inotify.rm_watch(wd);
        }
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        let wd = inotify.add_watch(&target, flags)?;
        self.watched = Some((target, wd));
        Ok(())
    }

    /// Waits for something to change in the watched directory.
    async fn changed(&mut self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match self.fd.get_ref().0.read_events() {
                Ok(events) => {
                    // A removed watch reports IN_IGNORED: our own doing, not a change.
                    let real = events
                        .iter()
                        .any(|e| !e.mask.contains(AddWatchFlags::IN_IGNORED));
                    if real {
                        drop(guard);
                        // A directory on the way may have appeared or gone: watch the right one.
                        self.rearm()?;
                        return Ok(());
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::Receiver<InputEvent>) -> Option<InputEvent> {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// A node appearing and going away in a temporary directory, and in a subdirectory that
    /// does not exist yet (udev's by-id links): each change is one event.
    #[tokio::test]
    async fn appearing_and_disappearing_nodes_are_events() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("by-id/usb-cam-video-index0");
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = spawn(device.clone(), tx, stop.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::create_dir(dir.path().join("by-id")).unwrap();
        std::fs::write(&device, b"").unwrap();
        let mut got = vec![];
        while let Some(e) = next(&mut rx).await {
            got.push(e);
            if got.len() == 1 {
                std::fs::remove_file(&device).unwrap();
            }
            if got.len() == 2 {
                break;
            }
        }
        assert_eq!(
            got,
            vec![InputEvent::DeviceAppeared, InputEvent::DeviceGone],
            "an ordinary file is no V4L2 device: no event handle, just presence"
        );
        std::fs::write(&device, b"").unwrap();
        assert_eq!(next(&mut rx).await, Some(InputEvent::DeviceAppeared));
        stop.cancel();
        task.await.unwrap();
    }
}
