//! A deadline on each request to a backend: a watchdog thread shuts the socket down when a
//! request takes too long, which makes the blocked send or receive fail.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a watchdog thread runs first: the VMM's thread set-up (its seccomp filter), which
/// this crate knows nothing of.
static THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what every watchdog thread runs first; once, before the first frontend.
pub fn set_thread_start(f: fn()) {
    let _ = THREAD_START.set(f);
}

struct Shared {
    /// When the request in progress must have ended; `None` between requests.
    due: Option<Instant>,
    /// Set by the watchdog when it shut the socket down.
    fired: bool,
    /// The frontend is gone: the watchdog ends.
    closed: bool,
}

pub struct Deadline {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    timeout: Duration,
}

impl Deadline {
    /// Watches requests on `stream` (a clone of the frontend's socket).
    pub fn new(stream: UnixStream, timeout: Duration) -> std::io::Result<Self> {
        let shared = Arc::new((
            Mutex::new(Shared {
                due: None,
                fired: false,
                closed: false,
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("vhost-deadline".into())
            .spawn(move || {
                if let Some(f) = THREAD_START.get() {
                    f();
                }
                watch(&s, stream)
            })?;
        Ok(Deadline { shared, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` under the deadline; also says whether the deadline passed (then the socket
    /// is shut down for good and every later request fails too).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let (m, cv) = &*self.shared;
        {
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            g.due = Some(Instant::now() + self.timeout);
            cv.notify_all();
        }
        let r = f();
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.due = None;
        cv.notify_all();
        (r, g.fired)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        cv.notify_all();
    }
}

fn watch(shared: &(Mutex<Shared>, Condvar), stream: UnixStream) {
    let (m, cv) = shared;
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if g.closed {
            return;
        }
        match g.due {
            None => g = cv.wait(g).unwrap_or_else(|e| e.into_inner()),
            Some(due) => {
                let now = Instant::now();
                if now >= due {
                    g.fired = true;
                    g.due = None;
                    let _ = stream.shutdown(Shutdown::Both);
                } else {
                    g = cv
                        .wait_timeout(g, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}
