//! LEDs wired straight to Raspberry Pi header pins, driven through rppal.
//!
//! The simplest wiring (a LED and a resistor per pin, no overlay in config.txt), but rppal
//! only works on a Pi it recognises and is retired upstream, so it stays behind the LED trait
//! and its failure to open is an ordinary "no LEDs" outcome, never a daemon error.

use super::{Led, LedBackend, LedError};
use rppal::gpio::{Error as GpioError, Gpio, Level, OutputPin};

pub struct GpioLeds {
    /// BCM numbers, indexed by `Led as usize`.
    pins: [u8; 2],
    active_low: bool,
    /// Present between `open` and `close`. Dropping an `OutputPin` returns it to input, which
    /// leaves the line as the board had it.
    outputs: Option<[OutputPin; 2]>,
}

impl GpioLeds {
    pub fn new(live_pin: u8, status_pin: u8, active_low: bool) -> Self {
        GpioLeds {
            pins: [live_pin, status_pin],
            active_low,
            outputs: None,
        }
    }

    fn claim(&self, gpio: &Gpio, led: Led) -> Result<OutputPin, LedError> {
        let bcm = self.pins[led as usize];
        let pin = gpio.get(bcm).map_err(|e| {
            LedError(format!(
                "cannot use BCM{bcm} for the {led} LED: {}",
                explain(&e)
            ))
        })?;
        // Start dark whichever way the LED is wired, without a flash on the way.
        Ok(if self.active_low {
            pin.into_output_high()
        } else {
            pin.into_output_low()
        })
    }
}

/// The pin level that lights (or darkens) a LED wired active-high or active-low.
fn level(on: bool, active_low: bool) -> Level {
    if on != active_low {
        Level::High
    } else {
        Level::Low
    }
}

/// rppal's errors, in words that tell the owner what to do next.
fn explain(e: &GpioError) -> String {
    match e {
        GpioError::UnknownModel => "this is not a Raspberry Pi that rppal recognises \
             (on other boards use leds.backend \"sysfs\" or \"none\")"
            .into(),
        GpioError::PermissionDenied(path) => format!(
            "permission denied on {path} (run as root or give the daemon's user the gpio group)"
        ),
        GpioError::PinUsed(pin) => {
            format!("BCM{pin} is already in use by another LED or program")
        }
        GpioError::PinNotAvailable(pin) => format!("BCM{pin} does not exist on this board"),
        other => other.to_string(),
    }
}

impl LedBackend for GpioLeds {
    fn name(&self) -> &'static str {
        "gpio"
    }

    fn open(&mut self) -> Result<(), LedError> {
        let gpio = Gpio::new()
            .map_err(|e| LedError(format!("cannot open Raspberry Pi GPIO: {}", explain(&e))))?;
        let live = self.claim(&gpio, Led::Live)?;
        // If this fails, `live` is dropped here and goes back to input.
        let status = self.claim(&gpio, Led::Status)?;
        self.outputs = Some([live, status]);
        Ok(())
    }

    fn set(&mut self, led: Led, on: bool) -> Result<(), LedError> {
        let outputs = self
            .outputs
            .as_mut()
            .ok_or_else(|| LedError("gpio LEDs used before open".into()))?;
        outputs[led as usize].write(level(on, self.active_low));
        Ok(())
    }

    fn close(&mut self) -> Result<(), LedError> {
        self.outputs = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_low_inverts_the_pin_level() {
        assert_eq!(level(true, false), Level::High);
        assert_eq!(level(false, false), Level::Low);
        assert_eq!(level(true, true), Level::Low);
        assert_eq!(level(false, true), Level::High);
    }

    #[test]
    fn open_off_a_pi_fails_with_a_clear_reason() {
        if Gpio::new().is_ok() {
            eprintln!("skipped: this machine has Raspberry Pi GPIO; the test needs it absent");
            return;
        }
        let mut leds = GpioLeds::new(17, 27, false);
        let message = leds.open().unwrap_err().to_string();
        assert!(
            message.starts_with("cannot open Raspberry Pi GPIO: "),
            "{message}"
        );
        // Whatever rppal tripped on, the owner gets advice, not rppal's bare variant name.
        assert_ne!(
            message,
            "cannot open Raspberry Pi GPIO: Unknown Raspberry Pi model"
        );
        if cfg!(target_arch = "x86_64") {
            assert!(message.contains("not a Raspberry Pi"), "{message}");
        }
        // And nothing half-open is left to write to.
        assert!(leds.set(Led::Live, true).is_err());
    }

    #[test]
    fn rppal_errors_are_explained() {
        assert!(explain(&GpioError::UnknownModel).contains("leds.backend"));
        assert!(explain(&GpioError::PermissionDenied("/dev/gpiomem".into())).contains("root"));
        assert!(explain(&GpioError::PinUsed(17)).contains("BCM17"));
        assert!(explain(&GpioError::PinNotAvailable(40)).contains("BCM40"));
    }
}
