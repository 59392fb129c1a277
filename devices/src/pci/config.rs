//! A type 0 configuration header: identity, memory BARs, the command register and a
//! capability chain. Only the first 256 bytes hold anything; the PCIe extended space reads 0,
//! which tells the guest there are no extended capabilities.

use thiserror::Error;

use crate::log_limited;

/// Type 0 headers have six BAR registers.
pub const NUM_BARS: usize = 6;
/// Dwords in a function's configuration space (4 KiB through ECAM).
pub const NUM_REGS: usize = 1024;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;

const STD_SIZE: usize = 256;
const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const CAP_PTR: usize = 0x34;
const INT_LINE: usize = 0x3c;
const FIRST_CAP: usize = 0x40;
/// Low BAR bits: bits 2:1 = 0b10 for 64-bit, bit 3 prefetchable; bit 0 = 0 (memory).
const BAR_64BIT: u32 = 0b100;
const BAR_PREFETCH: u32 = 0b1000;
const BAR_FLAGS: u32 = 0xf;

/// A memory BAR's type. A 64-bit BAR takes its register and the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Mem32 { prefetchable: bool },
    Mem64 { prefetchable: bool },
}

/// The identity a function shows in its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// 0 for none, 1..=4 for INTA#..INTD#.
    pub interrupt_pin: u8,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("BAR index {0} is out of range (a 64-bit BAR needs two registers)")]
    BarIndex(usize),
    #[error("BAR register {0} is already in use")]
    BarInUse(usize),
    #[error("BAR size {0:#x} is not a power of two >= 16 (or too big for a 32-bit BAR)")]
    BarSize(u64),
    #[error("BAR address {addr:#x} is not aligned to size {size:#x} or out of the BAR's reach")]
    BarAddr { addr: u64, size: u64 },
    #[error("capability of {0} bytes is shorter than its header or does not fit")]
    CapabilitySize(usize),
    #[error("no capability at {cap:#x} holds {len} bytes at {at} past its header")]
    CapabilityRange { cap: usize, at: usize, len: usize },
    #[error("capability mask has {mask} bytes for {len} capability bytes")]
    CapabilityMask { len: usize, mask: usize },
}

/// What a guest configuration write changed that the owner may have to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigWrite {
    /// Nothing to act on: a header register, or an ignored write.
    Other,
    /// BAR `index` (its first register) now holds another address. Sizing probes and the
    /// halves of a 64-bit BAR being rewritten one at a time report intermediate addresses.
    BarMoved { index: usize, old: u64, new: u64 },
    /// The write fell in the capability at this offset (as returned by
    /// [`PciConfig::add_capability`]); re-read it to see what changed.
    Capability(usize),
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    kind: BarKind,
    size: u64,
}

/// A type 0 configuration header with its writable bits.
pub struct PciConfig {
    bytes: [u8; STD_SIZE],
    /// Bits the guest may change, byte by byte.
    writable: [u8; STD_SIZE],
    bars: [Option<Bar>; NUM_BARS],
    /// (offset, length) of each capability, in chain order.
    caps: Vec<(usize, usize)>,
}

impl PciConfig {
    pub fn new(h: &PciHeader) -> Self {
        let mut c = PciConfig {
            bytes: [0; STD_SIZE],
            writable: [0; STD_SIZE],
            bars: [None; NUM_BARS],
            caps: Vec::new(),
        };
        c.set(0x00, &h.vendor_id.to_le_bytes());
        c.set(0x02, &h.device_id.to_le_bytes());
        c.set(0x08, &[h.revision, h.prog_if, h.subclass, h.class]);
        c.set(0x2c, &h.subsystem_vendor_id.to_le_bytes());
        c.set(0x2e, &h.subsystem_id.to_le_bytes());
        c.set(INT_LINE + 1, &[h.interrupt_pin]);
        let cmd = COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        c.writable[COMMAND..COMMAND + 2].copy_from_slice(&cmd.to_le_bytes());
        c.writable[INT_LINE] = 0xff;
        c
    }

    fn set(&mut self, at: usize, b: &[u8]) {
        self.bytes[at..at + b.len()].copy_from_slice(b);
    }

