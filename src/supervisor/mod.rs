//! The watchdog: one task owns the stream's state and decides when to connect, tear down or
//! give up. The decisions themselves are pure (`machine`, `backoff`); this module carries
//! events in and actions out.

pub mod backoff;
pub mod machine;
pub mod notify;
pub mod probe;
pub mod state;

pub use state::StreamState;
pub mod driver;

pub use driver::{Driver, DriverParts};
pub use machine::{Event, Machine, MachineView, Reply, RetryAnswer, StopCause};
pub use notify::Heartbeat;
