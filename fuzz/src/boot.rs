//! `boot_x86_64`: the x86_64 loaders (bzImage, ELF vmlinux, PVH note), the initrd's
//! placement and the command line, as `berth run --kernel --initrd --cmdline` hands them over.
//!
//! Input: one byte choosing the guest's RAM, one the initrd's size (in 128 KiB; the file is
//! sparse, only its size matters), two the command line's length, the command line, then the
//! kernel file.

#[cfg(target_arch = "x86_64")]
pub use x86::{loads, run};

#[cfg(not(target_arch = "x86_64"))]
pub fn run(_data: &[u8]) {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::cell::RefCell;

    use arch::x86_64::boot::{load_kernel, BootSource};
    use arch::x86_64::layout::{low_ram_end, ram_ranges, MIN_MEMORY};
    use vm_memory::GuestAddress;

    use crate::util::{memfd, sparse, GuestMemory};

    /// Guest RAM sizes the target picks from: the smallest berth accepts, and two that a small
    /// kernel fits (the memory is mapped once, and only what a load writes is touched).
    const SIZES: [u64; 3] = [MIN_MEMORY, 64 << 20, 128 << 20];

    thread_local! {
        /// One guest memory per size, reused: mapping it anew each run would dominate.
        static MEMORY: RefCell<Vec<Option<GuestMemory>>> = RefCell::new(vec![None; SIZES.len()]);
    }

    fn with_memory<R>(i: usize, f: impl FnOnce(&GuestMemory) -> R) -> R {
        MEMORY.with(|m| {
            let mut m = m.borrow_mut();
            let mem = m[i].get_or_insert_with(|| {
                let ranges: Vec<(GuestAddress, usize)> = ram_ranges(SIZES[i])
                    .into_iter()
                    .map(|(a, l)| (GuestAddress(a), l as usize))
                    .collect();
                GuestMemory::from_ranges(&ranges).expect("guest memory")
            });
            f(mem)
        })
    }

    pub fn run(data: &[u8]) {
        loads(data);
    }

    /// Whether the kernel in `data` loaded (for the seeds' test).
    pub fn loads(data: &[u8]) -> bool {
        if data.len() < 4 {
            return false;
        }
        let size_index = usize::from(data[0]) % SIZES.len();
        let mem_size = SIZES[size_index];
        let initrd_len = u64::from(data[1]) << 17;
        let cmdline_len = usize::from(u16::from_le_bytes([data[2], data[3]]));
        let rest = &data[4..];
        let (cmdline, kernel) = rest.split_at(cmdline_len.min(rest.len()));
        let cmdline = String::from_utf8_lossy(cmdline);
        let mut kernel = memfd(kernel);
        let mut initrd = (initrd_len > 0).then(|| sparse(initrd_len));
        with_memory(size_index, |mem| {
            let loaded = load_kernel(
                mem,
                mem_size,
                BootSource {
                    kernel: &mut kernel,
                    kernel_name: "fuzz",
                    initrd: initrd.as_mut(),
                    cmdline: &cmdline,
                    acpi_rsdp: Some(0xe0000),
                },
            );
            let Ok(info) = loaded else { return false };
            // What berth promises of a successful load: the initrd lies in low RAM.
            if let Some((addr, len)) = info.initrd {
                assert!(addr.checked_add(len).unwrap() <= low_ram_end(mem_size));
                assert_eq!(len, initrd_len);
            }
            true
        })
    }
}
