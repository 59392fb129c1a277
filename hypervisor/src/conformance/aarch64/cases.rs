//! Each case builds an EL1 guest, runs it and compares what the backend reported with what the
//! guest did.

use super::asm::Asm;
use super::guest::{run_vcpu, Guest, CODE, DATA, GIC_DIST, MMIO};
use crate::arch::{GicVersion, Reg, SysReg};
use crate::conformance::recorder::{Access, AccessKind::*, Recorder};
use crate::conformance::run::kick_out_of_run;
use crate::conformance::{
    check, expect_accesses, reads_and_stores, step, Case, CaseResult, Outcome,
};
use crate::{Datamatch, EventFd, Hypervisor, IoEventAddress, SystemEvent, VcpuExit};

pub static CASES: &[Case] = &[
    Case {
        name: "mmio-write",
        what: "MMIO stores of 1, 2, 4 and 8 bytes (STRB/STRH/STR) with their data",
        run: mmio_write,
    },
    Case {
        name: "mmio-read",
        what: "MMIO loads of 1, 2, 4 and 8 bytes (LDRB/LDRH/LDR) return the handler's data",
        run: mmio_read,
    },
    Case {
        name: "registers",
        what: "x0-x30, SP and PC set are read back unchanged",
        run: registers,
    },
    Case {
        name: "read-only-slot",
        what: "a read-only slot reads as memory; writes exit as MMIO",
        run: read_only_slot,
    },
    Case {
        name: "slot-remove",
        what: "a removed slot's addresses exit as MMIO; the slot can be added again",
        run: slot_remove,
    },
    Case {
        name: "ioeventfd",
        what: "an MMIO ioeventfd with a 4-byte datamatch signals without exiting",
        run: ioeventfd,
    },
    Case {
        name: "psci-system-off",
        what: "PSCI SYSTEM_OFF exits as a power-off system event",
        run: psci_off,
    },
    Case {
        name: "psci-system-reset",
        what: "PSCI SYSTEM_RESET exits as a reset system event",
        run: psci_reset,
    },
    Case {
        name: "psci-cpu-on",
        what: "a second vCPU, powered off, starts on PSCI CPU_ON and runs beside the first",
        run: psci_cpu_on,
    },
    Case {
        name: "spi-irqfd",
        what: "an irqfd on a GIC SPI interrupts the guest, also after deassign, signal, reassign",
        run: spi_irqfd,
    },
    Case {
        name: "kick",
        what: "a kick brings a spinning vCPU out of run",
        run: kick,
    },
];

const WIDTHS: [usize; 4] = [1, 2, 4, 8];
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;
const PSCI_CPU_ON: u64 = 0xc400_0003;
/// Outside RAM and MMIO, where the slot cases map their pages.
const SLOT: u64 = 0x5000_0000;

fn run_to_done(g: &mut Guest, io: &Recorder) -> CaseResult {
    let exits = g.run(io)?;
    check(exits.is_empty(), || {
        format!("the guest stopped early: {exits:?}")
    })
}

/// x10.. point at MMIO + 0x10 * i, one per width.
fn addresses(a: &mut Asm) {
    for (i, _) in WIDTHS.iter().enumerate() {
        a.mov64(10 + i as u8, MMIO + 0x10 * i as u64);
    }
}

fn mmio_write(hv: &dyn Hypervisor) -> CaseResult {
    let v = 0x1122_3344_5566_7788u64;
    let mut a = Asm::default();
    addresses(&mut a);
    a.mov64(2, v);
    for (i, &w) in WIDTHS.iter().enumerate() {
        a.str(w, 2, 10 + i as u8);
    }
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let want: Vec<Access> = WIDTHS
        .iter()
        .enumerate()
        .map(|(i, &w)| Access::new(MmioWrite, MMIO + 0x10 * i as u64, &v.to_le_bytes()[..w]))
        .collect();
    expect_accesses(&io.accesses(), &want)
}

fn mmio_read(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    addresses(&mut a);
    // Load into x20.., then store each as 8 bytes at DATA.
    for (i, &w) in WIDTHS.iter().enumerate() {
        a.ldr(w, 20 + i as u8, 10 + i as u8);
    }
    for i in 0..WIDTHS.len() {
        a.mov64(3, DATA + 8 * i as u64).str(8, 20 + i as u8, 3);
    }
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let (want, stored) = reads_and_stores(&WIDTHS, 8, |n| (MmioRead, MMIO + 0x10 * n as u64));
    expect_accesses(&io.accesses(), &want)?;
    let got = g.read(DATA, stored.len());
    check(got == stored, || {
        format!("the guest loaded {got:x?}, the handler answered {stored:x?}")
    })
}

