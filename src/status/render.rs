//! What a person reads: `onair status`, `--history` and `retry` as short text for a terminal.
//!
//! Pure functions of the daemon's answers, so the exact text is tested here. Text that came
//! from outside (server error bodies in `last_error`) is flattened to one printable line so it
//! can neither break the layout nor send escape sequences to the terminal.

use super::StatusSnapshot;
use super::data_partition::DataPartition;
use super::protocol::RetryReply;
use super::snapshot::{
    AudioSnapshot, ClockSnapshot, InputSnapshot, NetworkSnapshot, OutputSnapshot,
};
use super::update::{Phase, UpdateSnapshot};
use crate::net::WifiState;
use crate::output::adapt::AdaptStatus;
use crate::recorder::{Entry, Record};
use crate::recording::{Listing, RecordingSnapshot};
use crate::supervisor::StreamState;
use std::fmt::Write;
use std::time::Duration;

/// The status block: one `label  value` line per thing a person checks first. A line whose
/// value is `None` (no path or uplinks known, no estimate yet, no sound track) is left out.
pub fn status(s: &StatusSnapshot) -> String {
    let lines = [
        ("state", Some(state(s))),
        ("attempt", Some(attempt(s))),
        ("network", Some(network(&s.network))),
        ("path", path(&s.network)),
        ("uplinks", uplinks(&s.network)),
        ("wifi", wifi(&s.network)),
        ("modem", modem(&s.network)),
        ("clock", Some(clock(&s.clock))),
        ("encoder", Some(text_or(s.encoder.as_deref(), "none yet"))),
        ("source", Some(one_line(&s.source))),
        ("input", Some(input(&s.input))),
        ("hdmi", hdmi(&s.input)),
        ("bitrate", Some(bitrate(s.bitrate_kbps, &s.adapt))),
        ("estimate", estimate(&s.adapt)),
        ("resent", resent(&s.adapt)),
        ("audio", s.audio.as_ref().map(audio)),
        ("record", s.record.as_ref().map(record)),
        ("frames", Some(frames(s))),
        ("reconnects", Some(s.reconnects.to_string())),
        ("live", Some(live(s))),
        ("last error", Some(text_or(s.last_error.as_deref(), "none"))),
        ("output", Some(output(&s.output))),
        ("data", s.data_partition.as_ref().and_then(data_partition)),
        ("daemon", Some(daemon(s))),
        ("system", s.update.as_ref().and_then(system)),
        ("update", s.update.as_ref().and_then(update)),
    ];
    let mut out = String::new();
    for (label, value) in lines {
        if let Some(value) = value {
            // `write!` to a String cannot fail.
            let _ = writeln!(out, "{label:<11} {value}");
        }
    }
    out
}

/// `live for 3m 05s`.
fn state(s: &StatusSnapshot) -> String {
    format!("{} for {}", s.state, duration(secs(s.since)))
}

/// `2, next in 4s`, or `none yet` before the first attempt.
fn attempt(s: &StatusSnapshot) -> String {
    match (s.attempt, s.next_retry_ms) {
        (0, _) => "none yet".to_string(),
        (n, Some(ms)) => format!("{n}, next in {}", duration(Duration::from_millis(ms))),
        (n, None) => n.to_string(),
    }
}

/// `up (eth0, wlan0)` or `down`.
fn network(n: &NetworkSnapshot) -> String {
    match (n.up, n.interfaces.is_empty()) {
        (true, true) => "up".to_string(),
        (true, false) => format!("up ({})", n.interfaces.join(", ")),
        (false, _) => "down".to_string(),
    }
}

/// `eth0 src 192.0.2.2 gw 192.0.2.1, steered, 1 switch`; `None` when the box knows neither
/// a path nor an uplink.
fn path(n: &NetworkSnapshot) -> Option<String> {
    if n.path.is_none() && n.uplinks.is_empty() {
        return None;
    }
    let mut path = match &n.path {
        Some(p) => one_line(&p.to_string()),
        None => "none".to_string(),
    };
    if n.steered {
        path.push_str(", steered");
    }
    let switches = n.switches;
    path.push_str(&format!(
        ", {switches} switch{}",
        if switches == 1 { "" } else { "es" }
    ));
    Some(path)
}

/// `eth0 wired in use, wlan0 wifi usable (2 flaps)`; `None` when no uplink is known.
fn uplinks(n: &NetworkSnapshot) -> Option<String> {
    if n.uplinks.is_empty() {
        return None;
    }
    let uplinks: Vec<String> = n
        .uplinks
        .iter()
        .map(|u| {
            let mut text = format!(
                "{} {} {}",
                one_line(&u.name),
                u.kind,
                u.state.as_str().replace('_', " ")
            );
            if u.flaps > 0 {
                text.push_str(&format!(
                    " ({} flap{})",
                    u.flaps,
                    if u.flaps == 1 { "" } else { "s" }
                ));
            }
            text
        })
        .collect();
    Some(uplinks.join(", "))
}

