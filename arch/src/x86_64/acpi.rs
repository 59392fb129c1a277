//! ACPI tables for a hardware-reduced x86_64 platform: RSDP, XSDT, FADT, MADT and a DSDT that
//! describes the legacy devices and the S5 (power-off) sleep state. Built with `acpi_tables`.
//!
//! Power-off and reset use the FADT's sleep-control and reset registers, both in a small I/O
//! port block ([`PM_PORT`]) that the VMM backs with `devices::legacy::AcpiPm`, so no legacy PM1
//! blocks, SCI or FACS are needed. There is no 8042 flag in the FADT: Linux then skips probing
//! a keyboard controller, while `reboot=k` still resets through port 0x64. A pvpanic device
//! (`QEMU0001`) lets a panicking guest say so.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    pci_mmio64, IOAPIC_START, LAPIC_START, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START,
};
use crate::{Error, GuestMemory, Result};

/// Where the RSDP goes: inside the BIOS area Linux scans (0xE0000-0xFFFFF), reserved in e820.
pub const RSDP_START: u64 = 0xE_0000;
/// End of the area the tables may use.
const ACPI_END: u64 = 0x10_0000;

/// I/O ports of the power-management block: sleep control, sleep status, reset.
pub const PM_PORT: u16 = 0x600;
pub const PM_SLEEP_CONTROL: u16 = 0;
pub const PM_SLEEP_STATUS: u16 = 1;
pub const PM_RESET: u16 = 2;
pub const PM_LEN: u16 = 3;
/// pvpanic's I/O port (QEMU's default, which guest drivers also probe).
pub const PVPANIC_PORT: u16 = 0x505;
/// Value to write to the reset register.
pub const RESET_VALUE: u8 = 1;
/// SLP_TYP of S5 in the DSDT's `\_S5_` package.
pub const S5_SLEEP_TYPE: u8 = 5;

const OEM_ID: [u8; 6] = *b"BERTH ";
const OEM_REVISION: u32 = 1;
/// FADT IAPC_BOOT_ARCH: no VGA (bit 2). No 8042 (bit 1 clear), no CMOS-absent bit (RTC exists).
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
/// MADT flag: the platform also has dual 8259 PICs (KVM's in-kernel model does).
const MADT_PCAT_COMPAT: u32 = 1;
/// CMOS register holding the century, announced in the FADT.
const CMOS_CENTURY: u8 = 0x32;

fn table_id(name: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"BERTH   ";
    id[4..].copy_from_slice(name);
    id
}

fn sdt(signature: &[u8; 4], revision: u8) -> Sdt {
    Sdt::new(
        *signature,
        36,
        revision,
        OEM_ID,
        table_id(signature),
        OEM_REVISION,
    )
}

fn aml_bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// A legacy ISA device: `_HID`, and `_CRS` with one I/O range and one edge interrupt.
fn isa_device(path: &str, hid: &str, port: u16, len: u8, irq: u32) -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        path.into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new(hid)),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(port, port, 1, len),
                    &aml::Interrupt::new(true, true, false, false, irq),
                ]),
            ),
        ],
    ))
}

/// pvpanic: `_HID` "QEMU0001" (a string, not an EISA id), one I/O port, `_STA` present.
fn pvpanic_device() -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        "_SB_.PEVT".into(),
        vec![
            &aml::Name::new("_HID".into(), &"QEMU0001"),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1)]),
            ),
        ],
    ))
}

/// First IOAPIC input used for PCI INTx; eight inputs (16-23) are shared round-robin by slot.
const PCI_INTX_GSI_BASE: u32 = 16;
const PCI_INTX_GSIS: u32 = 8;
/// PCI slots on bus 0 (slot 0 is the host bridge).
const PCI_SLOTS: u32 = 32;

