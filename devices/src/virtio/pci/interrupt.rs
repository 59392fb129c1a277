//! How a virtio-pci device's interrupts reach the guest: the ISR status byte and MSI-X vectors.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::common::NO_VECTOR;
use crate::bus::lock;
use crate::log_limited;
use crate::pci::{IntxLine, Msix};
use crate::virtio::VirtioInterrupt;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Shared between the transport (vCPU threads: vector assignment, ISR reads) and the worker.
/// With MSI-X enabled interrupts go to the vectors; otherwise to INTx, a level the ISR read
/// lowers (virtio 1.2, 4.1.4.5.1).
pub struct PciInterrupt {
    msix: Arc<Mutex<Msix>>,
    /// The INTx line; its mutex orders "set ISR bit, raise" against "clear ISR, lower".
    intx: Option<Mutex<Arc<dyn IntxLine>>>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    isr: AtomicU8,
}

impl PciInterrupt {
    pub fn new(msix: Arc<Mutex<Msix>>, intx: Option<Arc<dyn IntxLine>>, queues: usize) -> Self {
        PciInterrupt {
            msix,
            intx: intx.map(Mutex::new),
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

    /// Whether the device has an INTx line.
    pub fn has_intx(&self) -> bool {
        self.intx.is_some()
    }

    /// The ISR status register: reading it clears it (virtio 1.2, 4.1.4.5).
    pub fn read_isr(&self) -> u8 {
        match &self.intx {
            Some(line) => {
                let line = lock(line);
                let v = self.isr.swap(0, Ordering::AcqRel);
                line.set_level(false);
                v
            }
            None => self.isr.swap(0, Ordering::AcqRel),
        }
    }

    pub fn reset(&self) {
        self.set_vectors(NO_VECTOR, std::iter::repeat(NO_VECTOR));
        self.read_isr();
    }

    /// Sets `isr_bit` and interrupts through `vector`, or through INTx while MSI-X is off.
    fn raise(&self, isr_bit: u8, vector: u16) {
        let mut msix = lock(&self.msix);
        if msix.enabled() {
            self.isr.fetch_or(isr_bit, Ordering::AcqRel);
            // NO_VECTOR means the driver wants no interrupt for this event.
            if vector != NO_VECTOR {
                msix.trigger(vector);
            }
            return;
        }
        drop(msix);
        match &self.intx {
            Some(line) => {
                let line = lock(line);
                self.isr.fetch_or(isr_bit, Ordering::AcqRel);
                line.set_level(true);
            }
            None => {
                self.isr.fetch_or(isr_bit, Ordering::AcqRel);
                log_limited!(
                    log::Level::Warn,
                    "virtio-pci: MSI-X disabled and no INTx line: interrupt dropped"
                );
            }
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn signal_used(&self, queue: u16) {
        let v = self
            .queue_vectors
            .get(queue as usize)
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire));
        self.raise(ISR_QUEUE, v);
    }

    fn signal_config(&self) {
        self.raise(ISR_CONFIG, self.config_vector.load(Ordering::Acquire));
    }
}
