//! The frame pump between the capture and the encoder: one picture per frame period, at the
//! configured rate, whatever the input does.
//!
//! The capture drops its newest picture into a one-slot mailbox (the newest wins: nothing
//! queues up); a thread paced by the GStreamer system clock takes it every period and pushes
//! it into the encoding pipeline's `appsrc`, stamped with that pipeline's running time. So the
//! encoder sees one steady stream of pictures of one size and rate, with timestamps that only
//! go forward, through any input trouble:
//! - input shown, new picture: the picture;
//! - input shown, none since the last period (a hiccup, a capture restarting for new timings):
//!   the last picture again, until `input.rs` declares the input lost;
//! - slate shown: the slate.
//!
//! A switch between the input and the slate asks for a key frame on the frame of the switch,
//! both ways. Which one is shown is decided elsewhere (`input.rs`); [`Chooser`] is the pure
//! per-period choice, unit-tested on its own.

use super::keyframes::{KeyframeRequester, Urgency};
use crate::lock::lock;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the encoder is to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Input,
    Slate,
}

/// The picture of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The newest picture from the input.
    Fresh,
    /// The input's last picture again.
    Held,
    Slate,
}

/// The pure per-period choice, and whether the frame is a switch (a key frame is due).
#[derive(Debug, Default)]
pub struct Chooser {
    last: Option<Show>,
}

impl Chooser {
    /// `fresh`: a new input picture is waiting; `held`: there is an input picture to repeat.
    pub fn next(&mut self, want: Show, fresh: bool, held: bool) -> (Pick, bool) {
        let pick = match want {
            Show::Slate => Pick::Slate,
            Show::Input if fresh => Pick::Fresh,
            Show::Input if held => Pick::Held,
            // Asked for the input before it has given a picture: the slate until it does.
            Show::Input => Pick::Slate,
        };
        let shown = if pick == Pick::Slate {
            Show::Slate
        } else {
            Show::Input
        };
        // The encoder's first frame is a key frame anyway; after that, every change is one.
        let switch = self.last.is_some_and(|l| l != shown);
        self.last = Some(shown);
        (pick, switch)
    }
}

/// Counters for `onair status` and the health machines.
#[derive(Default)]
pub struct FeederStats {
    /// Pictures the encoder got from the input (new ones).
    pub input_frames: AtomicU64,
    /// Input pictures repeated because no new one had come.
    pub held_frames: AtomicU64,
    pub slate_frames: AtomicU64,
    /// Switches between the input and the slate, each with a forced key frame.
    pub switches: AtomicU64,
}

/// The encoding pipeline's entrance, while one runs.
struct Entrance {
    appsrc: gst_app::AppSrc,
    pipeline: gst::Pipeline,
    last_pts: Option<gst::ClockTime>,
}

struct Shared {
    mailbox: Mutex<Option<gst::Buffer>>,
    show: Mutex<Show>,
    entrance: Mutex<Option<Entrance>>,
    slate: gst::Buffer,
    period: gst::ClockTime,
    keyframes: KeyframeRequester,
    stats: Arc<FeederStats>,
    stop: AtomicBool,
}

