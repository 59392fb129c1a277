//! Initial vCPU state for direct kernel entry.

use hypervisor::arch::{DescriptorTable, Fpu, Msr, Regs, Sregs};
use hypervisor::Vcpu;
use vm_memory::{Bytes, GuestAddress};

use super::boot::{BootInfo, BootProtocol};
use super::gdt::{self, BOOT_GDT};
use super::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, RESET_VECTOR, ZERO_PAGE_START};
use super::{cpuid, paging};
use crate::{Error, GuestMemory, Result};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// LAPIC registers and delivery modes for the local interrupt pins.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// MSRs a freshly booted kernel expects in a known state (as Firecracker sets them). Every
/// backend must take these.
fn boot_msrs() -> Vec<Msr> {
    [
        (0x174, 0),       // IA32_SYSENTER_CS
        (0x175, 0),       // IA32_SYSENTER_ESP
        (0x176, 0),       // IA32_SYSENTER_EIP
        (0xc000_0081, 0), // STAR
        (0xc000_0082, 0), // LSTAR
        (0xc000_0083, 0), // CSTAR
        (0xc000_0084, 0), // SYSCALL_MASK
        (0xc000_0102, 0), // KERNEL_GS_BASE
        (0x10, 0),        // IA32_TSC
    ]
    .into_iter()
    .map(|(index, value)| Msr { index, value })
    .collect()
}

/// MSRs worth setting where the backend models them (KVM does; a hypervisor that keeps them
/// to itself, as MSHV may, refuses them): each is tried alone and a refusal is logged.
fn optional_boot_msrs() -> Vec<Msr> {
    const MTRR_ENABLE: u64 = 1 << 11;
    const MTRR_MEM_TYPE_WB: u64 = 0x6;
    [
        (0x1a0, 1),                              // IA32_MISC_ENABLE: fast strings
        (0x2ff, MTRR_ENABLE | MTRR_MEM_TYPE_WB), // MTRRdefType
    ]
    .into_iter()
    .map(|(index, value)| Msr { index, value })
    .collect()
}

/// Writes the boot GDT and an empty IDT into guest memory (once per VM).
pub fn write_descriptor_tables(mem: &GuestMemory) -> Result<()> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + i as u64 * 8))
            .map_err(|e| Error::GuestMemory(format!("GDT: {e}")))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|e| Error::GuestMemory(format!("IDT: {e}")))
}

/// 16-bit code at the reset vector: `mov al, 0xfe; out 0x64, al; hlt; jmp hlt`. There is no
/// firmware, so a guest that reboots through the BIOS (Linux with hardware-reduced ACPI and no
/// EFI: reboot_type EFI falls back to BIOS) lands here and resets through the i8042.
const RESET_STUB: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];

/// Writes the reset-vector stub (once per VM; the legacy area is reserved in e820).
pub fn write_reset_vector(mem: &GuestMemory) -> Result<()> {
    mem.write_slice(&RESET_STUB, GuestAddress(RESET_VECTOR))
        .map_err(|e| Error::GuestMemory(format!("reset vector: {e}")))
}

/// Sets CPUID, MSRs, FPU and LAPIC of every vCPU, and the entry state of the boot vCPU (0).
/// Application processors wait for the guest's INIT/SIPI in the hypervisor's LAPIC.
pub fn configure_vcpu(
    vcpu: &dyn Vcpu,
    mem: &GuestMemory,
    boot: &BootInfo,
    supported_cpuid: &[hypervisor::arch::CpuidEntry],
    cpus: u32,
) -> Result<()> {
    let id = vcpu.id();
    let err = |source| Error::Vcpu { cpu: id, source };
    vcpu.set_cpuid(&cpuid::filter(supported_cpuid, id, cpus))
        .map_err(err)?;
    vcpu.set_msrs(&boot_msrs()).map_err(err)?;
    for msr in optional_boot_msrs() {
        if let Err(e) = vcpu.set_msrs(&[msr]) {
            log::debug!(
                "vCPU {id}: MSR {:#x} left as the hypervisor has it: {e}",
                msr.index
            );
        }
    }
    vcpu.set_fpu(&Fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })
    .map_err(err)?;
    let mut lapic = vcpu.get_lapic().map_err(err)?;
    let lvt = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    lapic.set(APIC_LVT0, lvt(lapic.get(APIC_LVT0), APIC_MODE_EXTINT));
    lapic.set(APIC_LVT1, lvt(lapic.get(APIC_LVT1), APIC_MODE_NMI));
    vcpu.set_lapic(&lapic).map_err(err)?;
    if id != 0 {
        return Ok(());
    }

    let mut sregs: Sregs = vcpu.get_sregs().map_err(err)?;
    sregs.gdt = DescriptorTable {
        base: GDT_START,
        limit: (BOOT_GDT.len() * 8 - 1) as u16,
    };
    sregs.idt = DescriptorTable {
        base: IDT_START,
        limit: 7,
    };
    let data = gdt::segment(gdt::DATA_SELECTOR);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(gdt::TSS_SELECTOR);
    let mut regs = Regs {
        rflags: 0x2,
        rip: boot.entry,
        ..Default::default()
    };
    match boot.protocol {
        BootProtocol::Linux64 => {
            // 64-bit boot protocol: long mode, paging on, identity map, RSI -> boot_params.
            sregs.cs = gdt::segment(gdt::CODE64_SELECTOR);
            sregs.cr3 = paging::write_identity_tables(mem)?;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => {
            // PVH: 32-bit protected mode, paging off, RBX -> hvm_start_info.
            sregs.cs = gdt::segment(gdt::CODE32_SELECTOR);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rbx = boot.boot_data;
        }
    }
    vcpu.set_sregs(&sregs).map_err(err)?;
    vcpu.set_regs(&regs).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_are_unique() {
        let m = [boot_msrs(), optional_boot_msrs()].concat();
        let mut idx: Vec<u32> = m.iter().map(|m| m.index).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), m.len());
    }

    #[test]
    fn reset_stub_sits_at_the_reset_vector() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write_reset_vector(&mem).unwrap();
        let mut b = [0u8; 7];
        mem.read_slice(&mut b, GuestAddress(0xffff0)).unwrap();
        assert_eq!(b, RESET_STUB);
    }

    #[test]
    fn descriptor_tables_land_in_memory() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_descriptor_tables(&mem).unwrap();
        let cs: u64 = mem.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(cs, BOOT_GDT[1]);
    }
}
