//! Instruction by instruction: the registers, RAM and device accesses each one must leave.
//! The instructions are assembled with iced-x86's assembler, so each test reads as what it
//! emulates.

use std::cell::RefCell;

use iced_x86::code_asm::*;

use super::exec::{AF, CF, OF, PF, SF, ZF};
use super::*;
use crate::x86_64::Segment;

/// 4 MiB of RAM from 0; everything above is a device.
const RAM: usize = 4 << 20;
const PML4: u64 = 0x1000;
/// Where the page tables' pages come from.
const TABLES: u64 = 0x2000;
const CODE_GVA: u64 = 0xffff_ffff_8100_0000;
const CODE_GPA: u64 = 0x10_0000;
/// A device page, as ioremap would map it.
const DEV_GVA: u64 = 0xffff_c900_0000_0000;
const DEV_GPA: u64 = 0xfebf_0000;
/// A RAM buffer, in the direct map (a 2 MiB page).
const BUF_GVA: u64 = 0xffff_8880_0020_0000;
const BUF_GPA: u64 = 0x20_0000;
/// What the device answers to every read, little-endian from the first byte.
const DEVICE_VALUE: u64 = 0x8877_6655_4433_2211;

struct TestRam(RefCell<Vec<u8>>);

impl GuestRam for TestRam {
    fn read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let m = self.0.borrow();
        let Some(src) = usize::try_from(gpa)
            .ok()
            .and_then(|a| m.get(a..a.checked_add(data.len())?))
        else {
            return false;
        };
        data.copy_from_slice(src);
        true
    }

    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let mut m = self.0.borrow_mut();
        let Some(dst) = usize::try_from(gpa)
            .ok()
            .and_then(|a| m.get_mut(a..a.checked_add(data.len())?))
        else {
            return false;
        };
        dst.copy_from_slice(data);
        true
    }
}

/// Device accesses, and port accesses apart (port, write, data).
#[derive(Default)]
struct TestIo(
    RefCell<Vec<(u64, bool, Vec<u8>)>>,
    RefCell<Vec<(u16, bool, Vec<u8>)>>,
);

impl IoHandler for TestIo {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0xa0 + i as u8;
        }
        self.1.borrow_mut().push((port, false, data.to_vec()));
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.1.borrow_mut().push((port, true, data.to_vec()));
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        let v = DEVICE_VALUE.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
        self.0.borrow_mut().push((addr, false, data.to_vec()));
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.0.borrow_mut().push((addr, true, data.to_vec()));
    }
}

struct Guest {
    cpu: CpuState,
    ram: TestRam,
    io: TestIo,
    next_table: u64,
}

fn seg64() -> Segment {
    Segment {
        l: true,
        present: true,
        s: true,
        type_: 0xb,
        ..Segment::default()
    }
}

impl Guest {
    /// Long mode, 4-level paging: the code page, the device page and the buffer mapped.
    fn new() -> Guest {
        let mut g = Guest {
            cpu: CpuState::default(),
            ram: TestRam(RefCell::new(vec![0; RAM])),
            io: TestIo::default(),
            next_table: TABLES,
        };
        g.cpu.sregs.cr0 = 0x8000_0011;
        g.cpu.sregs.cr4 = 0x20;
        g.cpu.sregs.efer = 0x500;
        g.cpu.sregs.cr3 = PML4;
        g.cpu.sregs.cs = seg64();
        g.cpu.regs.rip = CODE_GVA;
        g.cpu.regs.rflags = 2;
        g.map(CODE_GVA, CODE_GPA, 0);
        g.map(CODE_GVA + 0x1000, CODE_GPA + 0x1000, 0);
        g.map(DEV_GVA, DEV_GPA, 0);
        g.map(DEV_GVA + 0x1000, DEV_GPA + 0x1000, 0);
        g.map(BUF_GVA, BUF_GPA, 1);
        g
    }

    fn u64_at(&self, gpa: u64) -> u64 {
        let mut b = [0; 8];
        assert!(self.ram.read(gpa, &mut b));
        u64::from_le_bytes(b)
    }

    fn put(&self, gpa: u64, bytes: &[u8]) {
        assert!(self.ram.write(gpa, bytes));
    }

