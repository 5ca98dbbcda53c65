//! A client of wpa_supplicant's control interface: a Unix datagram socket per Wi-Fi
//! interface (`/run/wpa_supplicant/wlan0`), one request and one answer per datagram, and
//! unsolicited event messages to a client that said `ATTACH`.
//!
//! The client's own socket has an abstract address (Linux): wpa_supplicant answers to the
//! address it got the request from, and a path in the daemon's private `/tmp` would not be
//! one it can reach. Every answer is bounded in size (one datagram, 4 KiB, as wpa_cli reads)
//! and in time.

use std::os::linux::net::SocketAddrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UnixDatagram;

/// wpa_supplicant's own client reads answers into 4096 bytes; STATUS is a few hundred.
const MAX_MESSAGE: usize = 4096;
/// How long an answer may take (wpa_cli waits 10 s; a local daemon answers in microseconds,
/// and a hung one must not hold the watcher up).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    #[error("cannot reach wpa_supplicant at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wpa_supplicant's control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("wpa_supplicant did not answer {command} within {ANSWER_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("wpa_supplicant refused {command}: {answer}")]
    Refused { command: String, answer: String },
}

/// One connection to one interface's wpa_supplicant.
pub struct Ctrl {
    socket: UnixDatagram,
}

static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

impl Ctrl {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Ctrl, CtrlError> {
        let connect_error = |source| CtrlError::Connect {
            path: path.display().to_string(),
            source,
        };
        let name = format!(
            "onair-wpa-{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(connect_error)?;
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).map_err(connect_error)?;
        socket.connect(path).map_err(connect_error)?;
        socket.set_nonblocking(true).map_err(connect_error)?;
        Ok(Ctrl {
            socket: UnixDatagram::from_std(socket).map_err(connect_error)?,
        })
    }

    /// Sends `command` and returns its answer. Event messages that arrive meanwhile (on an
    /// attached connection) are skipped.
    pub async fn request(&self, command: &str) -> Result<String, CtrlError> {
        self.socket.send(command.as_bytes()).await?;
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.receive())
                .await
                .map_err(|_| CtrlError::Timeout {
                    command: command.to_string(),
                })??;
            if !message.starts_with('<') {
                return Ok(message);
            }
        }
    }

    /// Sends a command whose answer is `OK`.
    pub async fn command(&self, command: &str) -> Result<(), CtrlError> {
        let answer = self.request(command).await?;
        if answer.trim_end() == "OK" {
            Ok(())
        } else {
            Err(CtrlError::Refused {
                command: command.to_string(),
                answer: crate::secret::printable(answer.trim_end()),
            })
        }
    }

    /// Asks for event messages on this connection; [`Ctrl::next_event`] then yields them.
    pub async fn attach(&self) -> Result<(), CtrlError> {
        self.command("ATTACH").await
    }

    /// The next message wpa_supplicant sends (an event, on an attached connection).
    pub async fn next_event(&self) -> Result<String, CtrlError> {
        Ok(self.receive().await?)
    }

    async fn receive(&self) -> std::io::Result<String> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = self.socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
pub(super) mod fake {
    //! A stand-in for wpa_supplicant's control socket: answers from a script, and events to
    //! whoever attached.

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use tokio::net::UnixDatagram;
    use tokio::net::unix::SocketAddr;

