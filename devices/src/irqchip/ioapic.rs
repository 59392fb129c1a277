//! The I/O APIC (82093AA register model, version 0x20: with the directed-EOI register): 24
//! pins whose redirection entries turn a line into an MSI to the local APICs.
//!
//! The device is a state machine: the VMM feeds it guest accesses ([`BusDevice`]), line
//! changes ([`Ioapic::service_irq`]) and the EOIs the hypervisor reports
//! ([`Ioapic::end_of_interrupt`]); it sends MSIs through the [`MsiSender`] it was given. The
//! guest can program anything: every register value is accepted or ignored, never a panic.

use crate::bus::BusDevice;
use crate::log_limited;

/// Where the platform puts it (the ACPI MADT says so).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;

pub const NUM_PINS: usize = 24;
const VERSION: u32 = 0x20;

// MMIO offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const EOI: u64 = 0x40;

// Indirect registers.
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION: u32 = 0x10;

// Redirection entry bits.
const VECTOR_MASK: u64 = 0xff;
const DELIVERY_MODE_SHIFT: u64 = 8;
const DEST_MODE_LOGICAL: u64 = 1 << 11;
const DELIVERY_STATUS: u64 = 1 << 12;
const REMOTE_IRR: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
const DEST_SHIFT: u64 = 56;
/// Bits the guest cannot write: delivery status and remote IRR are the IOAPIC's own.
const READ_ONLY_BITS: u64 = DELIVERY_STATUS | REMOTE_IRR;

/// The IOAPIC's outputs: MSIs it sends, and (for hypervisors that deliver a pin's irqfd
/// themselves, as KVM's split mode does) the message each pin now stands for.
pub trait MsiSender: Send {
    /// Sends an MSI now (the hypervisor's injection).
    fn send(&self, address: u64, data: u32);
    /// `pin` now sends `msi`, or nothing while masked (`None`). Called when the guest changes
    /// what a redirection entry sends, not for every write.
    fn pin_changed(&self, _pin: usize, _msi: Option<(u64, u32)>) {}
}

/// The I/O APIC. Every pin starts masked, edge-triggered, as after reset.
pub struct Ioapic<S: MsiSender> {
    id: u32,
    select: u32,
    entries: [u64; NUM_PINS],
    /// Line levels, for level-triggered pins (re-sent after EOI while high).
    levels: [bool; NUM_PINS],
    sender: S,
}

impl<S: MsiSender> Ioapic<S> {
    pub fn new(sender: S) -> Self {
        Ioapic {
            id: 0,
            select: 0,
            entries: [MASKED; NUM_PINS],
            levels: [false; NUM_PINS],
            sender,
        }
    }

    /// The redirection entry of `pin` (for the VMM: KVM's split mode needs a route per pin).
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.entries.get(pin).copied()
    }

    /// The MSI `pin` sends, or `None` while it is masked.
    pub fn msi_for(&self, pin: usize) -> Option<(u64, u32)> {
        let e = *self.entries.get(pin)?;
        (e & MASKED == 0).then(|| msi(e))
    }

    /// Line `pin` goes to `level`. Edge pins send on a rising edge; level pins send while high
    /// unless the last message is not yet EOI'd (remote IRR).
    pub fn service_irq(&mut self, pin: usize, level: bool) {
        let Some(&e) = self.entries.get(pin) else {
            log_limited!(log::Level::Warn, "IOAPIC: no pin {pin}");
            return;
        };
        let rising = level && !self.levels[pin];
        self.levels[pin] = level;
        if e & TRIGGER_LEVEL != 0 {
            self.deliver_level(pin);
        } else if rising && e & MASKED == 0 {
            let (address, data) = msi(e);
            self.sender.send(address, data);
        }
    }

    /// The local APICs finished `vector`: level pins with that vector may fire again.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for pin in 0..NUM_PINS {
            let e = self.entries[pin];
            if e & TRIGGER_LEVEL != 0 && e & VECTOR_MASK == u64::from(vector) && e & REMOTE_IRR != 0
            {
                self.entries[pin] &= !REMOTE_IRR;
                self.deliver_level(pin);
            }
        }
    }

    fn deliver_level(&mut self, pin: usize) {
        let e = self.entries[pin];
        if self.levels[pin] && e & (MASKED | REMOTE_IRR) == 0 {
            self.entries[pin] |= REMOTE_IRR;
            let (address, data) = msi(e);
            self.sender.send(address, data);
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            REG_ID | REG_ARBITRATION => self.id << 24,
            REG_VERSION => ((NUM_PINS as u32 - 1) << 16) | VERSION,
            r => match redirection_half(r) {
                Some((pin, shift)) => (self.entries[pin] >> shift) as u32,
                None => 0,
            },
        }
    }

    fn write_register(&mut self, value: u32) {
        if self.select == REG_ID {
            self.id = (value >> 24) & 0xf;
            return;
        }
        let Some((pin, shift)) = redirection_half(self.select) else {
            // Version and arbitration are read-only; other indices do not exist.
            log_limited!(
                log::Level::Debug,
                "IOAPIC: write {value:#x} to register {:#x} ignored",
                self.select
            );
            return;
        };
        let old = self.entries[pin];
        let before = self.msi_for(pin);
        let writable = (0xffff_ffffu64 << shift) & !READ_ONLY_BITS;
        let new = (old & !writable) | ((u64::from(value) << shift) & writable);
        // An edge pin keeps no remote IRR.
        self.entries[pin] = if new & TRIGGER_LEVEL == 0 {
            new & !REMOTE_IRR
        } else {
            new
        };
        let after = self.msi_for(pin);
        if after != before {
            self.sender.pin_changed(pin, after);
        }
        // Unmasking a level pin whose line is high delivers it now.
        if new & TRIGGER_LEVEL != 0 {
            self.deliver_level(pin);
        }
    }
}