    /// Maps `gva` to `gpa` with a page of level `leaf` (0: 4 KiB, 1: 2 MiB, 2: 1 GiB).
    fn map(&mut self, gva: u64, gpa: u64, leaf: u32) {
        let mut table = PML4;
        for level in (leaf + 1..4).rev() {
            let slot = table + ((gva >> (12 + 9 * level)) & 0x1ff) * 8;
            let e = self.u64_at(slot);
            table = if e & 1 == 0 {
                let t = self.next_table;
                self.next_table += 0x1000;
                self.put(slot, &(t | 3).to_le_bytes());
                t
            } else {
                e & 0x000f_ffff_ffff_f000
            };
        }
        let slot = table + ((gva >> (12 + 9 * leaf)) & 0x1ff) * 8;
        let large = if leaf > 0 { 0x80 } else { 0 };
        self.put(slot, &(gpa | 3 | large).to_le_bytes());
    }

    /// Assembles `f`'s instructions for `bitness` at RIP and puts them in RAM at `gpa`.
    fn code_at(&mut self, bitness: u32, gpa: u64, f: impl FnOnce(&mut CodeAssembler)) {
        let mut a = CodeAssembler::new(bitness).unwrap();
        f(&mut a);
        let bytes = a.assemble(self.cpu.regs.rip).unwrap();
        self.put(gpa, &bytes);
    }

    fn code(&mut self, f: impl FnOnce(&mut CodeAssembler)) {
        self.code_at(64, CODE_GPA, f);
    }

    fn step(&mut self) -> Emulated {
        let before = self.io.0.borrow().len();
        let e = emulate(&mut self.cpu, &self.ram, &self.io).unwrap();
        let seen: Vec<_> = self.io.0.borrow()[before..]
            .iter()
            .map(|(gpa, write, data)| (*gpa, *write, data.clone()))
            .collect();
        let recorded: Vec<_> = e
            .accesses()
            .iter()
            .map(|a| (a.gpa, a.write, a.data().to_vec()))
            .collect();
        assert_eq!(recorded, seen, "the result lists the device accesses made");
        e
    }

    fn step_err(&mut self) -> EmulatorError {
        let before = self.cpu;
        let e = emulate(&mut self.cpu, &self.ram, &self.io).unwrap_err();
        assert_eq!(self.cpu, before, "a failed instruction changes no register");
        e
    }

    fn accesses(&self) -> Vec<(u64, bool, Vec<u8>)> {
        std::mem::take(&mut self.io.0.borrow_mut())
    }
}

fn w(gpa: u64, data: &[u8]) -> (u64, bool, Vec<u8>) {
    (gpa, true, data.to_vec())
}

fn r(gpa: u64, len: usize) -> (u64, bool, Vec<u8>) {
    (gpa, false, DEVICE_VALUE.to_le_bytes()[..len].to_vec())
}

#[test]
fn mov_register_to_device_in_every_width() {
    let mut g = Guest::new();
    g.cpu.regs.rax = DEV_GVA;
    g.cpu.regs.rbx = 0x1122_3344_5566_7788;
    g.code(|a| {
        a.mov(byte_ptr(rax + 1), bl).unwrap();
        a.mov(byte_ptr(rax + 2), bh).unwrap();
        a.mov(word_ptr(rax + 4), bx).unwrap();
        a.mov(dword_ptr(rax + 0x10), ebx).unwrap();
        a.mov(qword_ptr(rax + 0x18), rbx).unwrap();
    });
    let mut rip = CODE_GVA;
    for _ in 0..5 {
        let e = g.step();
        assert!(e.completed);
        rip += e.length as u64;
        assert_eq!(g.cpu.regs.rip, rip);
    }
    assert_eq!(
        g.accesses(),
        vec![
            w(DEV_GPA + 1, &[0x88]),
            w(DEV_GPA + 2, &[0x77]),
            w(DEV_GPA + 4, &[0x88, 0x77]),
            w(DEV_GPA + 0x10, &[0x88, 0x77, 0x66, 0x55]),
            w(DEV_GPA + 0x18, &0x1122_3344_5566_7788u64.to_le_bytes()),
        ]
    );
}