fn registers(hv: &dyn Hypervisor) -> CaseResult {
    let g = Guest::new(hv, &Asm::default().done().0, 1)?;
    let vcpu = &g.vcpus[0];
    let v = |i: u64| 0x0101_0101_0101_0101u64.wrapping_mul(i + 1);
    let mut regs: Vec<(Reg, u64)> = (0..31u8).map(|i| (Reg::X(i), v(u64::from(i)))).collect();
    regs.push((Reg::Sp, CODE - 0x100));
    regs.push((Reg::Pc, CODE + 0x40));
    for &(r, val) in &regs {
        step("set_reg", vcpu.set_reg(r, val))?;
    }
    for &(r, val) in &regs {
        let back = step("get_reg", vcpu.get_reg(r))?;
        check(back == val, || {
            format!("{r:?}: set {val:#x}, read back {back:#x}")
        })?;
    }
    Ok(())
}

fn read_only_slot(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.mov64(1, SLOT)
        .ldr(4, 2, 1)
        .mov64(3, DATA)
        .str(4, 2, 3)
        .mov64(2, 0xdead_beef)
        .str(4, 2, 1);
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    g.add_slot(1, SLOT, true, &0x1122_3344u32.to_le_bytes())?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let got = u32::from_le_bytes(g.read(DATA, 4).try_into().unwrap());
    check(got == 0x1122_3344, || {
        format!("the guest read {got:#x} from the slot, want 0x11223344")
    })?;
    expect_accesses(
        &io.accesses(),
        &[Access::new(MmioWrite, SLOT, &0xdead_beefu32.to_le_bytes())],
    )?;
    let kept = g.slots[0].read(0, 4);
    check(kept == 0x1122_3344u32.to_le_bytes(), || {
        format!("the write changed the slot: {kept:x?}")
    })
}

fn slot_remove(hv: &dyn Hypervisor) -> CaseResult {
    // Load the slot's first word, tell the host (a write to MMIO: it removes or adds the
    // slot), three times.
    let mut a = Asm::default();
    a.mov64(1, SLOT).mov64(5, MMIO);
    for _ in 0..3 {
        a.ldr(4, 2, 1).str(1, 31, 5);
    }
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    let region = g.add_slot(1, SLOT, false, &0x5a5a_0001u32.to_le_bytes())?;
    let vm = g.vm.clone();
    let io = Recorder::default();
    let told = |io: &Recorder| io.accesses().iter().filter(|a| a.addr == MMIO).count();
    let exits = run_vcpu(&mut *g.vcpus[0], &io, |io| {
        let last_was_tell = io.accesses().last().is_some_and(|a| a.addr == MMIO);
        match told(io) {
            1 if last_was_tell => step("remove the slot", vm.remove_memory_region(region))?,
            // SAFETY: the slot's memory is still in `g.slots`, which outlives the VM.
            2 if last_was_tell => step("add the slot again", unsafe {
                vm.add_memory_region(region)
            })?,
            _ => {}
        }
        Ok(false)
    })?;
    check(exits.is_empty(), || format!("the guest stopped: {exits:?}"))?;
    let reads: Vec<Access> = io
        .accesses()
        .into_iter()
        .filter(|a| a.kind == MmioRead)
        .collect();
    expect_accesses(
        &reads,
        &[Access::new(MmioRead, SLOT, &Recorder::answer(0, 4))],
    )
}

fn ioeventfd(hv: &dyn Hypervisor) -> CaseResult {
    const EV: u64 = MMIO + 0x1000;
    let mut a = Asm::default();
    a.mov64(1, EV)
        .mov64(2, 7)
        .str(4, 2, 1) // datamatch 7: no exit
        .mov64(2, 8)
        .str(4, 2, 1); // not 7: exits
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    let evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    step(
        "register an MMIO ioevent",
        g.vm.register_ioevent(&evt, IoEventAddress::Mmio(EV), Datamatch::U32(7)),
    )?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let n = evt.read().unwrap_or(0);
    check(n == 1, || format!("the eventfd counted {n}, want 1"))?;
    expect_accesses(
        &io.accesses(),
        &[Access::new(MmioWrite, EV, &8u32.to_le_bytes())],
    )?;
    step(
        "unregister the MMIO ioevent",
        g.vm.unregister_ioevent(&evt, IoEventAddress::Mmio(EV), Datamatch::U32(7)),
    )
}

