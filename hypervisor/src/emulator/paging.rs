//! Guest linear to guest physical addresses, by walking the guest's page tables as the CPU
//! would: no paging, 32-bit (with 4 MiB pages), PAE, 4-level and 5-level long mode. Access
//! rights are not checked: the instruction already ran far enough on the CPU to reach the
//! device, so its own walk succeeded.

use super::{EmulatorError, GuestRam};
use crate::x86_64::Sregs;

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
/// Bits 12-51 of a 64-bit entry: the next table or the page.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub fn long_mode(sregs: &Sregs) -> bool {
    sregs.efer & EFER_LMA != 0
}

fn entry64(ram: &dyn GuestRam, gpa: u64, gva: u64) -> Result<u64, EmulatorError> {
    let mut b = [0u8; 8];
    if !ram.read(gpa, &mut b) {
        return Err(EmulatorError::PageFault {
            gva,
            why: "a page table is outside guest RAM",
        });
    }
    let e = u64::from_le_bytes(b);
    if e & PRESENT == 0 {
        return Err(EmulatorError::PageFault {
            gva,
            why: "not present",
        });
    }
    Ok(e)
}

/// The guest physical address of `gva`.
pub fn translate(sregs: &Sregs, ram: &dyn GuestRam, gva: u64) -> Result<u64, EmulatorError> {
    if sregs.cr0 & CR0_PG == 0 {
        return Ok(gva & 0xffff_ffff);
    }
    if long_mode(sregs) {
        let levels = if sregs.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        let bits = 12 + 9 * levels;
        // Canonical: the bits above the top one translated repeat it.
        let top = (gva as i64) << (64 - bits) >> (64 - bits);
        if top as u64 != gva {
            return Err(EmulatorError::NonCanonical { gva });
        }
        let mut table = sregs.cr3 & ADDR_MASK;
        for level in (0..levels).rev() {
            let shift = 12 + 9 * level;
            let index = (gva >> shift) & 0x1ff;
            let e = entry64(ram, table + index * 8, gva)?;
            // 1 GiB pages at level 2 (PDPTE), 2 MiB at level 1 (PDE).
            if (level == 1 || level == 2) && e & LARGE != 0 {
                let page = e & ADDR_MASK & !((1u64 << shift) - 1);
                return Ok(page | (gva & ((1u64 << shift) - 1)));
            }
            table = e & ADDR_MASK;
        }
        return Ok(table | (gva & 0xfff));
    }
    let gva = gva & 0xffff_ffff;
    if sregs.cr4 & CR4_PAE != 0 {
        // Four PDPTEs at CR3[31:5], then 2 levels of 512 eight-byte entries.
        let pdpte = entry64(ram, (sregs.cr3 & 0xffff_ffe0) + (gva >> 30) * 8, gva)?;
        let pde = entry64(ram, (pdpte & ADDR_MASK) + ((gva >> 21) & 0x1ff) * 8, gva)?;
        if pde & LARGE != 0 {
            return Ok((pde & ADDR_MASK & !0x1f_ffff) | (gva & 0x1f_ffff));
        }
        let pte = entry64(ram, (pde & ADDR_MASK) + ((gva >> 12) & 0x1ff) * 8, gva)?;
        return Ok((pte & ADDR_MASK) | (gva & 0xfff));
    }
    // 32-bit paging: two levels of 1024 four-byte entries.
    let entry32 = |gpa: u64| -> Result<u64, EmulatorError> {
        let mut b = [0u8; 4];
        if !ram.read(gpa, &mut b) {
            return Err(EmulatorError::PageFault {
                gva,
                why: "a page table is outside guest RAM",
            });
        }
        let e = u64::from(u32::from_le_bytes(b));
        if e & PRESENT == 0 {
            return Err(EmulatorError::PageFault {
                gva,
                why: "not present",
            });
        }
        Ok(e)
    };
    let pde = entry32((sregs.cr3 & 0xffff_f000) + (gva >> 22) * 4)?;
    if pde & LARGE != 0 && sregs.cr4 & CR4_PSE != 0 {
        // PSE-36: bits 13-20 of the entry are physical bits 32-39.
        let high = ((pde >> 13) & 0xff) << 32;
        return Ok(high | (pde & 0xffc0_0000) | (gva & 0x3f_ffff));
    }
    let pte = entry32((pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4)?;
    Ok((pte & 0xffff_f000) | (gva & 0xfff))
}