#[test]
fn mov_immediates_to_the_device_are_sign_extended_to_their_width() {
    let mut g = Guest::new();
    g.cpu.regs.rdi = DEV_GVA;
    g.code(|a| {
        a.mov(byte_ptr(rdi), 0x5a).unwrap();
        a.mov(word_ptr(rdi + 2), 0x1234).unwrap();
        a.mov(dword_ptr(rdi + 4), 0xdead_beef_u32).unwrap();
        a.mov(qword_ptr(rdi + 8), -2).unwrap();
    });
    for _ in 0..4 {
        g.step();
    }
    assert_eq!(
        g.accesses(),
        vec![
            w(DEV_GPA, &[0x5a]),
            w(DEV_GPA + 2, &[0x34, 0x12]),
            w(DEV_GPA + 4, &[0xef, 0xbe, 0xad, 0xde]),
            w(DEV_GPA + 8, &(-2i64).to_le_bytes()),
        ]
    );
}

#[test]
fn mov_from_the_device_writes_registers_as_the_cpu_does() {
    let mut g = Guest::new();
    g.cpu.regs.rsi = DEV_GVA;
    g.cpu.regs.rax = u64::MAX;
    g.cpu.regs.rcx = u64::MAX;
    g.cpu.regs.rdx = u64::MAX;
    g.cpu.regs.r9 = u64::MAX;
    g.code(|a| {
        a.mov(eax, dword_ptr(rsi + 8)).unwrap(); // zero-extends
        a.mov(cx, word_ptr(rsi)).unwrap(); // keeps the rest
        a.mov(dh, byte_ptr(rsi)).unwrap(); // bits 8-15
        a.mov(r9, qword_ptr(rsi)).unwrap();
    });
    for _ in 0..4 {
        g.step();
    }
    assert_eq!(g.cpu.regs.rax, 0x4433_2211);
    assert_eq!(g.cpu.regs.rcx, 0xffff_ffff_ffff_2211);
    assert_eq!(g.cpu.regs.rdx, 0xffff_ffff_ffff_11ff);
    assert_eq!(g.cpu.regs.r9, DEVICE_VALUE);
    assert_eq!(
        g.accesses(),
        vec![
            r(DEV_GPA + 8, 4),
            r(DEV_GPA, 2),
            r(DEV_GPA, 1),
            r(DEV_GPA, 8)
        ]
    );
}

#[test]
fn rip_relative_and_absolute_moffs_addresses() {
    let mut g = Guest::new();
    // A RIP-relative operand that lands in the device page: the code page is mapped at a
    // lower address, so place both in one 2 MiB window of a separate mapping.
    let code = 0xffff_ffff_a000_0000u64;
    g.map(code, CODE_GPA + 0x3000, 0);
    g.map(code + 0x1000, DEV_GPA, 0);
    g.cpu.regs.rip = code;
    let mut label_target = 0;
    g.code_at(64, CODE_GPA + 0x3000, |a| {
        // mov eax, [rip + disp] with the target 0x1000 + 0x20 past the code page's start.
        a.mov(eax, dword_ptr(code + 0x1020)).unwrap();
        label_target = code + 0x1020;
    });
    g.step();
    assert_eq!(g.accesses(), vec![r(DEV_GPA + 0x20, 4)]);
    assert_eq!(label_target, code + 0x1020);
    // A1 with a 64-bit absolute address (no page tables involved beyond the walk).
    g.cpu.regs.rip = CODE_GVA;
    g.put(CODE_GPA, &[0x48, 0xa1]);
    g.put(CODE_GPA + 2, &(DEV_GVA + 0x30).to_le_bytes());
    let e = g.step();
    assert_eq!(e.length, 10);
    assert_eq!(g.cpu.regs.rax, DEVICE_VALUE);
    assert_eq!(g.accesses(), vec![r(DEV_GPA + 0x30, 8)]);
}

