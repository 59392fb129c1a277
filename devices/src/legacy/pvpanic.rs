//! pvpanic (QEMU's paravirtual panic device, ACPI id QEMU0001): the guest's pvpanic driver reads
//! the supported events and writes PANICKED when the kernel panics, so the VMM can end with a
//! distinct status instead of waiting for the guest's own reboot.

use vm_superio::Trigger;

use crate::{log_limited, BusDevice};

/// The guest panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// A crash kernel was loaded and is taking over (the VM keeps running).
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

pub struct PvPanic<T: Trigger> {
    crashed: T,
}

impl<T: Trigger> PvPanic<T> {
    pub fn new(crashed: T) -> Self {
        PvPanic { crashed }
    }
}

impl<T: Trigger + Send> BusDevice for PvPanic<T> {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let v = data[0];
        if v & PVPANIC_PANICKED != 0 {
            if let Err(e) = self.crashed.trigger() {
                log_limited!(
                    log::Level::Error,
                    "pvpanic: signalling the crash failed: {e:?}"
                );
            }
        } else if v & PVPANIC_CRASH_LOADED != 0 {
            // A guest may write this in a loop: rate-limited.
            log_limited!(
                log::Level::Info,
                "pvpanic: the guest is handing over to its crash kernel"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountingTrigger as Count;

    #[test]
    fn advertises_events_and_reports_a_panic() {
        let c = Count::default();
        let mut p = PvPanic::new(c.clone());
        let mut d = [0u8; 1];
        p.read(0, &mut d);
        assert_eq!(d[0], 3);
        p.write(0, &[PVPANIC_CRASH_LOADED]);
        p.write(0, &[0]);
        assert_eq!(c.count(), 0);
        p.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(c.count(), 1);
    }
}