/// The IOAPIC input that INTA of PCI slot `slot` is wired to (the DSDT's `_PRT` says the same).
/// PCI interrupts are level-triggered, active low, as Linux assumes for `_PRT` GSIs.
pub fn pci_intx_gsi(slot: u8) -> u32 {
    PCI_INTX_GSI_BASE + u32::from(slot) % PCI_INTX_GSIS
}

/// The PCI host bridge: bus 0, config ports 0xCF8-0xCFF, the two BAR windows, and `_PRT`
/// routing each slot's INTA straight to a GSI (no link devices).
fn pci_host_bridge(mem_size: u64) -> Vec<u8> {
    let (mmio64, mmio64_len) = pci_mmio64(mem_size);
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, 0);
    let cfg_ports = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let uncached = aml::AddressSpaceCacheable::NotCacheable;
    let mmio32 = aml::AddressSpace::<u32>::new_memory(
        uncached,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let mmio64 =
        aml::AddressSpace::<u64>::new_memory(uncached, true, mmio64, mmio64 + mmio64_len - 1, None);
    let prt_values: Vec<(u32, u32)> = (1..PCI_SLOTS as u8)
        .map(|slot| ((u32::from(slot) << 16) | 0xffff, pci_intx_gsi(slot)))
        .collect();
    const PIN_A: u8 = 0;
    const NO_SOURCE: u8 = 0;
    let prt_entries: Vec<aml::Package> = prt_values
        .iter()
        .map(|(addr, gsi)| aml::Package::new(vec![addr, &PIN_A, &NO_SOURCE, gsi]))
        .collect();
    let prt = aml::Package::new(prt_entries.iter().map(|p| p as &dyn Aml).collect());
    aml_bytes(&aml::Device::new(
        "_SB_.PCI0".into(),
        vec![
            &aml::Name::new("_PRT".into(), &prt),
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08")),
            &aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03")),
            &aml::Name::new("_ADR".into(), &aml::ZERO),
            &aml::Name::new("_SEG".into(), &aml::ZERO),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_BBN".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&bus, &cfg_ports, &mmio32, &mmio64]),
            ),
        ],
    ))
}

/// Reserves ECAM as a motherboard resource: Linux uses MMCONFIG only when it is reserved so.
fn ecam_reservation() -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        "_SB_.MBRD".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::Memory32Fixed::new(
                    true,
                    PCI_ECAM_START as u32,
                    PCI_ECAM_SIZE as u32,
                )]),
            ),
        ],
    ))
}

/// MCFG: ECAM for segment 0, bus 0 (the only bus).
fn mcfg() -> Vec<u8> {
    let mut t = MCFG::new(OEM_ID, table_id(b"MCFG"), OEM_REVISION);
    t.add_ecam(PCI_ECAM_START, 0, 0, 0);
    aml_bytes(&t)
}

/// The DSDT: COM1, the CMOS RTC, pvpanic, the PCI host bridge and the S5 sleep state.
fn dsdt(mem_size: u64) -> Sdt {
    let mut t = sdt(b"DSDT", 6);
    t.append_slice(&pci_host_bridge(mem_size));
    t.append_slice(&ecam_reservation());
    t.append_slice(&isa_device("_SB_.COM1", "PNP0501", 0x3f8, 8, 4));
    t.append_slice(&isa_device("_SB_.RTC_", "PNP0B00", 0x70, 2, 8));
    t.append_slice(&pvpanic_device());
    t.append_slice(&aml_bytes(&aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE]),
    )));
    t
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let io = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            port.into(),
        )
    };
    let mut f = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.reset_reg = io(PM_PORT + PM_RESET);
    f.reset_value = RESET_VALUE;
    f.sleep_control_reg = io(PM_PORT + PM_SLEEP_CONTROL);
    f.sleep_status_reg = io(PM_PORT + PM_SLEEP_STATUS);
    f.iapc_boot_arch = IAPC_BOOT_ARCH_NO_VGA.into();
    f.century = CMOS_CENTURY;
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"berth\0\0\0").into();
    aml_bytes(&f.finalize())
}