#[test]
fn movzx_movsx_and_movsxd() {
    let mut g = Guest::new();
    g.cpu.regs.rbx = DEV_GVA;
    g.code(|a| {
        a.movzx(ecx, byte_ptr(rbx + 7)).unwrap(); // 0x88
        a.movzx(rdx, word_ptr(rbx + 6)).unwrap(); // 0x8877
        a.movsx(r8, byte_ptr(rbx + 7)).unwrap();
        a.movsx(r9d, word_ptr(rbx + 6)).unwrap();
        a.movsxd(r10, dword_ptr(rbx + 4)).unwrap(); // 0x88776655
    });
    g.cpu.regs.rcx = u64::MAX;
    for _ in 0..5 {
        g.step();
    }
    assert_eq!(g.cpu.regs.rcx, 0x11); // the device answers from its first byte
    assert_eq!(g.cpu.regs.rdx, 0x2211);
    assert_eq!(g.cpu.regs.r8, 0x11);
    assert_eq!(g.cpu.regs.r9, 0x2211);
    assert_eq!(g.cpu.regs.r10, 0x4433_2211);
    // Negative values: a device that answers 0x88.. in its first byte.
    let mut g = Guest::new();
    g.cpu.regs.rbx = BUF_GVA;
    g.put(BUF_GPA, &[0x88, 0x99, 0xaa, 0xbb]);
    g.code(|a| {
        a.movsx(r8, byte_ptr(rbx)).unwrap();
        a.movsx(r9d, word_ptr(rbx)).unwrap();
        a.movsxd(r10, dword_ptr(rbx)).unwrap();
        a.movzx(r11d, word_ptr(rbx)).unwrap();
    });
    g.cpu.regs.r9 = u64::MAX;
    for _ in 0..4 {
        g.step();
    }
    assert_eq!(g.cpu.regs.r8, 0xffff_ffff_ffff_ff88);
    assert_eq!(g.cpu.regs.r9, 0xffff_9988); // a 32-bit destination zero-extends
    assert_eq!(g.cpu.regs.r10, 0xffff_ffff_bbaa_9988);
    assert_eq!(g.cpu.regs.r11, 0x9988);
    assert!(g.accesses().is_empty(), "RAM is RAM, not the device");
}

#[test]
fn rep_movsb_from_ram_to_the_device_is_one_element_per_call() {
    let mut g = Guest::new();
    g.put(BUF_GPA, b"abc");
    g.cpu.regs.rsi = BUF_GVA;
    g.cpu.regs.rdi = DEV_GVA + 0x100;
    g.cpu.regs.rcx = 3;
    g.code(|a| {
        a.rep().movsb().unwrap();
    });
    for left in [2u64, 1] {
        let e = g.step();
        assert!(!e.completed);
        assert_eq!((g.cpu.regs.rip, g.cpu.regs.rcx), (CODE_GVA, left));
    }
    let e = g.step();
    assert!(e.completed);
    assert_eq!(g.cpu.regs.rip, CODE_GVA + e.length as u64);
    assert_eq!((g.cpu.regs.rcx, g.cpu.regs.rsi), (0, BUF_GVA + 3));
    assert_eq!(
        g.accesses(),
        vec![
            w(DEV_GPA + 0x100, b"a"),
            w(DEV_GPA + 0x101, b"b"),
            w(DEV_GPA + 0x102, b"c")
        ]
    );
    // A count of zero does nothing but move on.
    g.cpu.regs.rip = CODE_GVA;
    let e = g.step();
    assert!(e.completed && e.accesses().is_empty());
}

#[test]
fn movsq_from_the_device_into_ram_and_backwards_with_df() {
    let mut g = Guest::new();
    g.cpu.regs.rsi = DEV_GVA + 0x40;
    g.cpu.regs.rdi = BUF_GVA + 0x10;
    g.cpu.regs.rflags |= 1 << 10;
    g.code(|a| {
        a.movsq().unwrap();
    });
    g.step();
    assert_eq!(g.u64_at(BUF_GPA + 0x10), DEVICE_VALUE);
    assert_eq!(g.cpu.regs.rsi, DEV_GVA + 0x38);
    assert_eq!(g.cpu.regs.rdi, BUF_GVA + 0x8);
    assert_eq!(g.accesses(), vec![r(DEV_GPA + 0x40, 8)]);
}

#[test]
fn rep_stosd_and_lodsw() {
    let mut g = Guest::new();
    g.cpu.regs.rdi = DEV_GVA;
    g.cpu.regs.rax = 0xaabb_ccdd_0102_0304;
    g.cpu.regs.rcx = 2;
    g.code(|a| {
        a.rep().stosd().unwrap();
        a.lodsw().unwrap();
    });
    g.step();
    let e = g.step();
    assert!(e.completed);
    assert_eq!(g.cpu.regs.rdi, DEV_GVA + 8);
    g.cpu.regs.rsi = DEV_GVA + 0x20;
    g.step();
    assert_eq!(g.cpu.regs.rax, 0xaabb_ccdd_0102_2211);
    assert_eq!(g.cpu.regs.rsi, DEV_GVA + 0x22);
    assert_eq!(
        g.accesses(),
        vec![
            w(DEV_GPA, &[4, 3, 2, 1]),
            w(DEV_GPA + 4, &[4, 3, 2, 1]),
            r(DEV_GPA + 0x20, 2)
        ]
    );
}

