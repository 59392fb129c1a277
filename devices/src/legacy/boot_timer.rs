//! Boot timer: the guest writes the byte 123 at offset 0 (e.g. `busybox devmem 0xf0000000 8
//! 123` on x86_64) and berth logs the time since it started, as Firecracker's does.

use std::time::{Duration, Instant};

use crate::{log_limited, BusDevice};

/// The value that marks "the guest reached the point being measured".
pub const MAGIC: u8 = 123;

/// Measures from `start` (berth's start) to the guest's write.
pub struct BootTimer {
    start: Instant,
    last: Option<Duration>,
}

impl BootTimer {
    pub fn new(start: Instant) -> Self {
        BootTimer { start, last: None }
    }

    /// The time recorded by the last marker write.
    pub fn last(&self) -> Option<Duration> {
        self.last
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&MAGIC) {
            let t = self.start.elapsed();
            self.last = Some(t);
            // A guest may write the marker in a loop: rate-limited (the first ten in any five
            // seconds show).
            log_limited!(
                log::Level::Info,
                "guest boot time: {} us since berth start",
                t.as_micros()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_the_magic_write_at_offset_zero() {
        let mut t = BootTimer::new(Instant::now());
        t.write(0, &[1]);
        t.write(4, &[MAGIC]);
        assert_eq!(t.last(), None);
        t.write(0, &[MAGIC, 0, 0, 0]);
        assert!(t.last().is_some());
    }
}
