//! The event loop every virtio worker runs: wait on a few event fds, dispatch by token.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// An epoll set of fds, each with a caller-chosen token.
pub struct EventLoop {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl EventLoop {
    pub fn new() -> io::Result<Self> {
        Ok(EventLoop {
            epoll: Epoll::new()?,
            events: vec![EpollEvent::default(); 16],
        })
    }

    /// Wakes the loop with `token` whenever `fd` is readable.
    pub fn add(&mut self, fd: &impl AsRawFd, token: u64) -> io::Result<()> {
        self.add_raw(fd.as_raw_fd(), token)
    }

    pub fn add_raw(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }

    /// Stops watching `fd` (for example a console input at end of file).
    pub fn remove_raw(&mut self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Blocks until at least one fd is ready; returns the ready tokens. EINTR yields none.
    pub fn wait(&mut self) -> io::Result<Vec<u64>> {
        match self.epoll.wait(-1, &mut self.events) {
            Ok(n) => Ok(self.events[..n].iter().map(|e| e.data()).collect()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// The whole life of a worker that serves one queue: `process` runs once at start (the driver
/// may have queued requests before the worker existed) and after every kick, until `stop`.
pub fn run_one_queue(name: &str, kick: &EventFd, stop: &EventFd, mut process: impl FnMut()) {
    let mut el = match EventLoop::new().and_then(|mut el| {
        el.add(stop, STOP)?;
        el.add(kick, KICK)?;
        Ok(el)
    }) {
        Ok(el) => el,
        Err(e) => {
            log::error!("{name} worker: {e}");
            return;
        }
    };
    process();
    loop {
        let tokens = match el.wait() {
            Ok(t) => t,
            Err(e) => {
                log::error!("{name} worker: {e}");
                return;
            }
        };
        if tokens.contains(&STOP) {
            return;
        }
        if tokens.contains(&KICK) {
            // Cleared before looking at the ring, so a kick that comes later is not lost.
            let _ = kick.read();
            process();
        }
    }
}

const STOP: u64 = 0;
const KICK: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_tokens_of_ready_fds() {
        let a = EventFd::new(0).unwrap();
        let b = EventFd::new(0).unwrap();
        let mut el = EventLoop::new().unwrap();
        el.add(&a, 1).unwrap();
        el.add(&b, 2).unwrap();
        b.write(1).unwrap();
        assert_eq!(el.wait().unwrap(), vec![2]);
    }
}
