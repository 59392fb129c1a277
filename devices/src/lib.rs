//! berth's devices. A device is a state machine behind [`BusDevice`] (or, later, a virtio queue
//! worker); it touches only guest memory, the event fds and files it was given, and knows
//! nothing of hypervisors, threads or processes. The VMM wires it.

pub mod bus;
pub mod irqchip;
pub mod legacy;
pub mod pci;
pub mod ratelimit;
#[cfg(test)]
mod test_util;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
pub use vm_superio::Trigger;
pub use vmm_sys_util::eventfd::EventFd;

/// An interrupt line or notification backed by an event fd (an irqfd when the VMM registers
/// it with the hypervisor): triggering writes 1 to it.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }

    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