fn psci_event(hv: &dyn Hypervisor, function: u64, want: SystemEvent) -> CaseResult {
    let mut a = Asm::default();
    a.mov64(0, function).hvc();
    let mut g = Guest::new(hv, &a.done().0, 1)?;
    let io = Recorder::default();
    let exits = g.run(&io)?;
    check(
        matches!(exits.as_slice(), [VcpuExit::System(e)] if *e == want),
        || {
            format!(
                "want System({want:?}), got {exits:?} (accesses {:?})",
                io.accesses()
            )
        },
    )
}

fn psci_off(hv: &dyn Hypervisor) -> CaseResult {
    psci_event(hv, PSCI_SYSTEM_OFF, SystemEvent::PowerOff)
}

fn psci_reset(hv: &dyn Hypervisor) -> CaseResult {
    psci_event(hv, PSCI_SYSTEM_RESET, SystemEvent::Reset)
}

fn psci_cpu_on(hv: &dyn Hypervisor) -> CaseResult {
    if hv.max_vcpus() < 2 {
        return Err(Outcome::Skip("the backend allows 1 vCPU".into()));
    }
    const SECONDARY: u64 = 0x800;
    const CONTEXT: u64 = 0xc0ff_ee00;
    // vCPU 1: write the context id it was started with to MMIO + 0x100, then done.
    let mut second = Asm::default();
    second.mov64(1, MMIO + 0x100).str(8, 0, 1).done();
    // vCPU 0: CPU_ON(vCPU 1, the entry above, the context), report PSCI's answer at MMIO.
    let build = |mpidr: u64| {
        let mut a = Asm::default();
        a.mov64(0, PSCI_CPU_ON)
            .mov64(1, mpidr)
            .mov64(2, CODE + SECONDARY)
            .mov64(3, CONTEXT)
            .hvc()
            .mov64(5, MMIO)
            .str(8, 0, 5)
            .done();
        let mut code = a.0;
        code.resize(SECONDARY as usize, 0);
        code.extend_from_slice(&second.0);
        code
    };
    // The target's affinity is the hypervisor's to assign: build once to read it.
    let probe = Guest::new(hv, &build(0), 2)?;
    let mpidr = step("read vCPU 1's MPIDR", probe.vcpus[1].mpidr())? & 0xff_00ff_ffff;
    drop(probe);
    let mut g = Guest::new(hv, &build(mpidr), 2)?;
    let mut second_vcpu = g.vcpus.pop().expect("two vCPUs");
    let secondary = std::thread::spawn(move || {
        let io = Recorder::default();
        let r = run_vcpu(&mut *second_vcpu, &io, |_| Ok(false));
        (r, io.accesses())
    });
    let io = Recorder::default();
    let first = run_to_done(&mut g, &io);
    let (second_run, second_accesses) = secondary
        .join()
        .map_err(|_| Outcome::Fail("vCPU 1's thread panicked".into()))?;
    first?;
    let exits = second_run?;
    check(exits.is_empty(), || format!("vCPU 1 stopped: {exits:?}"))?;
    // PSCI_SUCCESS is 0.
    expect_accesses(&io.accesses(), &[Access::new(MmioWrite, MMIO, &[0; 8])])?;
    expect_accesses(
        &second_accesses,
        &[Access::new(MmioWrite, MMIO + 0x100, &CONTEXT.to_le_bytes())],
    )
}

/// GSI 5 is SPI 5, INTID 37.
const SPI_GSI: u32 = 5;
const SPI_INTID: u64 = 32 + SPI_GSI as u64;
const READY: u64 = MMIO + 0x100;
const REPORT: u64 = MMIO + 0x200;
const FAULT: u64 = MMIO + 0x300;
const VBAR_OFFSET: usize = 0x800;