    pub struct FakeSupplicant {
        pub path: PathBuf,
        pub answers: Arc<Mutex<HashMap<String, String>>>,
        pub received: Arc<Mutex<Vec<String>>>,
        socket: Arc<UnixDatagram>,
        attached: Arc<Mutex<Vec<SocketAddr>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakeSupplicant {
        pub fn start(path: PathBuf) -> FakeSupplicant {
            let socket = Arc::new(UnixDatagram::bind(&path).expect("bind the fake socket"));
            let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
            let received: Arc<Mutex<Vec<String>>> = Arc::default();
            let attached: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
            let task = tokio::spawn({
                let (socket, answers, received, attached) = (
                    socket.clone(),
                    answers.clone(),
                    received.clone(),
                    attached.clone(),
                );
                async move {
                    let mut buf = [0u8; 4096];
                    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                        let command = String::from_utf8_lossy(&buf[..n]).into_owned();
                        received.lock().expect("lock").push(command.clone());
                        if command == "ATTACH" {
                            attached.lock().expect("lock").push(from.clone());
                        }
                        let answer = answers
                            .lock()
                            .expect("lock")
                            .get(&command)
                            .cloned()
                            .unwrap_or_else(|| "OK\n".into());
                        if answer == "(silent)" {
                            continue;
                        }
                        if let Some(path) = from.as_pathname() {
                            let _ = socket.send_to(answer.as_bytes(), path).await;
                        } else {
                            let std_addr: std::os::unix::net::SocketAddr = from.into();
                            let _ = send_to_abstract(&socket, answer.as_bytes(), &std_addr);
                        }
                    }
                }
            });
            FakeSupplicant {
                path,
                answers,
                received,
                socket,
                attached,
                task,
            }
        }

        pub fn answer(&self, command: &str, answer: &str) {
            self.answers
                .lock()
                .expect("lock")
                .insert(command.into(), answer.into());
        }

        /// Sends an event message to every attached client.
        pub fn event(&self, message: &str) {
            for addr in self.attached.lock().expect("lock").iter() {
                let std_addr: std::os::unix::net::SocketAddr = addr.clone().into();
                send_to_abstract(&self.socket, message.as_bytes(), &std_addr)
                    .expect("send an event");
            }
        }

        pub fn commands(&self) -> Vec<String> {
            self.received.lock().expect("lock").clone()
        }
    }

    impl Drop for FakeSupplicant {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// tokio's `send_to` takes a path; an abstract address goes through a std socket.
    fn send_to_abstract(
        socket: &UnixDatagram,
        data: &[u8],
        addr: &std::os::unix::net::SocketAddr,
    ) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        let fd = socket.as_fd().try_clone_to_owned()?;
        let std_socket = std::os::unix::net::UnixDatagram::from(fd);
        std_socket.send_to_addr(data, addr).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeSupplicant;
    use super::*;

    #[tokio::test]
    async fn requests_answers_and_events_over_a_real_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wpa = FakeSupplicant::start(dir.path().join("wlan0"));
        wpa.answer("STATUS", "wpa_state=SCANNING\n");
        let ctrl = Ctrl::connect(&wpa.path).expect("connect");
        assert_eq!(
            ctrl.request("STATUS").await.expect("status"),
            "wpa_state=SCANNING\n"
        );
        ctrl.command("RECONFIGURE").await.expect("OK");
        wpa.answer("RECONFIGURE", "FAIL\n");
        assert!(matches!(
            ctrl.command("RECONFIGURE").await,
            Err(CtrlError::Refused { .. })
        ));
        // Events reach an attached connection, and a request on it skips them.
        let monitor = Ctrl::connect(&wpa.path).expect("connect");
        monitor.attach().await.expect("attach");
        wpa.event("<3>CTRL-EVENT-SCAN-STARTED ");
        assert_eq!(
            monitor.next_event().await.expect("event"),
            "<3>CTRL-EVENT-SCAN-STARTED "
        );
        wpa.event("<3>CTRL-EVENT-SCAN-RESULTS ");
        assert_eq!(
            monitor.request("STATUS").await.expect("status"),
            "wpa_state=SCANNING\n"
        );
        // A supplicant that never answers: the request ends at its deadline.
        wpa.answer("SIGNAL_POLL", "(silent)");
        let started = std::time::Instant::now();
        assert!(matches!(
            ctrl.request("SIGNAL_POLL").await,
            Err(CtrlError::Timeout { .. })
        ));
        assert!(started.elapsed() < ANSWER_TIMEOUT * 2);
        // Nobody there.
        assert!(matches!(
            Ctrl::connect(&dir.path().join("wlan9")),
            Err(CtrlError::Connect { .. })
        ));
        assert!(wpa.commands().contains(&"ATTACH".to_string()));
    }
}
