//! How a virtio-pci device's interrupts reach the guest: the ISR status byte and MSI-X vectors.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::common::NO_VECTOR;
use crate::bus::lock;
use crate::log_limited;
use crate::pci::Msix;
use crate::virtio::VirtioInterrupt;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Shared between the transport (vCPU threads: vector assignment, ISR reads) and the worker.
pub struct PciInterrupt {
    msix: Arc<Mutex<Msix>>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    isr: AtomicU8,
}

impl PciInterrupt {
    pub fn new(msix: Arc<Mutex<Msix>>, queues: usize) -> Self {
        PciInterrupt {
            msix,
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            isr: AtomicU8::new(0),
        }
    }

    /// Mirrors the driver's vector assignments from the common configuration.
    pub fn set_vectors(&self, config: u16, queues: impl Iterator<Item = u16>) {
        self.config_vector.store(config, Ordering::Release);
        for (slot, v) in self.queue_vectors.iter().zip(queues) {
            slot.store(v, Ordering::Release);
        }
    }

    /// The ISR status register: reading it clears it (virtio 1.2, 4.1.4.5).
    pub fn read_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }

    pub fn reset(&self) {
        self.set_vectors(NO_VECTOR, std::iter::repeat(NO_VECTOR));
        self.isr.store(0, Ordering::Release);
    }

    fn raise(&self, vector: u16) {
        if vector == NO_VECTOR {
            // No INTx yet: a driver without MSI-X gets no interrupts (Linux always has MSI-X).
            log_limited!(
                log::Level::Warn,
                "virtio-pci: interrupt without an MSI-X vector dropped"
            );
            return;
        }
        if !lock(&self.msix).trigger(vector) {
            log_limited!(
                log::Level::Warn,
                "virtio-pci: interrupt while MSI-X is disabled dropped"
            );
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn signal_used(&self, queue: u16) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::AcqRel);
        let v = self
            .queue_vectors
            .get(queue as usize)
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire));
        self.raise(v);
    }

    fn signal_config(&self) {
        self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
        self.raise(self.config_vector.load(Ordering::Acquire));
    }
}
