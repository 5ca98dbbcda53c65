//! RTMP output: publish the access units as FLV to an RTMP(S) ingest (nginx-rtmp, Twitch,
//! YouTube, …) through GStreamer's `rtmp2sink`.
//!
//! One attempt = build a fresh branch pipeline for this connection (see `branch`), let
//! rtmp2sink do TCP (or TLS), handshake, `connect` and `publish`, and decide from its stats and
//! bus what happened (see `verdict`): connected, rejected (permanent) or a network failure
//! (transient). The connection then feeds the branch from the door, starting at a key frame,
//! and a watchdog reports it lost on a bus error or when the socket stops taking bytes for
//! `dead_after`. Closing sets the branch to NULL; the capture pipeline never notices.

pub mod backlog;
pub mod branch;
pub mod location;
pub mod verdict;

use super::adapt::PathReport;
use super::pump::{
    self, CapacityProbe, Delivery, LivenessProbe, PumpCounters, PumpSettings, UnitWriter,
};
use super::{Attempt, Connection, ConnectionEvent, EventSender, Failure, FailureClass, Output};
use crate::clock::{Clock, ClockVerdict, TlsRefusal};
use crate::media::AccessUnit;
use crate::media::audio::AudioUnit;
use crate::secret::SecretUrl;
use backlog::{BacklogEstimator, BacklogSettings};
use branch::{Branch, BranchSettings};
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use location::{Location, Scheme, Scrubber};
use reqwest::Url;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
pub use verdict::RtmpError;
use verdict::{ConnectVerdict, Observation, Progress, StallWatch};

/// Protocol tuning of the RTMP output. Fixed in code; the defaults are the documented values.
#[derive(Debug, Clone)]
pub struct RtmpSettings {
    /// How long the server must keep the connection open after accepting the publish before
    /// the attempt counts as connected. Default 500 ms: nginx-rtmp's `deny publish` hangs up
    /// within a millisecond of `NetStream.Publish.Start`.
    pub settle: Duration,
    /// How often rtmp2sink's stats are read while connecting. Default 20 ms.
    pub connect_poll: Duration,
    /// Units waiting inside the branch beyond which new ones are dropped until the next key
    /// frame (memory stays bounded while the socket is stuck). Default 60 (2 s at 30 fps).
    pub max_backlog: u64,
    /// What every output's connections share (tap, key-frame nudge, liveness poll).
    pub pump: PumpSettings,
}

impl Default for RtmpSettings {
    fn default() -> Self {
        RtmpSettings {
            settle: Duration::from_millis(500),
            connect_poll: Duration::from_millis(20),
            max_backlog: 60,
            pump: PumpSettings::default(),
        }
    }
}

pub struct RtmpOutput {
    location: Location,
    /// Asked when an rtmps server's certificate is refused (it may be the box's clock).
    clock: Option<Arc<Clock>>,
    scrubber: Scrubber,
    settings: RtmpSettings,
    /// Channels of the AAC track, when audio is on.
    audio: Option<u32>,
    /// How long after its media time each unit is sent, with audio.
    pacing: Duration,
}

/// The encoder's share of the backlog estimate (what the socket took while a backlog built up):
/// the rest is room for FLV and TCP overhead and for the backlog to drain.
pub const ENCODER_SHARE: f64 = 0.85;

/// With audio, units leave this long after their media time (see `pump::Pacer`), so flvmux
/// gets both tracks in time order and interleaves them without waiting.
const AV_PACING: Duration = Duration::from_millis(120);

impl RtmpOutput {
    /// Checks the URL and that the GStreamer elements exist; both are start-up errors.
    pub fn new(url: &SecretUrl) -> Result<RtmpOutput, RtmpError> {
        let location = Location::parse(url)?;
        gst::init()
            .map_err(|e| RtmpError::Build(format!("GStreamer failed to initialise: {e}")))?;
        branch::check_elements()?;
        let scrubber = Scrubber::new(url, Some(&location));
        Ok(RtmpOutput {
            location,
            clock: None,
            scrubber,
            settings: RtmpSettings::default(),
            audio: None,
            pacing: AV_PACING,
        })
    }

    /// An rtmps certificate refusal is taken to the clock (see `WhipOutput::with_clock`).
    pub fn with_clock(mut self, clock: Arc<Clock>) -> RtmpOutput {
        self.clock = Some(clock);
        self
    }

