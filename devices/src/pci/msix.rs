//! MSI-X (PCI 3.0, 6.8.2): the vector table and pending-bit array a device exposes in its
//! BARs, and the capability that points the guest at them.
//!
//! Wiring, for the owner of a [`PciConfig`](super::PciConfig):
//! `let cap = msix.capability(bar, table_off, bar, pba_off)?;`
//! `let at = config.add_capability(&cap.bytes, &cap.writable)?;` then, whenever
//! `config.write_reg` returns `ConfigWrite::Capability(at)`,
//! `msix.set_control(config.read_u16(at + MSIX_CONTROL))`. After `msix.reset()`, put
//! `msix.control()` back with `config.set_capability_bytes(at, MSIX_CONTROL, ..)`.
//!
//! `trigger` needs `&mut` (pending bits), so keep the `Msix` where both the BAR accesses
//! and the queue workers reach it, e.g. in its own mutex.

use std::sync::Arc;

use thiserror::Error;

use super::{MsiMessage, MsiVector};
use crate::log_limited;

/// Most vectors a function may have (the table size field has 11 bits).
pub const MAX_VECTORS: usize = 2048;
/// Bytes per table entry.
pub const ENTRY_SIZE: usize = 16;
/// Offset of Message Control in the capability.
pub const MSIX_CONTROL: usize = 2;
pub const CAP_ID_MSIX: u8 = 0x11;

const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_MASKED: u32 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MsixError {
    #[error("MSI-X needs 1..=2048 vectors, not {0}")]
    VectorCount(usize),
    #[error("MSI-X BAR {0} does not exist")]
    Bar(u8),
    #[error("MSI-X structure offset {0:#x} is not 8-byte aligned")]
    Offset(u32),
}

/// The MSI-X capability, ready for [`PciConfig::add_capability`](super::PciConfig::add_capability).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    pub bytes: [u8; 12],
    /// Only Message Control's enable (bit 15) and function mask (bit 14) are writable.
    pub writable: [u8; 12],
}

/// One table entry, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Entry {
    const RESET: Entry = Entry {
        addr_lo: 0,
        addr_hi: 0,
        data: 0,
        control: ENTRY_MASKED,
    };

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo),
            data: self.data,
        }
    }

    fn masked(&self) -> bool {
        self.control & ENTRY_MASKED != 0
    }

    fn get(&self, dword: usize) -> u32 {
        match dword {
            0 => self.addr_lo,
            1 => self.addr_hi,
            2 => self.data,
            _ => self.control,
        }
    }

    fn field(&mut self, dword: usize) -> &mut u32 {
        match dword {
            0 => &mut self.addr_lo,
            1 => &mut self.addr_hi,
            2 => &mut self.data,
            _ => &mut self.control,
        }
    }
}

/// An MSI-X table and PBA for N vectors.
pub struct Msix {
    vectors: Vec<Arc<dyn MsiVector>>,
    table: Vec<Entry>,
    /// What each vector was last told through `set_message`.
    sent: Vec<Option<MsiMessage>>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    /// One table entry per vector, all masked.
    pub fn new(vectors: Vec<Arc<dyn MsiVector>>) -> Result<Self, MsixError> {
        let n = vectors.len();
        if n == 0 || n > MAX_VECTORS {
            return Err(MsixError::VectorCount(n));
        }
        Ok(Msix {
            vectors,
            table: vec![Entry::RESET; n],
            sent: vec![None; n],
            pba: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
        })
    }

    pub fn num_vectors(&self) -> usize {
        self.table.len()
    }

    /// Bytes the table takes in its BAR.
    pub fn table_size(&self) -> u64 {
        (self.table.len() * ENTRY_SIZE) as u64
    }

