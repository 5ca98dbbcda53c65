//! What the section files' tests share: a minimal valid config, a way to patch it, and the
//! refusal checks.

use super::{Config, ConfigError};

pub(super) const MINIMAL: &str = r#"{
    "source": {"kind": "test"},
    "output": {"kind": "whip", "url": "http://127.0.0.1:8080/api/whip", "token": "s3cret-key"}
}"#;

pub(super) fn with(patch: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    let p: serde_json::Value = serde_json::from_str(patch).unwrap();
    merge(&mut v, p);
    v.to_string()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub(super) fn refused_key(text: &str) -> String {
    match Config::parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a refusal naming a key, got {other:?}"),
    }
}

/// Each patch of [`MINIMAL`] is refused naming a key that starts with the one given (an
/// unknown key in `source` is refused as `source.colour`).
pub(super) fn assert_refusals_name(cases: &[(&str, &str)]) {
    for (patch, key) in cases {
        let text = with(patch);
        let got = match Config::parse(&text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{patch}: expected refusal of {key}, got {other:?}"),
        };
        assert!(
            got.starts_with(key),
            "{patch}: expected key {key}, got {got}"
        );
    }
}