/// A GICv3 guest: the distributor routes INTID 37 (edge, group 1) to CPU 0, the CPU interface
/// takes group 1, IRQs are unmasked; it says READY, then waits. Its IRQ vector reports each
/// INTID it acknowledges at REPORT and ends it; any synchronous exception reports ESR_EL1 at
/// FAULT.
fn gic_guest() -> Vec<u8> {
    let icc_iar1 = SysReg::new(3, 0, 12, 12, 0);
    let icc_eoir1 = SysReg::new(3, 0, 12, 12, 1);
    let icc_pmr = SysReg::new(3, 0, 4, 6, 0);
    let icc_igrpen1 = SysReg::new(3, 0, 12, 12, 7);
    let vbar = SysReg::new(3, 0, 12, 0, 0);
    let esr = SysReg::new(3, 0, 5, 2, 0);
    let reg = (SPI_INTID / 32) * 4;
    let bit = 1u64 << (SPI_INTID % 32);
    let mut a = Asm::default();
    a.mov64(1, CODE + VBAR_OFFSET as u64).msr(vbar, 1).isb();
    for (offset, value, width) in [
        (0x0, 0x3, 4),        // GICD_CTLR: group 0 and 1 on
        (0x80 + reg, bit, 4), // GICD_IGROUPR: group 1
        (0xc00 + (SPI_INTID / 16) * 4, 2 << ((SPI_INTID % 16) * 2), 4), // GICD_ICFGR: edge
        (0x6000 + SPI_INTID * 8, 0, 8), // GICD_IROUTER: CPU 0
        (0x100 + reg, bit, 4), // GICD_ISENABLER
    ] {
        a.mov64(1, GIC_DIST + offset)
            .mov64(2, value)
            .str(width, 2, 1);
    }
    a.mov64(2, 0xf0).msr(icc_pmr, 2);
    a.mov64(2, 1).msr(icc_igrpen1, 2).isb().unmask_irq();
    a.mov64(5, READY).str(4, 31, 5);
    let wait = a.here();
    a.wfi().b_to(wait);
    // The vector table: current EL with SP_ELx, synchronous at 0x200, IRQ at 0x280.
    a.pad_to(VBAR_OFFSET + 0x200);
    a.mrs(0, esr).mov64(1, FAULT).str(8, 0, 1).spin();
    a.pad_to(VBAR_OFFSET + 0x280);
    a.mrs(0, icc_iar1)
        .mov64(1, REPORT)
        .str(4, 0, 1)
        .msr(icc_eoir1, 0)
        .eret();
    a.0
}

fn spi_irqfd(hv: &dyn Hypervisor) -> CaseResult {
    let mut g = Guest::with_gic(hv, &gic_guest())?;
    let chip = g.chip.clone().expect("a GIC was asked for");
    if chip.gic_version() == GicVersion::V2 {
        return Err(Outcome::Skip(
            "the host gave a GICv2; the case's guest programs a GICv3".into(),
        ));
    }
    let evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    step("register an irqfd", chip.register_irqfd(&evt, SPI_GSI))?;
    let io = Recorder::default();
    let reports = |io: &Recorder| -> Vec<u64> {
        io.accesses()
            .iter()
            .filter(|a| a.addr == REPORT)
            .map(|a| u64::from(u32::from_le_bytes(a.data[..4].try_into().unwrap())))
            .collect()
    };
    let exits = run_vcpu(&mut *g.vcpus[0], &io, |io| {
        let Some(last) = io.accesses().last().cloned() else {
            return Ok(false);
        };
        match last.addr {
            READY => step("signal the irqfd", evt.write(1))?,
            FAULT => {
                return Err(Outcome::Fail(format!(
                    "the guest took an exception, ESR_EL1 {:x?}",
                    last.data
                )))
            }
            REPORT if reports(io).len() == 1 => {
                // The device boundary's MSI-X masking relies on this: a signal while the fd
                // is deassigned is delivered when it is assigned again.
                step("deassign the irqfd", chip.unregister_irqfd(&evt, SPI_GSI))?;
                step("signal the irqfd", evt.write(1))?;
                step("reassign the irqfd", chip.register_irqfd(&evt, SPI_GSI))?;
            }
            REPORT => return Ok(true),
            _ => {}
        }
        Ok(false)
    })?;
    check(exits.is_empty(), || format!("the guest stopped: {exits:?}"))?;
    let got = reports(&io);
    check(got == [SPI_INTID, SPI_INTID], || {
        format!("the guest acknowledged {got:?}, want INTID {SPI_INTID} twice")
    })
}

fn kick(hv: &dyn Hypervisor) -> CaseResult {
    let mut g = Guest::new(hv, &Asm::default().spin().0, 1)?;
    kick_out_of_run(&mut *g.vcpus[0])
}
