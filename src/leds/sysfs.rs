//! LEDs through the Linux LED class (`/sys/class/leds/<name>/`).
//!
//! This is the durable path on a Pi (`dtoverlay=gpio-led,...`) and works on any board whose
//! device tree names its LEDs. The kernel may already drive the LED with a trigger
//! (heartbeat, mmc0, ...); we switch it to `none` while we own the LED and give the original
//! trigger back on exit so the board looks as it did before the daemon ran.

use super::{Led, LedBackend, LedError};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

pub struct SysfsLeds {
    sysfs_dir: PathBuf,
    /// Indexed by `Led as usize`.
    leds: [SysfsLed; 2],
    /// True between a successful `open` and `close`: `Drop` then still owes a restore.
    open: bool,
}

struct SysfsLed {
    name: String,
    /// Written for "on": the LED's own maximum, so a dimmable LED is fully lit.
    on_value: String,
    /// The trigger that was active before we took the LED, if it was not already `none`.
    original_trigger: Option<String>,
}

impl SysfsLeds {
    pub fn new(sysfs_dir: &Path, live_name: &str, status_name: &str) -> Self {
        let led = |name: &str| SysfsLed {
            name: name.to_string(),
            on_value: "1".into(),
            original_trigger: None,
        };
        SysfsLeds {
            sysfs_dir: sysfs_dir.to_path_buf(),
            leds: [led(live_name), led(status_name)],
            open: false,
        }
    }

    fn dir(&self, led: &SysfsLed) -> PathBuf {
        self.sysfs_dir.join(&led.name)
    }

    fn open_one(&mut self, index: usize) -> Result<(), LedError> {
        let dir = self.dir(&self.leds[index]);
        let name = &self.leds[index].name;
        if !dir.is_dir() {
            return Err(LedError(format!(
                "no LED named `{name}` in {} (on a Pi, add `dtoverlay=gpio-led,gpio=N,label={name}` to config.txt)",
                self.sysfs_dir.display()
            )));
        }
        let max = read_attr(&dir.join("max_brightness"))?;
        let on_value = match max.trim().parse::<u32>() {
            Ok(n) if n > 0 => n.to_string(),
            _ => {
                return Err(LedError(format!(
                    "{}: max_brightness is `{}`, not a positive number",
                    dir.display(),
                    max.trim()
                )));
            }
        };
        // Kernels built without LED triggers have no trigger file; there is nothing to undo.
        let original_trigger = match std::fs::read_to_string(dir.join("trigger")) {
            Ok(text) => active_trigger(&text).filter(|t| *t != "none"),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&dir.join("trigger"), "read", e)),
        };
        if original_trigger.is_some() {
            write_attr(&dir.join("trigger"), "none")?;
        }
        let led = &mut self.leds[index];
        led.on_value = on_value;
        led.original_trigger = original_trigger;
        // Prove we may write brightness now, so "permission denied" is an open failure (one
        // warning, task ends) rather than a write failure on every edge.
        // `open` gives the trigger back if this fails.
        write_attr(&dir.join("brightness"), "0")
    }

    /// Gives one LED its trigger back. `take` makes a second call harmless.
    fn restore_one(&mut self, index: usize) -> Result<(), LedError> {
        let dir = self.dir(&self.leds[index]);
        match self.leds[index].original_trigger.take() {
            Some(trigger) => write_attr(&dir.join("trigger"), &trigger),
            None => Ok(()),
        }
    }

    fn restore_all(&mut self) -> Result<(), LedError> {
        let mut first_error = None;
        for index in 0..self.leds.len() {
            if let Err(e) = self.restore_one(index) {
                first_error.get_or_insert(e);
            }
        }
        self.open = false;
        first_error.map_or(Ok(()), Err)
    }
}

