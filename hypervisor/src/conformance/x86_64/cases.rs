//! Each case builds a guest, runs it and compares what the backend reported with what the
//! guest did.

use std::sync::{Arc, Barrier};

use super::asm::Asm;
use super::guest::{run_vcpu, Guest, CODE, DATA, IDT, MMIO, RAM_SIZE};
use crate::arch::{IrqChipMode, Regs};
use crate::conformance::recorder::{Access, AccessKind::*, Recorder};
use crate::conformance::run::kick_out_of_run;
use crate::conformance::{
    check, expect_accesses, reads_and_stores, step, Case, CaseResult, Outcome,
};
use crate::{Datamatch, EventFd, Hypervisor, IoEventAddress, IrqRoute, MsiMessage, VcpuExit};

pub static CASES: &[Case] = &[
    Case {
        name: "port-out",
        what: "OUT of 1, 2 and 4 bytes reach the handler with their data",
        run: port_out,
    },
    Case {
        name: "port-in",
        what: "IN of 1, 2 and 4 bytes return the handler's data",
        run: port_in,
    },
    Case {
        name: "port-string-out",
        what: "REP OUTSB/W/D are one access per element",
        run: string_out,
    },
    Case {
        name: "port-string-in",
        what: "REP INSB/W/D are one access per element, stored in order",
        run: string_in,
    },
    Case {
        name: "mmio-write",
        what: "MMIO writes of 1, 2, 4 and 8 bytes with their data",
        run: mmio_write,
    },
    Case {
        name: "mmio-read",
        what: "MMIO reads of 1, 2, 4 and 8 bytes return the handler's data",
        run: mmio_read,
    },
    Case {
        name: "halt",
        what: "HLT without an in-kernel interrupt controller exits as Halt",
        run: halt,
    },
    Case {
        name: "registers",
        what: "general registers set are read back unchanged",
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
        name: "special-registers",
        what: "segments, control registers, EFER, x87 control and XMM set are read back unchanged",
        run: special_registers,
    },
    Case {
        name: "msrs",
        what: "the MSRs berth sets at boot are read back as set",
        run: msrs,
    },
    Case {
        name: "lapic-state",
        what: "the in-kernel LAPIC's LVT0/LVT1 and TPR set are read back as set",
        run: lapic_state,
    },
    Case {
        name: "ioeventfd",
        what: "ioeventfds (port; MMIO with a 4-byte datamatch) signal without exiting",
        run: ioeventfd,
    },
    Case {
        name: "msi-irqfd",
        what:
            "an irqfd on an MSI route interrupts the guest, also after deassign, signal, reassign",
        run: msi_irqfd,
    },
    Case {
        name: "msi-irqfd-split",
        what: "the same with the split interrupt controller (LAPICs in the hypervisor only)",
        run: msi_irqfd_split,
    },
    Case {
        name: "split-ioapic-eoi",
        what: "split mode: signal_msi delivers; a level pin route's EOI exits as IoapicEoi",
        run: split_ioapic_eoi,
    },
    Case {
        name: "kick",
        what: "a kick brings a spinning vCPU out of run",
        run: kick,
    },
    Case {
        name: "triple-fault",
        what: "an exception with no IDT exits as Shutdown",
        run: triple_fault,
    },
    Case {
        name: "vcpus-at-once",
        what: "four vCPUs run at the same time, each with its own state",
        run: vcpus_at_once,
    },
];

const PORT: u16 = 0x510;
const WIDTHS: [usize; 3] = [1, 2, 4];

fn run_to_done(g: &mut Guest, io: &Recorder) -> CaseResult {
    let exits = g.run(io)?;
    check(exits.is_empty(), || {
        format!("the guest stopped early: {exits:?}")
    })
}