    /// While the clock is not synchronized, an rtmps certificate refusal may be the clock's:
    /// GIO does not say why it refused, so the origin is asked with the box's own TLS
    /// verifier (`crate::clock`), which tells, and which may set the clock from the server's
    /// `Date` if the server also answers HTTPS there.
    async fn clock_verdict(&self, e: &RtmpError, cancel: &CancellationToken) -> ClockVerdict {
        let (Some(clock), Scheme::Rtmps, RtmpError::Transport(text)) =
            (&self.clock, self.location.scheme, e)
        else {
            return ClockVerdict::NotTheClock;
        };
        if !text.to_ascii_lowercase().contains("certificate") {
            return ClockVerdict::NotTheClock;
        }
        let host = if self.location.host.contains(':') {
            format!("[{}]", self.location.host)
        } else {
            self.location.host.clone()
        };
        let Ok(origin) = Url::parse(&format!("https://{host}:{}/", self.location.port)) else {
            return ClockVerdict::NotTheClock;
        };
        tokio::select! {
            v = clock.certificate_refused(&origin, TlsRefusal::Unexplained) => v,
            _ = cancel.cancelled() => ClockVerdict::NotTheClock,
        }
    }

    /// Carry an AAC track of `channels` (from the door's audio lane) on flvmux's audio pad.
    /// `advance`: how far `audio.offset_ms` moves the sound earlier; the pacing waits that much
    /// longer, so flvmux still gets both tracks in time order.
    pub fn with_audio(mut self, channels: Option<u32>, advance: Duration) -> RtmpOutput {
        self.audio = channels;
        self.pacing = AV_PACING + advance;
        self
    }

    async fn attempt(&self, attempt: &Attempt) -> Result<RtmpConnection, RtmpError> {
        let (branch, mut bus) = Branch::build(
            &self.location,
            &BranchSettings::new(attempt.dead_after_now()),
            attempt.number,
            self.audio,
        )?;
        log::debug!(
            "rtmp: attempt {}: connecting to {}",
            attempt.number,
            self.location
        );
        branch.start()?;
        let sink = branch.sink();
        let mut verdict = ConnectVerdict::new(self.settings.settle);
        let mut tick = tokio::time::interval(self.settings.connect_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let observation = tokio::select! {
                _ = attempt.cancel.cancelled() => {
                    branch.shutdown(false, None).await;
                    return Err(RtmpError::Cancelled);
                }
                msg = bus.next() => match msg {
                    None => Observation::Error {
                        text: "the RTMP branch's bus closed".into(),
                        after_publish: false,
                    },
                    Some(msg) => match self.bus_observation(&msg, &sink) {
                        Some(o) => o,
                        None => continue,
                    },
                },
                _ = tick.tick() => {
                    if branch::sink_stats(&sink).published {
                        Observation::Published
                    } else {
                        Observation::Tick
                    }
                }
            };
            match verdict.observe(Instant::now(), observation) {
                Progress::Pending => {}
                Progress::Connected => break,
                Progress::Failed(e) => {
                    branch.shutdown(false, None).await;
                    return Err(e);
                }
            }
        }
        log::info!(
            "rtmp: attempt {}: publishing to {}",
            attempt.number,
            self.location
        );
        Ok(RtmpConnection::start(
            branch,
            bus,
            attempt,
            self.scrubber.clone(),
            self.settings.clone(),
            self.pacing,
        ))
    }