/// `synchronized, set by ntp` or `unsynchronized (since 2m 05s), set by https-date from
/// https://whip.example.com`.
fn clock(c: &ClockSnapshot) -> String {
    let state = if c.synchronized {
        "synchronized".to_string()
    } else {
        format!("unsynchronized (since {})", duration(secs(c.since)))
    };
    let from = c
        .set_from
        .as_deref()
        .map(|f| format!(" from {}", one_line(f)))
        .unwrap_or_default();
    format!("{state}, set by {}{from}", one_line(&c.set_by))
}

/// `wlan0 "Venue" connected, -48 dBm, 72 Mbit/s` or `wlan0 "Venue" AUTHENTICATION FAILED
/// (wrong password)`, one per Wi-Fi interface; `None` without any.
fn wifi(n: &NetworkSnapshot) -> Option<String> {
    let lines: Vec<String> = n
        .uplinks
        .iter()
        .filter_map(|u| {
            let w = u.wifi.as_ref()?;
            let mut text = one_line(&u.name);
            if let Some(ssid) = &w.ssid {
                text.push_str(&format!(" \"{}\"", one_line(ssid)));
            }
            match w.state {
                WifiState::AuthenticationFailed => text.push_str(&format!(
                    " AUTHENTICATION FAILED ({})",
                    w.reason.as_deref().map(one_line).unwrap_or_default()
                )),
                WifiState::NoSupplicant => text.push_str(" no wpa_supplicant"),
                state => text.push_str(&format!(" {}", state.as_str().replace('_', " "))),
            }
            if let Some(dbm) = w.signal_dbm {
                text.push_str(&format!(", {dbm} dBm"));
            }
            if let Some(rate) = w.rate_mbps {
                text.push_str(&format!(", {rate} Mbit/s"));
            }
            Some(text)
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// `wwan0 connected, Vodafone.de, lte, signal 73 %`, one per modem; `None` without any.
fn modem(n: &NetworkSnapshot) -> Option<String> {
    let lines: Vec<String> = n
        .uplinks
        .iter()
        .filter_map(|u| {
            let m = u.modem.as_ref()?;
            let mut parts = vec![one_line(&u.name)];
            parts.extend(
                [&m.state, &m.operator, &m.access]
                    .into_iter()
                    .flatten()
                    .map(|t| one_line(t)),
            );
            let mut text = parts.join(", ").replacen(", ", " ", 1);
            if let Some(pct) = m.signal_pct {
                text.push_str(&format!(", signal {pct} %"));
            }
            Some(text)
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// `1800 kbit/s, target 2000 (300 to 2500)`, or with `(adaptation off)`.
fn bitrate(kbps: u32, a: &AdaptStatus) -> String {
    if a.enabled {
        format!(
            "{kbps} kbit/s, target {} ({} to {})",
            a.target_kbps, a.min_kbps, a.max_kbps
        )
    } else {
        format!("{kbps} kbit/s, target {} (adaptation off)", a.target_kbps)
    }
}

/// `2100 kbit/s from twcc, loss 0.5 %, rtt 40 ms`; `None` before the path says anything.
fn estimate(a: &AdaptStatus) -> Option<String> {
    if a.estimate_kbps.is_none() && a.loss_pct.is_none() && a.rtt_ms.is_none() {
        return None;
    }
    let mut parts = vec![match (a.estimate_kbps, a.estimate_source) {
        (Some(kbps), Some(source)) => format!("{kbps} kbit/s from {}", source.as_str()),
        (Some(kbps), None) => format!("{kbps} kbit/s"),
        (None, _) => "none yet".to_string(),
    }];
    if let Some(loss) = a.loss_pct {
        parts.push(format!("loss {loss:.1} %"));
    }
    if let Some(rtt) = a.rtt_ms {
        parts.push(format!("rtt {rtt} ms"));
    }
    Some(parts.join(", "))
}

/// `120 packets; ignored 300 too soon, 12 too old, 40 over budget`; `None` before the first
/// request to resend.
fn resent(a: &AdaptStatus) -> Option<String> {
    let r = &a.retransmissions;
    if *r == Default::default() {
        return None;
    }
    Some(format!(
        "{} packets; ignored {} too soon, {} too old, {} over budget",
        r.resent, r.too_soon, r.too_old, r.over_budget
    ))
}

fn frames(s: &StatusSnapshot) -> String {
    format!(
        "{} encoded, {} sent, {} key frames forced",
        s.frames_encoded, s.frames_sent, s.keyframes_forced
    )
}

/// `1m 02s of 5m 00s up`.
fn live(s: &StatusSnapshot) -> String {
    format!(
        "{} of {} up",
        duration(secs(s.live_s)),
        duration(secs(s.uptime_s))
    )
}

fn output(o: &OutputSnapshot) -> String {
    format!("{} {}", one_line(&o.kind), one_line(&o.url))
}

fn daemon(s: &StatusSnapshot) -> String {
    format!("pid {}, onair {}", s.pid, one_line(&s.version))
}

/// `slot B, version 2026.12.07-1 (on trial: kept once it proves itself)`.
fn system(u: &UpdateSnapshot) -> Option<String> {
    let slot = u.slot.as_deref()?;
    let version = text_or(u.version.as_deref(), "unknown");
    let trial = if u.trial {
        " (on trial: kept once it proves itself, else the next boot is the old system)"
    } else {
        ""
    };
    Some(format!("slot {}, version {version}{trial}", one_line(slot)))
}

/// `rolled back: not live within 120 s (state connecting) — version 3 in slot A,
/// 2026-12-07 14:06:30`: the outcome first, as a person asks "did it work?".
fn update(u: &UpdateSnapshot) -> Option<String> {
    let last = u.last.as_ref()?;
    let reason = last
        .reason
        .as_deref()
        .map(|r| format!(": {}", one_line(r)))
        .unwrap_or_default();
    let when = local_time(last.at);
    let when = when.split('.').next().unwrap_or(&when);
    let phase = match last.phase {
        Phase::Failed | Phase::RolledBack => last.phase.as_str().to_uppercase(),
        other => other.as_str().to_string(),
    };
    Some(format!(
        "{phase}{reason} — version {} in slot {}, {when}",
        one_line(&last.version),
        one_line(&last.slot)
    ))
}

/// Text from outside as one line, or `absent` when there is none.
fn text_or(text: Option<&str>, absent: &str) -> String {
    text.map(one_line).unwrap_or_else(|| absent.into())
}

/// `live for 3m 05s (640x480 YUY2 @60), 1 loss` or `LOST for 12s (no signal): slate shown`.
fn input(i: &InputSnapshot) -> String {
    let since = duration(secs(i.since));
    let losses = match i.losses {
        0 => String::new(),
        1 => ", 1 loss".into(),
        n => format!(", {n} losses"),
    };
    match i.signal.as_str() {
        "live" => {
            let format = i
                .format
                .as_deref()
                .map(|f| format!(" ({})", one_line(f)))
                .unwrap_or_default();
            format!("live for {since}{format}{losses}")
        }
        "lost" => {
            let reason = i.reason.as_deref().map(one_line).unwrap_or_default();
            let then = if i.on_loss == "disconnect" {
                "off air until it is back"
            } else {
                "slate shown"
            };
            format!("LOST for {since} ({reason}): {then}{losses}")
        }
        other => one_line(other),
    }
}

/// `1920x1080p30.00, EDID shipped (...)` for an HDMI bridge; nothing for other inputs.
fn hdmi(i: &InputSnapshot) -> Option<String> {
    let edid = match (&i.edid, &i.edid_error) {
        (_, Some(why)) => format!("EDID NOT LOADED ({})", one_line(why)),
        (Some(what), None) => format!("EDID {}", one_line(what)),
        (None, None) if i.timing.is_some() => "no EDID".into(),
        (None, None) => return None,
    };
    let timing = i.timing.as_deref().map(one_line);
    Some(format!(
        "{}, {edid}",
        timing.as_deref().unwrap_or("no signal")
    ))
}

/// Said only when there is something to say: the partition could not be used (`/data` is a RAM
/// disk) or the boot's check repaired it.
fn data_partition(d: &DataPartition) -> Option<String> {
    let device = d.device.as_deref().map(one_line);
    let detail = d.detail.as_deref().map(one_line).unwrap_or_default();
    match d.state.as_str() {
        "ram_disk" => Some(format!(
            "RAM DISK: the data partition {} cannot be used ({detail}): nothing persists across a reboot",
            device.as_deref().unwrap_or("(not found)")
        )),
        "repaired" => Some(format!(
            "{} repaired at boot",
            device.as_deref().unwrap_or("the data partition")
        )),
        _ => None,
    }
}

/// `alsa hw:CARD=MS2109,DEV=0 live for 2m 01s, opus (opusenc) 2 ch, peak -12.5 dBFS` or
/// `SILENCE for 8s (no such device): sending silence` — the state first, as for the input.
fn audio(a: &AudioSnapshot) -> String {
    let since = duration(secs(a.since));
    let codec = a
        .codec
        .as_deref()
        .map(one_line)
        .unwrap_or_else(|| "no encoder".into());
    let peak = match a.peak_dbfs {
        Some(db) => format!("peak {db:.1} dBFS"),
        None => "peak -inf dBFS".into(),
    };
    let offset = if a.offset_ms != 0 {
        format!(", offset {:+} ms", a.offset_ms)
    } else {
        String::new()
    };
    let state = match a.state.as_str() {
        "silence" => format!(
            "SILENCE for {since} ({}): sending silence instead",
            a.reason.as_deref().map(one_line).unwrap_or_default()
        ),
        other => format!("{} for {since}", one_line(other)),
    };
    format!(
        "{} {state}, {codec} {} ch, {peak}{offset}",
        one_line(&a.source),
        a.channels
    )
}

/// The flight recorder, one line per entry, oldest first, with local timestamps.
pub fn history(records: &[Record]) -> String {
    if records.is_empty() {
        return "the flight recorder is empty\n".into();
    }
    let mut out = String::new();
    for r in records {
        let at = local_time(r.at);
        let _ = match &r.entry {
            Entry::Transition { from, to, reason } => writeln!(
                out,
                "{at}  {} -> {}  {}",
                one_line(from),
                one_line(to),
                one_line(reason)
            ),
            Entry::Error { message } => writeln!(out, "{at}  error: {}", one_line(message)),
            Entry::Note { message } => writeln!(out, "{at}  {}", one_line(message)),
            Entry::PathSwitch { message } => {
                writeln!(out, "{at}  path switch: {}", one_line(message))
            }
            Entry::Bitrate {
                from_kbps,
                to_kbps,
                reason,
            } => writeln!(
                out,
                "{at}  bitrate {from_kbps} -> {to_kbps} kbit/s ({})",
                one_line(reason)
            ),
        };
    }
    out
}

/// What `onair retry` did, in the watchdog's terms (see `Event::RetryNow` in the machine).
pub fn retry(r: &RetryReply) -> String {
    let what = match (r.state, r.next_retry_ms) {
        (StreamState::Live, _) => "the daemon is live, so nothing changes".to_string(),
        (_, Some(ms)) => format!(
            "the daemon was {} and had {} to wait; it tries to connect now",
            r.state,
            duration(Duration::from_millis(ms))
        ),
        (StreamState::Failed, None) => "the daemon leaves failed and tries to connect now".into(),
        (StreamState::Connecting | StreamState::Reconnecting, None) => format!(
            "attempt {} is already under way, so nothing changes",
            r.attempt
        ),
        (StreamState::Offline, None) => {
            "the daemon is offline and tries as soon as a network is up".into()
        }
        (StreamState::NoInput, None) => {
            "the daemon has no input and tries as soon as the input is back".into()
        }
        (StreamState::Starting, None) => {
            "the daemon is still starting and connects once its input is ready".into()
        }
    };
    format!("retry sent; {what}\n")
}

/// `recording on usb: onair-20261206T140322Z.mkv 12.3 MB, 1021 MiB free, 4 files`, or
/// `STOPPED for 8s (why): nothing is recorded` — the state first, as for the input; the last
/// error and drops after it.
fn record(r: &RecordingSnapshot) -> String {
    let since = duration(secs(r.since));
    let reason = r.reason.as_deref().map(one_line).unwrap_or_default();
    let mut text = match r.state.as_str() {
        "recording" => format!(
            "recording on {} for {since}: {} {}",
            text_or(r.location.as_deref(), "?"),
            text_or(r.file.as_deref(), "?"),
            megabytes(r.file_bytes)
        ),
        "stopped" => format!("STOPPED for {since} ({reason}): nothing is recorded"),
        "waiting" => format!(
            "waiting on {} for {since} ({reason})",
            text_or(r.location.as_deref(), "?")
        ),
        other => format!("{} for {since}", one_line(other)),
    };
    if let Some(free) = r.free_mb {
        text.push_str(&format!(", {free} MiB free"));
    }
    text.push_str(&format!(
        ", {} file{}",
        r.files,
        if r.files == 1 { "" } else { "s" }
    ));
    if r.dropped > 0 {
        text.push_str(&format!(", {} frames dropped by the disk", r.dropped));
    }
    if let Some(e) = &r.last_error {
        text.push_str(&format!("; last error: {}", one_line(e)));
    }
    text
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `onair recordings`: one line per file, oldest first (start and end in local time, length,
/// size, where), and under it each window when the stream was not live.
pub fn recordings(l: &Listing) -> String {
    if !l.enabled {
        return "recording is off (record.enabled in the config)\n".into();
    }
    if l.recordings.is_empty() {
        return "no recordings yet\n".into();
    }
    let mut out = String::new();
    if l.more > 0 {
        let _ = writeln!(out, "({} older recordings not listed)", l.more);
    }
    for r in &l.recordings {
        let _ = writeln!(
            out,
            "{} .. {}  {:>8}  {:>9}  {:<4}  {}{}",
            local_time(r.start),
            clock_time(r.end),
            duration(secs(r.end - r.start)),
            megabytes(r.bytes),
            one_line(&r.location),
            one_line(&r.path),
            if r.recording { "  (recording)" } else { "" }
        );
        for w in &r.not_live {
            let _ = writeln!(
                out,
                "    not live {} .. {} ({})",
                clock_time(w.from),
                clock_time(w.to),
                duration(secs(w.to - w.from))
            );
        }
    }
    out
}

/// The time of day of `local_time`: `14:02:07.120`.
fn clock_time(unix_s: f64) -> String {
    let full = local_time(unix_s);
    full.split_once(' ')
        .map(|(_, t)| t.to_string())
        .unwrap_or(full)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// `4.2s`, `59s`, `3m 05s`, `2h 03m`, `3d 04h`: precise when short, coarse when long.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Control characters (newlines, escapes) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `2025-03-01 14:02:07.120` in the box's local time zone (UTC if it has none).
pub fn local_time(unix_s: f64) -> String {
    let whole = unix_s.floor();
    let millis = ((unix_s - whole) * 1000.0).floor().clamp(0.0, 999.0) as u32;
    let secs = whole as nix::libc::time_t;
    // SAFETY: `localtime_r` only writes into the `tm` we own and reads `secs`; the all-zero
    // `tm` is a valid value of a plain C struct (its `tm_zone` pointer is only read after the
    // call has set it, and we never read it).
    let tm = unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&secs, &mut tm).is_null() {
            return format!("{unix_s:.3}");
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ModemStatus, Path, UplinkKind, UplinkState, UplinkStatus, WifiStatus};
    use crate::output::adapt::{AdaptStatus, EstimateSource, Retransmissions};
    use crate::status::snapshot::{ClockSnapshot, InputSnapshot, NetworkSnapshot, OutputSnapshot};

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            state: StreamState::Reconnecting,
            since: 12.4,
            attempt: 3,
            next_retry_ms: Some(4200),
            reconnects: 2,
            uptime_s: 7385.0,
            live_s: 7080.0,
            last_error: Some("attempt 3: HTTP 503\n\x1b[31mSlow down".into()),
            network: NetworkSnapshot {
                up: true,
                interfaces: vec!["eth0".into(), "wlan0".into()],
                path: Some(Path {
                    interface: "wlan0".into(),
                    local: Some("198.51.100.2".parse().expect("literal")),
                    gateway: Some("198.51.100.1".parse().expect("literal")),
                }),
                uplinks: vec![
                    UplinkStatus {
                        name: "eth0".into(),
                        kind: UplinkKind::Wired,
                        state: UplinkState::Settling,
                        usable: true,
                        flaps: 3,
                        wifi: None,
                        modem: None,
                    },
                    UplinkStatus {
                        name: "wlan0".into(),
                        kind: UplinkKind::Wifi,
                        state: UplinkState::InUse,
                        usable: true,
                        flaps: 0,
                        wifi: Some(WifiStatus {
                            state: WifiState::Connected,
                            ssid: Some("Venue \"Guest\"\n".into()),
                            reason: None,
                            signal_dbm: Some(-48),
                            rate_mbps: Some(72),
                        }),
                        modem: None,
                    },
                ],
                switches: 1,
                steered: true,
            },
            clock: ClockSnapshot {
                synchronized: false,
                since: 42.0,
                set_by: "https-date".into(),
                set_from: Some("https://whip.example.com".into()),
            },
            encoder: Some("x264enc".into()),
            source: "test 1280x720@30".into(),
            input: InputSnapshot {
                signal: "live".into(),
                showing: "input".into(),
                since: 185.0,
                losses: 1,
                format: Some("1280x720 I420 @30".into()),
                reason: None,
                on_loss: "slate".into(),
                slate: "card \"NO SIGNAL\"".into(),
                slate_frames: 310,
                timing: None,
                edid: None,
                edid_error: None,
            },
            bitrate_kbps: 2480,
            adapt: AdaptStatus {
                enabled: true,
                target_kbps: 2500,
                min_kbps: 300,
                max_kbps: 2500,
                estimate_kbps: Some(3100),
                estimate_source: Some(EstimateSource::Twcc),
                loss_pct: Some(0.4),
                rtt_ms: Some(23),
                steps: 7,
                retransmissions: Retransmissions {
                    resent: 120,
                    too_soon: 300,
                    too_old: 12,
                    over_budget: 40,
                },
            },
            frames_encoded: 212_400,
            frames_sent: 211_000,
            keyframes_forced: 4,
            audio: None,
            record: None,
            output: OutputSnapshot {
                kind: "whip".into(),
                url: "https://whip.example.com/api/whip?token=***".into(),
            },
            data_partition: None,
            pid: 412,
            version: "0.1.0".into(),
            update: None,
        }
    }

    #[test]
    fn status_block_reads_like_this() {
        assert_eq!(
            status(&snapshot()),
            "\
state       reconnecting for 12s
attempt     3, next in 4.2s
network     up (eth0, wlan0)
path        wlan0 src 198.51.100.2 gw 198.51.100.1, steered, 1 switch
uplinks     eth0 wired settling (3 flaps), wlan0 wifi in use
wifi        wlan0 \"Venue \"Guest\" \" connected, -48 dBm, 72 Mbit/s
clock       unsynchronized (since 42s), set by https-date from https://whip.example.com
encoder     x264enc
source      test 1280x720@30
input       live for 3m 05s (1280x720 I420 @30), 1 loss
bitrate     2480 kbit/s, target 2500 (300 to 2500)
estimate    3100 kbit/s from twcc, loss 0.4 %, rtt 23 ms
resent      120 packets; ignored 300 too soon, 12 too old, 40 over budget
frames      212400 encoded, 211000 sent, 4 key frames forced
reconnects  2
live        1h 58m of 2h 03m up
last error  attempt 3: HTTP 503  [31mSlow down
output      whip https://whip.example.com/api/whip?token=***
daemon      pid 412, onair 0.1.0
"
        );
    }

    #[test]
    fn a_synchronized_clock_says_so() {
        let mut s = snapshot();
        s.clock = ClockSnapshot {
            synchronized: true,
            since: 3.0,
            set_by: "ntp".into(),
            set_from: None,
        };
        assert!(
            status(&s).contains("\nclock       synchronized, set by ntp\n"),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn the_system_and_the_last_update_are_shown_when_known() {
        use crate::status::update::UpdateOutcome;
        let mut s = snapshot();
        assert!(
            !status(&s).contains("system "),
            "no update document, no lines"
        );
        s.update = Some(UpdateSnapshot {
            slot: Some("A".into()),
            version: Some("2026.12.07-1".into()),
            trial: false,
            last: Some(UpdateOutcome {
                phase: Phase::RolledBack,
                version: "2026.12.08-1".into(),
                slot: "B".into(),
                reason: Some("not live within 120 s (state connecting)".into()),
                at: 0.0,
            }),
        });
        let text = status(&s);
        assert!(
            text.contains("system      slot A, version 2026.12.07-1\n"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("update "))
            .expect("an update line");
        assert!(
            line.starts_with(
                "update      ROLLED BACK: not live within 120 s (state connecting) — version \
                 2026.12.08-1 in slot B, "
            ),
            "{line}"
        );
        let u = s.update.as_mut().unwrap();
        u.trial = true;
        u.slot = Some("B".into());
        u.last.as_mut().unwrap().phase = Phase::Trying;
        u.last.as_mut().unwrap().reason = None;
        let text = status(&s);
        assert!(
            text.contains("slot B, version 2026.12.07-1 (on trial: kept"),
            "{text}"
        );
        assert!(
            text.contains("update      trying — version 2026.12.08-1 in slot B, "),
            "{text}"
        );
    }

    #[test]
    fn status_before_anything_happened() {
        let mut s = snapshot();
        s.state = StreamState::Starting;
        s.attempt = 0;
        s.next_retry_ms = None;
        s.encoder = None;
        s.last_error = None;
        s.network.interfaces.clear();
        s.network.path = None;
        s.network.uplinks.clear();
        let text = status(&s);
        assert!(
            !text.contains("path "),
            "no path line without uplinks: {text}"
        );
        assert!(text.contains("attempt     none yet\n"), "{text}");
        assert!(text.contains("encoder     none yet\n"), "{text}");
        assert!(text.contains("last error  none\n"), "{text}");
        assert!(text.contains("network     up\n"), "{text}");
        s.network.up = false;
        assert!(status(&s).contains("network     down\n"));
    }

    #[test]
    fn field_uplinks_say_their_kind_network_and_trouble() {
        let mut s = snapshot();
        s.network.uplinks[1].wifi = Some(WifiStatus {
            state: WifiState::AuthenticationFailed,
            ssid: Some("Venue".into()),
            reason: Some("wrong password".into()),
            signal_dbm: None,
            rate_mbps: None,
        });
        s.network.uplinks[1].state = UplinkState::Dormant;
        s.network.uplinks.push(UplinkStatus {
            name: "wwan0".into(),
            kind: UplinkKind::Modem,
            state: UplinkState::Usable,
            usable: true,
            flaps: 0,
            wifi: None,
            modem: Some(ModemStatus {
                state: Some("connected".into()),
                operator: Some("Vodafone.de".into()),
                signal_pct: Some(73),
                access: Some("lte".into()),
            }),
        });
        let text = status(&s);
        for line in [
            "uplinks     eth0 wired settling (3 flaps), wlan0 wifi dormant, wwan0 modem usable\n",
            "wifi        wlan0 \"Venue\" AUTHENTICATION FAILED (wrong password)\n",
            "modem       wwan0 connected, Vodafone.de, lte, signal 73 %\n",
        ] {
            assert!(text.contains(line), "{line}in:\n{text}");
        }
        // The JSON names the kind and the facts.
        let json = serde_json::to_value(&s.network.uplinks[2]).expect("json");
        assert_eq!(json["kind"], "modem");
        assert_eq!(json["modem"]["signal_pct"], 73);
        assert_eq!(json["wifi"], serde_json::Value::Null);
        // A modem ModemManager says nothing about yet, a radio without its supplicant.
        s.network.uplinks[2].modem = Some(ModemStatus::default());
        s.network.uplinks[1].wifi = Some(WifiStatus::no_supplicant());
        let text = status(&s);
        assert!(text.contains("modem       wwan0\n"), "{text}");
        assert!(
            text.contains("wifi        wlan0 no wpa_supplicant\n"),
            "{text}"
        );
    }

    #[test]
    fn audio_says_whether_the_sound_is_live_or_silence_and_why() {
        let mut s = snapshot();
        assert!(!status(&s).contains("audio"), "no audio line without audio");
        s.audio = Some(AudioSnapshot {
            source: "hw:CARD=MS2109,DEV=0".into(),
            codec: Some("opus (opusenc)".into()),
            state: "live".into(),
            since: 121.0,
            peak_dbfs: Some(-12.5),
            channels: 2,
            bitrate_kbps: 128,
            ..AudioSnapshot::default()
        });
        assert!(
            status(&s).contains(
                "audio       hw:CARD=MS2109,DEV=0 live for 2m 01s, opus (opusenc) 2 ch, peak -12.5 dBFS\n"
            ),
            "{}",
            status(&s)
        );
        let a = s.audio.as_mut().unwrap();
        a.state = "silence".into();
        a.reason = Some("no such device".into());
        a.since = 8.0;
        a.peak_dbfs = None;
        a.offset_ms = -40;
        assert!(
            status(&s).contains(
                "SILENCE for 8.0s (no such device): sending silence instead, opus (opusenc) 2 ch, peak -inf dBFS, offset -40 ms\n"
            ),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn a_lost_input_says_why_and_what_the_viewers_get() {
        let mut s = snapshot();
        s.state = StreamState::NoInput;
        s.input.signal = "lost".into();
        s.input.showing = "slate".into();
        s.input.since = 12.0;
        s.input.losses = 2;
        s.input.reason = Some("/dev/video0: no signal".into());
        let text = status(&s);
        assert!(
            text.contains(
                "input       LOST for 12s (/dev/video0: no signal): slate shown, 2 losses\n"
            ),
            "{text}"
        );
        s.input.on_loss = "disconnect".into();
        assert!(status(&s).contains("): off air until it is back, 2 losses\n"));
    }

    #[test]
    fn an_hdmi_bridge_shows_its_timing_and_edid() {
        let mut s = snapshot();
        assert!(
            !status(&s).contains("hdmi "),
            "a test source has no hdmi line"
        );
        s.input.timing = Some("1920x1080p30.00".into());
        s.input.edid = Some("shipped (1080p30/25/24, ...)".into());
        assert!(
            status(&s).contains(
                "input       live for 3m 05s (1280x720 I420 @30), 1 loss\n\
                 hdmi        1920x1080p30.00, EDID shipped (1080p30/25/24, ...)\n"
            ),
            "{}",
            status(&s)
        );
        s.input.timing = None;
        s.input.edid = None;
        s.input.edid_error = Some("cannot load the EDID: Device or resource busy".into());
        assert!(
            status(&s).contains(
                "hdmi        no signal, EDID NOT LOADED (cannot load the EDID: Device or resource busy)\n"
            ),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn a_data_partition_that_cannot_be_used_is_said() {
        let mut s = snapshot();
        s.data_partition = Some(DataPartition {
            state: "mounted".into(),
            device: Some("/dev/mmcblk0p3".into()),
            detail: None,
        });
        assert!(
            !status(&s).contains("data "),
            "nothing to say when it is fine"
        );
        s.data_partition = Some(DataPartition {
            state: "ram_disk".into(),
            device: Some("/dev/mmcblk0p3".into()),
            detail: Some("e2fsck -p cannot repair it unattended (exit 4)".into()),
        });
        assert!(
            status(&s).contains(
                "data        RAM DISK: the data partition /dev/mmcblk0p3 cannot be used \
                 (e2fsck -p cannot repair it unattended (exit 4)): nothing persists across a reboot\n\
                 daemon "
            ),
            "{}",
            status(&s)
        );
        s.data_partition.as_mut().unwrap().state = "repaired".into();
        assert!(status(&s).contains("data        /dev/mmcblk0p3 repaired at boot\n"));
    }

    #[test]
    fn history_is_one_line_per_entry() {
        let records = vec![
            Record {
                at: 1_700_000_000.25,
                entry: Entry::Transition {
                    from: "starting".into(),
                    to: "connecting".into(),
                    reason: "input ready".into(),
                },
            },
            Record {
                at: 1_700_000_001.5,
                entry: Entry::Error {
                    message: "attempt 1: refused\nby server".into(),
                },
            },
        ];
        let text = history(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let t0 = local_time(1_700_000_000.25);
        assert_eq!(
            lines[0],
            format!("{t0}  starting -> connecting  input ready")
        );
        assert!(lines[1].ends_with(".500  error: attempt 1: refused by server"));
        assert_eq!(history(&[]), "the flight recorder is empty\n");
    }

    #[test]
    fn local_time_has_a_fixed_shape() {
        let t = local_time(1_700_000_000.25);
        assert_eq!(t.len(), "2023-11-14 22:13:20.250".len(), "{t}");
        assert!(t.ends_with(":20.250"), "{t}");
        assert!(t.starts_with("2023-11-1"), "{t}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(7385)), "2h 03m");
        assert_eq!(
            duration(Duration::from_secs(3 * 86400 + 4 * 3600)),
            "3d 04h"
        );
    }

    #[test]
    fn retry_says_what_happens_next() {
        let r = |state, next_retry_ms| RetryReply {
            requested: true,
            state,
            attempt: 2,
            next_retry_ms,
        };
        assert_eq!(
            retry(&r(StreamState::Failed, None)),
            "retry sent; the daemon leaves failed and tries to connect now\n"
        );
        assert_eq!(
            retry(&r(StreamState::Connecting, Some(55_300))),
            "retry sent; the daemon was connecting and had 55s to wait; it tries to connect now\n"
        );
        assert_eq!(
            retry(&r(StreamState::Reconnecting, None)),
            "retry sent; attempt 2 is already under way, so nothing changes\n"
        );
        assert!(retry(&r(StreamState::Live, None)).contains("nothing changes"));
    }

    #[test]
    fn the_record_line_says_where_what_and_why() {
        let mut r = RecordingSnapshot {
            state: "recording".into(),
            since: 65.0,
            to: "usb".into(),
            location: Some("usb".into()),
            dir: Some("/run/onair/usb/recordings".into()),
            file: Some("onair-20261206T140322Z.mkv".into()),
            file_bytes: 12_340_000,
            bytes_written: 50_000_000,
            free_mb: Some(1021),
            min_free_mb: 64,
            files: 4,
            ..Default::default()
        };
        assert_eq!(
            record(&r),
            "recording on usb for 1m 05s: onair-20261206T140322Z.mkv 12.3 MB, 1021 MiB free, 4 files"
        );
        r.state = "stopped".into();
        r.reason = Some("/data/recordings is full\n".into());
        r.dropped = 7;
        r.last_error = Some("the USB disk ONAIR-REC was unplugged".into());
        assert_eq!(
            record(&r),
            "STOPPED for 1m 05s (/data/recordings is full ): nothing is recorded, 1021 MiB free, \
             4 files, 7 frames dropped by the disk; last error: the USB disk ONAIR-REC was unplugged"
        );
        let mut s = snapshot();
        s.record = Some(r);
        assert!(
            status(&s).contains("\nrecord      STOPPED for"),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn recordings_are_listed_with_the_windows_off_the_air() {
        use crate::recording::RecordingEntry;
        use crate::recording::sidecar::Window;
        let t0 = 1_700_000_000.0;
        let l = Listing {
            enabled: true,
            recordings: vec![RecordingEntry {
                file: "onair-20231114T221320Z.mkv".into(),
                path: "/data/recordings/onair-20231114T221320Z.mkv".into(),
                location: "data".into(),
                start: t0,
                end: t0 + 300.0,
                recording: true,
                bytes: 94_000_000,
                not_live: vec![Window {
                    from: t0 + 30.0,
                    to: t0 + 60.5,
                }],
            }],
            more: 0,
        };
        let text = recordings(&l);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0],
            format!(
                "{} .. {}    5m 00s    94.0 MB  data  /data/recordings/onair-20231114T221320Z.mkv  (recording)",
                local_time(t0),
                clock_time(t0 + 300.0)
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "    not live {} .. {} (30s)",
                clock_time(t0 + 30.0),
                clock_time(t0 + 60.5)
            )
        );
        assert_eq!(
            recordings(&Listing::default()),
            "recording is off (record.enabled in the config)\n"
        );
    }
}
