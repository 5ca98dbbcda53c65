//! WHIP answers that are not a clean 201: each one becomes a typed, classified failure that
//! names what the server said, and nothing panics. Talks to the independent receiver with
//! scripted answers, through the library's `WhipOutput` (one attempt each).

mod common;

use common::{Receiver, whip_attempt};
use onair::output::whip::WhipOutput;
use onair::output::{Failure, FailureClass, Output};
use onair::secret::{Secret, SecretUrl};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "answer-key";

async fn one_attempt(
    receiver: &Receiver,
    token: &str,
    state: &std::path::Path,
) -> Result<(), Failure> {
    let output = WhipOutput::new(
        &SecretUrl::new(receiver.whip_url(), 0),
        Some(Secret::new(token)),
        state,
    )
    .expect("output");
    let result = tokio::time::timeout(Duration::from_secs(15), output.connect(whip_attempt()))
        .await
        .expect("an attempt must end by itself");
    match result {
        Ok(conn) => {
            conn.close(true).await;
            Ok(())
        }
        Err(f) => Err(f),
    }
}

fn scripted(receiver: &Receiver, answer: serde_json::Value) {
    receiver.script(json!([answer]));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_is_typed_and_names_the_status() {
    let receiver = Receiver::start("127.0.0.1", Some(KEY), None);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            json!({"status": 400, "body": "bad offer"}),
            FailureClass::Transient,
            "400",
        ),
        (json!({"status": 404}), FailureClass::Transient, "404"),
        (
            json!({"status": 500, "body": "boom"}),
            FailureClass::Transient,
            "500",
        ),
        (
            json!({"status": 503, "retry_after": 7}),
            FailureClass::RetryAfter(Duration::from_secs(7)),
            "503",
        ),
        (json!({"status": 429}), FailureClass::Transient, "429"),
        (json!({"status": 403}), FailureClass::Permanent, "403"),
        (
            json!({"status": 201, "no_location": true}),
            FailureClass::Transient,
            "without a Location",
        ),
        (
            json!({"status": 201, "body": "this is not sdp"}),
            FailureClass::Transient,
            "not an SDP answer",
        ),
    ];
    for (answer, class, says) in cases {
        scripted(&receiver, answer.clone());
        let err = one_attempt(&receiver, KEY, dir.path())
            .await
            .expect_err("must fail");
        assert_eq!(err.class, class, "{answer}: {err:?}");
        assert!(
            err.message.contains(says),
            "{answer}: message {:?} should say {says}",
            err.message
        );
        assert!(
            !err.message.contains(KEY),
            "the key leaked: {}",
            err.message
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_permanent_and_a_busy_key_is_transient() {
    let receiver = Receiver::start("127.0.0.1", Some(KEY), None);
    let dir = tempfile::tempdir().unwrap();

    let err = one_attempt(&receiver, "not-the-key", dir.path())
        .await
        .expect_err("401");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(!err.message.contains("not-the-key"), "{}", err.message);

    // Another publisher holds the key (Broadcast Box: 400 "session already has a host"):
    // worth retrying, the old session goes away.
    let other = tempfile::tempdir().unwrap();
    let holder = WhipOutput::new(
        &SecretUrl::new(receiver.whip_url(), 0),
        Some(Secret::new(KEY)),
        other.path(),
    )
    .unwrap();
    let held = holder
        .connect(whip_attempt())
        .await
        .expect("the first publisher gets the key");
    let err = one_attempt(&receiver, KEY, dir.path())
        .await
        .expect_err("busy");
    assert_eq!(err.class, FailureClass::Transient, "{err:?}");
    assert!(
        err.message.contains("session already has a host"),
        "{}",
        err.message
    );
    held.close(true).await;
    one_attempt(&receiver, KEY, dir.path())
        .await
        .expect("the key is free once the holder DELETEd its session");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_transient() {
    // Nothing listens on port 9 of loopback.
    let output = WhipOutput::new(
        &SecretUrl::new("http://127.0.0.1:9/api/whip", 0),
        None,
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap();
    let err = output.connect(whip_attempt()).await.err().expect("refused");
    assert_eq!(err.class, FailureClass::Transient);
    assert!(err.message.contains("cannot reach"), "{}", err.message);
}

/// A session left behind by a previous run (remembered in `state_dir`) is DELETEd before the
/// next POST, so the server's one-publisher rule does not lock the box out after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_left_by_a_previous_run_is_deleted_first() {
    let receiver = Receiver::start("127.0.0.1", Some(KEY), None);
    let dir = tempfile::tempdir().unwrap();
    let first = WhipOutput::new(
        &SecretUrl::new(receiver.whip_url(), 0),
        Some(Secret::new(KEY)),
        dir.path(),
    )
    .unwrap();
    let conn = first.connect(whip_attempt()).await.expect("first session");
    // The daemon "crashes": no DELETE. A new instance with the same state_dir starts.
    std::mem::forget(conn);
    one_attempt(&receiver, KEY, dir.path())
        .await
        .expect("the leftover session is deleted and the key reused");
    let stats = receiver.stats();
    assert_eq!(stats["deletes"][0]["status"], 204, "{stats:#}");
}