    fn bus_observation(&self, msg: &gst::Message, sink: &gst::Element) -> Option<Observation> {
        match msg.view() {
            gst::MessageView::Error(_) => {
                let (text, debug) = branch::error_text(msg)?;
                log::debug!(
                    "rtmp: branch error: {} ({})",
                    self.scrubber.scrub(&text),
                    self.scrubber.scrub(&debug)
                );
                Some(Observation::Error {
                    text: self.scrubber.scrub(&text),
                    after_publish: branch::sink_stats(sink).published,
                })
            }
            gst::MessageView::Eos(_) => Some(Observation::Eos),
            gst::MessageView::Warning(w) => {
                log::debug!(
                    "rtmp: branch warning: {}",
                    self.scrubber.scrub(&w.error().to_string())
                );
                None
            }
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Output for RtmpOutput {
    async fn reachable(&self) -> Option<bool> {
        Some(super::tcp_answers(&self.location.host, self.location.port).await)
    }

    async fn connect(&self, attempt: Attempt) -> Result<Box<dyn Connection>, Failure> {
        match self.attempt(&attempt).await {
            Ok(conn) => Ok(Box::new(conn)),
            Err(e) => Err(match self.clock_verdict(&e, &attempt.cancel).await {
                ClockVerdict::Behind(why) => Failure {
                    class: FailureClass::ClockBehind,
                    message: self.scrubber.scrub(&why),
                },
                ClockVerdict::NotTheClock => Failure {
                    class: e.class(),
                    message: self.scrubber.scrub(&e.to_string()),
                },
            }),
        }
    }
}

/// A published RTMP stream. Owns its branch and its three tasks.
pub struct RtmpConnection {
    branch: Branch,
    stop: CancellationToken,
    pump: JoinHandle<()>,
    liveness: JoinHandle<RtmpLiveness>,
    adaptation: JoinHandle<()>,
}

impl RtmpConnection {
    fn start(
        branch: Branch,
        bus: gst::bus::BusStream,
        attempt: &Attempt,
        scrubber: Scrubber,
        settings: RtmpSettings,
        pacing: Duration,
    ) -> RtmpConnection {
        let stop = CancellationToken::new();
        let sink = branch.sink();
        report_first_media(&sink, attempt.events.clone());
        let start = attempt
            .adaptation
            .start_kbps(attempt.local_address, Instant::now());
        let (_, min, max) = attempt.adaptation.estimator_range(start);
        let capacity = BacklogProbe {
            appsrc: branch.appsrc(),
            sink: sink.clone(),
            estimator: BacklogEstimator::new(BacklogSettings::default(), min, max),
        };
        // The encoder is at this connection's starting target before the first unit goes out.
        let adaptation = pump::spawn_adaptation(capacity, attempt, &settings.pump, stop.clone());
        let writer = BranchWriter {
            appsrc: branch.appsrc(),
            timeline: Timeline::default(),
            max_backlog: settings.max_backlog,
            audio: branch.audio_appsrc().map(|appsrc| AudioLane {
                appsrc,
                configured: false,
                last_out: None,
            }),
            last_video: None,
            pacing,
        };
        let (pump, counters) = pump::spawn_pump(writer, attempt, &settings.pump, stop.clone());
        let probe = RtmpLiveness {
            stall: StallWatch::new(
                Instant::now(),
                branch::sink_stats(&sink).bytes_out,
                counters.offered(),
            ),
            sink,
            bus,
            counters,
            scrubber,
        };
        let liveness = pump::spawn_liveness(probe, attempt, &settings.pump, stop.clone());
        RtmpConnection {
            branch,
            stop,
            pump,
            liveness,
            adaptation,
        }
    }
}

#[async_trait::async_trait]
impl Connection for RtmpConnection {
    async fn close(self: Box<Self>, polite: bool) {
        self.stop.cancel();
        // The tasks end at their next await once `stop` is cancelled.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pump).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.adaptation).await;
        let bus = tokio::time::timeout(Duration::from_secs(1), self.liveness)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|probe| probe.bus);
        self.branch.shutdown(polite, bus).await;
    }
}

/// Sends `MediaFlowing` when the first media buffer reaches rtmp2sink (which, connected,
/// writes it straight to the socket). flvmux's stream headers come first and are skipped; the
/// pump only ever starts with a key frame, so the first media buffer is one.
fn report_first_media(sink: &gst::Element, events: EventSender) {
    let Some(pad) = sink.static_pad("sink") else {
        return;
    };
    let sent = AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let media = info
            .buffer()
            .is_some_and(|b| !b.flags().contains(gst::BufferFlags::HEADER));
        if media && !sent.swap(true, Ordering::Relaxed) {
            events.send(ConnectionEvent::MediaFlowing);
            return gst::PadProbeReturn::Remove;
        }
        gst::PadProbeReturn::Ok
    });
}

/// Pushes access units into the branch's appsrc with a per-connection timeline.
struct BranchWriter {
    appsrc: gst_app::AppSrc,
    timeline: Timeline,
    max_backlog: u64,
    audio: Option<AudioLane>,
    /// (media time, FLV time) of the last picture: sound is placed relative to it, so it
    /// follows the pictures' timeline through any of its corrections.
    last_video: Option<(Duration, Duration)>,
    pacing: Duration,
}