#[test]
fn rep_outsb_and_rep_insw_are_one_port_access_per_element() {
    let mut g = Guest::new();
    g.put(BUF_GPA, b"hi");
    g.cpu.regs.rsi = BUF_GVA;
    g.cpu.regs.rdi = BUF_GVA + 0x100;
    g.cpu.regs.rdx = 0x3f8;
    g.cpu.regs.rcx = 2;
    g.code(|a| {
        a.rep().outsb().unwrap();
    });
    g.step();
    let e = g.step();
    assert!(e.completed && e.accesses().is_empty());
    assert_eq!(
        std::mem::take(&mut *g.io.1.borrow_mut()),
        vec![(0x3f8, true, b"h".to_vec()), (0x3f8, true, b"i".to_vec())]
    );
    g.cpu.regs.rip = CODE_GVA;
    g.cpu.regs.rcx = 2;
    g.cpu.regs.rdx = 0x1f0;
    g.code(|a| {
        a.rep().insw().unwrap();
    });
    g.step();
    g.step();
    assert_eq!(g.u64_at(BUF_GPA + 0x100) & 0xffff_ffff, 0xa1a0_a1a0);
    assert_eq!(g.cpu.regs.rdi, BUF_GVA + 0x104);
    assert_eq!(g.io.1.borrow().len(), 2);
}

#[test]
fn read_modify_write_and_compare_set_the_flags() {
    let mut g = Guest::new();
    g.cpu.regs.rax = DEV_GVA;
    g.cpu.regs.rcx = 0x11;
    g.code(|a| {
        a.or(dword_ptr(rax), 0x100).unwrap(); // 0x44332211 | 0x100
        a.and(byte_ptr(rax), cl).unwrap(); // 0x11 & 0x11
        a.cmp(byte_ptr(rax), 0x11).unwrap(); // equal: ZF
        a.cmp(cl, byte_ptr(rax + 1)).unwrap(); // 0x11 - 0x11... device answers 0x11 first
        a.test(word_ptr(rax), 0x8000).unwrap(); // 0x2211 & 0x8000 = 0: ZF
        a.add(byte_ptr(rax), 0x7f).unwrap(); // 0x11 + 0x7f = 0x90: OF, SF
        a.sub(cl, byte_ptr(rax)).unwrap(); // 0x11 - 0x11 = 0 into CL
        a.xor(qword_ptr(rax), rcx).unwrap();
    });
    let flags = |g: &Guest| g.cpu.regs.rflags;
    g.step();
    assert_eq!(flags(&g) & (ZF | SF | CF | OF), 0);
    g.step();
    assert_eq!(flags(&g) & (ZF | PF), PF); // 0x11 has two bits set: even parity
    g.step();
    assert_eq!(flags(&g) & (ZF | CF), ZF);
    g.step();
    assert_eq!(flags(&g) & ZF, ZF);
    g.step();
    assert_eq!(flags(&g) & ZF, ZF);
    g.step();
    assert_eq!(flags(&g) & (OF | SF | CF | ZF), OF | SF);
    g.step();
    assert_eq!(g.cpu.regs.rcx & 0xff, 0);
    assert_eq!(flags(&g) & (ZF | CF), ZF);
    g.step();
    assert_eq!(
        g.accesses(),
        vec![
            r(DEV_GPA, 4),
            w(DEV_GPA, &[0x11, 0x23, 0x33, 0x44]),
            r(DEV_GPA, 1),
            w(DEV_GPA, &[0x11]),
            r(DEV_GPA, 1),
            r(DEV_GPA + 1, 1),
            r(DEV_GPA, 2),
            r(DEV_GPA, 1),
            w(DEV_GPA, &[0x90]),
            r(DEV_GPA, 1),
            r(DEV_GPA, 8),
            w(DEV_GPA, &DEVICE_VALUE.to_le_bytes()), // rcx is 0 by then
        ]
    );
}

#[test]
fn sub_borrow_sets_carry_and_sign() {
    let mut g = Guest::new();
    g.cpu.regs.rax = DEV_GVA;
    g.code(|a| {
        a.cmp(byte_ptr(rax), 0x12).unwrap(); // 0x11 - 0x12
    });
    g.step();
    assert_eq!(g.cpu.regs.rflags & (CF | SF | ZF | AF), CF | SF | AF);
}

