//! Virtio 1.x devices, written once: a device is a state machine behind [`VirtioDevice`] plus a
//! [`VirtioWorker`] that serves its queues. The worker touches only guest memory, its queues'
//! kick event fds, the [`VirtioInterrupt`] it was given and the files the device was built
//! with, so the VMM may run it on a thread today and in a jailed process later.

pub mod blk;
pub mod console;
pub mod pci;
mod queue_util;
pub mod rng;
pub mod worker;

use std::sync::Arc;

use thiserror::Error;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use virtio_bindings::virtio_config::{VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1};
pub use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Guest memory as devices see it. It never changes after boot (no hotplug), so workers keep
/// a clone instead of an atomic snapshot.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device ids (virtio 1.2, 5).
pub const TYPE_CONSOLE: u32 = 3;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;

/// Features every berth device offers on top of its own.
pub const COMMON_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

#[derive(Debug, Error)]
pub enum ActivateError {
    #[error("the driver did not set up queue {0}")]
    QueueNotReady(usize),
    #[error("{0}")]
    Device(String),
}

/// What a worker needs to serve the queues, handed over when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemory,
    /// One per queue the device declared, in order; check `ready()` on optional queues.
    pub queues: Vec<Queue>,
    /// Signalled when the driver notifies the queue of the same index.
    pub kicks: Vec<EventFd>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub features: u64,
}

/// How a device raises interrupts; the transport decides the mechanism (MSI-X vector, INTx).
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers in queue `queue`'s used ring.
    fn signal_used(&self, queue: u16);
    /// The device changed its configuration space.
    fn signal_config(&self);
}

/// A virtio device's control side: what the transport asks of it from vCPU threads.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver, [`COMMON_FEATURES`] included.
    fn features(&self) -> u64;
    /// Guest read of the device-specific configuration space; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Guest write of the configuration space; most devices ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Builds the worker that serves the queues. Called once per DRIVER_OK.
    fn activate(&mut self, act: Activation) -> Result<Box<dyn VirtioWorker>, ActivateError>;
    /// The driver reset the device: the worker is already stopped; forget per-driver state.
    fn reset(&mut self) {}
}

/// A device's data path: serves the queues until `stop` fires, then returns.
pub trait VirtioWorker: Send {
    fn run(self: Box<Self>, stop: EventFd);
}

/// Starts workers where the VMM wants them (a thread today, a jailed process later).
pub trait Spawner: Send + Sync {
    /// Runs `worker` until `stop` fires; `name` names the thread or process.
    fn spawn(
        &self,
        name: String,
        worker: Box<dyn VirtioWorker>,
        stop: EventFd,
    ) -> std::io::Result<Box<dyn Running>>;
}

/// A started worker.
pub trait Running: Send {
    /// Waits until the worker has returned (after its stop fd fired).
    fn join(self: Box<Self>);
}
