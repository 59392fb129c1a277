//! The block worker: serves the request queue until told to stop.

use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::request::Executor;
use crate::virtio::queue_util;
use crate::virtio::worker::run_one_queue;
use crate::virtio::{GuestMemory, VirtioInterrupt, VirtioWorker};

pub struct BlockWorker {
    pub(super) mem: GuestMemory,
    pub(super) queue: Queue,
    pub(super) kick: EventFd,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) exec: Executor,
}

impl VirtioWorker for BlockWorker {
    fn run(self: Box<Self>, stop: EventFd) {
        let BlockWorker {
            mem,
            mut queue,
            kick,
            interrupt,
            exec,
        } = *self;
        run_one_queue("virtio-blk", &kick, &stop, || {
            serve(&mem, &mut queue, &*interrupt, &exec)
        });
    }
}

impl BlockWorker {
    /// Serves every available request now (tests drive the worker without a thread).
    #[cfg(test)]
    pub(super) fn process_queue(&mut self) {
        serve(&self.mem, &mut self.queue, &*self.interrupt, &self.exec);
    }
}

/// Serves every available request (the block device never declines one).
fn serve(mem: &GuestMemory, queue: &mut Queue, interrupt: &dyn VirtioInterrupt, exec: &Executor) {
    queue_util::serve(mem, queue, 0, interrupt, |chain| {
        Some(exec.process(mem, chain))
    });
}
