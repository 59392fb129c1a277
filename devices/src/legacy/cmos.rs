//! MC146818 CMOS RTC at ports 0x70/0x71: the host's current UTC time in BCD, 24-hour mode,
//! plus 128 bytes of NVRAM. The guest's writes to the clock are accepted and ignored.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::BusDevice;

const INDEX: u64 = 0;
const DATA: u64 = 1;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// 32.768 kHz time base, 1024 Hz rate; update-in-progress never set.
const A_DEFAULT: u8 = 0x26;
/// 24-hour mode, BCD.
const B_24H: u8 = 0x02;
/// Valid RAM and time (battery good).
const D_VRT: u8 = 0x80;

/// The clock source; injectable so tests can pin the time.
pub type Clock = fn() -> SystemTime;

pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    clock: Clock,
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new(SystemTime::now)
    }
}

impl Cmos {
    pub fn new(clock: Clock) -> Self {
        let mut nvram = [0u8; 128];
        nvram[REG_B as usize] = B_24H;
        Cmos {
            index: 0,
            nvram,
            clock,
        }
    }

    fn register(&self, reg: u8) -> u8 {
        let secs = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let bcd = |v: i64| -> u8 {
            let v = v.rem_euclid(100) as u8;
            ((v / 10) << 4) | (v % 10)
        };
        match reg {
            REG_SECONDS => bcd(tod % 60),
            REG_MINUTES => bcd(tod / 60 % 60),
            REG_HOURS => bcd(tod / 3600),
            REG_WEEKDAY => bcd((days + 4).rem_euclid(7) + 1), // 1970-01-01 was a Thursday; Sunday = 1
            REG_DAY => bcd(i64::from(day)),
            REG_MONTH => bcd(i64::from(month)),
            REG_YEAR => bcd(year % 100),
            REG_CENTURY => bcd(year / 100),
            REG_A => A_DEFAULT,
            REG_C => 0,
            REG_D => D_VRT,
            r => self.nvram[usize::from(r & 0x7f)],
        }
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = match offset {
            DATA => self.register(self.index),
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            // Bit 7 of the index port masks NMIs; it is not part of the index.
            INDEX => self.index = data[0] & 0x7f,
            DATA => match self.index {
                REG_SECONDS..=REG_YEAR | REG_A | REG_C | REG_D | REG_CENTURY => {}
                i => self.nvram[usize::from(i)] = data[0],
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fixed() -> SystemTime {
        // 2026-11-23 08:20:09 UTC, a Monday.
        UNIX_EPOCH + Duration::from_secs(1_795_422_009)
    }

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(INDEX, &[reg | 0x80]);
        let mut d = [0u8];
        c.read(DATA, &mut d);
        d[0]
    }

    #[test]
    fn reports_the_clock_in_bcd() {
        let mut c = Cmos::new(fixed);
        let got: Vec<u8> = [
            REG_CENTURY,
            REG_YEAR,
            REG_MONTH,
            REG_DAY,
            REG_HOURS,
            REG_MINUTES,
            REG_SECONDS,
            REG_WEEKDAY,
        ]
        .iter()
        .map(|&r| read(&mut c, r))
        .collect();
        assert_eq!(got, [0x20, 0x26, 0x11, 0x23, 0x08, 0x20, 0x09, 0x02]);
        assert_eq!(read(&mut c, REG_A) & 0x80, 0, "never update-in-progress");
        assert_eq!(read(&mut c, REG_B), B_24H);
    }

    #[test]
    fn nvram_keeps_writes_but_clock_ignores_them() {
        let mut c = Cmos::new(fixed);
        c.write(INDEX, &[0x40]);
        c.write(DATA, &[0x99]);
        assert_eq!(read(&mut c, 0x40), 0x99);
        c.write(INDEX, &[REG_YEAR]);
        c.write(DATA, &[0x99]);
        assert_eq!(read(&mut c, REG_YEAR), 0x26);
    }

    #[test]
    fn calendar_conversion() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
