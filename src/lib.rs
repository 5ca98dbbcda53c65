//! onair: the firmware daemon of a broadcast box.
//!
//! Media flows one way (capture -> encoder -> access units -> output -> server) and never waits
//! for the network; control flows into the [`supervisor`] as events and out of it as actions.
//! See README for the picture and `../shared/ARCHITECTURE.md` for the intended shape.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod leds;
pub mod lock;
pub mod media;
pub mod net;
pub mod output;
pub mod recorder;
pub mod recording;
pub mod secret;
pub mod status;
pub mod supervisor;
pub mod update;
