//! The x86_64 guest physical address map.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (unused)         0x9_fc00  EBDA (reserved, ACPI RSDP later)
//! 0x0000_0500  GDT, IDT                             0x0010_0000  kernel (bzImage code32_start)
//! 0x0000_6000  PVH start_info + memory map          ...          initrd at the top of low RAM
//! 0x0000_7000  zero page (boot_params)              0xC000_0000  32-bit MMIO hole start
//! 0x0000_8ff0  boot stack                             0xC000_0000..0xE000_0000 PCI 32-bit BARs
//! 0x0000_9000  page tables (PML4, PDPT, 4 PDs)        0xE000_0000..0xF000_0000 PCI ECAM
//! 0x0002_0000  kernel command line                    0xF000_0000 boot timer
//!                                                     0xFEC0_0000 IOAPIC, 0xFEE0_0000 LAPIC
//! 0x1_0000_0000 RAM above the hole, if any
//! ```

/// GDT location.
pub const GDT_START: u64 = 0x500;
/// IDT location (empty; the kernel installs its own).
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map and module list.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// First page-table page (PML4).
pub const PML4_START: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we reserve room for (before the kernel's own limit applies).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// The x86 reset vector (F000:FFF0). Linux jumps here in real mode when it reboots "through the
/// BIOS" (its choice on hardware-reduced ACPI platforms without EFI); berth puts a reset stub here.
pub const RESET_VECTOR: u64 = 0xF_FFF0;
/// The kernel is loaded here (and RAM is contiguous from here on).
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole; low RAM ends here at the latest.
pub const MMIO32_START: u64 = 0xC000_0000;
/// PCI 32-bit BAR window.
pub const PCI_MMIO32_START: u64 = 0xC000_0000;
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI ECAM (256 buses).
pub const PCI_ECAM_START: u64 = 0xE000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// Boot-timer device: a byte write of 123 at offset 0 logs the time since berth started.
pub const BOOT_TIMER_START: u64 = 0xF000_0000;
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// IOAPIC and local APIC (both emulated in the hypervisor).
pub const IOAPIC_START: u64 = 0xFEC0_0000;
pub const LAPIC_START: u64 = 0xFEE0_0000;
/// End of the 32-bit hole; RAM resumes here.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// The smallest guest berth accepts; the kernel's own need is checked when loading it.
pub const MIN_MEMORY: u64 = 16 << 20;

// The fixed MMIO areas are ordered and disjoint; the stack grows down below the page tables.
const _: () = assert!(BOOT_STACK_POINTER < PML4_START);
// The reset stub lies in the e820 hole between the EBDA and 1 MiB, which the kernel never uses.
const _: () = assert!(RESET_VECTOR > EBDA_START && RESET_VECTOR + 16 <= HIGH_RAM_START);
const _: () = assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
const _: () = assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= BOOT_TIMER_START);
const _: () = assert!(BOOT_TIMER_START + BOOT_TIMER_SIZE <= IOAPIC_START);

/// Guest RAM ranges `(start, size)` for `size` bytes: below the MMIO hole, the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO32_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO32_START), (FOUR_GIB, size - MMIO32_START)]
    }
}

/// End (exclusive) of RAM below 4 GiB.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO32_START)
}

/// Size of the 64-bit PCI BAR window.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;

/// The 64-bit PCI BAR window `(start, size)`: from the first 1 GiB boundary after the end of
/// RAM (or 4 GiB). 64 GiB keeps it inside a 40-bit guest physical address space, the smallest
/// common one, for guests of up to ~900 GiB.
pub fn pci_mmio64(size: u64) -> (u64, u64) {
    let ram_end = FOUR_GIB + size.saturating_sub(MMIO32_START);
    let start = ram_end.div_ceil(1 << 30) * (1 << 30);
    (start, PCI_MMIO64_SIZE)
}

/// The e820 RAM map for `size` bytes of guest memory: (start, size) of usable ranges.
pub fn e820_ram(size: u64) -> Vec<(u64, u64)> {
    let mut map = vec![(0, EBDA_START)];
    let low_end = low_ram_end(size);
    if low_end > HIGH_RAM_START {
        map.push((HIGH_RAM_START, low_end - HIGH_RAM_START));
    }
    if size > MMIO32_START {
        map.push((FOUR_GIB, size - MMIO32_START));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(
            e820_ram(512 << 20),
            vec![
                (0, EBDA_START),
                (HIGH_RAM_START, (512 << 20) - HIGH_RAM_START)
            ]
        );
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let size = 6u64 << 30;
        let r = ram_ranges(size);
        assert_eq!(r, vec![(0, MMIO32_START), (FOUR_GIB, size - MMIO32_START)]);
        assert_eq!(r.iter().map(|x| x.1).sum::<u64>(), size);
        let e = e820_ram(size);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1], (HIGH_RAM_START, MMIO32_START - HIGH_RAM_START));
        assert_eq!(e[2], (FOUR_GIB, size - MMIO32_START));
    }

    #[test]
    fn the_64_bit_pci_window_follows_ram_on_a_gib_boundary() {
        assert_eq!(pci_mmio64(512 << 20), (FOUR_GIB, PCI_MMIO64_SIZE));
        let (start, _) = pci_mmio64(6 << 30);
        assert_eq!(start, FOUR_GIB + (3 << 30));
        let (start, _) = pci_mmio64((6 << 30) + 1);
        assert_eq!(start, FOUR_GIB + (4 << 30));
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        let areas = [
            (GDT_START, 0x40),
            (PVH_INFO_START, 0x1000),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 6 * 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        for (i, a) in areas.iter().enumerate() {
            assert!(a.0 + a.1 <= EBDA_START);
            for b in &areas[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
        }
    }
}