    /// Bytes the PBA takes in its BAR (whole qwords).
    pub fn pba_size(&self) -> u64 {
        (self.pba.len() * 8) as u64
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Whether a message sent on `vector` now would reach the guest: MSI-X on, the function
    /// and the entry unmasked.
    pub fn delivers(&self, vector: u16) -> bool {
        self.enabled
            && !self.function_masked
            && self
                .table
                .get(usize::from(vector))
                .is_some_and(|e| !e.masked())
    }

    /// The VMM's side of `vector`.
    pub fn vector(&self, vector: u16) -> Option<&Arc<dyn MsiVector>> {
        self.vectors.get(usize::from(vector))
    }

    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        v < self.table.len() && self.pba[v / 64] & (1 << (v % 64)) != 0
    }

    /// The capability for a table at `table_offset` in BAR `table_bar` and a PBA at
    /// `pba_offset` in BAR `pba_bar`. The owner sizes the BARs to hold them.
    pub fn capability(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> Result<MsixCapability, MsixError> {
        for bar in [table_bar, pba_bar] {
            if usize::from(bar) >= super::config::NUM_BARS {
                return Err(MsixError::Bar(bar));
            }
        }
        for off in [table_offset, pba_offset] {
            if off % 8 != 0 {
                return Err(MsixError::Offset(off));
            }
        }
        let control = (self.table.len() - 1) as u16; // disabled, unmasked
        let mut bytes = [0u8; 12];
        bytes[0] = CAP_ID_MSIX;
        bytes[2..4].copy_from_slice(&control.to_le_bytes());
        bytes[4..8].copy_from_slice(&(table_offset | u32::from(table_bar)).to_le_bytes());
        bytes[8..12].copy_from_slice(&(pba_offset | u32::from(pba_bar)).to_le_bytes());
        let mut writable = [0u8; 12];
        writable[MSIX_CONTROL + 1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        Ok(MsixCapability { bytes, writable })
    }

    /// Message Control as this table stands: table size, enable and function mask.
    pub fn control(&self) -> u16 {
        let mut c = (self.table.len() - 1) as u16;
        if self.enabled {
            c |= CONTROL_ENABLE;
        }
        if self.function_masked {
            c |= CONTROL_FUNCTION_MASK;
        }
        c
    }

    /// The guest wrote Message Control. Unmasking or enabling delivers pending vectors.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for v in 0..self.table.len() {
            self.deliver_if_pending(v);
        }
    }

    /// Raises `vector`. False if MSI-X is disabled (the caller may use INTx instead). While
    /// the function or the entry is masked the vector is only marked pending. Vectors past
    /// the table (e.g. virtio's NO_VECTOR) are dropped, and that still counts as handled.
    pub fn trigger(&mut self, vector: u16) -> bool {
        if !self.enabled {
            return false;
        }
        let v = usize::from(vector);
        let Some(entry) = self.table.get(v) else {
            return true;
        };
        if self.function_masked || entry.masked() {
            self.pba[v / 64] |= 1 << (v % 64);
        } else {
            self.vectors[v].trigger();
        }
        true
    }

    fn deliver_if_pending(&mut self, v: usize) {
        let bit = 1 << (v % 64);
        if self.enabled
            && !self.function_masked
            && !self.table[v].masked()
            && self.pba[v / 64] & bit != 0
        {
            self.pba[v / 64] &= !bit;
            self.vectors[v].trigger();
        }
    }