struct AudioLane {
    appsrc: gst_app::AppSrc,
    /// The caps carry the encoder's AudioSpecificConfig (set with the first frame).
    configured: bool,
    last_out: Option<Duration>,
}

#[async_trait::async_trait]
impl UnitWriter for BranchWriter {
    fn backed_up(&self) -> bool {
        // The socket is not keeping up; the liveness probe decides whether it is dead.
        self.appsrc.property::<u64>("current-level-buffers") >= self.max_backlog
    }

    async fn write(&mut self, unit: AccessUnit) -> Result<Delivery, String> {
        let pts = self.timeline.stamp(unit.pts, unit.duration);
        self.last_video = Some((unit.pts, pts));
        let mut buffer = stamped_buffer(unit.data, pts, unit.duration);
        if !unit.keyframe {
            buffer.make_mut().set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        // A failed push means the branch is flushing or failed; the probe reports why.
        self.appsrc
            .push_buffer(buffer)
            .map(|_| Delivery::Queued)
            .map_err(|e| format!("push into the branch failed: {e:?}"))
    }

    fn pacing(&self) -> Option<Duration> {
        self.audio.as_ref().map(|_| self.pacing)
    }

    async fn write_audio(&mut self, unit: AudioUnit) -> Result<(), String> {
        let (Some(lane), Some((video_in, video_out))) = (self.audio.as_mut(), self.last_video)
        else {
            return Ok(());
        };
        let Some(out) = audio_time(video_in, video_out, unit.pts) else {
            return Ok(());
        };
        // Sound never goes back in time on one connection.
        if lane.last_out.is_some_and(|last| out <= last) {
            return Ok(());
        }
        if !lane.configured {
            let Some(config) = unit.codec_data.as_deref() else {
                return Ok(());
            };
            let channels = lane
                .appsrc
                .caps()
                .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("channels").ok()))
                .unwrap_or(2) as u32;
            lane.appsrc
                .set_caps(Some(&branch::aac_caps(channels, Some(config))));
            lane.configured = true;
        }
        lane.last_out = Some(out);
        let buffer = stamped_buffer(unit.data, out, unit.duration);
        lane.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("push into the branch's audio failed: {e:?}"))
    }
}

/// A buffer for flvmux at `at` on the connection's timeline. Decode order is presentation
/// order: the encoders are configured without B-frames, and AAC has none.
fn stamped_buffer(
    data: impl AsRef<[u8]> + Send + 'static,
    at: Duration,
    duration: Duration,
) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_slice(data);
    let b = buffer.make_mut();
    let at = gst::ClockTime::from_nseconds(at.as_nanos() as u64);
    b.set_pts(at);
    b.set_dts(at);
    b.set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
    buffer
}

/// Where sound of media time `pts` goes on the FLV timeline, given the last picture's media
/// and FLV times; `None` if it would fall before the stream's start.
pub fn audio_time(video_in: Duration, video_out: Duration, pts: Duration) -> Option<Duration> {
    if pts >= video_in {
        Some(video_out + (pts - video_in))
    } else {
        video_out.checked_sub(video_in - pts)
    }
}

/// What the RTMP uplink carries, judged from the branch's backlog (`backlog.rs`): how long
/// the units queued in appsrc would play, and the bytes rtmp2sink has handed to the socket.
struct BacklogProbe {
    appsrc: gst_app::AppSrc,
    sink: gst::Element,
    estimator: BacklogEstimator,
}

impl CapacityProbe for BacklogProbe {
    fn report(&mut self, now: Instant) -> PathReport {
        let backlog = Duration::from_nanos(self.appsrc.property::<u64>("current-level-time"));
        let sent = branch::sink_stats(&self.sink).bytes_out;
        PathReport {
            estimate: self.estimator.observe(now, backlog, sent),
            loss: None,
            rtt: None,
            retransmissions: None,
            resending_bps: None,
        }
    }
}

/// An RTMP connection is dead on an error from the branch, or when the socket has taken no
/// bytes for `dead_after` while there was media to send. Keeps the bus for a polite close.
struct RtmpLiveness {
    sink: gst::Element,
    bus: gst::bus::BusStream,
    counters: Arc<PumpCounters>,
    stall: StallWatch,
    scrubber: Scrubber,
}

