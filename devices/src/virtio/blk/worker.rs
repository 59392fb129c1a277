//! The block worker: serves the request queue until told to stop.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::request::Executor;
use crate::log_limited;
use crate::virtio::worker::EventLoop;
use crate::virtio::{GuestMemory, VirtioInterrupt, VirtioWorker};

const KICK: u64 = 0;
const STOP: u64 = 1;

pub struct BlockWorker {
    pub(super) mem: GuestMemory,
    pub(super) queue: Queue,
    pub(super) kick: EventFd,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) exec: Executor,
}

impl VirtioWorker for BlockWorker {
    fn run(mut self: Box<Self>, stop: EventFd) {
        let mut el = match EventLoop::new() {
            Ok(el) => el,
            Err(e) => {
                log::error!("virtio-blk: cannot create the event loop: {e}");
                return;
            }
        };
        if let Err(e) = el.add(&self.kick, KICK).and_then(|_| el.add(&stop, STOP)) {
            log::error!("virtio-blk: cannot watch the queue: {e}");
            return;
        }
        // The driver may have queued requests before the worker started.
        self.process_queue();
        loop {
            let tokens = match el.wait() {
                Ok(t) => t,
                Err(e) => {
                    log::error!("virtio-blk: event loop failed: {e}");
                    return;
                }
            };
            if tokens.contains(&STOP) {
                return;
            }
            if tokens.contains(&KICK) {
                // Clear the kick before looking at the ring, so a later kick is not lost.
                let _ = self.kick.read();
                self.process_queue();
            }
        }
    }
}

impl BlockWorker {
    /// Serves every available request, then re-enables notifications; loops if the driver
    /// added more in between, so no request waits for a kick that will not come.
    pub(super) fn process_queue(&mut self) {
        loop {
            if let Err(e) = self.queue.disable_notification(&self.mem) {
                log_limited!(log::Level::Warn, "virtio-blk: queue: {e}");
                return;
            }
            let mut used = false;
            let mut stalled = false;
            loop {
                let chain = match self.queue.iter(&self.mem) {
                    Ok(mut it) => it.next(),
                    Err(e) => {
                        // A bad available index: nothing sane to serve until a reset.
                        log_limited!(log::Level::Warn, "virtio-blk: queue: {e}");
                        stalled = true;
                        None
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let len = self.exec.process(&self.mem, chain);
                if head >= self.queue.size() {
                    // Nothing to return it through; the chain was empty anyway.
                    log_limited!(
                        log::Level::Warn,
                        "virtio-blk: head index {head} out of range"
                    );
                    continue;
                }
                if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                    log_limited!(log::Level::Warn, "virtio-blk: used ring: {e}");
                    return;
                }
                used = true;
            }
            if used {
                match self.queue.needs_notification(&self.mem) {
                    Ok(true) => self.interrupt.signal_used(0),
                    Ok(false) => {}
                    Err(e) => log_limited!(log::Level::Warn, "virtio-blk: used ring: {e}"),
                }
            }
            if stalled {
                return;
            }
            match self.queue.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    log_limited!(log::Level::Warn, "virtio-blk: queue: {e}");
                    return;
                }
            }
        }
    }
}