#[test]
fn fs_and_gs_overrides_add_the_segment_base() {
    let mut g = Guest::new();
    g.cpu.sregs.gs.base = DEV_GVA;
    g.cpu.regs.rdx = 0x44;
    g.code(|a| {
        a.mov(dword_ptr(0x40).gs(), edx).unwrap();
    });
    g.step();
    assert_eq!(g.accesses(), vec![w(DEV_GPA + 0x40, &[0x44, 0, 0, 0])]);
}

#[test]
fn an_access_across_a_page_is_two_accesses() {
    let mut g = Guest::new();
    // RAM page then device page, adjacent in the linear map.
    let gva = 0xffff_ffff_b000_0000u64;
    g.map(gva, 0x38_0000, 0);
    g.map(gva + 0x1000, DEV_GPA, 0);
    g.cpu.regs.rax = gva + 0xffc;
    g.cpu.regs.rbx = 0x1122_3344_5566_7788;
    g.code(|a| {
        a.mov(qword_ptr(rax), rbx).unwrap();
    });
    let e = g.step();
    assert_eq!(e.accesses().len(), 1);
    assert_eq!(g.u64_at(0x38_0ff8) >> 32, 0x5566_7788);
    assert_eq!(g.accesses(), vec![w(DEV_GPA, &[0x44, 0x33, 0x22, 0x11])]);
}

#[test]
fn an_instruction_across_a_page_is_fetched_from_both() {
    let mut g = Guest::new();
    g.cpu.regs.rip = CODE_GVA + 0xffe;
    g.cpu.regs.rax = DEV_GVA;
    g.cpu.regs.rbx = 7;
    // mov dword [rax+0x10], ebx is 89 58 10: the last byte on the next page.
    g.put(CODE_GPA + 0xffe, &[0x89, 0x58]);
    g.put(CODE_GPA + 0x1000, &[0x10]);
    let e = g.step();
    assert_eq!(e.length, 3);
    assert_eq!(g.accesses(), vec![w(DEV_GPA + 0x10, &[7, 0, 0, 0])]);
}

#[test]
fn huge_pages_translate() {
    let mut g = Guest::new();
    // 1 GiB page: GVA 0xffff_8000_c000_0000 -> GPA 0xc000_0000.
    g.map(0xffff_8000_c000_0000, 0xc000_0000, 2);
    g.cpu.regs.rax = 0xffff_8000_c000_0000 + (DEV_GPA - 0xc000_0000);
    g.code(|a| {
        a.mov(byte_ptr(rax), 1).unwrap();
    });
    g.step();
    assert_eq!(g.accesses(), vec![w(DEV_GPA, &[1])]);
}

/// 32-bit protected mode: no paging, then PAE, then 32-bit paging with a 4 MiB page.
#[test]
fn protected_mode_without_paging_with_pae_and_with_4m_pages() {
    let mut g = Guest::new();
    g.cpu.sregs.efer = 0;
    g.cpu.sregs.cr0 = 0x11;
    g.cpu.sregs.cs = Segment {
        db: true,
        present: true,
        s: true,
        type_: 0xb,
        ..Segment::default()
    };
    g.cpu.sregs.ds.base = 0x1000_0000;
    g.cpu.regs.rip = 0x3000;
    g.cpu.regs.rax = DEV_GPA - 0x1000_0000;
    g.cpu.regs.rbx = 0xabcd;
    g.code_at(32, 0x3000, |a| {
        a.mov(word_ptr(eax), bx).unwrap();
    });
    g.step();
    assert_eq!(g.accesses(), vec![w(DEV_GPA, &[0xcd, 0xab])]);

    // PAE: CR3 -> PDPT at 0x30_0000, PDE -> PT at 0x30_1000 for linear 0x4000_0000.
    g.cpu.sregs.ds.base = 0;
    g.cpu.sregs.cr0 |= 1 << 31;
    g.cpu.sregs.cr4 = 0x20;
    g.cpu.sregs.cr3 = 0x30_0000;
    let pt = |g: &Guest, at: u64, v: u64| g.put(at, &v.to_le_bytes());
    pt(&g, 0x30_0000 + 8, 0x30_1000 | 1); // PDPTE 1: 0x4000_0000
    pt(&g, 0x30_1000, 0x30_2000 | 3); // PDE 0
    pt(&g, 0x30_2000, DEV_GPA | 3); // PTE 0
    pt(&g, 0x30_0000, 0x30_3000 | 1); // PDPTE 0: the code, through a 2 MiB page
    pt(&g, 0x30_3000, 0x83);
    g.cpu.regs.rip = 0x3000;
    g.cpu.regs.rax = 0x4000_0008;
    g.step();
    assert_eq!(g.accesses(), vec![w(DEV_GPA + 8, &[0xcd, 0xab])]);

    // 32-bit paging with PSE: PDE 0 a 4 MiB page for the code, PDE 0x100 -> PT.
    g.cpu.sregs.cr4 = 0x10;
    g.cpu.sregs.cr3 = 0x31_0000;
    let pt32 = |g: &Guest, at: u64, v: u32| g.put(at, &v.to_le_bytes());
    pt32(&g, 0x31_0000, 0x83);
    pt32(&g, 0x31_0000 + 0x100 * 4, 0x31_1000 | 3);
    pt32(&g, 0x31_1000 + 4, (DEV_GPA as u32) | 3);
    g.cpu.regs.rip = 0x3000;
    g.cpu.regs.rax = 0x4000_1004;
    g.step();
    assert_eq!(g.accesses(), vec![w(DEV_GPA + 4, &[0xcd, 0xab])]);
}

