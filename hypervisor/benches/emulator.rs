//! Exits per second of the MMIO emulator path: what a backend without instruction decoding
//! (MSHV) does at each device access: fetch at RIP through 4-level page tables, decode, walk
//! again for the operand, and hand the access to the VMM. Run: `cargo bench -p hypervisor
//! --bench emulator`; criterion prints the time per exit and exits/s (docs/benchmarks.md).

// The emulator is x86_64's; elsewhere the bench is empty.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::cell::RefCell;

    use criterion::{Criterion, Throughput};
    use hypervisor::emulator::{emulate, CpuState, GuestRam};
    use hypervisor::IoHandler;

    /// 1 MiB of RAM at 0; code at 0x8000. GVA 0-2 MiB maps onto it (a 2 MiB page); GVA 1 GiB is
    /// the device (a 1 GiB page onto guest physical 1 GiB).
    struct Ram(RefCell<Vec<u8>>);

    impl GuestRam for Ram {
        fn read(&self, gpa: u64, data: &mut [u8]) -> bool {
            let m = self.0.borrow();
            let a = gpa as usize;
            match m.get(a..a + data.len()) {
                Some(s) => {
                    data.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
        fn write(&self, gpa: u64, data: &[u8]) -> bool {
            let mut m = self.0.borrow_mut();
            let a = gpa as usize;
            match m.get_mut(a..a + data.len()) {
                Some(s) => {
                    s.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
    }

    /// A device register file: reads give 0x5a, writes are dropped.
    struct Device;

    impl IoHandler for Device {
        fn pio_read(&self, _port: u16, data: &mut [u8]) {
            data.fill(0);
        }
        fn pio_write(&self, _port: u16, _data: &[u8]) {}
        fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
    }

    fn guest(code: &[u8]) -> (CpuState, Ram) {
        let mut ram = vec![0u8; 1 << 20];
        let mut put = |at: usize, v: u64| ram[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(0x1000, 0x2000 | 3);
        put(0x2000, 0x3000 | 3);
        put(0x2008, 0x4000_0000 | 0x83);
        put(0x3000, 0x83);
        ram[0x8000..0x8000 + code.len()].copy_from_slice(code);
        let mut cpu = CpuState::default();
        cpu.sregs.cr0 = 0x8000_0011;
        cpu.sregs.cr4 = 0x20;
        cpu.sregs.efer = 0x500;
        cpu.sregs.cr3 = 0x1000;
        cpu.sregs.cs.l = true;
        cpu.regs.rip = 0x8000;
        cpu.regs.rax = 0x4000_0010;
        cpu.regs.rflags = 2;
        (cpu, Ram(RefCell::new(ram)))
    }

    pub fn bench(c: &mut Criterion) {
        let mut g = c.benchmark_group("mmio-emulator");
        g.throughput(Throughput::Elements(1));
        for (name, code) in [
            ("mov [rax], ebx (write)", &[0x89u8, 0x18][..]),
            ("mov eax, [rax+8] (read)", &[0x8b, 0x40, 0x08]),
            ("movzx ecx, byte [rax] (read)", &[0x0f, 0xb6, 0x08]),
            ("or dword [rax], 4 (read + write)", &[0x83, 0x08, 0x04]),
        ] {
            let (start, ram) = guest(code);
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut cpu = start;
                    emulate(&mut cpu, &ram, &Device).unwrap()
                })
            });
        }
        g.finish();
    }

    criterion::criterion_group!(benches, bench);
}

#[cfg(target_arch = "x86_64")]
criterion::criterion_main!(x86::benches);

#[cfg(not(target_arch = "x86_64"))]
fn main() {}