/// For a redirection-table register index: the pin, and where its 32 bits sit in the entry
/// (0 for the low half, 32 for the high half).
fn redirection_half(index: u32) -> Option<(usize, u32)> {
    let pin = (index.checked_sub(REG_REDIRECTION)? / 2) as usize;
    (pin < NUM_PINS).then_some((pin, (index % 2) * 32))
}

/// The MSI a redirection entry describes.
fn msi(e: u64) -> (u64, u32) {
    let dest = (e >> DEST_SHIFT) & 0xff;
    let logical = e & DEST_MODE_LOGICAL != 0;
    let address = 0xfee0_0000 | (dest << 12) | (u64::from(logical) << 2);
    let mode = (e >> DELIVERY_MODE_SHIFT) & 0x7;
    let level = e & TRIGGER_LEVEL != 0;
    // Level-triggered messages are sent asserted (bit 14) with the trigger bit (15).
    let data =
        (e & VECTOR_MASK) | (mode << 8) | (u64::from(level) << 14) | (u64::from(level) << 15);
    (address, data as u32)
}

/// The guest's accesses: IOREGSEL and IOWIN, 32 bits wide (other widths are ignored: the
/// 82093AA defines only dword accesses), and the EOI register.
impl<S: MsiSender> BusDevice for Ioapic<S> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (IOREGSEL, 4) => self.select,
            (IOWIN, 4) => self.read_register(),
            _ => {
                log_limited!(
                    log::Level::Debug,
                    "IOAPIC: read of {} bytes at {offset:#x}",
                    data.len()
                );
                0
            }
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log_limited!(
                log::Level::Debug,
                "IOAPIC: write of {} bytes at {offset:#x}",
                data.len()
            );
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.select = value & 0xff,
            IOWIN => self.write_register(value),
            EOI => self.end_of_interrupt(value as u8),
            _ => log_limited!(log::Level::Debug, "IOAPIC: write at {offset:#x} ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type PinChange = (usize, Option<(u64, u32)>);

    #[derive(Clone, Default)]
    struct Sent(Arc<Mutex<Vec<(u64, u32)>>>, Arc<Mutex<Vec<PinChange>>>);
    impl MsiSender for Sent {
        fn send(&self, address: u64, data: u32) {
            self.0.lock().unwrap().push((address, data));
        }
        fn pin_changed(&self, pin: usize, msi: Option<(u64, u32)>) {
            self.1.lock().unwrap().push((pin, msi));
        }
    }
    impl Sent {
        fn take(&self) -> Vec<(u64, u32)> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
        fn changes(&self) -> Vec<PinChange> {
            std::mem::take(&mut self.1.lock().unwrap())
        }
    }

    fn ioapic() -> (Ioapic<Sent>, Sent) {
        let s = Sent::default();
        (Ioapic::new(s.clone()), s)
    }

    fn write_reg(io: &mut Ioapic<Sent>, reg: u32, v: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes());
    }

    fn read_reg(io: &mut Ioapic<Sent>, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    fn program(io: &mut Ioapic<Sent>, pin: u32, low: u32, dest: u8) {
        write_reg(io, REG_REDIRECTION + 2 * pin + 1, u32::from(dest) << 24);
        write_reg(io, REG_REDIRECTION + 2 * pin, low);
    }

    #[test]
    fn version_says_24_pins_and_entries_start_masked() {
        let (mut io, _) = ioapic();
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x0017_0020);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, REG_REDIRECTION + 2 * pin), 1 << 16);
        }
        write_reg(&mut io, REG_VERSION, 0);
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x0017_0020);
        write_reg(&mut io, REG_ID, 5 << 24);
        assert_eq!(read_reg(&mut io, REG_ID), 5 << 24);
    }

    #[test]
    fn an_edge_pin_sends_its_msi_on_a_rising_edge_only_when_unmasked() {
        let (mut io, sent) = ioapic();
        io.service_irq(4, true);
        assert!(sent.take().is_empty(), "masked");
        io.service_irq(4, false);
        program(&mut io, 4, 0x31, 2); // vector 0x31, fixed, physical, edge, unmasked
        io.service_irq(4, true);
        io.service_irq(4, true); // no edge
        io.service_irq(4, false);
        io.service_irq(4, true);
        assert_eq!(sent.take(), vec![(0xfee0_2000, 0x31), (0xfee0_2000, 0x31)]);
        assert_eq!(io.msi_for(4), Some((0xfee0_2000, 0x31)));
    }

    #[test]
    fn a_level_pin_waits_for_eoi_and_fires_again_while_high() {
        let (mut io, sent) = ioapic();
        program(&mut io, 9, 0x8041, 0); // vector 0x41, level
        io.service_irq(9, true);
        io.service_irq(9, true);
        assert_eq!(sent.take(), vec![(0xfee0_0000, 0xc041)]);
        assert_ne!(
            read_reg(&mut io, REG_REDIRECTION + 18) & (1 << 14),
            0,
            "remote IRR"
        );
        io.end_of_interrupt(0x41); // still high: again
        assert_eq!(sent.take().len(), 1);
        io.service_irq(9, false);
        io.end_of_interrupt(0x41);
        assert!(sent.take().is_empty());
        io.end_of_interrupt(0x42);
        io.service_irq(9, true);
        assert_eq!(sent.take().len(), 1);
        // Through the EOI register too.
        io.service_irq(9, true);
        io.write(EOI, &0x41u32.to_le_bytes());
        assert_eq!(sent.take().len(), 1);
    }

    #[test]
    fn unmasking_a_high_level_pin_delivers_and_remote_irr_is_not_writable() {
        let (mut io, sent) = ioapic();
        program(&mut io, 3, 0x1_8050, 0); // level, masked
        io.service_irq(3, true);
        assert!(sent.take().is_empty());
        write_reg(&mut io, REG_REDIRECTION + 6, 0x8050 | (1 << 14) | (1 << 12));
        assert_eq!(sent.take().len(), 1);
        let low = read_reg(&mut io, REG_REDIRECTION + 6);
        assert_eq!(low & (1 << 12), 0, "delivery status is the IOAPIC's");
    }

    #[test]
    fn logical_destination_and_delivery_mode_reach_the_message() {
        let (mut io, sent) = ioapic();
        program(&mut io, 1, 0x0900 | 0x22, 0x0f); // lowest priority... mode 1, logical
        io.service_irq(1, true);
        assert_eq!(sent.take(), vec![(0xfee0_f004, 0x0122)]);
    }

    #[test]
    fn the_vmm_hears_when_a_pin_starts_stops_or_changes_what_it_sends() {
        let (mut io, sent) = ioapic();
        write_reg(&mut io, REG_REDIRECTION + 9, 3 << 24); // masked: sends nothing yet
        assert!(sent.changes().is_empty());
        write_reg(&mut io, REG_REDIRECTION + 8, 0x8041); // unmasked, level
        assert_eq!(sent.changes(), vec![(4, Some((0xfee0_3000, 0xc041)))]);
        write_reg(&mut io, REG_REDIRECTION + 8, 0x8041); // the same again: no news
        assert!(sent.changes().is_empty());
        write_reg(&mut io, REG_REDIRECTION + 8, 0x1_8041);
        assert_eq!(sent.changes(), vec![(4, None)]);
    }

    #[test]
    fn hostile_accesses_are_ignored() {
        let (mut io, sent) = ioapic();
        for sel in [0x03u32, 0x3f + 1, 0xff, u32::MAX] {
            write_reg(&mut io, sel, u32::MAX);
            let _ = read_reg(&mut io, sel);
        }
        for len in [0usize, 1, 2, 3, 8] {
            let mut d = vec![0xaa; len];
            io.read(IOWIN, &mut d);
            io.write(IOWIN, &d);
            io.read(0xfff, &mut d);
            io.write(u64::MAX, &d);
        }
        io.service_irq(24, true);
        io.service_irq(usize::MAX, true);
        io.end_of_interrupt(0xff);
        assert!(sent.take().is_empty());
    }
}
