//! Rate limiting for log lines a guest can provoke, so a hostile guest cannot flood the log.

use std::time::{Duration, Instant};

/// Allows `burst` events per `period`; counts what it suppressed.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimiter {
    pub const fn new(period: Duration, burst: u32) -> Self {
        RateLimiter {
            period,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this event now. When a new window opens, returns how many were
    /// suppressed in the previous ones through [`RateLimiter::take_suppressed`].
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(s) if now.duration_since(s) < self.period => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Number of events suppressed since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Logs at `level` through a static [`RateLimiter`] of 10 lines per 5 s per call site.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMITER: std::sync::Mutex<$crate::ratelimit::RateLimiter> = std::sync::Mutex::new(
            $crate::ratelimit::RateLimiter::new(std::time::Duration::from_secs(5), 10),
        );
        let mut l = $crate::bus::lock(&LIMITER);
        if l.allow() {
            let n = l.take_suppressed();
            drop(l);
            if n > 0 {
                log::log!($level, "({n} similar messages suppressed)");
            }
            log::log!($level, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_per_window() {
        let mut r = RateLimiter::new(Duration::from_secs(1), 3);
        let t = Instant::now();
        let got: Vec<bool> = (0..5).map(|_| r.allow_at(t)).collect();
        assert_eq!(got, [true, true, true, false, false]);
        assert_eq!(r.take_suppressed(), 2);
        assert!(r.allow_at(t + Duration::from_millis(1500)));
        assert_eq!(r.take_suppressed(), 0);
    }
}
