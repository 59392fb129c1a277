//! The device tree the aarch64 kernel boots with (built with vm-fdt): CPUs started through PSCI,
//! memory, chosen (command line, initrd, console), the GIC, the architected timer, the UART,
//! the RTC and the PCI host bridge with its INTx map and MSI map.

use hypervisor::aarch64::{GicVersion, GIC_DIST_SIZE, GIC_V2_CPU_SIZE, GIC_V3_ITS_SIZE};
use vm_fdt::{FdtWriter, FdtWriterResult};

use super::layout::{
    redist_size, GIC_CPU_START, GIC_DIST_START, GIC_ITS_START, GIC_REDIST_START, PCI_ECAM_SIZE,
    PCI_ECAM_START, PCI_INTX_SPI, PCI_MMIO32_SIZE, PCI_MMIO32_START, RAM_START, RTC_SIZE, RTC_SPI,
    RTC_START, UART_SIZE, UART_SPI, UART_START,
};
use crate::{Error, Result};

const PHANDLE_GIC: u32 = 1;
const PHANDLE_ITS: u32 = 2;
const PHANDLE_CLOCK: u32 = 3;

// Interrupt specifier cells of the GIC binding: type, number, flags.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
const IRQ_TYPE_LEVEL_LOW: u32 = 8;

/// The 16550's input clock (the PC standard; the kernel derives baud divisors from it).
const UART_CLOCK_HZ: u32 = 1_843_200;
/// The clock the PL031 binding requires ("apb_pclk"); its rate does not matter to the RTC.
const APB_CLOCK_HZ: u32 = 24_000_000;

/// What the device tree describes.
#[derive(Clone, Debug)]
pub struct FdtConfig<'a> {
    /// MPIDR_EL1 of each vCPU, in vCPU order.
    pub mpidrs: &'a [u64],
    pub mem_size: u64,
    pub cmdline: &'a str,
    /// Initrd placement `(address, size)`.
    pub initrd: Option<(u64, u64)>,
    pub gic: GicVersion,
    /// Describe the PL031 RTC.
    pub rtc: bool,
    /// 64-bit PCI BAR window `(start, size)`.
    pub pci_mmio64: (u64, u64),
}

/// Node name of the UART, for `stdout-path`.
pub fn uart_node_name() -> String {
    format!("uart@{UART_START:x}")
}

/// Builds the flattened device tree blob.
pub fn create_fdt(cfg: &FdtConfig<'_>) -> Result<Vec<u8>> {
    // CPU nodes are named by MPIDR: two alike would make a tree the kernel rejects.
    let mut ids = cfg.mpidrs.to_vec();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::Fdt("two vCPUs report the same MPIDR".into()));
    }
    // The loader placed the initrd in RAM; anything else is a caller's bug, refused rather
    // than written as a range that wraps (found by the `fdt` fuzz target).
    if let Some((start, size)) = cfg.initrd {
        let ram_end = RAM_START.saturating_add(cfg.mem_size);
        if start < RAM_START || start.checked_add(size).is_none_or(|end| end > ram_end) {
            return Err(Error::Fdt(format!(
                "the initrd at {start:#x} (+{size:#x}) is not inside guest RAM"
            )));
        }
    }
    build(cfg).map_err(|e| Error::Fdt(e.to_string()))
}

fn build(cfg: &FdtConfig<'_>) -> FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "berth")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

    cpus(&mut fdt, cfg.mpidrs)?;
    let mem = fdt.begin_node(&format!("memory@{RAM_START:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[RAM_START, cfg.mem_size])?;
    fdt.end_node(mem)?;
    chosen(&mut fdt, cfg)?;
    gic(&mut fdt, cfg.gic, cfg.mpidrs.len() as u32)?;
    timer(&mut fdt, cfg.gic, cfg.mpidrs.len() as u32)?;
    psci(&mut fdt)?;
    uart(&mut fdt)?;
    if cfg.rtc {
        clock(&mut fdt)?;
        rtc(&mut fdt)?;
    }
    pci(&mut fdt, cfg)?;

    fdt.end_node(root)?;
    fdt.finish()
}

fn cpus(fdt: &mut FdtWriter, mpidrs: &[u64]) -> FdtWriterResult<()> {
    let node = fdt.begin_node("cpus")?;
    // Two cells so that Aff3 (MPIDR bits 32-39) fits.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for &mpidr in mpidrs {
        // The affinity fields only: Aff3 and Aff2..Aff0.
        let reg = mpidr & 0xff_00ff_ffff;
        let cpu = fdt.begin_node(&format!("cpu@{reg:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", reg)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(node)
}

fn chosen(fdt: &mut FdtWriter, cfg: &FdtConfig<'_>) -> FdtWriterResult<()> {
    let node = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cfg.cmdline)?;
    fdt.property_string("stdout-path", &format!("/{}", uart_node_name()))?;
    if let Some((start, size)) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    // Keep the BARs where berth put them: their queue notifications are ioeventfds there.
    fdt.property_u32("linux,pci-probe-only", 1)?;
    fdt.end_node(node)
}

fn gic(fdt: &mut FdtWriter, version: GicVersion, vcpus: u32) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("intc@{GIC_DIST_START:x}"))?;
    match version {
        GicVersion::V3 { .. } => {
            fdt.property_string("compatible", "arm,gic-v3")?;
            fdt.property_array_u64(
                "reg",
                &[
                    GIC_DIST_START,
                    GIC_DIST_SIZE,
                    GIC_REDIST_START,
                    redist_size(vcpus),
                ],
            )?;
        }
        GicVersion::V2 => {
            fdt.property_string("compatible", "arm,cortex-a15-gic")?;
            fdt.property_array_u64(
                "reg",
                &[GIC_DIST_START, 0x1000, GIC_CPU_START, GIC_V2_CPU_SIZE],
            )?;
        }
    }
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    // Unit addresses in interrupt-map entries use these cells; `ranges` lets the ITS child map.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_phandle(PHANDLE_GIC)?;
    // The virtual maintenance interrupt.
    fdt.property_array_u32(
        "interrupts",
        &[GIC_PPI, 9, ppi_flags(version, vcpus, IRQ_TYPE_LEVEL_HIGH)],
    )?;
    if version == (GicVersion::V3 { its: true }) {
        let its = fdt.begin_node(&format!("msi-controller@{GIC_ITS_START:x}"))?;
        fdt.property_string("compatible", "arm,gic-v3-its")?;
        fdt.property_null("msi-controller")?;
        fdt.property_u32("#msi-cells", 1)?;
        fdt.property_array_u64("reg", &[GIC_ITS_START, GIC_V3_ITS_SIZE])?;
        fdt.property_phandle(PHANDLE_ITS)?;
        fdt.end_node(its)?;
    }
    fdt.end_node(node)
}

