//! The encoder's bitrate, changeable while it runs.
//!
//! Whoever judges the uplink (the output's congestion control) asks for a new target through a
//! [`BitrateHandle`]; the pipeline installs the running encoder behind it and replaces it when
//! capture restarts with a new encoder. A freshly installed encoder is given the current target at
//! once, so a capture restart does not undo what the adaptation decided. Like the key-frame
//! requester, the handle is cheap to clone and safe to call from any thread.
//!
//! The target is what the connection may send; what resendings of lost packets take of it
//! now (the protection, as libwebrtc calls it) is kept off the encoder's share, so pictures
//! and repairs together stay within the target rather than on top of it.

use crate::lock::lock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Something that can change the running encoder's bitrate without restarting it.
pub trait BitrateSetter: Send + Sync {
    fn set_kbps(&self, kbps: u32);
}

#[derive(Clone)]
pub struct BitrateHandle {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the encoder was built with (the configured bitrate).
    configured_kbps: u32,
    /// What the connection may send now.
    target_kbps: AtomicU32,
    /// What resendings take of it now: the encoder runs at the target less this.
    protection_kbps: AtomicU32,
    setter: Mutex<Option<Arc<dyn BitrateSetter>>>,
    /// Changes carried out on a running encoder.
    applied: AtomicU64,
}

impl BitrateHandle {
    /// `configured_kbps` is what the pipeline builds every encoder with.
    pub fn new(configured_kbps: u32) -> Self {
        BitrateHandle {
            inner: Arc::new(Inner {
                configured_kbps,
                target_kbps: AtomicU32::new(configured_kbps),
                protection_kbps: AtomicU32::new(0),
                setter: Mutex::new(None),
                applied: AtomicU64::new(0),
            }),
        }
    }

    /// The pipeline installs the running encoder (and removes it when the encoder stops). An
    /// encoder built with the configured bitrate is moved to the current target at once.
    pub fn set_encoder(&self, setter: Option<Arc<dyn BitrateSetter>>) {
        let mut slot = lock(&self.inner.setter);
        if let Some(s) = &setter {
            let kbps = self.encoder_kbps();
            if kbps != self.inner.configured_kbps {
                s.set_kbps(kbps);
                self.inner.applied.fetch_add(1, Ordering::Relaxed);
            }
        }
        *slot = setter;
    }

    /// Lets the connection send `kbps` from now on (kept for the next encoder if none runs now).
    pub fn set_target(&self, kbps: u32) {
        self.change(&self.inner.target_kbps, kbps);
    }

    /// Resendings take `kbps` of the target now; the encoder gets the rest.
    pub fn set_protection(&self, kbps: u32) {
        self.change(&self.inner.protection_kbps, kbps);
    }

    fn change(&self, value: &AtomicU32, kbps: u32) {
        // Under the lock, so a concurrent `set_encoder` cannot install an encoder between the
        // store and the apply and miss the change.
        let slot = lock(&self.inner.setter);
        let before = self.encoder_kbps();
        value.store(kbps, Ordering::Relaxed);
        let after = self.encoder_kbps();
        if after == before {
            return;
        }
        if let Some(s) = slot.as_ref() {
            s.set_kbps(after);
            self.inner.applied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the connection may send now.
    pub fn target_kbps(&self) -> u32 {
        self.inner.target_kbps.load(Ordering::Relaxed)
    }

    pub fn protection_kbps(&self) -> u32 {
        self.inner.protection_kbps.load(Ordering::Relaxed)
    }

    /// What the encoder is asked for now: the target less the protection.
    pub fn encoder_kbps(&self) -> u32 {
        self.target_kbps().saturating_sub(self.protection_kbps())
    }

    pub fn configured_kbps(&self) -> u32 {
        self.inner.configured_kbps
    }

    /// How many times a running encoder was given a new bitrate.
    pub fn changes_applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u32>>);

    impl BitrateSetter for Recorder {
        fn set_kbps(&self, kbps: u32) {
            lock(&self.0).push(kbps);
        }
    }

    #[test]
    fn a_target_reaches_the_running_encoder_once() {
        let handle = BitrateHandle::new(2500);
        let encoder = Arc::new(Recorder::default());
        handle.set_encoder(Some(encoder.clone()));
        assert!(lock(&encoder.0).is_empty(), "built at the target already");
        handle.set_target(900);
        handle.set_target(900);
        handle.set_target(1200);
        assert_eq!(*lock(&encoder.0), vec![900, 1200]);
        assert_eq!(handle.changes_applied(), 2);
    }

    #[test]
    fn a_new_encoder_starts_at_the_current_target() {
        let handle = BitrateHandle::new(2500);
        handle.set_target(700);
        let first = Arc::new(Recorder::default());
        handle.set_encoder(Some(first.clone()));
        assert_eq!(*lock(&first.0), vec![700]);
        // Capture restarts: the old encoder is gone, the target is kept for the next one.
        handle.set_encoder(None);
        handle.set_target(650);
        assert_eq!(*lock(&first.0), vec![700]);
        let second = Arc::new(Recorder::default());
        handle.set_encoder(Some(second.clone()));
        assert_eq!(*lock(&second.0), vec![650]);
        assert_eq!(handle.target_kbps(), 650);
    }

    #[test]
    fn resendings_are_kept_off_the_encoder_s_share() {
        let handle = BitrateHandle::new(1000);
        let encoder = Arc::new(Recorder::default());
        handle.set_encoder(Some(encoder.clone()));
        handle.set_protection(200);
        handle.set_target(800);
        handle.set_protection(0);
        assert_eq!(*lock(&encoder.0), vec![800, 600, 800]);
        assert_eq!((handle.target_kbps(), handle.encoder_kbps()), (800, 800));
        // A new encoder starts at the target less the protection of the moment.
        handle.set_protection(100);
        let second = Arc::new(Recorder::default());
        handle.set_encoder(Some(second.clone()));
        assert_eq!(*lock(&second.0), vec![700]);
    }
}
