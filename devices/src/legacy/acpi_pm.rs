//! The hardware-reduced ACPI power-management block: the FADT's sleep-control register (S5 =
//! power off), sleep-status register and reset register, in three I/O ports.

use vm_superio::Trigger;

use crate::{log_limited, BusDevice};

/// Offsets within the block (they match `arch::x86_64::acpi::PM_*`).
pub const SLEEP_CONTROL: u64 = 0;
pub const SLEEP_STATUS: u64 = 1;
pub const RESET: u64 = 2;

/// SLP_EN and the SLP_TYP field of the sleep-control register (ACPI 6.x, 4.8.3.7).
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

pub struct AcpiPm<P: Trigger, R: Trigger> {
    power_off: P,
    reset: R,
    /// SLP_TYP value the DSDT gives for S5.
    s5_type: u8,
    reset_value: u8,
}

impl<P: Trigger, R: Trigger> AcpiPm<P, R> {
    pub fn new(power_off: P, reset: R, s5_type: u8, reset_value: u8) -> Self {
        AcpiPm {
            power_off,
            reset,
            s5_type,
            reset_value,
        }
    }
}

impl<P: Trigger + Send, R: Trigger + Send> BusDevice for AcpiPm<P, R> {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; the guest does not wait on it for S5.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let v = data[0];
        match offset {
            SLEEP_CONTROL if v & SLP_EN != 0 => {
                // The guest can write these as fast as it likes: every line is rate-limited.
                log_limited!(log::Level::Debug, "ACPI: sleep control {v:#x}");
                let slp_typ = (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if slp_typ == self.s5_type {
                    if let Err(e) = self.power_off.trigger() {
                        log_limited!(
                            log::Level::Error,
                            "ACPI: signalling power-off failed: {e:?}"
                        );
                    }
                } else {
                    log_limited!(
                        log::Level::Info,
                        "ACPI: the guest asked for sleep type {slp_typ}, which berth does not offer"
                    );
                }
            }
            RESET if v == self.reset_value => {
                log_limited!(log::Level::Debug, "ACPI: reset register written");
                if let Err(e) = self.reset.trigger() {
                    log_limited!(log::Level::Error, "ACPI: signalling reset failed: {e:?}");
                }
            }
            SLEEP_CONTROL | SLEEP_STATUS | RESET => {}
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountingTrigger as Count;

    #[test]
    fn s5_powers_off_and_reset_value_resets() {
        let (off, rst) = (Count::default(), Count::default());
        let mut pm = AcpiPm::new(off.clone(), rst.clone(), 5, 1);
        pm.write(SLEEP_CONTROL, &[5 << 2]); // SLP_TYP without SLP_EN: nothing
        pm.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]); // S3: refused
        pm.write(RESET, &[0x2]); // wrong value
        assert_eq!((off.count(), rst.count()), (0, 0));
        pm.write(SLEEP_CONTROL, &[(5 << 2) | SLP_EN]);
        pm.write(RESET, &[1]);
        assert_eq!((off.count(), rst.count()), (1, 1));
    }
}
