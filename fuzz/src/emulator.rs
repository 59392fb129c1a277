//! `emulator`: the MMIO instruction emulator (hypervisor/src/emulator/) on any CPU state and
//! any guest RAM: the mode (paging off, 32-bit, PAE, 4- or 5-level long mode), CR3, RIP and
//! the general-purpose registers come from the input, and the rest of the input is guest RAM
//! (64 KiB from address 0): the instruction bytes, the page tables and the data are all the
//! fuzzer's. Everything above RAM is a device that answers reads with the address's low
//! bytes; ports (INS, OUTS) answer 0x5a. A REP instruction is run to its end, up to 256
//! iterations.
//!
//! Input: [`Header`], then RAM.

use std::cell::RefCell;

use hypervisor::emulator::{emulate, CpuState, GuestRam, MAX_ACCESSES};
use hypervisor::IoHandler;

use crate::util::{Fields, Writer};

pub const RAM: usize = 64 * 1024;

/// Mode bits of the header's first byte.
pub const PAGING: u8 = 1;
pub const LONG: u8 = 1 << 1;
pub const PAE: u8 = 1 << 2;
pub const LA57: u8 = 1 << 3;
pub const PSE: u8 = 1 << 4;
pub const CS_DB: u8 = 1 << 5;
pub const DF: u8 = 1 << 6;

/// The CPU state an input starts from.
pub struct Header {
    pub mode: u8,
    /// CR3 = this many pages into RAM (modulo its size).
    pub cr3_page: u16,
    pub rip: u64,
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15.
    pub gprs: [u64; 16],
}

impl Header {
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.mode).u16(self.cr3_page).u64(self.rip);
        for g in self.gprs {
            w.u64(g);
        }
    }

    fn read(f: &mut Fields<'_>) -> Option<Header> {
        let mode = f.u8()?;
        let cr3_page = f.u16()?;
        let rip = f.u64()?;
        let mut gprs = [0; 16];
        for g in &mut gprs {
            *g = f.u64()?;
        }
        Some(Header {
            mode,
            cr3_page,
            rip,
            gprs,
        })
    }

    fn cpu(&self) -> CpuState {
        let mut c = CpuState::default();
        let on = |bit: u8| self.mode & bit != 0;
        let s = &mut c.sregs;
        s.cr0 = 0x11 | if on(PAGING) { 1 << 31 } else { 0 };
        s.cr4 = if on(PAE) || on(LONG) { 1 << 5 } else { 0 }
            | if on(LA57) { 1 << 12 } else { 0 }
            | if on(PSE) { 1 << 4 } else { 0 };
        s.efer = if on(LONG) { 0x500 } else { 0 };
        s.cr3 = (u64::from(self.cr3_page) * 4096) % RAM as u64;
        s.cs.l = on(LONG);
        s.cs.db = on(CS_DB);
        let g = self.gprs;
        let r = &mut c.regs;
        (r.rax, r.rcx, r.rdx, r.rbx) = (g[0], g[1], g[2], g[3]);
        (r.rsp, r.rbp, r.rsi, r.rdi) = (g[4], g[5], g[6], g[7]);
        (r.r8, r.r9, r.r10, r.r11) = (g[8], g[9], g[10], g[11]);
        (r.r12, r.r13, r.r14, r.r15) = (g[12], g[13], g[14], g[15]);
        r.rip = self.rip;
        r.rflags = 2 | if on(DF) { 1 << 10 } else { 0 };
        c
    }
}

struct Ram(RefCell<Vec<u8>>);

impl GuestRam for Ram {
    fn read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let m = self.0.borrow();
        match usize::try_from(gpa)
            .ok()
            .and_then(|a| m.get(a..a.checked_add(data.len())?))
        {
            Some(src) => {
                data.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let mut m = self.0.borrow_mut();
        match usize::try_from(gpa)
            .ok()
            .and_then(|a| m.get_mut(a..a.checked_add(data.len())?))
        {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// A device everywhere outside RAM; it counts what it is asked.
#[derive(Default)]
struct Device(RefCell<usize>);

impl IoHandler for Device {
    // INS and OUTS: one element of 1, 2 or 4 bytes.
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        assert!(
            matches!(data.len(), 1 | 2 | 4),
            "a {}-byte port read",
            data.len()
        );
        data.fill(0x5a);
    }
    fn pio_write(&self, _port: u16, data: &[u8]) {
        assert!(
            matches!(data.len(), 1 | 2 | 4),
            "a {}-byte port write",
            data.len()
        );
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        assert!(
            (1..=8).contains(&data.len()),
            "a {}-byte access",
            data.len()
        );
        let b = addr.to_le_bytes();
        data.copy_from_slice(&b[..data.len()]);
        *self.0.borrow_mut() += 1;
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        assert!(
            (1..=8).contains(&data.len()),
            "a {}-byte access",
            data.len()
        );
        let _ = addr;
        *self.0.borrow_mut() += 1;
    }
}

pub fn run(data: &[u8]) {
    let mut f = Fields(data);
    let Some(header) = Header::read(&mut f) else {
        return;
    };
    let mut ram = vec![0u8; RAM];
    let n = f.0.len().min(RAM);
    ram[..n].copy_from_slice(&f.0[..n]);
    let ram = Ram(RefCell::new(ram));
    let dev = Device::default();
    let mut cpu = header.cpu();
    for _ in 0..256 {
        let before = *dev.0.borrow();
        match emulate(&mut cpu, &ram, &dev) {
            Ok(e) => {
                assert!(e.accesses().len() <= MAX_ACCESSES);
                assert_eq!(e.accesses().len(), *dev.0.borrow() - before);
                assert!((1..=15).contains(&e.length));
                if e.completed {
                    break;
                }
            }
            Err(_) => break,
        }
    }
}

/// A seed: long mode with 4-level paging (GVA 0-2 MiB identity on a 2 MiB page, GVA 1 GiB
/// a 1 GiB page onto the device), or the 32-bit modes without paging; `code` at 0x8000.
pub fn seed(mode: u8, gprs: [u64; 16], code: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    Header {
        mode,
        cr3_page: 1,
        rip: 0x8000,
        gprs,
    }
    .write(&mut w);
    let mut ram = vec![0u8; 0x9000 + 16];
    let mut put = |at: usize, v: u64| ram[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(0x1000, 0x2000 | 3); // PML4[0] -> PDPT
    put(0x2000, 0x3000 | 3); // PDPT[0] -> PD
    put(0x2008, 0x4000_0000 | 0x83); // PDPT[1]: 1 GiB page, the device
    put(0x3000, 0x83); // PD[0]: 2 MiB page at 0
    ram[0x8000..0x8000 + code.len()].copy_from_slice(code);
    ram[0x9000..0x9010].copy_from_slice(b"sixteen bytes!!\n");
    w.0.extend_from_slice(&ram);
    w.0
}