#[async_trait::async_trait]
impl LivenessProbe for RtmpLiveness {
    async fn next_event(&mut self) -> Option<String> {
        let Some(msg) = self.bus.next().await else {
            return Some("the RTMP branch's bus closed".into());
        };
        match msg.view() {
            gst::MessageView::Error(_) => {
                let (text, debug) = branch::error_text(&msg)?;
                log::debug!("rtmp: branch error: {}", self.scrubber.scrub(&debug));
                Some(self.scrubber.scrub(&text))
            }
            gst::MessageView::Eos(_) => Some("the RTMP branch ended".into()),
            _ => None,
        }
    }

    async fn check(&mut self, now: Instant, dead_after: Duration) -> Option<String> {
        let bytes = branch::sink_stats(&self.sink).bytes_out;
        let stuck = self
            .stall
            .observe(now, dead_after, bytes, self.counters.offered())?;
        Some(format!(
            "the server took no data for {:.1} s (write stalled)",
            stuck.as_secs_f64()
        ))
    }
}

/// Presentation times for one connection: 0 at its first unit, then the encoder's spacing.
/// If the encoder's clock jumps backwards or far ahead (the capture pipeline restarted after
/// an input loss), the timeline carries on one frame later instead of following it, so the
/// server and its players never see time go backwards.
#[derive(Debug, Default)]
pub struct Timeline {
    /// (input pts, output pts, duration) of the last unit.
    last: Option<(Duration, Duration, Duration)>,
}

/// Largest forward jump in the encoder's timestamps taken at face value. Gaps from dropped
/// units waiting for a key frame stay well below it.
const MAX_JUMP: Duration = Duration::from_secs(10);

impl Timeline {
    pub fn stamp(&mut self, pts: Duration, duration: Duration) -> Duration {
        let out = match self.last {
            None => Duration::ZERO,
            Some((last_in, last_out, last_duration)) => {
                match pts.checked_sub(last_in) {
                    Some(delta) if !delta.is_zero() && delta <= MAX_JUMP => last_out + delta,
                    // Backwards, stuck or a leap: one frame on.
                    _ => last_out + last_duration.max(Duration::from_millis(1)),
                }
            }
        };
        self.last = Some((pts, out, duration));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(33);

    #[test]
    fn timeline_starts_at_zero_and_keeps_the_encoder_spacing() {
        let mut t = Timeline::default();
        let base = Duration::from_secs(100);
        assert_eq!(t.stamp(base, FRAME), Duration::ZERO);
        assert_eq!(t.stamp(base + FRAME, FRAME), FRAME);
        // A resync gap (units dropped until the next key frame) is kept.
        assert_eq!(t.stamp(base + FRAME * 60, FRAME), FRAME * 60);
    }

    #[test]
    fn timeline_never_goes_backwards_when_capture_restarts() {
        let mut t = Timeline::default();
        t.stamp(Duration::from_secs(50), FRAME);
        let after = t.stamp(Duration::from_millis(10), FRAME);
        assert_eq!(after, FRAME);
        assert_eq!(t.stamp(Duration::from_millis(10) + FRAME, FRAME), FRAME * 2);
        // A leap forward is not followed either.
        assert_eq!(t.stamp(Duration::from_secs(3600), FRAME), FRAME * 3);
    }

    #[test]
    fn sound_is_placed_on_the_pictures_timeline() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Picture at media 100 s went out at FLV 2 s.
        assert_eq!(
            audio_time(s(100), s(2), s(100) + ms(40)),
            Some(s(2) + ms(40))
        );
        assert_eq!(
            audio_time(s(100), s(2), s(100) - ms(40)),
            Some(s(2) - ms(40))
        );
        assert_eq!(
            audio_time(s(100), s(2), s(97)),
            None,
            "before the stream's start"
        );
    }

    #[test]
    fn settings_defaults_are_the_documented_ones() {
        let s = RtmpSettings::default();
        assert_eq!(s.settle, Duration::from_millis(500));
        assert_eq!(s.max_backlog, 60);
        assert_eq!(
            BranchSettings::new(Duration::from_millis(5000)).io_timeout_s,
            5
        );
        assert_eq!(
            BranchSettings::new(Duration::from_millis(1200)).io_timeout_s,
            2
        );
        assert_eq!(
            BranchSettings::new(Duration::from_millis(10)).io_timeout_s,
            1
        );
    }
}
