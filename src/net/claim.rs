//! One onair per network namespace steers its policy routing.
//!
//! Steering owns rule priorities 8500–8502 and the tables from `network.route_table` up. Two
//! daemons steering the same namespace fight: each rewrites the route the other just set (301
//! flips in 5 s were seen), and each one's cleanup removes the other's rules. The priorities
//! are the same whatever the table, so the claim is on the namespace's steering as a whole,
//! not on one table: a second daemon that would steer refuses to start, naming the first.
//!
//! The claim is a listening Unix socket in the abstract namespace. Abstract names live in the
//! network namespace, exactly the scope of the routing tables; the kernel releases the name
//! when its holder dies, however it dies (SIGKILL included), so there is no stale lock file
//! to clean up; and whoever finds the name taken can connect and ask the kernel who holds it
//! (SO_PEERCRED).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use tokio::task::JoinHandle;

/// The abstract socket name of the claim.
const NAME: &[u8] = b"onair-routing";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another onair daemon ({}) already steers the routing of this network namespace \
         (rules 8500-8502 and its tables); stop it first, or set network.paths to \"follow\"",
        holder_name(*.holder)
    )]
    Held { holder: Option<i32> },
    #[error("cannot claim the routing of this network namespace: {0}")]
    Io(#[source] io::Error),
}

impl ClaimError {
    /// The pid of the daemon that holds the claim, when the kernel said.
    pub fn holder(&self) -> Option<i32> {
        match self {
            ClaimError::Held { holder } => *holder,
            ClaimError::Io(_) => None,
        }
    }
}

fn holder_name(pid: Option<i32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".into(),
    }
}

/// Held while this process steers (or cleans up) the namespace's routing; released when
/// dropped, or when the process ends.
pub struct RoutingClaim {
    listener: Option<UnixListener>,
    /// Takes and drops connections (from daemons asking who holds the claim), so that they
    /// never fill the backlog.
    answering: Option<JoinHandle<()>>,
}

/// Takes the claim, or says who holds it.
pub fn claim_routing() -> Result<RoutingClaim, ClaimError> {
    let addr = SocketAddr::from_abstract_name(NAME).map_err(ClaimError::Io)?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(RoutingClaim {
            listener: Some(listener),
            answering: None,
        }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(ClaimError::Held {
            holder: holder_pid(),
        }),
        Err(e) => Err(ClaimError::Io(e)),
    }
}

impl RoutingClaim {
    /// Answers whoever asks who holds the claim, for as long as it is held (a daemon's claim
    /// lives long; a cleanup's is over in milliseconds and needs none). Needs a tokio runtime.
    pub fn answer_askers(mut self) -> RoutingClaim {
        let Some(listener) = self.listener.take() else {
            return self;
        };
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener));
        match listener {
            Ok(listener) => {
                self.answering = Some(tokio::spawn(async move {
                    // Dropping the listener here would release the claim: it lives in this task.
                    while let Ok((stream, _)) = listener.accept().await {
                        drop(stream);
                    }
                }));
            }
            Err(e) => log::debug!("network: the routing claim cannot answer askers: {e}"),
        }
        self
    }
}

impl Drop for RoutingClaim {
    fn drop(&mut self) {
        if let Some(task) = self.answering.take() {
            task.abort();
        }
    }
}

/// The pid of the claim's holder: a connection to it carries the listener's credentials.
/// Never waits: a holder whose backlog is full (stopped with SIGSTOP) is "pid unknown".
fn holder_pid() -> Option<i32> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket,
        sockopt::PeerCredentials,
    };
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new_abstract(NAME).ok()?;
    connect(fd.as_raw_fd(), &addr).ok()?;
    let pid = getsockopt(&fd, PeerCredentials).ok()?.pid();
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs a network namespace of its own to be sure nobody else holds the claim: only
    /// checks what it can when one is already held (a daemon on this machine).
    #[tokio::test]
    async fn a_second_claim_is_refused_naming_the_first_and_freed_on_drop() {
        let first = match claim_routing() {
            Ok(c) => c.answer_askers(),
            Err(e) => {
                eprintln!("SKIPPED: the claim is held on this machine already: {e}");
                return;
            }
        };
        let second = claim_routing().err().expect("the claim is held");
        assert_eq!(second.holder(), Some(std::process::id() as i32));
        assert!(
            second
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        // The accept task is aborted; the listener goes with it.
        tokio::task::yield_now().await;
        let mut again = None;
        for _ in 0..100 {
            if let Ok(c) = claim_routing() {
                again = Some(c);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "released on drop");
    }
}
