//! The `onair` command's end of the status socket: one request, one answer, bounded in time.
//!
//! Its errors tell apart "no daemon is running" (no socket, or a stale one nobody answers on)
//! from "a daemon is running but I cannot talk to it" (permissions, a hung daemon), because a
//! person over SSH acts differently on each, and scripts get a distinct exit code for the first.

use super::StatusSnapshot;
use super::protocol::{ErrorReply, Request, RetryReply};
use crate::recorder::Record;
use serde::de::DeserializeOwned;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The whole exchange (connect, ask, read the answer); the daemon answers in milliseconds.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (a full flight recorder is a few tens of KiB).
const MAX_ANSWER_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is running: nothing answers on {} ({reason})", path.display())]
    NotRunning { path: PathBuf, reason: &'static str },
    #[error(
        "cannot talk to the daemon on {}: permission denied (join the socket's group, or use sudo)",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot talk to the daemon on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon on {} did not answer within {} s", path.display(), after.as_secs())]
    Timeout { path: PathBuf, after: Duration },
    #[error("the daemon on {} refused `{request}`: {message}", path.display())]
    Refused {
        path: PathBuf,
        request: Request,
        message: String,
    },
    #[error("the daemon on {} gave an unexpected answer to `{request}`: {message}", path.display())]
    BadAnswer {
        path: PathBuf,
        request: Request,
        message: String,
    },
}

impl ClientError {
    /// No daemon is running (exit code 3), as opposed to one that cannot be talked to.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }

    /// The daemon answered, and said no (exit code 4): e.g. a retry while the server's
    /// `Retry-After` runs.
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// Sends `request` and returns the daemon's answer as it came (one JSON document), after
/// checking that it is not a refusal.
pub async fn ask(path: &Path, request: Request) -> Result<Vec<u8>, ClientError> {
    let answer = match tokio::time::timeout(TIMEOUT, exchange(path, request)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ClientError::Timeout {
                path: path.to_path_buf(),
                after: TIMEOUT,
            });
        }
    };
    if answer.is_empty() {
        return Err(ClientError::BadAnswer {
            path: path.to_path_buf(),
            request,
            message: "the connection closed without an answer (is the daemon stopping?)".into(),
        });
    }
    if let Ok(refusal) = serde_json::from_slice::<ErrorReply>(&answer) {
        return Err(ClientError::Refused {
            path: path.to_path_buf(),
            request,
            message: refusal.error,
        });
    }
    Ok(answer)
}

pub async fn status(path: &Path) -> Result<StatusSnapshot, ClientError> {
    let answer = ask(path, Request::Status).await?;
    decode(path, Request::Status, &answer)
}

pub async fn history(path: &Path) -> Result<Vec<Record>, ClientError> {
    let answer = ask(path, Request::History).await?;
    decode(path, Request::History, &answer)
}

pub async fn recordings(path: &Path) -> Result<crate::recording::Listing, ClientError> {
    let answer = ask(path, Request::Recordings).await?;
    decode(path, Request::Recordings, &answer)
}

/// `onair retry` (`force`: override the server's `Retry-After`, root only).
pub async fn retry(path: &Path, force: bool) -> Result<RetryReply, ClientError> {
    let request = if force {
        Request::RetryForce
    } else {
        Request::Retry
    };
    let answer = ask(path, request).await?;
    decode(path, request, &answer)
}

/// Parses an answer from [`ask`].
pub fn decode<T: DeserializeOwned>(
    path: &Path,
    request: Request,
    answer: &[u8],
) -> Result<T, ClientError> {
    serde_json::from_slice(answer).map_err(|e| ClientError::BadAnswer {
        path: path.to_path_buf(),
        request,
        message: e.to_string(),
    })
}

async fn exchange(path: &Path, request: Request) -> Result<Vec<u8>, ClientError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(path, e))?;
    let io_error = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(io_error)?;
    read_answer(&mut stream).await.map_err(io_error)
}

/// Reads to the end of the answer. A server that closes while our request is still partly
/// unread (it refused us as busy, or the request was too long) makes the kernel report a
/// reset after the answer: the answer is complete then, and is what counts.
pub(crate) async fn read_answer(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut answer = Vec::new();
    match stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer).await {
        Ok(_) => Ok(answer),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && answer.ends_with(b"\n") => {
            Ok(answer)
        }
        Err(e) => Err(e),
    }
}

fn connect_error(path: &Path, e: io::Error) -> ClientError {
    let not_running = |reason| ClientError::NotRunning {
        path: path.to_path_buf(),
        reason,
    };
    match e.kind() {
        io::ErrorKind::NotFound => not_running("no socket file"),
        io::ErrorKind::NotADirectory => not_running("no socket file"),
        io::ErrorKind::ConnectionRefused => not_running("stale socket file, connection refused"),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn no_socket_means_not_running() {
        let err = status(Path::new("/nonexistent/onair/x.sock"))
            .await
            .expect_err("nothing there");
        assert!(err.is_not_running(), "{err}");
        assert_eq!(
            err.to_string(),
            "no daemon is running: nothing answers on /nonexistent/onair/x.sock (no socket file)"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_means_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let err = status(&path).await.expect_err("nobody listens");
        assert!(err.is_not_running(), "{err}");
        assert!(err.to_string().contains("stale socket"), "{err}");
    }

    /// A daemon that accepts and never answers: the client gives up, and says it is running.
    #[tokio::test(start_paused = true)]
    async fn a_hung_daemon_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
        });
        let err = status(&path).await.expect_err("no answer");
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(!err.is_not_running());
        hold.abort();
    }

    #[tokio::test]
    async fn a_refusal_is_reported_with_the_daemons_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 16];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"{\"error\":\"the daemon is stopping\"}\n")
                .await;
        });
        let err = retry(&path, false).await.expect_err("refused");
        assert!(
            err.to_string()
                .ends_with("refused `retry`: the daemon is stopping"),
            "{err}"
        );
    }
}
