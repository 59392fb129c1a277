//! Interrupt controllers that run in user space, for hypervisors that do not provide them
//! (MSHV on x86_64) and for KVM's split-irqchip mode.

pub mod ioapic;

pub use ioapic::{Ioapic, MsiSender, IOAPIC_BASE, IOAPIC_SIZE};
