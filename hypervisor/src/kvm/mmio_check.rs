//! A debug mode that proves berth's instruction emulator against KVM's own decoder
//! (`BERTH_KVM_CHECK_MMIO=1`): at every MMIO exit, fetch the instruction through the guest's
//! page tables, emulate it without side effects, and compare its device access (address,
//! width, direction, and for writes the data) with the one KVM reports. Reads are checked
//! from the exact state KVM exits with (RIP still on the instruction). KVM commits a write
//! before it exits (RIP past the instruction, string registers stepped), so for a write the
//! state before it is rebuilt: a REP string instruction with iterations left is still at RIP
//! with one iteration to undo; otherwise the instruction is the one that decodes to end
//! exactly at RIP, searched back up to 15 bytes. Each vCPU logs its totals when it ends.

use std::sync::{Arc, RwLock};

use kvm_ioctls::VcpuFd;

use crate::emulator::{self, regs, CpuState, GuestRam, RegionRam};
use crate::x86_64::{Regs, Sregs};
use crate::{IoHandler, MemoryRegion};

/// The environment variable that turns the check on.
pub const ENV: &str = "BERTH_KVM_CHECK_MMIO";

/// Whether the check is asked for.
pub fn enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
}

/// Answers the emulator's device reads with what the device gave KVM's access.
struct Replay<'a> {
    data: &'a [u8],
}

impl IoHandler for Replay<'_> {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn pio_write(&self, _port: u16, _data: &[u8]) {}
    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        let n = data.len().min(self.data.len());
        data[..n].copy_from_slice(&self.data[..n]);
        data[n..].fill(0);
    }
    fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
}

/// One vCPU's checker and its counts.
pub struct MmioCheck {
    vcpu: u32,
    regions: Arc<RwLock<Vec<MemoryRegion>>>,
    compared: u64,
    mismatched: u64,
    not_emulated: u64,
}

impl MmioCheck {
    pub fn new(vcpu: u32, regions: Arc<RwLock<Vec<MemoryRegion>>>) -> Self {
        MmioCheck {
            vcpu,
            regions,
            compared: 0,
            mismatched: 0,
            not_emulated: 0,
        }
    }

    /// Checks KVM's access `(gpa, data, write)`; `data` is what was written, or what the
    /// device answered.
    pub fn check(&mut self, fd: &VcpuFd, gpa: u64, data: &[u8], write: bool) {
        let (Ok(r), Ok(s)) = (fd.get_regs(), fd.get_sregs()) else {
            self.not_emulated += 1;
            return;
        };
        let cpu = CpuState {
            regs: Regs::from(r),
            sregs: Sregs::from(s),
        };
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        // SAFETY: these are the VM's memory regions, whose host mappings the VMM keeps while
        // the VM exists (add_memory_region's contract), and the VM outlives its vCPUs.
        let ram = unsafe { RegionRam::new(&regions, false) };
        let replay = Replay { data };
        let matches = |mut pre: CpuState| -> Result<bool, emulator::EmulatorError> {
            let e = emulator::emulate(&mut pre, &ram, &replay)?;
            Ok(e.accesses().iter().any(|a| {
                a.gpa == gpa
                    && a.write == write
                    && a.data().len() == data.len()
                    && (!write || a.data() == data)
            }))
        };
        let outcome = if write {
            // Any candidate that reproduces KVM's access is the instruction; one that was
            // emulated without doing so is a mismatch; if none could be emulated, say why.
            let (mut hit, mut emulated, mut first_err) = (false, false, None);
            for pre in write_candidates(&cpu, &ram) {
                match matches(pre) {
                    Ok(true) => {
                        hit = true;
                        break;
                    }
                    Ok(false) => emulated = true,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) if !hit && !emulated => Err(e),
                _ => Ok(hit),
            }
        } else {
            matches(cpu)
        };
        self.compared += 1;
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                self.mismatched += 1;
                log::warn!(
                    "MMIO check: vCPU {} rip {:#x}: KVM {} {} bytes at {gpa:#x} ({data:02x?}); the emulator did not",
                    self.vcpu,
                    cpu.regs.rip,
                    if write { "wrote" } else { "read" },
                    data.len()
                );
            }
            Err(e) => {
                self.not_emulated += 1;
                log::warn!(
                    "MMIO check: vCPU {} rip {:#x}: {} {gpa:#x}: {e}",
                    self.vcpu,
                    cpu.regs.rip,
                    if write { "write to" } else { "read of" }
                );
            }
        }
        if self.compared.is_power_of_two() {
            log::debug!("{}", self.summary());
        }
    }

    fn summary(&self) -> String {
        format!(
            "MMIO check, vCPU {}: {} exits compared with the emulator, {} mismatches, {} not emulated",
            self.vcpu, self.compared, self.mismatched, self.not_emulated
        )
    }
}

impl Drop for MmioCheck {
    fn drop(&mut self) {
        log::info!("{}", self.summary());
    }
}

/// The states a write exit can have come from (see the module comment).
fn write_candidates(after: &CpuState, ram: &dyn GuestRam) -> Vec<CpuState> {
    let mut out = Vec::new();
    let undo = |pre: &mut CpuState, step: &emulator::StringStep, count_left: Option<u64>| {
        let delta = if pre.regs.rflags & (1 << 10) != 0 {
            step.size.wrapping_neg()
        } else {
            step.size
        };
        let back = |regs: &mut Regs, reg| {
            let v = regs::get(regs, reg).unwrap_or(0).wrapping_sub(delta);
            regs::set(regs, reg, v);
        };
        if step.reads_si {
            back(&mut pre.regs, step.si);
        }
        if step.writes_di {
            back(&mut pre.regs, step.di);
        }
        if let Some(left) = count_left {
            regs::set(&mut pre.regs, step.cx, left.wrapping_add(1));
        }
    };
    // A REP string instruction with iterations left has not moved RIP.
    if let Ok(insn) = emulator::decode(after, ram) {
        if let Some(step) = emulator::string_step(&insn) {
            let left = regs::get(&after.regs, step.cx).unwrap_or(0);
            if step.rep && left != 0 {
                let mut pre = *after;
                undo(&mut pre, &step, Some(left));
                out.push(pre);
            }
        }
    }
    for back in 1..=15u64 {
        let mut pre = *after;
        pre.regs.rip = after.regs.rip.wrapping_sub(back);
        let Ok(insn) = emulator::decode(&pre, ram) else {
            continue;
        };
        if insn.len() as u64 != back {
            continue;
        }
        if let Some(step) = emulator::string_step(&insn) {
            let left = regs::get(&pre.regs, step.cx).unwrap_or(0);
            undo(&mut pre, &step, step.rep.then_some(left));
        }
        out.push(pre);
    }
    out
}