impl LedBackend for SysfsLeds {
    fn name(&self) -> &'static str {
        "sysfs"
    }

    fn open(&mut self) -> Result<(), LedError> {
        for index in 0..self.leds.len() {
            if let Err(e) = self.open_one(index) {
                // Give back what the LEDs opened so far had, or a failed start would leave
                // the board's own LED stuck without its trigger.
                let _ = self.restore_all();
                return Err(e);
            }
        }
        self.open = true;
        Ok(())
    }

    fn set(&mut self, led: Led, on: bool) -> Result<(), LedError> {
        let sysfs_led = &self.leds[led as usize];
        let value = if on { sysfs_led.on_value.as_str() } else { "0" };
        write_attr(&self.dir(sysfs_led).join("brightness"), value)
    }

    fn close(&mut self) -> Result<(), LedError> {
        self.restore_all()
    }
}

impl Drop for SysfsLeds {
    /// If the renderer never reached `close` (its task was aborted), still leave the LEDs
    /// dark and give the triggers back.
    fn drop(&mut self) {
        if self.open {
            for led in Led::ALL {
                let _ = self.set(led, false);
            }
            let _ = self.restore_all();
        }
    }
}

/// The trigger the kernel marks as active: `none rc-feedback [mmc0] timer` -> `mmc0`.
fn active_trigger(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
        .map(str::to_string)
}

fn read_attr(path: &Path) -> Result<String, LedError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, "read", e))
}

/// One write per value, as `echo value > attr` does. No `create`: a missing attribute is an
/// error, not a new file.
fn write_attr(path: &Path, value: &str) -> Result<(), LedError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_error(path, "write", e))
}

