//! ARM PL031 real-time clock (vm-superio's state machine) on the MMIO bus: the guest reads the
//! host's wall clock from it. It raises no interrupts (the alarm is not wired).

use vm_superio::rtc_pl031::{NoEvents, Rtc};

use crate::{log_limited, BusDevice};

/// The PL031 at its MMIO window (4 KiB, 32-bit registers).
pub struct RtcPl031 {
    rtc: Rtc<NoEvents>,
}

impl Default for RtcPl031 {
    fn default() -> Self {
        RtcPl031 { rtc: Rtc::new() }
    }
}

impl BusDevice for RtcPl031 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u16::try_from(offset), <&mut [u8; 4]>::try_from(&mut *data)) {
            (Ok(off), Ok(word)) => self.rtc.read(off, word),
            _ => {
                log_limited!(
                    log::Level::Debug,
                    "rtc: {}-byte read at {offset:#x} ignored",
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (u16::try_from(offset), <&[u8; 4]>::try_from(data)) {
            (Ok(off), Ok(word)) => self.rtc.write(off, word),
            _ => log_limited!(
                log::Level::Debug,
                "rtc: {}-byte write at {offset:#x} ignored",
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_primecell_id_and_a_running_clock() {
        let mut rtc = RtcPl031::default();
        let mut id = [0u8; 4];
        rtc.read(0xfe0, &mut id);
        assert_eq!(id[0], 0x31, "PL031 part number, low byte");
        let mut now = [0u8; 4];
        rtc.read(0, &mut now);
        assert!(
            u32::from_le_bytes(now) > 1_600_000_000,
            "seconds since 1970"
        );
        let mut odd = [0xaa; 2];
        rtc.read(0, &mut odd);
        assert_eq!(odd, [0, 0], "narrow reads are refused");
    }
}