    fn dword(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    /// Host-side read of 16 bits at byte `offset` of the standard space (0 beyond it), e.g.
    /// a capability's control field after [`ConfigWrite::Capability`].
    pub fn read_u16(&self, offset: usize) -> u16 {
        match self.bytes.get(offset..offset.saturating_add(2)) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => 0,
        }
    }

    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    /// Declares BAR `index` at `addr` with `size` bytes. The guest may move it later.
    pub fn add_bar(
        &mut self,
        index: usize,
        kind: BarKind,
        addr: u64,
        size: u64,
    ) -> Result<(), PciConfigError> {
        let (is64, prefetchable, max_size) = match kind {
            BarKind::Mem32 { prefetchable } => (false, prefetchable, 1 << 31),
            BarKind::Mem64 { prefetchable } => (true, prefetchable, 1 << 63),
        };
        let regs = if is64 { 2 } else { 1 };
        if index + regs > NUM_BARS {
            return Err(PciConfigError::BarIndex(index));
        }
        if let Some(r) = (index..index + regs).find(|&r| self.bar_reg_in_use(r)) {
            return Err(PciConfigError::BarInUse(r));
        }
        if !size.is_power_of_two() || size < 16 || size > max_size {
            return Err(PciConfigError::BarSize(size));
        }
        if addr & (size - 1) != 0 || (!is64 && addr > u64::from(u32::MAX)) {
            return Err(PciConfigError::BarAddr { addr, size });
        }
        let mut flags = if is64 { BAR_64BIT } else { 0 };
        if prefetchable {
            flags |= BAR_PREFETCH;
        }
        let at = BAR0 + index * 4;
        let mask = !(size - 1);
        self.set(at, &(addr as u32 | flags).to_le_bytes());
        self.writable[at..at + 4].copy_from_slice(&(mask as u32 & !BAR_FLAGS).to_le_bytes());
        if is64 {
            self.set(at + 4, &((addr >> 32) as u32).to_le_bytes());
            self.writable[at + 4..at + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(Bar { kind, size });
        Ok(())
    }

    /// Whether BAR register `r` is a BAR or the upper half of a 64-bit one.
    fn bar_reg_in_use(&self, r: usize) -> bool {
        self.bars[r].is_some() || (r > 0 && self.is_upper_half(r))
    }

    fn is_upper_half(&self, r: usize) -> bool {
        matches!(
            self.bars[r - 1],
            Some(Bar {
                kind: BarKind::Mem64 { .. },
                ..
            })
        )
    }

    /// The BAR whose registers include `reg` (a dword index), as its first register index.
    fn bar_of_reg(&self, reg: usize) -> Option<usize> {
        let r = reg.checked_sub(BAR0 / 4).filter(|&r| r < NUM_BARS)?;
        if self.bars[r].is_some() {
            Some(r)
        } else if r > 0 && self.is_upper_half(r) {
            Some(r - 1)
        } else {
            None
        }
    }

    /// The address BAR `index` holds now; None if there is no BAR there.
    pub fn bar_addr(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index)?.as_ref()?;
        let at = BAR0 + index * 4;
        let low = u64::from(self.dword(at) & !BAR_FLAGS);
        Some(match bar.kind {
            BarKind::Mem32 { .. } => low,
            BarKind::Mem64 { .. } => low | u64::from(self.dword(at + 4)) << 32,
        })
    }

    pub fn bar_size(&self, index: usize) -> Option<u64> {
        Some(self.bars.get(index)?.as_ref()?.size)
    }

    /// Appends a capability (`bytes[0]` its id; `bytes[1]`, the next pointer, is filled in)
    /// to the chain and returns its offset. The guest may change only the bits set in
    /// `writable` (same length as `bytes`); the id and next pointer are never writable.
    pub fn add_capability(
        &mut self,
        bytes: &[u8],
        writable: &[u8],
    ) -> Result<usize, PciConfigError> {
        let len = bytes.len();
        if writable.len() != len {
            return Err(PciConfigError::CapabilityMask {
                len,
                mask: writable.len(),
            });
        }
        let at = match self.caps.last() {
            Some(&(o, l)) => (o + l).next_multiple_of(4),
            None => FIRST_CAP,
        };
        if len < 2 || at + len > STD_SIZE {
            return Err(PciConfigError::CapabilitySize(len));
        }
        self.set(at, bytes);
        self.bytes[at + 1] = 0;
        self.writable[at..at + len].copy_from_slice(writable);
        self.writable[at..at + 2].fill(0);
        let link = self.caps.last().map_or(CAP_PTR, |&(o, _)| o + 1);
        self.bytes[link] = at as u8;
        let status = self.read_u16(STATUS) | STATUS_CAP_LIST;
        self.set(STATUS, &status.to_le_bytes());
        self.caps.push((at, len));
        Ok(at)
    }

    /// Host-side write of `bytes` at `at` bytes into the capability at `cap`, whatever the
    /// writable mask says: for fields the device updates (an MSI-X control reset, a
    /// virtio PCI_CFG data window). The id and next pointer stay out of reach.
    pub fn set_capability_bytes(
        &mut self,
        cap: usize,
        at: usize,
        bytes: &[u8],
    ) -> Result<(), PciConfigError> {
        let fits = self.caps.iter().any(|&(o, l)| {
            o == cap && at >= 2 && at.checked_add(bytes.len()).is_some_and(|end| end <= l)
        });
        if !fits {
            return Err(PciConfigError::CapabilityRange {
                cap,
                at,
                len: bytes.len(),
            });
        }
        self.set(cap + at, bytes);
        Ok(())
    }

    /// Guest read of dword `reg`: 0 in the extended space, all ones beyond 4 KiB.
    pub fn read_reg(&self, reg: usize) -> u32 {
        if reg < STD_SIZE / 4 {
            self.dword(reg * 4)
        } else if reg < NUM_REGS {
            0
        } else {
            u32::MAX
        }
    }

    /// Guest write of `data` (1, 2 or 4 bytes) at byte `offset` of dword `reg`; only
    /// writable bits change. Other widths and accesses crossing the dword are ignored.
    pub fn write_reg(&mut self, reg: usize, offset: usize, data: &[u8]) -> ConfigWrite {
        if !valid_access(offset, data.len()) {
            log_limited!(
                log::Level::Debug,
                "pci config: {}-byte write at reg {reg:#x} + {offset} ignored",
                data.len()
            );
            return ConfigWrite::Other;
        }
        if reg >= STD_SIZE / 4 {
            return ConfigWrite::Other;
        }
        let bar = self.bar_of_reg(reg);
        let old = bar.and_then(|i| self.bar_addr(i));
        let start = reg * 4 + offset;
        for (i, &b) in data.iter().enumerate() {
            let m = self.writable[start + i];
            let cur = &mut self.bytes[start + i];
            *cur = (*cur & !m) | (b & m);
        }
        if let Some(index) = bar {
            let new = self.bar_addr(index);
            if let (Some(old), Some(new)) = (old, new) {
                if old != new {
                    return ConfigWrite::BarMoved { index, old, new };
                }
            }
            return ConfigWrite::Other;
        }
        // Capabilities start on dwords, so a dword belongs to at most one.
        let dw = reg * 4;
        match self.caps.iter().find(|&&(o, l)| dw >= o && dw < o + l) {
            Some(&(o, _)) => ConfigWrite::Capability(o),
            None => ConfigWrite::Other,
        }
    }

    /// Which BAR decodes guest address `addr`, and the offset in it. Nothing decodes while
    /// memory space is disabled; a BAR at address 0 counts as unassigned.
    /// The BARs that decode now: (index, base, size); none while memory decoding is off.
    pub fn decoding_bars(&self) -> Vec<(usize, u64, u64)> {
        if self.command() & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        (0..NUM_BARS)
            .filter_map(|i| {
                let size = self.bars[i]?.size;
                let base = self.bar_addr(i).filter(|&b| b != 0)?;
                Some((i, base, size))
            })
            .collect()
    }

    pub fn decode(&self, addr: u64) -> Option<(usize, u64)> {
        if self.command() & COMMAND_MEMORY == 0 {
            return None;
        }
        (0..NUM_BARS).find_map(|i| {
            let size = self.bars[i]?.size;
            let base = self.bar_addr(i).filter(|&b| b != 0)?;
            let off = addr.checked_sub(base)?;
            (off < size).then_some((i, off))
        })
    }
}

/// A 1-, 2- or 4-byte access inside one dword.
pub(crate) fn valid_access(offset: usize, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && offset.checked_add(len).is_some_and(|end| end <= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            class: 0x02,
            subclass: 0x00,
            prog_if: 0x00,
            revision: 0x01,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x0040,
            interrupt_pin: 1,
        }
    }

