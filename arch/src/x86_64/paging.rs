//! Identity page tables for the 64-bit boot entry: the first 4 GiB in 2 MiB pages.

use vm_memory::{Bytes, GuestAddress};

use super::layout::PML4_START;
use crate::{Error, GuestMemory, Result};

const PAGE: u64 = 0x1000;
/// Present | writable.
const TABLE_FLAGS: u64 = 0x3;
/// Present | writable | page size (2 MiB).
const LARGE_PAGE_FLAGS: u64 = 0x83;
/// 4 page directories of 512 x 2 MiB cover 4 GiB.
const PD_COUNT: u64 = 4;

/// Writes PML4, PDPT and page directories; returns the value for CR3.
pub fn write_identity_tables(mem: &GuestMemory) -> Result<u64> {
    let pdpt = PML4_START + PAGE;
    let pd0 = pdpt + PAGE;
    let write = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|e| Error::GuestMemory(format!("page tables: {e}")))
    };
    write(PML4_START, pdpt | TABLE_FLAGS)?;
    for i in 0..PD_COUNT {
        write(pdpt + i * 8, (pd0 + i * PAGE) | TABLE_FLAGS)?;
        for j in 0..512 {
            let phys = ((i << 9) + j) << 21;
            write(pd0 + i * PAGE + j * 8, phys | LARGE_PAGE_FLAGS)?;
        }
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU for a 2 MiB mapping.
    fn translate(mem: &GuestMemory, cr3: u64, va: u64) -> Option<u64> {
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let pml4e = read(cr3 + ((va >> 39) & 0x1ff) * 8);
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8);
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8);
        if pde & 0x81 != 0x81 {
            return None;
        }
        Some((pde & !0x1f_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn identity_maps_first_four_gib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem).unwrap();
        for va in [
            0u64,
            0x7000,
            0x100_0000,
            0x1234_5678,
            0xC000_0000,
            0xFFFF_FFFF,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&mem, cr3, 0x1_0000_0000), None);
    }
}
