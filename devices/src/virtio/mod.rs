//! Virtio 1.x devices, written once. Each device is a vhost-user backend ([`backend`]): a
//! state machine behind [`backend::VirtioBackend`] that touches only guest memory, its queues,
//! their kick and call eventfds and the files it was given, so it runs the same in a jailed
//! process, a thread or a standalone daemon. The VMM keeps the virtio-pci transport
//! ([`pci`]) and drives each backend through the vhost-user frontend ([`frontend`]).

pub mod backend;
pub mod blk;
pub mod console;
pub mod frontend;
pub mod pci;
mod queue_util;
pub mod rng;

pub use queue_util::rings_in_memory;
pub use virtio_bindings::virtio_config::{VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1};
pub use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Guest memory as devices see it. It never changes after boot (no hotplug).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device ids (virtio 1.2, 5).
pub const TYPE_CONSOLE: u32 = 3;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;

/// Features every berth device offers on top of its own.
pub const COMMON_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// How the transport raises a device's interrupts when the VMM, not the backend, raises them
/// (configuration changes, and queue interrupts while the driver uses INTx).
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers in queue `queue`'s used ring.
    fn signal_used(&self, queue: u16);
    /// The device changed its configuration space.
    fn signal_config(&self);
}