    fn config() -> PciConfig {
        PciConfig::new(&header())
    }

    fn write32(c: &mut PciConfig, reg: usize, v: u32) -> ConfigWrite {
        c.write_reg(reg, 0, &v.to_le_bytes())
    }

    const BAR_REG: usize = BAR0 / 4;

    #[test]
    fn header_fields_read_back() {
        let c = config();
        assert_eq!(c.read_reg(0), 0x1041_1af4);
        assert_eq!(c.read_reg(2), 0x0200_0001);
        assert_eq!(c.read_reg(0x2c / 4), 0x0040_1af4);
        assert_eq!(c.read_reg(0x3c / 4), 0x0000_0100);
        assert_eq!(c.read_reg(1) >> 16 & u32::from(STATUS_CAP_LIST), 0);
        assert_eq!(c.read_reg(0x34 / 4), 0, "no capabilities");
    }

    #[test]
    fn out_of_range_regs_read_as_pci_expects() {
        let mut c = config();
        assert_eq!(c.read_reg(64), 0, "extended space is empty");
        assert_eq!(c.read_reg(NUM_REGS - 1), 0);
        assert_eq!(c.read_reg(NUM_REGS), u32::MAX);
        assert_eq!(c.read_reg(usize::MAX), u32::MAX);
        assert_eq!(write32(&mut c, usize::MAX, 0), ConfigWrite::Other);
        assert_eq!(c.write_reg(0, usize::MAX, &[1]), ConfigWrite::Other);
    }