/// One local APIC per vCPU (APIC id = vCPU id), the IOAPIC, ISA IRQ 0 routed to GSI 2, and
/// LINT1 as NMI on every CPU.
fn madt(cpus: u32) -> Sdt {
    let mut t = sdt(b"APIC", 5);
    t.append_slice(&(LAPIC_START as u32).to_le_bytes());
    t.append_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..cpus {
        let mut lapic = [0u8, 8, id as u8, id as u8, 0, 0, 0, 0];
        lapic[4..].copy_from_slice(&1u32.to_le_bytes()); // enabled
        t.append_slice(&lapic);
    }
    let mut ioapic = [1u8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ioapic[4..8].copy_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    t.append_slice(&ioapic); // GSI base 0
    let mut iso = [2u8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
    iso[4..8].copy_from_slice(&2u32.to_le_bytes()); // bus 0, IRQ 0 -> GSI 2, conforming
    t.append_slice(&iso);
    // Local APIC NMI: all processors (0xff), active high edge (flags 0x5), LINT1.
    t.append_slice(&[4u8, 6, 0xff, 0x05, 0x00, 1]);
    t
}

/// Writes all tables at [`RSDP_START`] for a guest of `cpus` vCPUs and `mem_size` bytes of RAM
/// (which places the 64-bit PCI window); returns the RSDP's address for the boot protocol.
pub fn write_tables(mem: &GuestMemory, cpus: u32, mem_size: u64) -> Result<u64> {
    let align = |a: u64| (a + 15) & !15;
    let mut next = align(RSDP_START + Rsdp::len() as u64);
    let mut place = |bytes: &[u8]| -> Result<u64> {
        let at = next;
        if at + bytes.len() as u64 > ACPI_END {
            return Err(Error::GuestMemory(
                "ACPI tables do not fit below 1 MiB".into(),
            ));
        }
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|e| Error::GuestMemory(format!("ACPI tables: {e}")))?;
        next = align(at + bytes.len() as u64);
        Ok(at)
    };
    let dsdt_addr = place(dsdt(mem_size).as_slice())?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(madt(cpus).as_slice())?;
    let mcfg_addr = place(&mcfg())?;
    let mut xsdt = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    xsdt.add_entry(mcfg_addr);
    let xsdt_addr = place(&aml_bytes(&xsdt))?;
    mem.write_slice(
        &aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(RSDP_START),
    )
    .map_err(|e| Error::GuestMemory(format!("RSDP: {e}")))?;
    Ok(RSDP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    fn read(m: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Reads a whole table at `addr`, checking signature and checksum.
    fn table(m: &GuestMemory, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
        let head = read(m, addr, 8);
        assert_eq!(&head[..4], sig);
        let t = read(m, addr, u32_at(&head, 4) as usize);
        assert_eq!(
            t.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "{sig:?} checksum"
        );
        t
    }

    /// Follows RSDP -> XSDT -> tables, as a guest would.
    fn tables(m: &GuestMemory) -> Vec<Vec<u8>> {
        let rsdp = read(m, RSDP_START, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(rsdp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        let xsdt = table(m, u64_at(&rsdp, 24), b"XSDT");
        (36..xsdt.len())
            .step_by(8)
            .map(|off| {
                let addr = u64_at(&xsdt, off);
                let sig: [u8; 4] = read(m, addr, 4).try_into().unwrap();
                table(m, addr, &sig)
            })
            .collect()
    }

    #[test]
    fn tables_chain_with_valid_checksums() {
        let m = mem();
        assert_eq!(write_tables(&m, 4, 512 << 20).unwrap(), RSDP_START);
        let t = tables(&m);
        let sigs: Vec<&[u8]> = t.iter().map(|t| &t[..4]).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_reset_and_sleep_registers() {
        let m = mem();
        write_tables(&m, 1, 512 << 20).unwrap();
        let fadt = &tables(&m)[0];
        assert_eq!(fadt[8], 6, "FADT revision");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // reset_reg GAS at 116: I/O space, port PM_PORT + PM_RESET; value at 128.
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(fadt, 120), u64::from(PM_PORT + PM_RESET));
        assert_eq!(fadt[128], RESET_VALUE);
        // sleep control/status GAS at 244 / 256.
        assert_eq!(u64_at(fadt, 248), u64::from(PM_PORT + PM_SLEEP_CONTROL));
        assert_eq!(u64_at(fadt, 260), u64::from(PM_PORT + PM_SLEEP_STATUS));
        let dsdt = table(&m, u64_at(fadt, 140), b"DSDT");
        let aml = &dsdt[36..];
        for needle in [
            &b"_S5_"[..],
            b"COM1",
            b"RTC_",
            b"PEVT",
            b"QEMU0001",
            b"PCI0",
            b"MBRD",
        ] {
            assert!(
                aml.windows(needle.len()).any(|w| w == needle),
                "{needle:?} in DSDT"
            );
        }
    }

    #[test]
    fn madt_lists_every_cpu_and_the_ioapic() {
        let m = mem();
        write_tables(&m, 3, 512 << 20).unwrap();
        let madt = &tables(&m)[1];
        assert_eq!(u32_at(madt, 36), LAPIC_START as u32);
        let mut off = 44;
        let mut apic_ids = vec![];
        let mut ioapics = 0;
        while off < madt.len() {
            let (kind, len) = (madt[off], madt[off + 1] as usize);
            assert!(len >= 2);
            match kind {
                0 => {
                    assert_eq!(u32_at(madt, off + 4) & 1, 1, "enabled");
                    apic_ids.push(madt[off + 3]);
                }
                1 => {
                    ioapics += 1;
                    assert_eq!(u32_at(madt, off + 4), IOAPIC_START as u32);
                }
                _ => {}
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(apic_ids, [0, 1, 2]);
        assert_eq!(ioapics, 1);
    }
}

/// Disassembles the tables with ACPICA's `iasl` when it is installed (CI installs it):
/// the strongest check that Linux's ACPICA will parse them without complaint.
#[cfg(test)]
mod iasl {
    use super::*;
    use std::process::Command;

    #[test]
    fn iasl_disassembles_every_table_cleanly() {
        if Command::new("iasl").arg("-v").output().is_err() {
            eprintln!("skipped: iasl (acpica-tools) is not installed");
            return;
        }
        let m = GuestMemory::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write_tables(&m, 4, 512 << 20).unwrap();
        let dir = std::env::temp_dir().join(format!("berth-iasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut addr = (RSDP_START + Rsdp::len() as u64 + 15) & !15;
        let mut seen = vec![];
        while addr < ACPI_END {
            let mut head = [0u8; 8];
            m.read_slice(&mut head, GuestAddress(addr)).unwrap();
            if head[..4] == [0; 4] {
                break;
            }
            let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
            let mut t = vec![0u8; len];
            m.read_slice(&mut t, GuestAddress(addr)).unwrap();
            let sig = String::from_utf8_lossy(&head[..4]).to_string();
            let path = dir.join(format!("{sig}.aml"));
            std::fs::write(&path, &t).unwrap();
            let out = Command::new("iasl")
                .current_dir(&dir)
                .args(["-d", &format!("{sig}.aml")])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "iasl -d {sig}: {text}");
            assert!(!text.contains("Error"), "iasl -d {sig}: {text}");
            let dsl = std::fs::read_to_string(path.with_extension("dsl")).unwrap();
            assert!(!dsl.contains("**** Unknown"), "{sig}: {dsl}");
            seen.push(sig);
            addr = (addr + len as u64 + 15) & !15;
        }
        assert_eq!(seen, ["DSDT", "FACP", "APIC", "MCFG", "XSDT"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
