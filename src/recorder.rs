//! The flight recorder: the last few hundred things that happened to the stream.
//!
//! When a box misbehaved overnight, the owner logs in the next morning; `onair status --history`
//! shows what happened, and a daemon dying of a fatal error writes it to the log first.
//!
//! A leaf module: the supervisor writes it and the status server reads it, and neither has to
//! reach up into the other for it.

use crate::lock::lock;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub const CAPACITY: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Transition {
        from: String,
        to: String,
        reason: String,
    },
    Error {
        message: String,
    },
    /// Something a person did or asked for (`onair retry`, SIGHUP), or something that happened
    /// to the input (a device unplugged, a source change, the slate taken down).
    Note {
        message: String,
    },
    /// The path to the server changed: from, to, and why.
    PathSwitch {
        message: String,
    },
    /// The encoder's target moved a long way (adaptation to the uplink), and why.
    Bitrate {
        from_kbps: u32,
        to_kbps: u32,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time in seconds (with fractions), so entries line up with journal timestamps.
    pub at: f64,
    #[serde(flatten)]
    pub entry: Entry,
}

#[derive(Clone, Default)]
pub struct FlightRecorder {
    inner: Arc<Mutex<VecDeque<Record>>>,
}

impl FlightRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, entry: Entry) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut q = lock(&self.inner);
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(Record { at, entry });
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<Record> {
        lock(&self.inner).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_200_in_order() {
        let r = FlightRecorder::new();
        for i in 0..250 {
            r.record(Entry::Error {
                message: format!("e{i}"),
            });
        }
        let s = r.snapshot();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(
            s.first().unwrap().entry,
            Entry::Error {
                message: "e50".into()
            }
        );
        assert_eq!(
            s.last().unwrap().entry,
            Entry::Error {
                message: "e249".into()
            }
        );
    }
}