    /// Whether an access of `len` bytes at `offset` is a 4- or 8-byte aligned access inside
    /// a structure of `size` bytes.
    fn access_ok(what: &str, offset: u64, len: usize, size: u64) -> bool {
        let ok = matches!(len, 4 | 8)
            && offset & (len as u64 - 1) == 0
            && offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= size);
        if !ok {
            log_limited!(
                log::Level::Debug,
                "msix: {len}-byte {what} access at {offset:#x} ignored"
            );
        }
        ok
    }

    /// Guest read of the table at `offset` (4 or 8 bytes, aligned; others read all ones).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        if !Self::access_ok("table", offset, data.len(), self.table_size()) {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            let at = offset as usize + i * 4;
            let e = &self.table[at / ENTRY_SIZE];
            chunk.copy_from_slice(&e.get(at % ENTRY_SIZE / 4).to_le_bytes());
        }
    }

    /// Guest write to the table at `offset` (4 or 8 bytes, aligned; others ignored).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        if !Self::access_ok("table", offset, data.len(), self.table_size()) {
            return;
        }
        // An 8-byte aligned access never leaves its entry.
        let v = offset as usize / ENTRY_SIZE;
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let dword = offset as usize % ENTRY_SIZE / 4 + i;
            *self.table[v].field(dword) = u32::from_le_bytes(chunk.try_into().unwrap());
        }
        let msg = self.table[v].message();
        if self.sent[v] != Some(msg) {
            self.sent[v] = Some(msg);
            self.vectors[v].set_message(msg);
        }
        self.deliver_if_pending(v);
    }

    /// Guest read of the PBA at `offset` (4 or 8 bytes, aligned; others read all ones).
    /// The PBA is read-only, so the owner drops writes to it.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        if !Self::access_ok("PBA", offset, data.len(), self.pba_size()) {
            data.fill(0xff);
            return;
        }
        let q = self.pba[offset as usize / 8].to_le_bytes();
        let start = offset as usize % 8;
        data.copy_from_slice(&q[start..start + data.len()]);
    }

    /// Back to reset: disabled, every entry cleared and masked, nothing pending. The
    /// vectors keep their last message (so reprogramming the same one is not re-sent).
    pub fn reset(&mut self) {
        self.table.fill(Entry::RESET);
        self.pba.fill(0);
        self.enabled = false;
        self.function_masked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the MSI-X code asks of a vector.
    #[derive(Default)]
    struct FakeVector {
        messages: Mutex<Vec<MsiMessage>>,
        triggers: Mutex<u32>,
    }

    impl MsiVector for FakeVector {
        fn set_message(&self, msg: MsiMessage) {
            self.messages.lock().unwrap().push(msg);
        }
        fn trigger(&self) {
            *self.triggers.lock().unwrap() += 1;
        }
        fn connect(&self, _fd: &vmm_sys_util::eventfd::EventFd) {}
        fn disconnect(&self, _fd: &vmm_sys_util::eventfd::EventFd) {}
    }

    impl FakeVector {
        fn triggers(&self) -> u32 {
            *self.triggers.lock().unwrap()
        }
        fn messages(&self) -> Vec<MsiMessage> {
            self.messages.lock().unwrap().clone()
        }
    }

    fn msix(n: usize) -> (Msix, Vec<Arc<FakeVector>>) {
        let fakes: Vec<Arc<FakeVector>> = (0..n).map(|_| Arc::default()).collect();
        let vectors = fakes
            .iter()
            .map(|f| f.clone() as Arc<dyn MsiVector>)
            .collect();
        (Msix::new(vectors).unwrap(), fakes)
    }

    fn w32(m: &mut Msix, offset: u64, v: u32) {
        m.write_table(offset, &v.to_le_bytes());
    }

    fn r32(m: &Msix, offset: u64) -> u32 {
        let mut d = [0; 4];
        m.read_table(offset, &mut d);
        u32::from_le_bytes(d)
    }

    /// Programs entry `v` with an 8-byte address write and a 4-byte data write, unmasked.
    fn program(m: &mut Msix, v: u64, addr: u64, data: u32) {
        m.write_table(v * 16, &addr.to_le_bytes());
        w32(m, v * 16 + 8, data);
        w32(m, v * 16 + 12, 0);
    }

    const ENABLE: u16 = CONTROL_ENABLE;
    const FMASK: u16 = CONTROL_FUNCTION_MASK;

    #[test]
    fn entries_are_masked_at_reset_and_read_back() {
        let (mut m, _) = msix(3);
        assert_eq!(m.table_size(), 48);
        assert_eq!(m.pba_size(), 8);
        assert_eq!(r32(&m, 12), 1);
        assert_eq!(r32(&m, 2 * 16 + 12), 1);
        program(&mut m, 1, 0xfee0_0000, 0x41);
        let mut d = [0; 8];
        m.read_table(16, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0xfee0_0000);
        assert_eq!(r32(&m, 24), 0x41);
        assert_eq!(r32(&m, 28), 0);
    }

    #[test]
    fn programming_an_entry_sets_its_message_once() {
        let (mut m, f) = msix(2);
        program(&mut m, 1, 0x1_fee0_1000, 0x31);
        let want = MsiMessage {
            address: 0x1_fee0_1000,
            data: 0x31,
        };
        assert_eq!(f[1].messages().last(), Some(&want));
        let n = f[1].messages().len();
        program(&mut m, 1, 0x1_fee0_1000, 0x31);
        w32(&mut m, 16 + 12, 1);
        assert_eq!(f[1].messages().len(), n, "unchanged message is not re-sent");
        w32(&mut m, 16 + 8, 0x32);
        assert_eq!(f[1].messages().last().unwrap().data, 0x32);
        assert!(f[0].messages().is_empty());
    }

    #[test]
    fn disabled_msix_returns_false() {
        let (mut m, f) = msix(1);
        program(&mut m, 0, 0xfee0_0000, 1);
        assert!(!m.trigger(0));
        assert!(!m.pending(0));
        m.set_control(ENABLE);
        assert!(m.trigger(0));
        assert_eq!(f[0].triggers(), 1);
        m.set_control(0);
        assert!(!m.trigger(0));
        assert_eq!(f[0].triggers(), 1);
    }

    #[test]
    fn masked_entry_sets_pba_and_unmask_delivers() {
        let (mut m, f) = msix(70);
        m.set_control(ENABLE);
        m.write_table(65 * 16, &0xfee0_0000u64.to_le_bytes());
        assert!(m.trigger(65), "handled by MSI-X even though masked");
        assert_eq!(f[65].triggers(), 0);
        assert!(m.pending(65));
        let mut d = [0; 8];
        m.read_pba(8, &mut d);
        assert_eq!(u64::from_le_bytes(d), 1 << 1);
        let mut d4 = [0; 4];
        m.read_pba(8, &mut d4);
        assert_eq!(u32::from_le_bytes(d4), 1 << 1);
        w32(&mut m, 65 * 16 + 12, 0);
        assert_eq!(f[65].triggers(), 1);
        assert!(!m.pending(65));
        m.read_pba(8, &mut d);
        assert_eq!(d, [0; 8]);
        w32(&mut m, 65 * 16 + 12, 0);
        assert_eq!(f[65].triggers(), 1, "delivered once");
    }

    #[test]
    fn function_mask_holds_vectors_until_cleared() {
        let (mut m, f) = msix(2);
        program(&mut m, 0, 0xfee0_0000, 1);
        program(&mut m, 1, 0xfee0_0000, 2);
        m.set_control(ENABLE | FMASK);
        assert!(m.trigger(0));
        assert!(m.trigger(1));
        assert_eq!((f[0].triggers(), f[1].triggers()), (0, 0));
        assert!(m.pending(0) && m.pending(1));
        w32(&mut m, 12, 1); // entry 0 masked on its own too
        m.set_control(ENABLE);
        assert_eq!((f[0].triggers(), f[1].triggers()), (0, 1));
        assert!(m.pending(0) && !m.pending(1));
        w32(&mut m, 12, 0);
        assert_eq!(f[0].triggers(), 1);
        assert!(m.trigger(1));
        assert_eq!(f[1].triggers(), 2);
    }

    #[test]
    fn out_of_range_vectors_are_ignored() {
        let (mut m, f) = msix(2);
        program(&mut m, 0, 0xfee0_0000, 1);
        m.set_control(ENABLE);
        assert!(m.trigger(2));
        assert!(m.trigger(0xffff));
        assert!(!m.pending(2) && !m.pending(0xffff));
        assert_eq!(f[0].triggers() + f[1].triggers(), 0);
    }

    #[test]
    fn odd_table_and_pba_accesses_are_ignored() {
        let (mut m, f) = msix(2);
        m.write_table(0, &[1, 2]);
        m.write_table(2, &[1, 2, 3, 4]);
        m.write_table(4, &[0xff; 8]);
        m.write_table(32, &[0xff; 4]);
        m.write_table(u64::MAX - 3, &[0xff; 4]);
        m.write_table(0, &[0xff; 16]);
        assert!(f.iter().all(|f| f.messages().is_empty()));
        assert_eq!(r32(&m, 0), 0);
        assert_eq!(r32(&m, 4), 0);
        let mut d = [0u8; 2];
        m.read_table(0, &mut d);
        assert_eq!(d, [0xff; 2]);
        let mut d = [0u8; 4];
        m.read_table(32, &mut d);
        assert_eq!(d, [0xff; 4]);
        m.read_pba(8, &mut d);
        assert_eq!(d, [0xff; 4], "past the PBA");
        m.read_pba(0, &mut d[..1]);
        assert_eq!(d[0], 0xff);
    }

    #[test]
    fn capability_bytes_and_mask() {
        let (m, _) = msix(3);
        let cap = m.capability(2, 0x2000, 2, 0x3000).unwrap();
        assert_eq!(cap.bytes[0], CAP_ID_MSIX);
        assert_eq!(u16::from_le_bytes([cap.bytes[2], cap.bytes[3]]), 2);
        assert_eq!(m.control(), 2);
        assert_eq!(cap.bytes[4..8], 0x2002u32.to_le_bytes());
        assert_eq!(cap.bytes[8..12], 0x3002u32.to_le_bytes());
        assert_eq!(cap.writable, [0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m.capability(6, 0, 0, 0), Err(MsixError::Bar(6)));
        assert_eq!(m.capability(0, 4, 0, 0), Err(MsixError::Offset(4)));
        assert!(Msix::new(Vec::new()).is_err());
    }

    #[test]
    fn wiring_through_the_config_header() {
        use crate::pci::{ConfigWrite, PciConfig, PciHeader};
        let (mut m, f) = msix(4);
        let mut c = PciConfig::new(&PciHeader::default());
        let cap = m.capability(1, 0, 1, 0x800).unwrap();
        let at = c.add_capability(&cap.bytes, &cap.writable).unwrap();
        program(&mut m, 3, 0xfee0_0000, 7);
        // The guest sets enable and tries to change the table size.
        let w = c.write_reg(at / 4, 2, &0xffffu16.to_le_bytes());
        assert_eq!(w, ConfigWrite::Capability(at));
        m.set_control(c.read_u16(at + MSIX_CONTROL));
        assert!(m.enabled() && m.function_masked());
        assert_eq!(c.read_u16(at + MSIX_CONTROL), ENABLE | FMASK | 3);
        assert!(m.trigger(3));
        assert_eq!(f[3].triggers(), 0);
        c.write_reg(at / 4, 3, &[0x80]);
        m.set_control(c.read_u16(at + MSIX_CONTROL));
        assert_eq!(
            f[3].triggers(),
            1,
            "pending vector delivered on function unmask"
        );
        m.reset();
        c.set_capability_bytes(at, MSIX_CONTROL, &m.control().to_le_bytes())
            .unwrap();
        assert_eq!(c.read_u16(at + MSIX_CONTROL), 3);
    }

    #[test]
    fn reset_masks_and_clears() {
        let (mut m, f) = msix(1);
        program(&mut m, 0, 0xfee0_0000, 1);
        m.set_control(ENABLE | FMASK);
        m.trigger(0);
        assert_eq!(m.control(), ENABLE | FMASK);
        m.reset();
        assert_eq!(m.control(), 0, "table size 1 is encoded as 0");
        assert!(!m.enabled() && !m.function_masked() && !m.pending(0));
        assert_eq!(r32(&m, 12), 1);
        assert_eq!(r32(&m, 0), 0);
        assert!(!m.trigger(0));
        m.set_control(ENABLE);
        assert_eq!(f[0].triggers(), 0, "nothing pending survived");
    }
}
