//! A kit guest: 2 MiB of RAM at 0, one or more vCPUs in 64-bit mode with 4 GiB identity-mapped,
//! running code placed at [`CODE`].

use std::sync::Arc;

use super::super::guest_ram::{add_slot, GuestRam};
use super::super::recorder::Recorder;
pub use super::super::run::run_vcpu;
use super::super::{step, Outcome};
use crate::arch::{DescriptorTable, IrqChipConfig, IrqChipMode, Regs, Segment, Sregs};
use crate::{Error, Hypervisor, IrqChip, MemoryRegion, Vcpu, VcpuExit, Vm};

pub const RAM_SIZE: u64 = 2 << 20;
const GDT: u64 = 0x500;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000; // four pages: 4 GiB of 2 MiB pages
pub const IDT: u64 = 0x7000;
const STACK_TOP: u64 = 0xf000;
pub const CODE: u64 = 0x10000;
/// Where guests store what they read, for the kit to check.
pub const DATA: u64 = 0x20000;
/// An address in the identity map with no memory behind it: accesses are MMIO.
pub const MMIO: u64 = 0xd000_0000;

/// Null, 64-bit code, data, TSS (the encodings berth's boot GDT uses).
const GDT_ENTRIES: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

fn segment(selector: u16, type_: u8, l: bool, s: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: true,
        dpl: 0,
        db: !l && s,
        s,
        l,
        g: true,
        avl: false,
        unusable: false,
    }
}

pub struct Guest {
    pub vm: Arc<dyn Vm>,
    /// The in-kernel interrupt controller, when asked for.
    pub chip: Option<Arc<dyn IrqChip>>,
    pub vcpus: Vec<Box<dyn Vcpu>>,
    /// After `vm` and `vcpus`: dropped once the VM is gone.
    pub ram: GuestRam,
    /// The memory of the slots added with [`Guest::add_slot`], in order; dropped last.
    pub slots: Vec<GuestRam>,
}

impl Guest {
    /// A VM with RAM and page tables and `vcpus` vCPUs in long mode at [`CODE`]; `code` is
    /// copied there. No interrupt controller unless `irqchip` says in which mode.
    pub fn new(
        hv: &dyn Hypervisor,
        code: &[u8],
        vcpus: u32,
        irqchip: Option<IrqChipMode>,
    ) -> Result<Self, Outcome> {
        let vm = step("create a VM", hv.create_vm())?;
        let mut ram = step("map guest RAM", GuestRam::new(RAM_SIZE as usize))?;
        write_tables(&mut ram);
        ram.write(CODE, code);
        let region = MemoryRegion {
            slot: 0,
            guest_addr: 0,
            size: RAM_SIZE,
            host_addr: ram.host_addr(),
            read_only: false,
        };
        // SAFETY: `ram` lives in the returned Guest, declared after `vm`, so it outlives it.
        step("add the RAM slot", unsafe { vm.add_memory_region(region) })?;
        let chip = match irqchip {
            Some(mode) => match vm.create_irq_chip(&IrqChipConfig { mode }) {
                Ok(chip) => Some(chip),
                Err(Error::MissingCapability(what)) => {
                    return Err(Outcome::Skip(format!("the backend lacks {what}")))
                }
                Err(e) => {
                    return Err(Outcome::Fail(format!(
                        "create the interrupt controller: {e}"
                    )))
                }
            },
            None => None,
        };
        let cpuid = step("read the supported CPUID", hv.supported_cpuid())?;
        let mut all = Vec::new();
        for id in 0..vcpus {
            let vcpu = step("create a vCPU", vm.create_vcpu(id))?;
            step("set CPUID", vcpu.set_cpuid(&cpuid))?;
            let mut sregs = step("get_sregs", vcpu.get_sregs())?;
            long_mode(&mut sregs);
            step("set_sregs", vcpu.set_sregs(&sregs))?;
            step(
                "set_regs",
                vcpu.set_regs(&Regs {
                    rip: CODE,
                    rsp: STACK_TOP - u64::from(id) * 0x800,
                    rflags: 2,
                    ..Default::default()
                }),
            )?;
            all.push(vcpu);
        }
        if let Some(chip) = &chip {
            step("finalize the interrupt controller", chip.finalize())?;
        }
        Ok(Guest {
            vm,
            chip,
            vcpus: all,
            ram,
            slots: Vec::new(),
        })
    }

    /// Maps one more page at `at` as `slot` (read-only if asked), starting with `init`; its
    /// memory goes to [`Guest::slots`], so it lives as long as the VM.
    pub fn add_slot(
        &mut self,
        slot: u32,
        at: u64,
        read_only: bool,
        init: &[u8],
    ) -> Result<MemoryRegion, Outcome> {
        add_slot(&*self.vm, &mut self.slots, slot, at, 4096, read_only, init)
    }

    /// Runs vCPU 0 until the guest writes the done port. See [`run_vcpu`].
    pub fn run(&mut self, io: &Recorder) -> Result<Vec<VcpuExit>, Outcome> {
        run_vcpu(&mut *self.vcpus[0], io, |_| Ok(false))
    }
}

fn write_tables(ram: &mut GuestRam) {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        ram.write(GDT + i as u64 * 8, &e.to_le_bytes());
    }
    ram.write(PML4, &(PDPT | 3).to_le_bytes());
    for i in 0..4u64 {
        ram.write(PDPT + i * 8, &((PD + i * 0x1000) | 3).to_le_bytes());
    }
    for i in 0..(4 * 512u64) {
        // Present, writable, 2 MiB page.
        ram.write(PD + i * 8, &((i << 21) | 0x83).to_le_bytes());
    }
}

fn long_mode(s: &mut Sregs) {
    s.cs = segment(0x08, 0xb, true, true);
    let data = segment(0x10, 0x3, false, true);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment(0x18, 0xb, false, false);
    s.gdt = DescriptorTable {
        base: GDT,
        limit: (GDT_ENTRIES.len() * 8 - 1) as u16,
    };
    s.idt = DescriptorTable {
        base: IDT,
        limit: 0xfff,
    };
    s.cr3 = PML4;
    s.cr4 |= 1 << 5; // PAE
    s.cr0 = 0x8000_0011; // PG, ET, PE
    s.efer |= (1 << 8) | (1 << 10); // LME, LMA
}