#[test]
fn what_it_cannot_do_is_an_error_that_changes_nothing() {
    let mut g = Guest::new();
    g.cpu.regs.rax = DEV_GVA;
    // SSE load, NOP, UD2, a jump: not MMIO instructions it emulates.
    g.code(|a| {
        a.movdqu(xmm0, xmmword_ptr(rax)).unwrap();
    });
    assert!(matches!(g.step_err(), EmulatorError::Unsupported { .. }));
    for bytes in [&[0x90u8][..], &[0x0f, 0x0b], &[0xeb, 0xfe]] {
        g.put(CODE_GPA, bytes);
        assert!(matches!(g.step_err(), EmulatorError::Unsupported { .. }));
    }
    // Not a valid instruction at all (a lone prefix, then an invalid opcode in 64-bit mode).
    g.put(CODE_GPA, &[0x06; 15]);
    assert!(matches!(g.step_err(), EmulatorError::Decode { .. }));
    // An unmapped data address, a non-canonical one.
    g.code(|a| {
        a.mov(dword_ptr(rax), ebx).unwrap();
    });
    g.cpu.regs.rax = 0xffff_ffff_0000_0000;
    assert!(matches!(g.step_err(), EmulatorError::PageFault { .. }));
    g.cpu.regs.rax = 0x0000_8000_0000_0000;
    assert!(matches!(g.step_err(), EmulatorError::NonCanonical { .. }));
    // Code outside RAM, RIP unmapped.
    g.map(0xffff_ffff_c000_0000, DEV_GPA, 0);
    g.cpu.regs.rip = 0xffff_ffff_c000_0000;
    assert!(matches!(g.step_err(), EmulatorError::Fetch { .. }));
    g.cpu.regs.rip = 0x1234_5000;
    assert!(matches!(g.step_err(), EmulatorError::Fetch { .. }));
    assert!(g.accesses().is_empty());
}

#[test]
fn arbitrary_page_tables_and_bytes_never_panic() {
    // A cheap in-test version of the fuzz target: page tables full of garbage.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ram = TestRam(RefCell::new(vec![0; 64 * 1024]));
    for chunk in ram.0.borrow_mut().chunks_mut(8) {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let io = TestIo::default();
    for _ in 0..20_000 {
        let mut cpu = CpuState::default();
        cpu.sregs.cr0 = next() & 0x8000_0001;
        cpu.sregs.cr4 = next() & 0x1030;
        cpu.sregs.efer = next() & 0x500;
        cpu.sregs.cr3 = next() & 0xffff;
        cpu.sregs.cs.l = next() & 1 != 0;
        cpu.sregs.cs.db = next() & 1 != 0;
        cpu.regs.rip = next() & 0xffff;
        cpu.regs.rax = next();
        cpu.regs.rsi = next();
        cpu.regs.rdi = next();
        cpu.regs.rcx = next() & 0xf;
        let _ = emulate(&mut cpu, &ram, &io);
    }
}