fn port_out(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.mov_dx(PORT);
    for w in WIDTHS {
        a.mov_eax(0x4433_2211 + w as u32).out_dx(w);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let want: Vec<Access> = WIDTHS
        .iter()
        .map(|&w| {
            Access::new(
                PioWrite,
                PORT.into(),
                &(0x4433_2211 + w as u32).to_le_bytes()[..w],
            )
        })
        .collect();
    expect_accesses(&io.accesses(), &want)
}

fn port_in(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.mov_dx(PORT);
    for (i, w) in WIDTHS.into_iter().enumerate() {
        a.mov_eax(0)
            .in_dx(w)
            .store_rax(4, (DATA + i as u64 * 4) as u32);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let (want, stored) = reads_and_stores(&WIDTHS, 4, |_| (PioRead, PORT.into()));
    expect_accesses(&io.accesses(), &want)?;
    let got = g.ram.read(DATA, stored.len());
    check(got == stored, || {
        format!("the guest read {got:x?}, the handler answered {stored:x?}")
    })
}

/// Elements per string instruction.
const COUNT: u32 = 5;

fn string_out(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.cld().mov_dx(PORT);
    for (i, w) in WIDTHS.into_iter().enumerate() {
        a.mov_rsi((DATA + i as u64 * 0x100) as u32)
            .mov_rcx(COUNT)
            .rep_outs(w);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let source: Vec<u8> = (0..=255).collect();
    let mut want = Vec::new();
    for (i, w) in WIDTHS.into_iter().enumerate() {
        g.ram.write(DATA + i as u64 * 0x100, &source);
        for k in 0..COUNT as usize {
            want.push(Access::new(
                PioWrite,
                PORT.into(),
                &source[k * w..(k + 1) * w],
            ));
        }
    }
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    expect_accesses(&io.accesses(), &want)
}

fn string_in(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.cld().mov_dx(PORT);
    for (i, w) in WIDTHS.into_iter().enumerate() {
        a.mov_rdi((DATA + i as u64 * 0x100) as u32)
            .mov_rcx(COUNT)
            .rep_ins(w);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let mut want = Vec::new();
    let mut n = 0u8;
    for (i, w) in WIDTHS.into_iter().enumerate() {
        let mut stored = Vec::new();
        for _ in 0..COUNT {
            let ans = Recorder::answer(n, w);
            n += 1;
            want.push(Access::new(PioRead, PORT.into(), &ans));
            stored.extend(ans);
        }
        let got = g.ram.read(DATA + i as u64 * 0x100, stored.len());
        check(got == stored, || {
            format!("REP INS of width {w} stored {got:x?}, want {stored:x?}")
        })?;
    }
    expect_accesses(&io.accesses(), &want)
}

const MMIO_WIDTHS: [usize; 4] = [1, 2, 4, 8];
const PATTERN: u64 = 0x8877_6655_4433_2211;

fn mmio_write(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.mov_rbx(PATTERN);
    for (i, w) in MMIO_WIDTHS.into_iter().enumerate() {
        a.mov_rax(MMIO + i as u64 * 0x10).store_rbx_at_rax(w);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let want: Vec<Access> = MMIO_WIDTHS
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Access::new(
                MmioWrite,
                MMIO + i as u64 * 0x10,
                &PATTERN.to_le_bytes()[..w],
            )
        })
        .collect();
    expect_accesses(&io.accesses(), &want)
}

fn mmio_read(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    for (i, w) in MMIO_WIDTHS.into_iter().enumerate() {
        a.mov_rbx(0)
            .mov_rax(MMIO + i as u64 * 0x10)
            .load_rbx_from_rax(w)
            .store_rbx(8, (DATA + i as u64 * 8) as u32);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let (want, stored) = reads_and_stores(&MMIO_WIDTHS, 8, |n| (MmioRead, MMIO + n as u64 * 0x10));
    expect_accesses(&io.accesses(), &want)?;
    let got = g.ram.read(DATA, stored.len());
    check(got == stored, || {
        format!("the guest read {got:x?}, the handler answered {stored:x?}")
    })
}

fn halt(hv: &dyn Hypervisor) -> CaseResult {
    let mut a = Asm::default();
    a.hlt().done();
    let mut g = Guest::new(hv, &a.0, 1, None)?;
    let io = Recorder::default();
    let exits = g.run(&io)?;
    check(matches!(exits.as_slice(), [VcpuExit::Halt]), || {
        format!(
            "want one Halt exit, got {exits:?} after {:?}",
            io.accesses()
        )
    })
}

fn registers(hv: &dyn Hypervisor) -> CaseResult {
    let g = Guest::new(hv, &Asm::default().done().0, 1, None)?;
    let v = |i: u64| 0x0101_0101_0101_0101u64.wrapping_mul(i);
    let regs = Regs {
        rax: v(1),
        rbx: v(2),
        rcx: v(3),
        rdx: v(4),
        rsi: v(5),
        rdi: v(6),
        rsp: v(7),
        rbp: v(8),
        r8: v(9),
        r9: v(10),
        r10: v(11),
        r11: v(12),
        r12: v(13),
        r13: v(14),
        r14: v(15),
        r15: v(16),
        rip: CODE + 0x123,
        rflags: 0x2 | 0x1 | 0x40, // reserved bit, CF, ZF
    };
    step("set_regs", g.vcpus[0].set_regs(&regs))?;
    let back = step("get_regs", g.vcpus[0].get_regs())?;
    check(back == regs, || {
        format!("set {regs:x?}, read back {back:x?}")
    })
}

fn read_only_slot(hv: &dyn Hypervisor) -> CaseResult {
    const RO: u64 = RAM_SIZE; // right after RAM, in the identity map
    let mut a = Asm::default();
    a.mov_rax(RO)
        .load_rbx_from_rax(4)
        .store_rbx(4, DATA as u32)
        .mov_rbx(0xdead_beef)
        .store_rbx_at_rax(4);
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    g.add_slot(1, RO, true, &0x1122_3344u32.to_le_bytes())?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let got = u32::from_le_bytes(g.ram.read(DATA, 4).try_into().unwrap());
    check(got == 0x1122_3344, || {
        format!("the guest read {got:#x} from the slot, want 0x11223344")
    })?;
    expect_accesses(
        &io.accesses(),
        &[Access::new(MmioWrite, RO, &0xdead_beefu32.to_le_bytes())],
    )?;
    let kept = g.slots[0].read(0, 4);
    check(kept == 0x1122_3344u32.to_le_bytes(), || {
        format!("the write changed the slot: {kept:x?}")
    })
}

fn ioeventfd(hv: &dyn Hypervisor) -> CaseResult {
    const EV_PORT: u16 = 0x520;
    const EV_MMIO: u64 = MMIO + 0x1000;
    let mut a = Asm::default();
    a.mov_dx(EV_PORT)
        .mov_eax(1)
        .out_dx(2) // ioeventfd, any value
        .mov_rax(EV_MMIO)
        .mov_rbx(7)
        .store_rbx_at_rax(4) // datamatch 7: no exit
        .mov_rbx(8)
        .store_rbx_at_rax(4); // not 7: exits
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let port_evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    let mmio_evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    step(
        "register a port ioevent",
        g.vm.register_ioevent(
            &port_evt,
            IoEventAddress::Pio(EV_PORT.into()),
            Datamatch::Any,
        ),
    )?;
    step(
        "register an MMIO ioevent",
        g.vm.register_ioevent(&mmio_evt, IoEventAddress::Mmio(EV_MMIO), Datamatch::U32(7)),
    )?;
    let io = Recorder::default();
    run_to_done(&mut g, &io)?;
    let count = |e: &EventFd| e.read().unwrap_or(0);
    let (p, m) = (count(&port_evt), count(&mmio_evt));
    check(p == 1 && m == 1, || {
        format!("eventfd counts port {p}, MMIO {m}; want 1 and 1")
    })?;
    expect_accesses(
        &io.accesses(),
        &[Access::new(MmioWrite, EV_MMIO, &8u32.to_le_bytes())],
    )?;
    step(
        "unregister the MMIO ioevent",
        g.vm.unregister_ioevent(&mmio_evt, IoEventAddress::Mmio(EV_MMIO), Datamatch::U32(7)),
    )
}

fn kick(hv: &dyn Hypervisor) -> CaseResult {
    let mut g = Guest::new(hv, &Asm::default().spin().0, 1, None)?;
    kick_out_of_run(&mut *g.vcpus[0])
}

fn triple_fault(hv: &dyn Hypervisor) -> CaseResult {
    let mut g = Guest::new(hv, &Asm::default().ud2().done().0, 1, None)?;
    let mut s = step("get_sregs", g.vcpus[0].get_sregs())?;
    s.idt.limit = 0; // every exception faults again: #UD, #DF, shutdown
    step("set_sregs", g.vcpus[0].set_sregs(&s))?;
    let io = Recorder::default();
    let exits = g.run(&io)?;
    check(matches!(exits.as_slice(), [VcpuExit::Shutdown]), || {
        format!("want Shutdown, got {exits:?}")
    })
}

fn vcpus_at_once(hv: &dyn Hypervisor) -> CaseResult {
    const N: u32 = 4;
    const ROUNDS: u32 = 200;
    if hv.max_vcpus() < N {
        return Err(Outcome::Skip(format!(
            "the backend allows {} vCPUs",
            hv.max_vcpus()
        )));
    }
    // Each vCPU writes its id (in al) ROUNDS times (rcx), then is done.
    let mut a = Asm::default();
    a.mov_dx(PORT);
    let body = Asm::default().out_dx(1).0.len();
    a.out_dx(1).loop_back(body).done();
    let mut g = Guest::new(hv, &a.0, N, None)?;
    let barrier = Arc::new(Barrier::new(N as usize));
    let mut threads = Vec::new();
    for (id, mut vcpu) in g.vcpus.drain(..).enumerate() {
        let mut regs = step("get_regs", vcpu.get_regs())?;
        regs.rax = id as u64;
        regs.rcx = u64::from(ROUNDS);
        step("set_regs", vcpu.set_regs(&regs))?;
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || {
            let io = Recorder::default();
            barrier.wait();
            let r = run_vcpu(&mut *vcpu, &io, |_| Ok(false));
            (r.map(|exits| exits.len()), io.accesses())
        }));
    }
    // Join every thread before checking any: the guest's RAM must outlive its vCPUs.
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    for (id, r) in results.into_iter().enumerate() {
        let (r, accesses) = r.map_err(|_| Outcome::Fail(format!("vCPU {id}'s thread panicked")))?;
        let early = r?;
        check(early == 0, || format!("vCPU {id} stopped early"))?;
        let want = vec![Access::new(PioWrite, PORT.into(), &[id as u8]); ROUNDS as usize];
        check(accesses == want, || {
            format!(
                "vCPU {id}: {} accesses, want {ROUNDS} writes of {id}",
                accesses.len()
            )
        })?;
    }
    Ok(())
}

const READY: u16 = 0x512;
/// Interrupt handlers write their vector here.
const IRQ: u16 = 0x511;
const LAPIC: u64 = 0xfee0_0000;

/// A guest that enables its LAPIC, writes READY, and waits for interrupts with a handler for
/// each of `vectors` (each writes its vector to IRQ, EOIs and returns).
fn interrupt_guest(
    hv: &dyn Hypervisor,
    mode: IrqChipMode,
    vectors: &[u8],
) -> Result<Guest, Outcome> {
    let mut main = Asm::default();
    main.mov_rax(LAPIC + 0xf0)
        .store_imm32_at_rax(0x1ff) // spurious vector register: software-enable the LAPIC
        .mov_dx(READY)
        .out_dx(1)
        .sti()
        .halt_loop();
    let mut g = Guest::new(hv, &main.0, 1, Some(mode))?;
    for (i, &v) in vectors.iter().enumerate() {
        let at = CODE + 0x800 + i as u64 * 0x40;
        let mut isr = Asm::default();
        isr.mov_dx(IRQ)
            .mov_eax(v.into())
            .out_dx(1)
            .mov_rax(LAPIC + 0xb0)
            .store_imm32_at_rax(0) // EOI
            .iretq();
        g.ram.write(at, &isr.0);
        g.ram.write(IDT + u64::from(v) * 16, &interrupt_gate(at));
    }
    Ok(g)
}

/// The vectors the guest's handlers reported, in order.
fn interrupts(io: &Recorder) -> Vec<u8> {
    io.accesses()
        .iter()
        .filter(|a| a.kind == PioWrite && a.addr == u64::from(IRQ))
        .map(|a| a.data[0])
        .collect()
}

fn msi_irqfd(hv: &dyn Hypervisor) -> CaseResult {
    msi_irqfd_in(hv, IrqChipMode::Kernel)
}

fn msi_irqfd_split(hv: &dyn Hypervisor) -> CaseResult {
    msi_irqfd_in(hv, IrqChipMode::Split)
}

fn msi_irqfd_in(hv: &dyn Hypervisor, mode: IrqChipMode) -> CaseResult {
    const VECTOR: u8 = 0x40;
    let mut g = interrupt_guest(hv, mode, &[VECTOR])?;
    let chip = g.chip.clone().expect("asked for an interrupt controller");
    let gsi = chip.pin_count();
    let msi = MsiMessage {
        address: LAPIC,
        data: VECTOR.into(),
        devid: None,
    };
    step(
        "set an MSI route",
        chip.set_msi_routes(&[IrqRoute::Msi { gsi, msi }]),
    )?;
    let evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    step("register the irqfd", chip.register_irqfd(&evt, gsi))?;
    let io = Recorder::default();
    // Signalled once the guest is ready. After the first interrupt the irqfd is deassigned,
    // signalled and reassigned (what MSI-X masking does): the pending signal must arrive on
    // reassignment. After the second, a plain signal once more.
    let last_was_irq = |io: &Recorder| {
        io.accesses()
            .last()
            .is_some_and(|a| a.addr == u64::from(IRQ))
    };
    let mut signalled_ready = false;
    let exits = run_vcpu(&mut *g.vcpus[0], &io, |io| {
        let signal = || step("signal the irqfd", evt.write(1));
        if io.writes_to(READY) == 1 && !signalled_ready {
            signalled_ready = true;
            signal()?;
        }
        match io.writes_to(IRQ) {
            1 if last_was_irq(io) => {
                step("deassign the irqfd", chip.unregister_irqfd(&evt, gsi))?;
                signal()?;
                step("reassign the irqfd", chip.register_irqfd(&evt, gsi))?;
            }
            2 if last_was_irq(io) => signal()?,
            _ => {}
        }
        Ok(io.writes_to(IRQ) >= 3)
    });
    let exits = exits.map_err(|o| match o {
        Outcome::Fail(why) => Outcome::Fail(format!(
            "{} of 3 interrupts arrived: {why}",
            io.writes_to(IRQ)
        )),
        o => o,
    })?;
    check(exits.is_empty(), || format!("the guest stopped: {exits:?}"))?;
    let _ = chip.unregister_irqfd(&evt, gsi);
    check(io.writes_to(IRQ) == 3, || {
        format!("{} interrupts, want 3", io.writes_to(IRQ))
    })
}

/// Split mode as a user-space IOAPIC uses it: an MSI sent directly, and a level-triggered
/// route on a reserved pin GSI whose EOI comes back to the VMM as an exit.
fn split_ioapic_eoi(hv: &dyn Hypervisor) -> CaseResult {
    const EDGE: u8 = 0x42;
    const LEVEL: u8 = 0x41;
    const PIN: u32 = 5;
    let mut g = interrupt_guest(hv, IrqChipMode::Split, &[EDGE, LEVEL])?;
    let chip = g.chip.clone().expect("asked for an interrupt controller");
    let line = chip.set_irq_line(PIN, true);
    check(line.is_err(), || {
        "set_irq_line worked in split mode; the VMM's IOAPIC must own lines".into()
    })?;
    // Level trigger (bit 15) and assert (bit 14), as an IOAPIC sends a level pin.
    let level = MsiMessage {
        address: LAPIC,
        data: u32::from(LEVEL) | 0xc000,
        devid: None,
    };
    step(
        "set a level-triggered pin route",
        chip.set_msi_routes(&[IrqRoute::Msi {
            gsi: PIN,
            msi: level,
        }]),
    )?;
    let evt = step("eventfd", EventFd::new(libc::EFD_NONBLOCK))?;
    step("register the irqfd", chip.register_irqfd(&evt, PIN))?;
    let io = Recorder::default();
    let mut sent = false;
    let exits = run_vcpu(&mut *g.vcpus[0], &io, |io| {
        if io.writes_to(READY) == 1 && !sent {
            sent = true;
            step(
                "signal_msi",
                chip.signal_msi(MsiMessage {
                    address: LAPIC,
                    data: EDGE.into(),
                    devid: None,
                }),
            )?;
        }
        if interrupts(io) == [EDGE]
            && io
                .accesses()
                .last()
                .is_some_and(|a| a.addr == u64::from(IRQ))
        {
            step("signal the pin's irqfd", evt.write(1))?;
        }
        Ok(false)
    })?;
    let _ = chip.unregister_irqfd(&evt, PIN);
    let got = interrupts(&io);
    check(got == [EDGE, LEVEL], || {
        format!("interrupts {got:x?}, want [{EDGE:#x}, {LEVEL:#x}]")
    })?;
    check(
        matches!(exits.as_slice(), [VcpuExit::IoapicEoi { vector: LEVEL }]),
        || {
            format!(
                "want an IoapicEoi exit for {LEVEL:#x} after the level interrupt, got {exits:?}"
            )
        },
    )
}

/// A 64-bit interrupt gate to `handler` in the kit's code segment.
fn interrupt_gate(handler: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    e[2..4].copy_from_slice(&0x08u16.to_le_bytes());
    e[5] = 0x8e; // present, DPL 0, interrupt gate
    e[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    e[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    e
}

fn slot_remove(hv: &dyn Hypervisor) -> CaseResult {
    const AT: u64 = RAM_SIZE;
    // Read the slot's first dword, tell the host (it removes or adds the slot), read again...
    let mut a = Asm::default();
    for _ in 0..3 {
        a.mov_rax(AT).load_rbx_from_rax(4).mov_dx(PORT).out_dx(1);
    }
    let mut g = Guest::new(hv, &a.done().0, 1, None)?;
    let region = g.add_slot(1, AT, false, &0x5a5a_0001u32.to_le_bytes())?;
    let vm = g.vm.clone();
    let io = Recorder::default();
    let exits = run_vcpu(&mut *g.vcpus[0], &io, |io| {
        match io.writes_to(PORT) {
            1 if io.accesses().last().is_some_and(|a| a.kind == PioWrite) => {
                step("remove the slot", vm.remove_memory_region(region))?
            }
            // SAFETY: the slot's memory is still in `g.slots`, which outlives the VM.
            2 if io.accesses().last().is_some_and(|a| a.kind == PioWrite) => {
                step("add the slot again", unsafe {
                    vm.add_memory_region(region)
                })?
            }
            _ => {}
        }
        Ok(false)
    })?;
    check(exits.is_empty(), || format!("the guest stopped: {exits:?}"))?;
    // Read 1 from memory (no access), read 2 an MMIO read, read 3 from memory again.
    let reads: Vec<Access> = io
        .accesses()
        .into_iter()
        .filter(|a| a.kind != PioWrite)
        .collect();
    expect_accesses(
        &reads,
        &[Access::new(MmioRead, AT, &Recorder::answer(0, 4))],
    )
}

fn special_registers(hv: &dyn Hypervisor) -> CaseResult {
    let g = Guest::new(hv, &Asm::default().done().0, 1, None)?;
    let vcpu = &g.vcpus[0];
    let mut s = step("get_sregs", vcpu.get_sregs())?;
    s.fs.base = 0x1234_5000;
    s.gs.base = 0xffff_8000_0000_0000;
    s.gdt.limit = 0x1f;
    s.idt.base = 0x7000;
    s.cr2 = 0xdead_b000;
    s.cr4 |= 1 << 9; // OSFXSR
    step("set_sregs", vcpu.set_sregs(&s))?;
    let back = step("get_sregs", vcpu.get_sregs())?;
    // The backend may keep bits it owns (e.g. pending-interrupt state); these are the guest's.
    let segments = |x: &crate::arch::Sregs| (x.cs, x.ds, x.ss, x.fs, x.gs, x.tr, x.gdt, x.idt);
    let control = |x: &crate::arch::Sregs| (x.cr0, x.cr2, x.cr3, x.cr4, x.efer);
    check(
        segments(&back) == segments(&s) && control(&back) == control(&s),
        || format!("set {s:x?}\nread back {back:x?}"),
    )?;
    // MXCSR is left out: KVM_GET_FPU reported it as 0 whatever KVM_SET_FPU was given (seen on
    // this machine's KVM); berth relies only on its reset value, 0x1f80.
    let fpu = crate::arch::Fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        xmm: std::array::from_fn(|i| [i as u8 + 1; 16]),
        ..Default::default()
    };
    step("set_fpu", vcpu.set_fpu(&fpu))?;
    let f = step("get_fpu", vcpu.get_fpu())?;
    check((f.fcw, f.xmm) == (fpu.fcw, fpu.xmm), || {
        format!(
            "FPU set fcw {:#x} xmm0 {:x?}, read back fcw {:#x} xmm0 {:x?}",
            fpu.fcw, fpu.xmm[0], f.fcw, f.xmm[0]
        )
    })
}

fn msrs(hv: &dyn Hypervisor) -> CaseResult {
    use crate::arch::Msr;
    let g = Guest::new(hv, &Asm::default().done().0, 1, None)?;
    // SYSENTER_CS/ESP/EIP, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE: plain storage MSRs.
    let set: Vec<Msr> = [
        0x174,
        0x175,
        0x176,
        0xc000_0081,
        0xc000_0082,
        0xc000_0083,
        0xc000_0084,
        0xc000_0102,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, index)| Msr {
        index,
        value: 0x1000 * (i as u64 + 1),
    })
    .collect();
    step("set_msrs", g.vcpus[0].set_msrs(&set))?;
    let mut back: Vec<Msr> = set
        .iter()
        .map(|m| Msr {
            index: m.index,
            value: 0,
        })
        .collect();
    step("get_msrs", g.vcpus[0].get_msrs(&mut back))?;
    check(back == set, || format!("set {set:x?}, read back {back:x?}"))
}

fn lapic_state(hv: &dyn Hypervisor) -> CaseResult {
    const TPR: usize = 0x80;
    const LVT0: usize = 0x350;
    const LVT1: usize = 0x360;
    let g = Guest::new(hv, &Asm::default().done().0, 1, Some(IrqChipMode::Kernel))?;
    let vcpu = &g.vcpus[0];
    let mut lapic = step("get_lapic", vcpu.get_lapic())?;
    lapic.set(TPR, 0x20);
    lapic.set(LVT0, 0x700); // ExtINT, as berth sets it
    lapic.set(LVT1, 0x400); // NMI
    step("set_lapic", vcpu.set_lapic(&lapic))?;
    let back = step("get_lapic", vcpu.get_lapic())?;
    let regs = |l: &crate::arch::LapicState| (l.get(TPR), l.get(LVT0), l.get(LVT1));
    check(regs(&back) == (0x20, 0x700, 0x400), || {
        format!(
            "TPR, LVT0, LVT1 read back as {:x?}, want (0x20, 0x700, 0x400)",
            regs(&back)
        )
    })
}
