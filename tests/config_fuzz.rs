//! Config fuzzing: mutated and random JSON thrown at the parser the boot import and `run` use.
//!
//! Properties: `Config::parse` never panics; a document that is valid JSON is either accepted
//! or refused naming a key; no refusal ever carries the token (wherever the mutation put it:
//! value, key name, URL) or a control character. And the RTMP output accepts every URL the
//! config check accepts, so `check-config` (and with it the boot import) refuses first what
//! `run` would refuse at start-up.

use onair::config::{Config, ConfigError};
use onair::output::rtmp::location::Location;
use onair::secret::SecretUrl;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Digits and a dash: what a real stream key looks like.
const TOKEN: &str = "Tk9-s3cret-Q7x";

fn base_configs() -> Vec<Value> {
    vec![
        json!({
            "source": {"kind": "test", "width": 320, "height": 240, "fps": 30},
            "encoder": {"kind": "x264", "bitrate_kbps": 600, "keyframe_interval_ms": 2000},
            "output": {"kind": "whip", "url": "http://127.0.0.1:8080/api/whip", "token": TOKEN},
            "reconnect": {"initial_delay_ms": 500, "max_attempts": 3, "jitter": 0.2},
            "network": {"interfaces": ["eth0", "wlan*"], "ignore": ["docker*"]},
            "leds": {"backend": "sysfs", "live_name": "a", "status_name": "b"},
            "status": {"socket": "/run/onair/status.sock"},
            "state_dir": "/run/onair"
        }),
        json!({
            "source": {"kind": "v4l2", "device": "/dev/video0"},
            "output": {"kind": "rtmp", "url": format!("rtmp://127.0.0.1/live/{TOKEN}")}
        }),
        json!({
            "source": {"kind": "test"},
            "output": {"kind": "whip", "url": "https://h.example/api/whip", "token": TOKEN},
            "leds": {"backend": "gpio", "live_pin": 17, "status_pin": 27}
        }),
        // The key as a Wi-Fi passphrase, a WPA3 password and the modem's password: secrets
        // in the network section are kept out of refusals as the token is.
        json!({
            "source": {"kind": "test"},
            "output": {"kind": "whip", "url": "http://192.0.2.1/api/whip"},
            "network": {"wifi_country": "DE", "wifi": [
                {"ssid": "venue", "psk": TOKEN, "priority": 3},
                {"ssid": "backstage", "sae_password": TOKEN, "hidden": true}],
                "modem": {"apn": "internet", "pin": "1234", "password": TOKEN}}
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at the chosen place.
    Set(usize, Value),
    /// Add a key to the chosen object.
    Insert(usize, String, Value),
    /// Remove a key of the chosen object.
    Remove(usize, usize),
    /// Rename a key of the chosen object.
    Rename(usize, usize, String),
}

const KNOWN_KEYS: &[&str] = &[
    "source",
    "kind",
    "url",
    "token",
    "output",
    "width",
    "fps",
    "device",
    "reconnect",
    "dead_after_ms",
    "leds",
    "backend",
    "live_pin",
    "network",
    "interfaces",
    "state_dir",
    "wifi",
    "ssid",
    "psk",
    "sae_password",
    "modem",
    "pin",
];

fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(TOKEN.to_string()),
        Just(format!("Bearer {TOKEN}")),
        proptest::sample::select(KNOWN_KEYS).prop_map(str::to_string),
        "[a-z_]{1,12}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
        "[\\x00-\\x1f\\x7f]{1,4}[a-z]{0,4}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        Just(Value::from(TOKEN)),
        Just(Value::from(format!("rtmp://h/app/{TOKEN}/"))),
        Just(Value::from(format!("{TOKEN}://h/x"))),
        Just(Value::from(format!("http://h/w?token={TOKEN}"))),
        "[a-z0-9:/._-]{0,16}".prop_map(Value::from),
        any::<String>().prop_map(|s| Value::from(s.chars().take(16).collect::<String>())),
        Just(Value::from("")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((key_name(), inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), value()).prop_map(|(at, v)| Mutation::Set(at, v)),
        (any::<usize>(), key_name(), value()).prop_map(|(at, k, v)| Mutation::Insert(at, k, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(at, i)| Mutation::Remove(at, i)),
        (any::<usize>(), any::<usize>(), key_name())
            .prop_map(|(at, i, k)| Mutation::Rename(at, i, k)),
    ]
}

/// JSON pointers to every value below the root (for `Set`) or every object (for the rest).
fn places(v: &Value, here: String, objects_only: bool, out: &mut Vec<String>) {
    let is_object = v.is_object();
    if !here.is_empty() && (!objects_only || is_object) {
        out.push(here.clone());
    }
    if objects_only && is_object && here.is_empty() {
        out.push(String::new());
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                places(child, format!("{here}/{k}"), objects_only, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                places(child, format!("{here}/{i}"), objects_only, out);
            }
        }
        _ => {}
    }
}

fn pick(v: &Value, at: usize, objects_only: bool) -> Option<String> {
    let mut all = Vec::new();
    places(v, String::new(), objects_only, &mut all);
    (!all.is_empty()).then(|| all[at % all.len()].clone())
}

fn apply(v: &mut Value, m: &Mutation) {
    match m {
        Mutation::Set(at, new) => {
            if let Some(p) = pick(v, *at, false)
                && let Some(slot) = v.pointer_mut(&p)
            {
                *slot = new.clone();
            }
        }
        Mutation::Insert(at, key, new) => {
            if let Some(p) = pick(v, *at, true)
                && let Some(Value::Object(map)) = v.pointer_mut(&p)
            {
                map.insert(key.clone(), new.clone());
            }
        }
        Mutation::Remove(at, i) => {
            if let Some(p) = pick(v, *at, true)
                && let Some(Value::Object(map)) = v.pointer_mut(&p)
                && !map.is_empty()
            {
                let key = map.keys().nth(i % map.len()).cloned();
                if let Some(k) = key {
                    map.remove(&k);
                }
            }
        }
        Mutation::Rename(at, i, new_key) => {
            if let Some(p) = pick(v, *at, true)
                && let Some(Value::Object(map)) = v.pointer_mut(&p)
                && !map.is_empty()
            {
                let key = map.keys().nth(i % map.len()).cloned();
                if let Some(k) = key
                    && let Some(val) = map.remove(&k)
                {
                    map.insert(new_key.clone(), val);
                }
            }
        }
    }
}

/// What every refusal must hold to, valid JSON or not.
fn check_refusal(text: &str, err: &ConfigError) -> Result<(), TestCaseError> {
    let shown = err.to_string();
    prop_assert!(
        !shown.contains(TOKEN) && !shown.to_lowercase().contains(&TOKEN.to_lowercase()),
        "the token is in the refusal: {shown}\n{text}"
    );
    prop_assert!(
        !shown.chars().any(char::is_control),
        "a control character in the refusal: {shown:?}\n{text}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Structured mutations: the document stays valid JSON, so a refusal must name a key.
    #[test]
    fn mutated_configs_are_refused_by_key_and_never_echo_the_token(
        base in 0usize..4,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut v = base_configs()[base].clone();
        for m in &mutations {
            apply(&mut v, m);
        }
        let text = v.to_string();
        if let Err(err) = Config::parse(&text) {
            check_refusal(&text, &err)?;
            match &err {
                ConfigError::Invalid { key, .. } => {
                    prop_assert!(!key.is_empty(), "no key named: {err}\n{text}")
                }
                other => prop_assert!(false, "valid JSON refused without a key: {other}\n{text}"),
            }
        }
    }

    /// Text mutations: cut, spliced, with stray bytes and trailing garbage. No panic, no token.
    #[test]
    fn broken_text_never_panics_or_echoes_the_token(
        base in 0usize..4,
        cut in any::<prop::sample::Index>(),
        splice in any::<String>(),
        at in any::<prop::sample::Index>(),
        tail in prop_oneof![Just(String::new()), Just("{}".to_string()), Just(format!(" \"{TOKEN}\"")), any::<String>()],
    ) {
        let text = serde_json::to_string_pretty(&base_configs()[base]).expect("a Value serializes");
        let mut cut_text: String = text.chars().take(cut.index(text.chars().count() + 1)).collect();
        let pos = at.index(cut_text.chars().count() + 1);
        let byte = cut_text.char_indices().nth(pos).map_or(cut_text.len(), |(i, _)| i);
        cut_text.insert_str(byte, &splice.chars().take(8).collect::<String>());
        cut_text.push_str(&tail);
        let valid_json = serde_json::from_str::<Value>(&cut_text).is_ok();
        if let Err(err) = Config::parse(&cut_text) {
            check_refusal(&cut_text, &err)?;
            if valid_json {
                prop_assert!(err.key().is_some_and(|k| !k.is_empty()), "valid JSON refused without a key: {err}");
            }
        }
    }

    /// Whatever `check-config` accepts as an RTMP URL, the RTMP output accepts at start-up.
    #[test]
    fn rtmp_urls_check_config_accepts_the_output_accepts(
        pieces in prop::collection::vec(
            proptest::sample::select(&[
                "rtmp://", "rtmps://", "rtmp:", "/", "/", "//", ":", "@", "?", "#", "[", "]",
                "::1", "host", "127.0.0.1", ":1935", ":", "live", "KEY", "a=b", "%2F", " ", "x.y",
            ][..]),
            1..9,
        ),
        prefix in any::<bool>(),
    ) {
        let mut url: String = pieces.concat();
        if prefix {
            url = format!("rtmp://127.0.0.1/{url}");
        }
        let text = json!({"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": url}}).to_string();
        match Config::parse(&text) {
            Ok(_) => {
                let at_run = Location::parse(&SecretUrl::new(url.clone(), 1));
                prop_assert!(at_run.is_ok(), "check-config accepts {url:?}, run refuses it: {:?}", at_run.err());
            }
            Err(err) => {
                prop_assert_eq!(err.key(), Some("output.url"), "{}", err);
            }
        }
    }
}

/// The cases the issue named, kept as plain examples next to the properties.
#[test]
fn named_cases() {
    let rtmp_slash = json!({"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": format!("rtmp://127.0.0.1/live/{TOKEN}/")}});
    let err = Config::parse(&rtmp_slash.to_string()).expect_err("run refuses it, so must this");
    assert_eq!(err.key(), Some("output.url"));
    assert!(!err.to_string().contains(TOKEN), "{err}");

    let token_as_key = json!({"source": {"kind": "test"}, "output": {"kind": "whip", "url": "http://h/w", TOKEN: true}});
    let err = Config::parse(&token_as_key.to_string()).expect_err("unknown key");
    assert_eq!(err.key(), Some("output"));
    assert!(!err.to_string().contains(TOKEN), "{err}");

    let two_objects = format!("{}{}", base_configs()[0], base_configs()[0]);
    assert!(matches!(
        Config::parse(&two_objects),
        Err(ConfigError::Syntax { .. })
    ));
}
