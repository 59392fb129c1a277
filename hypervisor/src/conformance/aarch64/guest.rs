//! An aarch64 kit guest: 2 MiB of RAM at [`RAM`], vCPUs at EL1 with the MMU off (every data
//! access outside RAM is MMIO), interrupts masked, running code placed at [`CODE`]. vCPU 0
//! starts; the others wait, powered off, for PSCI CPU_ON (as berth's boot vCPUs do).

use std::sync::Arc;

use super::super::guest_ram::{add_slot, GuestRam};
use super::super::recorder::Recorder;
pub use super::super::run::run_vcpu;
use super::super::{step, Outcome};
use crate::arch::{pstate, IrqChipConfig, Reg};
use crate::{Hypervisor, IrqChip, MemoryRegion, Vcpu, VcpuExit, Vm};

pub const RAM: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 2 << 20;
pub const CODE: u64 = RAM + 0x1_0000;
/// Where guests store what they read, for the kit to check.
pub const DATA: u64 = RAM + 0x2_0000;
const STACK_TOP: u64 = RAM + 0xf000;
/// An address with no memory behind it: accesses are MMIO.
pub const MMIO: u64 = 0x1000_0000;

/// Where the GIC goes when a case wants one (QEMU virt's addresses).
pub const GIC_DIST: u64 = 0x0800_0000;
const GIC_REDIST: u64 = 0x080a_0000;
const GIC_CPU: u64 = 0x0801_0000;
pub const GIC_SPIS: u32 = 64;

pub struct Guest {
    pub vm: Arc<dyn Vm>,
    pub chip: Option<Arc<dyn IrqChip>>,
    pub vcpus: Vec<Box<dyn Vcpu>>,
    /// After `vm` and `vcpus`: dropped once the VM is gone.
    pub ram: GuestRam,
    /// The memory of the slots added with [`Guest::add_slot`]; dropped last.
    pub slots: Vec<GuestRam>,
}

impl Guest {
    /// A VM with RAM and `vcpus` vCPUs at EL1 at [`CODE`] (`code` copied there), without an
    /// interrupt controller.
    pub fn new(hv: &dyn Hypervisor, code: &[u8], vcpus: u32) -> Result<Self, Outcome> {
        Self::build(hv, code, vcpus, false)
    }

    /// The same with one vCPU and a GIC at [`GIC_DIST`] (and its redistributor).
    pub fn with_gic(hv: &dyn Hypervisor, code: &[u8]) -> Result<Self, Outcome> {
        Self::build(hv, code, 1, true)
    }

    fn build(hv: &dyn Hypervisor, code: &[u8], vcpus: u32, gic: bool) -> Result<Self, Outcome> {
        let vm = step("create a VM", hv.create_vm())?;
        let mut ram = step("map guest RAM", GuestRam::new(RAM_SIZE as usize))?;
        ram.write(CODE - RAM, code);
        let region = MemoryRegion {
            slot: 0,
            guest_addr: RAM,
            size: RAM_SIZE,
            host_addr: ram.host_addr(),
            read_only: false,
        };
        // SAFETY: `ram` lives in the returned Guest, declared after `vm`, so it outlives it.
        step("add the RAM slot", unsafe { vm.add_memory_region(region) })?;
        let chip = if gic {
            let config = IrqChipConfig {
                vcpus,
                spis: GIC_SPIS,
                dist: GIC_DIST,
                redist: GIC_REDIST,
                cpu_interface: GIC_CPU,
                its: None,
            };
            Some(step(
                "create the interrupt controller",
                vm.create_irq_chip(&config),
            )?)
        } else {
            None
        };
        let mut all = Vec::new();
        for id in 0..vcpus {
            let vcpu = step("create a vCPU", vm.create_vcpu(id))?;
            step("set PC", vcpu.set_reg(Reg::Pc, CODE))?;
            step(
                "set PSTATE",
                vcpu.set_reg(
                    Reg::Pstate,
                    pstate::MODE_EL1H | pstate::D | pstate::A | pstate::I | pstate::F,
                ),
            )?;
            step(
                "set SP",
                vcpu.set_reg(Reg::Sp, STACK_TOP - u64::from(id) * 0x800),
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

    /// Maps one more 64 KiB region at `at` as `slot` (read-only if asked), starting with
    /// `init` (64 KiB: the largest page size a host may have).
    pub fn add_slot(
        &mut self,
        slot: u32,
        at: u64,
        read_only: bool,
        init: &[u8],
    ) -> Result<MemoryRegion, Outcome> {
        add_slot(
            &*self.vm,
            &mut self.slots,
            slot,
            at,
            0x1_0000,
            read_only,
            init,
        )
    }

    /// Runs vCPU 0 until the guest writes the done address.
    pub fn run(&mut self, io: &Recorder) -> Result<Vec<VcpuExit>, Outcome> {
        run_vcpu(&mut *self.vcpus[0], io, |_| Ok(false))
    }

    /// `len` bytes the guest stored at `gpa` (in RAM).
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        self.ram.read(gpa - RAM, len)
    }
}
