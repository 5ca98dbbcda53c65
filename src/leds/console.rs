//! "LEDs" on stdout, for the demo and for laptops that have none.
//!
//! A person watching a terminal wants to know what the LEDs *would* show, once per change;
//! a line per blink edge would bury everything else, so blink edges are not printed.

use super::{Led, LedBackend, LedError, LedPair};
use std::io::Write;

pub struct ConsoleLeds {
    out: Box<dyn Write + Send>,
}

impl ConsoleLeds {
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Prints to any writer (tests capture the lines).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        ConsoleLeds { out }
    }
}

impl LedBackend for ConsoleLeds {
    fn name(&self) -> &'static str {
        "console"
    }

    fn open(&mut self) -> Result<(), LedError> {
        Ok(())
    }

    fn set(&mut self, _led: Led, _on: bool) -> Result<(), LedError> {
        Ok(())
    }

    fn announce(&mut self, pair: LedPair, reason: &str) -> Result<(), LedError> {
        writeln!(
            self.out,
            "leds: live={} status={} ({reason})",
            pair.live, pair.status
        )
        .and_then(|()| self.out.flush())
        .map_err(|e| LedError(format!("cannot print LED changes: {e}")))
    }

    fn close(&mut self) -> Result<(), LedError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leds::render;
    use crate::supervisor::StreamState;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_change_not_per_blink() {
        let captured = Captured::default();
        let backend = ConsoleLeds::to_writer(Box::new(captured.clone()));
        let (tx, rx) = watch::channel(StreamState::Starting);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(render(Box::new(backend), rx, shutdown.clone()));

        // Seconds of blinking in each state: many edges, but only state changes print.
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send(StreamState::Connecting).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send(StreamState::Live).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        task.await.unwrap();

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "leds: live=off status=blink 1 Hz (state starting)\n\
             leds: live=off status=blink 2 Hz (state connecting)\n\
             leds: live=on status=off (state live)\n\
             leds: live=off status=off (exiting)\n"
        );
    }
}
