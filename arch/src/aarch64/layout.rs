//! The aarch64 guest physical address map: devices in the first GiB, RAM from 1 GiB (as on
//! QEMU's `virt` machine), the 64-bit PCI window after RAM.
//!
//! ```text
//! 0x0800_0000  GIC distributor                 0x0A00_0000  GICv3 redistributors (128 KiB/vCPU)
//! 0x0801_0000  GICv2 CPU interface             0x1000_0000  PCI 32-bit BAR window (512 MiB)
//! 0x0802_0000  GICv3 ITS                       0x3000_0000  PCI ECAM (256 buses)
//! 0x0900_0000  UART (16550)                    0x4000_0000  RAM: kernel at its start,
//! 0x0901_0000  RTC (PL031)                                  initrd and device tree at its end
//! 0x0902_0000  boot timer                      after RAM    PCI 64-bit BAR window
//! ```

use hypervisor::aarch64::{
    IrqChipConfig, GIC_DIST_SIZE, GIC_V2_CPU_SIZE, GIC_V3_ITS_SIZE, GIC_V3_REDIST_SIZE,
};

use crate::MIB;

pub const GIC_DIST_START: u64 = 0x0800_0000;
pub const GIC_CPU_START: u64 = 0x0801_0000;
pub const GIC_ITS_START: u64 = 0x0802_0000;
pub const UART_START: u64 = 0x0900_0000;
pub const UART_SIZE: u64 = 0x1000;
pub const RTC_START: u64 = 0x0901_0000;
pub const RTC_SIZE: u64 = 0x1000;
/// Boot-timer device: a byte write of 123 at offset 0 logs the time since berth started.
pub const BOOT_TIMER_START: u64 = 0x0902_0000;
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
pub const GIC_REDIST_START: u64 = 0x0A00_0000;
/// The redistributor region holds this many vCPUs.
pub const MAX_CPUS: u32 = 128;
pub const PCI_MMIO32_START: u64 = 0x1000_0000;
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
pub const PCI_ECAM_START: u64 = 0x3000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
pub const RAM_START: u64 = 0x4000_0000;
/// The smallest guest berth accepts; the kernel's own need is checked when loading it.
pub const MIN_MEMORY: u64 = 64 * MIB;
/// Size of the 64-bit PCI BAR window, from the first GiB boundary after RAM.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;

/// Wired interrupts (SPIs; GSI n is SPI n). MSI routes use GSIs from here up.
pub const SPI_COUNT: u32 = 64;
/// SPI of the UART.
pub const UART_SPI: u32 = 1;
/// SPI of the RTC.
pub const RTC_SPI: u32 = 2;
/// SPIs of PCI INTA..INTD (before swizzling by slot).
pub const PCI_INTX_SPI: u32 = 3;

/// The SPI (= GSI) a slot's INTA raises: the standard swizzle the device tree's interrupt-map
/// describes, repeating every four slots.
pub fn pci_intx_spi(slot: u8) -> u32 {
    PCI_INTX_SPI + u32::from(slot) % 4
}

/// Room reserved at the end of RAM for the device tree (the arm64 boot protocol's limit).
pub const FDT_MAX_SIZE: u64 = 2 * MIB;

const _: () = assert!(GIC_DIST_START + GIC_DIST_SIZE <= GIC_CPU_START);
const _: () = assert!(GIC_CPU_START + GIC_V2_CPU_SIZE <= GIC_ITS_START);
const _: () = assert!(GIC_ITS_START + GIC_V3_ITS_SIZE <= UART_START);
const _: () = assert!(UART_START + UART_SIZE <= RTC_START);
const _: () = assert!(RTC_START + RTC_SIZE <= BOOT_TIMER_START);
const _: () = assert!(BOOT_TIMER_START + BOOT_TIMER_SIZE <= GIC_REDIST_START);
const _: () = assert!(GIC_REDIST_START + MAX_CPUS as u64 * GIC_V3_REDIST_SIZE <= PCI_MMIO32_START);
const _: () = assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
const _: () = assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= RAM_START);

/// Guest RAM ranges `(start, size)` for `size` bytes: one range from [`RAM_START`].
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    vec![(RAM_START, size)]
}

/// The 64-bit PCI BAR window `(start, size)`, from the first GiB boundary after RAM.
pub fn pci_mmio64(size: u64) -> (u64, u64) {
    let start = (RAM_START + size).div_ceil(1 << 30) * (1 << 30);
    (start, PCI_MMIO64_SIZE)
}

/// Where the GIC goes, for the hypervisor.
pub fn irq_chip_config(vcpus: u32) -> IrqChipConfig {
    IrqChipConfig {
        vcpus,
        spis: SPI_COUNT,
        dist: GIC_DIST_START,
        redist: GIC_REDIST_START,
        cpu_interface: GIC_CPU_START,
        its: Some(GIC_ITS_START),
    }
}

/// Size of the GICv3 redistributor region for `vcpus` vCPUs.
pub fn redist_size(vcpus: u32) -> u64 {
    u64::from(vcpus) * GIC_V3_REDIST_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_areas_do_not_overlap_each_other_or_ram() {
        let (pci64, pci64_size) = pci_mmio64(2 << 30);
        let mut areas = [
            (GIC_DIST_START, GIC_DIST_SIZE),
            (GIC_CPU_START, GIC_V2_CPU_SIZE),
            (GIC_ITS_START, GIC_V3_ITS_SIZE),
            (UART_START, UART_SIZE),
            (RTC_START, RTC_SIZE),
            (BOOT_TIMER_START, BOOT_TIMER_SIZE),
            (GIC_REDIST_START, redist_size(MAX_CPUS)),
            (PCI_MMIO32_START, PCI_MMIO32_SIZE),
            (PCI_ECAM_START, PCI_ECAM_SIZE),
            (RAM_START, 2 << 30),
            (pci64, pci64_size),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:x?} overlaps {:x?}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn the_64_bit_pci_window_follows_ram_on_a_gib_boundary() {
        assert_eq!(pci_mmio64(512 * MIB).0, 2 << 30);
        assert_eq!(pci_mmio64(3 << 30).0, 4 << 30);
        assert_eq!(pci_mmio64((3 << 30) + 1).0, 5 << 30);
    }
}
