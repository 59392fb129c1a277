//! The boot GDT and the segment registers derived from it.

use hypervisor::arch::Segment;

/// Selectors into [`BOOT_GDT`].
pub const CODE64_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;
pub const CODE32_SELECTOR: u16 = 0x20;

/// Builds a GDT entry from access/flags bits (`0xF0FF` layout), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Null, flat 64-bit code, flat data, TSS, flat 32-bit code (for PVH entry).
pub const BOOT_GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
    gdt_entry(0xc09b, 0, 0xfffff),
];

/// The segment register value that loading `selector` from [`BOOT_GDT`] would give.
pub fn segment(selector: u16) -> Segment {
    let entry = BOOT_GDT[usize::from(selector >> 3)];
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let g = (entry >> 55) & 1 == 1;
    let present = (entry >> 47) & 1 == 1;
    Segment {
        base,
        limit: if g {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: (entry >> 54) & 1 == 1,
        s: (entry >> 44) & 1 == 1,
        l: (entry >> 53) & 1 == 1,
        g,
        avl: (entry >> 52) & 1 == 1,
        unusable: !present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_is_long_mode_executable() {
        let cs = segment(CODE64_SELECTOR);
        assert!(cs.l && !cs.db && cs.present && cs.s && cs.g);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
    }

    #[test]
    fn code32_and_data_are_flat_32bit() {
        let cs = segment(CODE32_SELECTOR);
        assert!(!cs.l && cs.db);
        let ds = segment(DATA_SELECTOR);
        assert_eq!(ds.type_, 0x3);
        assert!(ds.db && ds.present);
        let tr = segment(TSS_SELECTOR);
        assert!(!tr.s);
        assert_eq!(tr.type_, 0xb);
    }

    #[test]
    fn entry_encoding_matches_the_sdm() {
        // Flat 64-bit code segment as Linux itself encodes it (GDT_ENTRY(0xa09b, 0, 0xfffff)).
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0x1234_5678, 0x10), 0x1280_8b34_5678_0010);
    }
}