fn io_error(path: &Path, verb: &str, e: std::io::Error) -> LedError {
    let hint = if e.kind() == ErrorKind::PermissionDenied {
        " (the daemon needs root, or a udev rule giving it write access to the LED)"
    } else {
        ""
    };
    LedError(format!("cannot {verb} {}: {e}{hint}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LedBackendKind, LedConfig};
    use crate::supervisor::StreamState;
    use std::time::Duration;
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    /// A directory shaped like `/sys/class/leds/<name>/`.
    fn fake_led(root: &Path, name: &str, max: &str, trigger: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("brightness"), "0\n").unwrap();
        std::fs::write(dir.join("max_brightness"), format!("{max}\n")).unwrap();
        std::fs::write(dir.join("trigger"), format!("{trigger}\n")).unwrap();
    }

    fn attr(root: &Path, name: &str, file: &str) -> String {
        std::fs::read_to_string(root.join(name).join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    fn config(root: &Path) -> LedConfig {
        LedConfig {
            backend: LedBackendKind::Sysfs,
            sysfs_dir: root.to_path_buf(),
            live_name: "green".into(),
            status_name: "red".into(),
            ..LedConfig::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn sysfs_tree_follows_state_and_gets_triggers_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_led(
            root,
            "green",
            "255",
            "none rc-feedback [mmc0] timer heartbeat",
        );
        fake_led(root, "red", "1", "[none] timer");

        let (tx, rx) = watch::channel(StreamState::Live);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(super::super::run(config(root), rx, None, shutdown.clone()));
        tokio::time::sleep(ms(10)).await;

        // Live: green fully on (its own max), red off, kernel triggers out of the way.
        assert_eq!(attr(root, "green", "brightness"), "255");
        assert_eq!(attr(root, "red", "brightness"), "0");
        assert_eq!(attr(root, "green", "trigger"), "none");

        // Connecting: green off, red blinks at 2 Hz with its max_brightness of 1.
        tx.send(StreamState::Connecting).unwrap();
        tokio::time::sleep(ms(10)).await;
        assert_eq!(attr(root, "green", "brightness"), "0");
        assert_eq!(attr(root, "red", "brightness"), "1");
        tokio::time::sleep(ms(250)).await; // 260 ms into the blink: off phase
        assert_eq!(attr(root, "red", "brightness"), "0");
        tokio::time::sleep(ms(250)).await; // 510 ms: on again
        assert_eq!(attr(root, "red", "brightness"), "1");

        shutdown.cancel();
        tokio::time::timeout(ms(100), task)
            .await
            .expect("run should return after shutdown")
            .unwrap();
        assert_eq!(attr(root, "green", "brightness"), "0");
        assert_eq!(attr(root, "red", "brightness"), "0");
        assert_eq!(attr(root, "green", "trigger"), "mmc0");
        // It was `none` before: nothing to restore, and nothing else written.
        assert_eq!(attr(root, "red", "trigger"), "[none] timer");
    }

    #[tokio::test(start_paused = true)]
    async fn missing_led_ends_quietly_and_gives_the_other_trigger_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_led(root, "green", "1", "none [heartbeat]");
        // No "red" directory: the overlay for it was never added.

        let (_tx, rx) = watch::channel(StreamState::Live);
        tokio::time::timeout(
            ms(100),
            super::super::run(config(root), rx, None, CancellationToken::new()),
        )
        .await
        .expect("run must give up by itself when a LED is missing");
        assert_eq!(attr(root, "green", "trigger"), "heartbeat");
        assert_eq!(attr(root, "green", "brightness"), "0");
    }

    #[test]
    fn missing_led_error_tells_how_to_add_it() {
        let tmp = tempfile::tempdir().unwrap();
        let mut leds = SysfsLeds::new(tmp.path(), "onair-live", "onair-status");
        let message = leds.open().unwrap_err().to_string();
        assert!(
            message.contains("`onair-live`") && message.contains("label=onair-live"),
            "{message}"
        );
    }

    #[test]
    fn bad_max_brightness_is_an_open_error() {
        let tmp = tempfile::tempdir().unwrap();
        fake_led(tmp.path(), "green", "0", "[none]");
        fake_led(tmp.path(), "red", "1", "[none]");
        let mut leds = SysfsLeds::new(tmp.path(), "green", "red");
        let message = leds.open().unwrap_err().to_string();
        assert!(message.contains("max_brightness"), "{message}");
    }

    #[test]
    fn close_itself_gives_triggers_back() {
        // Checked while the backend is still alive, so `Drop` cannot be what restored them.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_led(root, "green", "1", "none [heartbeat]");
        fake_led(root, "red", "1", "[timer] none");
        let mut leds = SysfsLeds::new(root, "green", "red");
        leds.open().unwrap();
        assert_eq!(attr(root, "green", "trigger"), "none");
        assert_eq!(attr(root, "red", "trigger"), "none");
        leds.close().unwrap();
        assert_eq!(attr(root, "green", "trigger"), "heartbeat");
        assert_eq!(attr(root, "red", "trigger"), "timer");
        // Closing again (or dropping) must not write the trigger a second time.
        std::fs::write(root.join("green").join("trigger"), "none [cpu]").unwrap();
        drop(leds);
        assert_eq!(attr(root, "green", "trigger"), "none [cpu]");
    }

    #[test]
    fn dropped_without_close_still_restores() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_led(root, "green", "1", "[timer] none");
        fake_led(root, "red", "1", "none [default-on]");
        let mut leds = SysfsLeds::new(root, "green", "red");
        leds.open().unwrap();
        leds.set(Led::Status, true).unwrap();
        assert_eq!(attr(root, "red", "brightness"), "1");
        drop(leds);
        assert_eq!(attr(root, "red", "brightness"), "0");
        assert_eq!(attr(root, "green", "trigger"), "timer");
        assert_eq!(attr(root, "red", "trigger"), "default-on");
    }

    #[test]
    fn active_trigger_is_the_bracketed_one() {
        assert_eq!(
            active_trigger("none rc-feedback [mmc0] timer\n").as_deref(),
            Some("mmc0")
        );
        assert_eq!(active_trigger("[none] timer").as_deref(), Some("none"));
        assert_eq!(active_trigger("none timer"), None);
    }
}