/// PPI flags: on a GICv2 they also carry the mask of CPUs the PPI is wired to.
fn ppi_flags(version: GicVersion, vcpus: u32, trigger: u32) -> u32 {
    match version {
        GicVersion::V2 => (((1u32 << vcpus.min(8)) - 1) << 8) | trigger,
        GicVersion::V3 { .. } => trigger,
    }
}

fn timer(fdt: &mut FdtWriter, version: GicVersion, vcpus: u32) -> FdtWriterResult<()> {
    let node = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    let flags = ppi_flags(version, vcpus, IRQ_TYPE_LEVEL_LOW);
    // Secure physical, non-secure physical, virtual and hypervisor timer PPIs.
    let mut cells = Vec::new();
    for ppi in [13, 14, 11, 10] {
        cells.extend_from_slice(&[GIC_PPI, ppi, flags]);
    }
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.end_node(node)
}

fn psci(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node("psci")?;
    fdt.property_string("compatible", "arm,psci-0.2")?;
    // KVM implements PSCI as hypercalls.
    fdt.property_string("method", "hvc")?;
    fdt.end_node(node)
}

fn uart(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&uart_node_name())?;
    // The 8250 driver and its early console are built into distribution kernels.
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[UART_START, UART_SIZE])?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    // Edge: the interrupt is an irqfd, which pulses the line.
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_TYPE_EDGE_RISING])?;
    fdt.end_node(node)
}

fn clock(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(PHANDLE_CLOCK)?;
    fdt.end_node(node)
}

fn rtc(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("rtc@{RTC_START:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl031".to_string(), "arm,primecell".to_string()],
    )?;
    fdt.property_array_u64("reg", &[RTC_START, RTC_SIZE])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, RTC_SPI, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.property_u32("clocks", PHANDLE_CLOCK)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.end_node(node)
}

/// PCI address space codes in the first cell of a `ranges` entry.
const PCI_SPACE_MEM32: u32 = 0x0200_0000;
const PCI_SPACE_MEM64: u32 = 0x0300_0000;

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn lo(v: u64) -> u32 {
    v as u32
}

fn pci(fdt: &mut FdtWriter, cfg: &FdtConfig<'_>) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("pcie@{PCI_ECAM_START:x}"))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    let buses = (PCI_ECAM_SIZE >> 20) as u32;
    fdt.property_array_u32("bus-range", &[0, buses - 1])?;
    fdt.property_array_u64("reg", &[PCI_ECAM_START, PCI_ECAM_SIZE])?;
    let (m64, m64_size) = cfg.pci_mmio64;
    let mut ranges = Vec::new();
    for (space, base, size) in [
        (PCI_SPACE_MEM32, PCI_MMIO32_START, PCI_MMIO32_SIZE),
        (PCI_SPACE_MEM64, m64, m64_size),
    ] {
        // PCI address = CPU address (identity), then the size.
        ranges.extend_from_slice(&[space, hi(base), lo(base), hi(base), lo(base)]);
        ranges.extend_from_slice(&[hi(size), lo(size)]);
    }
    fdt.property_array_u32("ranges", &ranges)?;
    fdt.property_null("dma-coherent")?;
    if cfg.gic == (GicVersion::V3 { its: true }) {
        // Every requester id maps to the same ITS device id (the ITS has #msi-cells = 1).
        fdt.property_array_u32("msi-map", &[0, PHANDLE_ITS, 0, 0x1_0000])?;
    }
    // Legacy INTx: pin p (1..=4) of slot s raises SPI PCI_INTX_SPI + (s + p - 1) % 4, the
    // standard swizzle, which repeats every four slots.
    let mut map = Vec::new();
    for slot in 0..4u32 {
        for pin in 1..=4u32 {
            let spi = PCI_INTX_SPI + (slot + pin - 1) % 4;
            map.extend_from_slice(&[slot << 11, 0, 0, pin, PHANDLE_GIC, 0, 0]);
            map.extend_from_slice(&[GIC_SPI, spi, IRQ_TYPE_LEVEL_HIGH]);
        }
    }
    fdt.property_array_u32("interrupt-map", &map)?;
    fdt.property_array_u32("interrupt-map-mask", &[0x3 << 11, 0, 0, 7])?;
    fdt.end_node(node)
}

#[cfg(test)]
mod tests;