    #[test]
    fn bar32_sizing_probe_and_restore() {
        let mut c = config();
        c.add_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0xe000_0000,
            0x1000,
        )
        .unwrap();
        assert_eq!(c.read_reg(BAR_REG), 0xe000_0000);
        write32(&mut c, BAR_REG, u32::MAX);
        assert_eq!(c.read_reg(BAR_REG), 0xffff_f000);
        write32(&mut c, BAR_REG, 0xe000_0000);
        assert_eq!(c.bar_addr(0), Some(0xe000_0000));
        assert_eq!(c.bar_size(0), Some(0x1000));
        assert_eq!(c.read_reg(BAR_REG + 1), 0, "no BAR 1");
    }

    #[test]
    fn bar64_sizing_probe_on_both_halves() {
        let mut c = config();
        let kind = BarKind::Mem64 { prefetchable: true };
        c.add_bar(2, kind, 0x2_0000_0000, 0x2_0000_0000).unwrap();
        let (lo, hi) = (BAR_REG + 2, BAR_REG + 3);
        assert_eq!(c.read_reg(lo), 0b1100, "64-bit, prefetchable");
        assert_eq!(c.read_reg(hi), 2);
        write32(&mut c, lo, u32::MAX);
        write32(&mut c, hi, u32::MAX);
        let probed = u64::from(c.read_reg(hi)) << 32 | u64::from(c.read_reg(lo) & !0xf);
        assert_eq!(!probed + 1, 0x2_0000_0000);
        assert_eq!(c.read_reg(lo) & 0xf, 0b1100, "flags survive the probe");

        let mut c = config();
        c.add_bar(0, kind, 0, 0x4000).unwrap();
        write32(&mut c, BAR_REG, u32::MAX);
        write32(&mut c, BAR_REG + 1, u32::MAX);
        assert_eq!(c.read_reg(BAR_REG), 0xffff_c00c);
        assert_eq!(c.read_reg(BAR_REG + 1), u32::MAX);
    }

    #[test]
    fn bad_bars_are_rejected() {
        let mut c = config();
        let m32 = BarKind::Mem32 {
            prefetchable: false,
        };
        let m64 = BarKind::Mem64 {
            prefetchable: false,
        };
        assert_eq!(c.add_bar(0, m32, 0, 8), Err(PciConfigError::BarSize(8)));
        assert_eq!(c.add_bar(0, m32, 0, 48), Err(PciConfigError::BarSize(48)));
        assert_eq!(c.add_bar(0, m32, 0, 0), Err(PciConfigError::BarSize(0)));
        assert!(c.add_bar(0, m32, 0, 1 << 32).is_err());
        assert!(c.add_bar(0, m32, 0x10, 0x100).is_err(), "misaligned");
        assert!(c.add_bar(0, m32, 1 << 32, 0x100).is_err(), "above 4 GiB");
        assert_eq!(c.add_bar(5, m64, 0, 16), Err(PciConfigError::BarIndex(5)));
        assert_eq!(c.add_bar(6, m32, 0, 16), Err(PciConfigError::BarIndex(6)));
        c.add_bar(0, m64, 0, 16).unwrap();
        assert_eq!(c.add_bar(1, m32, 0, 16), Err(PciConfigError::BarInUse(1)));
        assert_eq!(c.add_bar(0, m32, 0, 16), Err(PciConfigError::BarInUse(0)));
        c.add_bar(2, m32, 0, 16).unwrap();
        assert_eq!(c.add_bar(1, m64, 0, 16), Err(PciConfigError::BarInUse(1)));
    }

    #[test]
    fn moving_a_bar_moves_decoding() {
        let mut c = config();
        c.add_bar(
            0,
            BarKind::Mem64 {
                prefetchable: false,
            },
            0x1000_0000,
            0x4000,
        )
        .unwrap();
        write32(&mut c, 1, u32::from(COMMAND_MEMORY));
        assert_eq!(c.decode(0x1000_0010), Some((0, 0x10)));
        assert_eq!(
            write32(&mut c, BAR_REG + 1, 0x2),
            ConfigWrite::BarMoved {
                index: 0,
                old: 0x1000_0000,
                new: 0x2_1000_0000
            }
        );
        assert_eq!(c.decode(0x1000_0010), None);
        assert_eq!(c.decode(0x2_1000_3fff), Some((0, 0x3fff)));
        assert_eq!(c.decode(0x2_1000_4000), None);
        assert_eq!(c.decode(0x2_0fff_ffff), None);
        // Rewriting the same address is no move; low bits below the size are dropped.
        assert_eq!(write32(&mut c, BAR_REG, 0x1000_0fff), ConfigWrite::Other);
        assert_eq!(c.bar_addr(0), Some(0x2_1000_0000));
    }

    #[test]
    fn command_register_gates_decoding_and_masks_writes() {
        let mut c = config();
        c.add_bar(
            1,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0x8000,
            0x100,
        )
        .unwrap();
        assert_eq!(c.decode(0x8000), None, "memory space off at reset");
        c.write_reg(1, 0, &[0xff, 0xff]);
        assert_eq!(
            c.command(),
            COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
        );
        assert_eq!(c.decode(0x80ff), Some((1, 0xff)));
        c.write_reg(1, 0, &[0x04]);
        assert_eq!(c.decode(0x8000), None);
        // Status is read-only (no capabilities yet, so bit 4 stays clear).
        c.write_reg(1, 2, &[0xff, 0xff]);
        assert_eq!(c.read_reg(1) >> 16, 0);
    }

    #[test]
    fn hostile_bar_values_do_not_wrap() {
        let mut c = config();
        c.add_bar(
            0,
            BarKind::Mem64 {
                prefetchable: false,
            },
            0,
            0x1000,
        )
        .unwrap();
        c.add_bar(
            2,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0,
            0x10,
        )
        .unwrap();
        write32(&mut c, 1, u32::from(COMMAND_MEMORY));
        for r in BAR_REG..BAR_REG + 3 {
            write32(&mut c, r, u32::MAX);
        }
        assert_eq!(c.bar_addr(0), Some(0xffff_ffff_ffff_f000));
        assert_eq!(c.decode(u64::MAX), Some((0, 0xfff)));
        assert_eq!(c.decode(0xffff_ffff_ffff_efff), None);
        assert_eq!(c.decode(0), None);
        assert_eq!(c.decode(0xf), None, "nothing wrapped around to 0");
        assert_eq!(c.bar_addr(2), Some(0xffff_fff0));
        assert_eq!(c.decode(0xffff_ffff), Some((2, 0xf)));
        assert_eq!(c.decode(0x1_0000_0000), None);
    }

    #[test]
    fn capability_chain_walks_from_0x34() {
        let mut c = config();
        let a = c.add_capability(&[0x09, 0xee, 1, 2, 3], &[0; 5]).unwrap();
        let b = c
            .add_capability(&[0x11, 0, 0, 0, 0, 0, 0, 0], &[0; 8])
            .unwrap();
        assert_eq!((a, b), (0x40, 0x48));
        assert_ne!(c.read_reg(1) >> 16 & u32::from(STATUS_CAP_LIST), 0);
        let mut ptr = c.read_reg(0x34 / 4) as usize & 0xff;
        let mut seen = Vec::new();
        while ptr != 0 {
            let v = c.read_reg(ptr / 4);
            seen.push((ptr, v & 0xff));
            ptr = (v >> 8 & 0xff) as usize;
        }
        assert_eq!(seen, [(0x40, 0x09), (0x48, 0x11)]);
        assert_eq!(c.read_reg(0x40 / 4) >> 16, 0x0201, "payload kept");
        assert_eq!(
            c.add_capability(&[1; 200], &[0; 200]),
            Err(PciConfigError::CapabilitySize(200))
        );
        assert!(c.add_capability(&[1], &[0]).is_err());
        assert!(c.add_capability(&[1, 0, 0], &[0; 2]).is_err());
    }

    #[test]
    fn capability_writes_respect_the_mask_and_name_the_capability() {
        let mut c = config();
        c.add_capability(&[0x09, 0, 0, 0], &[0; 4]).unwrap();
        let off = c
            .add_capability(
                &[0x11, 0, 0x03, 0x00, 0xaa, 0xbb],
                &[0xff, 0xff, 0, 0xc0, 0, 0xff],
            )
            .unwrap();
        assert_eq!(off, 0x44);
        let reg = off / 4;
        assert_eq!(
            c.write_reg(reg, 0, &[0xff; 4]),
            ConfigWrite::Capability(off)
        );
        assert_eq!(c.read_reg(reg), 0xc003_0011, "id, next, low control fixed");
        assert_eq!(c.read_u16(off + 2), 0xc003);
        assert_eq!(
            c.write_reg(reg + 1, 0, &[0, 0]),
            ConfigWrite::Capability(off)
        );
        assert_eq!(c.read_reg(reg + 1), 0x00aa);
        assert_eq!(
            c.write_reg(0x40 / 4, 0, &[0xff; 4]),
            ConfigWrite::Capability(0x40)
        );
        assert_eq!(c.read_reg(0x40 / 4), 0x4409, "next pointer not writable");
        assert_eq!(write32(&mut c, 0x60 / 4, u32::MAX), ConfigWrite::Other);
        assert_eq!(c.read_reg(0x60 / 4), 0);
    }

    #[test]
    fn host_side_capability_writes_stay_inside_the_capability() {
        let mut c = config();
        let off = c.add_capability(&[0x09, 0, 1, 2, 3, 4], &[0; 6]).unwrap();
        c.set_capability_bytes(off, 3, &[0xaa, 0xbb, 0xcc]).unwrap();
        assert_eq!(c.read_reg(off / 4), 0xaa01_0009);
        assert_eq!(c.read_reg(off / 4 + 1), 0xccbb);
        let bad = |at, len| PciConfigError::CapabilityRange { cap: off, at, len };
        assert_eq!(c.set_capability_bytes(off, 5, &[0; 2]), Err(bad(5, 2)));
        assert_eq!(c.set_capability_bytes(off, 1, &[0]), Err(bad(1, 1)));
        assert_eq!(
            c.set_capability_bytes(off, usize::MAX, &[0]),
            Err(bad(usize::MAX, 1))
        );
        assert!(
            c.set_capability_bytes(0x44, 2, &[0]).is_err(),
            "no capability there"
        );
        assert_eq!(c.read_reg(off / 4 + 1), 0xccbb);
    }

    #[test]
    fn read_only_header_and_interrupt_line() {
        let mut c = config();
        let before: Vec<u32> = (0..16).map(|r| c.read_reg(r)).collect();
        for r in [0, 2, 3, 0x2c / 4, 0x30 / 4, 0x34 / 4] {
            write32(&mut c, r, u32::MAX);
        }
        let after: Vec<u32> = (0..16).map(|r| c.read_reg(r)).collect();
        assert_eq!(before, after);
        c.write_reg(0x3c / 4, 0, &[0x0b]);
        c.write_reg(0x3c / 4, 1, &[0x04]);
        assert_eq!(c.read_reg(0x3c / 4), 0x010b, "line writable, pin not");
    }

    #[test]
    fn odd_widths_and_straddling_writes_are_ignored() {
        let mut c = config();
        c.write_reg(1, 0, &[0xff, 0xff, 0xff]);
        c.write_reg(1, 2, &[0xff; 4]);
        c.write_reg(1, 3, &[0x06, 0x06]);
        c.write_reg(1, 0, &[0xff; 8]);
        c.write_reg(1, 0, &[]);
        assert_eq!(c.command(), 0);
        c.write_reg(1, 1, &[0x04]);
        assert_eq!(c.command(), COMMAND_INTX_DISABLE, "an in-dword byte works");
    }
}