/// The running pump. Stops (and joins its thread) when dropped.
pub struct Feeder {
    shared: Arc<Shared>,
    clock_id: gst::ClockId,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the capture holds to hand pictures over. Cheap to clone.
#[derive(Clone)]
pub struct Mailbox {
    shared: Arc<Shared>,
}

impl Mailbox {
    /// The newest picture from the input (in the encoder's layout); an older one not yet taken
    /// is dropped.
    pub fn offer(&self, picture: gst::Buffer) {
        *lock(&self.shared.mailbox) = Some(picture);
    }
}

impl Feeder {
    /// Starts the pump at `fps`, showing the slate until told otherwise.
    pub fn start(
        fps: u32,
        slate: gst::Buffer,
        keyframes: KeyframeRequester,
        stats: Arc<FeederStats>,
    ) -> std::io::Result<Feeder> {
        let period = gst::ClockTime::from_nseconds(1_000_000_000 / u64::from(fps.max(1)));
        let shared = Arc::new(Shared {
            mailbox: Mutex::new(None),
            show: Mutex::new(Show::Slate),
            entrance: Mutex::new(None),
            slate,
            period,
            keyframes,
            stats,
            stop: AtomicBool::new(false),
        });
        let clock = gst::SystemClock::obtain();
        let first = clock.time() + period;
        let clock_id: gst::ClockId = clock.new_periodic_id(first, period).into();
        let thread = {
            let shared = shared.clone();
            let id = clock_id.clone();
            std::thread::Builder::new()
                .name("onair-frames".into())
                .spawn(move || pump(&shared, &id))?
        };
        Ok(Feeder {
            shared,
            clock_id,
            thread: Some(thread),
        })
    }

    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            shared: self.shared.clone(),
        }
    }

    /// From the next period on, show the input (its newest picture) or the slate.
    pub fn show(&self, what: Show) {
        *lock(&self.shared.show) = what;
        if what == Show::Slate {
            // Pictures from before the loss must not come back with the input.
            *lock(&self.shared.mailbox) = None;
        }
    }

    /// Feed this encoding pipeline's appsrc from now on (`None` while no encoder runs).
    pub fn connect(&self, entrance: Option<(gst_app::AppSrc, gst::Pipeline)>) {
        *lock(&self.shared.entrance) = entrance.map(|(appsrc, pipeline)| Entrance {
            appsrc,
            pipeline,
            last_pts: None,
        });
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.clock_id.unschedule();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(shared: &Shared, id: &gst::ClockId) {
    let mut chooser = Chooser::default();
    let mut held: Option<gst::Buffer> = None;
    loop {
        let (result, _jitter) = id.wait();
        if shared.stop.load(Ordering::SeqCst) || result == Err(gst::ClockError::Unscheduled) {
            return;
        }
        let want = *lock(&shared.show);
        let fresh = lock(&shared.mailbox).take();
        if want == Show::Slate {
            held = None;
        }
        let (pick, switch) = chooser.next(want, fresh.is_some(), held.is_some());
        let picture = match pick {
            Pick::Fresh => {
                shared.stats.input_frames.fetch_add(1, Ordering::Relaxed);
                held = fresh;
                held.clone()
            }
            Pick::Held => {
                shared.stats.held_frames.fetch_add(1, Ordering::Relaxed);
                held.clone()
            }
            Pick::Slate => {
                shared.stats.slate_frames.fetch_add(1, Ordering::Relaxed);
                Some(shared.slate.clone())
            }
        };
        let Some(picture) = picture else { continue };
        if switch {
            shared.stats.switches.fetch_add(1, Ordering::Relaxed);
            // Asked just before the frame enters the encoder, so the key frame lands on it
            // (or the next one, if the encoder still holds an older frame).
            shared.keyframes.request(Urgency::InputSwitch);
        }
        push(shared, picture);
    }
}

/// Stamps the picture with the encoding pipeline's running time and hands it over. Never
/// blocks: a full appsrc drops its oldest picture.
fn push(shared: &Shared, picture: gst::Buffer) {
    let mut entrance = lock(&shared.entrance);
    let Some(e) = entrance.as_mut() else { return };
    let (Some(clock), Some(base)) = (e.pipeline.clock(), e.pipeline.base_time()) else {
        return;
    };
    let mut pts = clock.time().saturating_sub(base);
    // Only forward: a timestamp equal to the last (a late wake-up) becomes a microsecond more.
    if let Some(last) = e.last_pts
        && pts <= last
    {
        pts = last + gst::ClockTime::from_useconds(1);
    }
    e.last_pts = Some(pts);
    // A new buffer around the same memory: the picture itself is never copied.
    let mut out = picture.copy();
    {
        let b = out.make_mut();
        b.set_pts(pts);
        b.set_dts(gst::ClockTime::NONE);
        b.set_duration(shared.period);
        b.unset_flags(gst::BufferFlags::DISCONT);
    }
    let _ = e.appsrc.push_buffer(out);
}

/// How long one period is at `fps`.
pub fn period(fps: u32) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(fps.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_pictures_then_the_last_one_held_then_the_slate() {
        let mut c = Chooser::default();
        assert_eq!(c.next(Show::Slate, false, false), (Pick::Slate, false));
        assert_eq!(
            c.next(Show::Input, true, false),
            (Pick::Fresh, true),
            "the first picture of the input is a switch: key frame"
        );
        assert_eq!(c.next(Show::Input, true, true), (Pick::Fresh, false));
        assert_eq!(
            c.next(Show::Input, false, true),
            (Pick::Held, false),
            "a hiccup repeats the last picture, without a key frame"
        );
        assert_eq!(
            c.next(Show::Slate, true, true),
            (Pick::Slate, true),
            "the slate wins over a waiting picture, with a key frame"
        );
        assert_eq!(c.next(Show::Slate, false, false), (Pick::Slate, false));
        assert_eq!(c.next(Show::Input, true, false), (Pick::Fresh, true));
    }

    #[test]
    fn input_without_any_picture_stays_on_the_slate_without_a_switch() {
        let mut c = Chooser::default();
        assert_eq!(c.next(Show::Slate, false, false), (Pick::Slate, false));
        assert_eq!(c.next(Show::Input, false, false), (Pick::Slate, false));
        assert_eq!(c.next(Show::Input, true, false), (Pick::Fresh, true));
    }

    #[test]
    fn the_very_first_frame_is_no_switch() {
        let mut c = Chooser::default();
        assert_eq!(c.next(Show::Input, true, false), (Pick::Fresh, false));
    }
}
