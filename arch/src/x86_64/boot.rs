//! Loads a kernel (bzImage or ELF vmlinux), the initrd and the command line, and writes the boot
//! data the chosen entry protocol expects: `boot_params` for the 64-bit Linux entry, or
//! `hvm_start_info` for PVH when an ELF kernel carries the PVH note.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::layout::{
    e820_ram, low_ram_end, CMDLINE_START, EBDA_START, HIGH_RAM_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use crate::{Error, GuestMemory, Result, MIB};

/// x86's COMMAND_LINE_SIZE, for kernels that do not state their own limit.
const DEFAULT_CMDLINE_MAX: usize = 2048;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// setup_header.xloadflags: the kernel has a 64-bit entry at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;
const STARTUP_64_OFFSET: u64 = 0x200;
/// Room the kernel needs beyond its image before it can reach user space (page tables,
/// unpacking the initramfs); used only to tell the user a sensible minimum.
const RUNTIME_HEADROOM: u64 = 32 * MIB;

/// The kernel file formats berth boots on x86_64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelImage {
    BzImage,
    Elf,
}

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux 64-bit boot protocol: long mode, RSI points at `boot_params`.
    Linux64,
    /// PVH: 32-bit protected mode, RBX points at `hvm_start_info`.
    Pvh,
}

/// Where the kernel landed and how to start it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub image: KernelImage,
    pub protocol: BootProtocol,
    /// Guest physical entry address.
    pub entry: u64,
    /// Address of `boot_params` or `hvm_start_info`.
    pub boot_data: u64,
    /// Initrd placement `(address, size)`.
    pub initrd: Option<(u64, u64)>,
}

/// Tells a bzImage from an ELF vmlinux by their magic numbers.
pub fn detect(kernel: &mut File) -> std::io::Result<Option<KernelImage>> {
    let mut head = [0u8; 0x206];
    kernel.seek(SeekFrom::Start(0))?;
    let n = read_up_to(kernel, &mut head)?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(Some(KernelImage::Elf));
    }
    if n >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(Some(KernelImage::BzImage));
    }
    Ok(None)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_setup_header(kernel: &mut File) -> std::io::Result<setup_header> {
    let mut hdr = setup_header::default();
    kernel.seek(SeekFrom::Start(0x1f1))?;
    kernel.read_exact(hdr.as_mut_slice())?;
    Ok(hdr)
}

/// Highest physical end address of an ELF's loadable segments.
fn elf_image_end(kernel: &mut File) -> std::io::Result<u64> {
    let mut eh = [0u8; 64];
    kernel.seek(SeekFrom::Start(0))?;
    kernel.read_exact(&mut eh)?;
    let phoff = u64::from_le_bytes(eh[0x20..0x28].try_into().unwrap());
    let phentsize = u16::from_le_bytes([eh[0x36], eh[0x37]]) as usize;
    let phnum = u16::from_le_bytes([eh[0x38], eh[0x39]]);
    let mut end = 0u64;
    let mut ph = vec![0u8; phentsize.max(0x38)];
    for i in 0..u64::from(phnum) {
        kernel.seek(SeekFrom::Start(phoff.saturating_add(i * phentsize as u64)))?;
        kernel.read_exact(&mut ph[..phentsize.max(0x38)])?;
        let p_type = u32::from_le_bytes(ph[0..4].try_into().unwrap());
        let paddr = u64::from_le_bytes(ph[0x18..0x20].try_into().unwrap());
        let memsz = u64::from_le_bytes(ph[0x28..0x30].try_into().unwrap());
        if p_type == 1 {
            end = end.max(paddr.saturating_add(memsz));
        }
    }
    Ok(end)
}

fn check_fits(image_end: u64, mem_size: u64) -> Result<()> {
    let need = image_end.saturating_add(RUNTIME_HEADROOM);
    if need > low_ram_end(mem_size) {
        return Err(Error::MemoryTooSmall {
            have_mib: mem_size / MIB,
            need_mib: need.div_ceil(MIB),
        });
    }
    Ok(())
}

/// A kernel, its optional initrd and command line, to be loaded into guest memory.
pub struct BootSource<'a> {
    pub kernel: &'a mut File,
    /// Shown in errors.
    pub kernel_name: &'a str,
    pub initrd: Option<&'a mut File>,
    pub cmdline: &'a str,
    /// Guest address of the ACPI RSDP, if the VMM wrote ACPI tables.
    pub acpi_rsdp: Option<u64>,
}

/// Loads everything into `mem` (of `mem_size` bytes) and returns how to start the guest.
pub fn load_kernel(mem: &GuestMemory, mem_size: u64, src: BootSource<'_>) -> Result<BootInfo> {
    let io = |e: std::io::Error| Error::KernelLoad(format!("{}: {e}", src.kernel_name));
    let image = detect(src.kernel)
        .map_err(io)?
        .ok_or_else(|| Error::NotAKernel(src.kernel_name.to_string()))?;

    // Where the kernel's runtime footprint ends: the initrd must go above it.
    let (load, reserved_end, hdr) = match image {
        KernelImage::BzImage => {
            let hdr = read_setup_header(src.kernel).map_err(io)?;
            if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(Error::KernelLoad(format!(
                    "{}: this bzImage has no 64-bit entry point (boot protocol {:#x}); berth needs a 64-bit kernel",
                    src.kernel_name, { hdr.version }
                )));
            }
            // The decompressor runs at pref_address (LOAD_PHYSICAL_ADDR) and needs init_size.
            let runtime_start = u64::from(hdr.code32_start).max(hdr.pref_address);
            let end = runtime_start.saturating_add(u64::from(hdr.init_size));
            check_fits(end, mem_size)?;
            let res = BzImage::load(mem, None, src.kernel, Some(GuestAddress(HIGH_RAM_START)))
                .map_err(|e| Error::KernelLoad(format!("{}: {e}", src.kernel_name)))?;
            (res, end.max(res.kernel_end), Some(hdr))
        }
        KernelImage::Elf => {
            let end = elf_image_end(src.kernel).map_err(io)?;
            check_fits(end, mem_size)?;
            let res = Elf::load(mem, None, src.kernel, Some(GuestAddress(HIGH_RAM_START)))
                .map_err(|e| Error::KernelLoad(format!("{}: {e}", src.kernel_name)))?;
            (res, end.max(res.kernel_end), None)
        }
    };

    let cmdline_max = hdr
        .map(|h| h.cmdline_size as usize)
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CMDLINE_MAX);
    if src.cmdline.len() > cmdline_max {
        return Err(Error::CmdlineTooLong {
            len: src.cmdline.len(),
            max: cmdline_max,
        });
    }
    let cmdline = Cmdline::try_from(src.cmdline, cmdline_max + 1)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(|e| Error::GuestMemory(format!("command line: {e}")))?;

    let initrd_max = hdr
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m > 0)
        .unwrap_or(u64::from(u32::MAX));
    let initrd = match src.initrd {
        Some(f) => Some(load_initrd(mem, mem_size, f, reserved_end, initrd_max)?),
        None => None,
    };

    match load.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            write_pvh_start_info(mem, mem_size, initrd, src.acpi_rsdp)?;
            Ok(BootInfo {
                image,
                protocol: BootProtocol::Pvh,
                entry: entry.0,
                boot_data: PVH_INFO_START,
                initrd,
            })
        }
        _ => {
            let entry = match image {
                KernelImage::BzImage => load.kernel_load.0 + STARTUP_64_OFFSET,
                KernelImage::Elf => load.kernel_load.0,
            };
            write_boot_params(
                mem,
                mem_size,
                load.setup_header,
                src.cmdline.len(),
                initrd,
                src.acpi_rsdp,
            )?;
            Ok(BootInfo {
                image,
                protocol: BootProtocol::Linux64,
                entry,
                boot_data: ZERO_PAGE_START,
                initrd,
            })
        }
    }
}

/// Copies the initrd to the top of low RAM (below `max_addr`), above `floor`.
fn load_initrd(
    mem: &GuestMemory,
    mem_size: u64,
    f: &mut File,
    floor: u64,
    max_addr: u64,
) -> Result<(u64, u64)> {
    let size = f.metadata().map_err(Error::InitrdRead)?.len();
    let top = low_ram_end(mem_size).min(max_addr.saturating_add(1));
    let too_large = || Error::InitrdTooLarge {
        size_mib: size.div_ceil(MIB),
        limit_mib: top / MIB,
    };
    let addr = top.checked_sub(size).ok_or_else(too_large)? & !0xfff;
    if addr < floor {
        return Err(too_large());
    }
    f.seek(SeekFrom::Start(0)).map_err(Error::InitrdRead)?;
    mem.read_exact_volatile_from(GuestAddress(addr), f, size as usize)
        .map_err(|e| Error::GuestMemory(format!("initrd: {e}")))?;
    Ok((addr, size))
}

fn write_boot_params(
    mem: &GuestMemory,
    mem_size: u64,
    setup: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    acpi_rsdp: Option<u64>,
) -> Result<()> {
    let mut params = boot_params {
        acpi_rsdp_addr: acpi_rsdp.unwrap_or(0),
        ..Default::default()
    };
    match setup {
        Some(h) => params.hdr = h,
        None => params.hdr.kernel_alignment = 0x0100_0000,
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| Error::GuestMemory(format!("boot_params: {e}")))
}

/// RAM ranges plus the reserved legacy hole between the EBDA and 1 MiB.
fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map: Vec<(u64, u64, u32)> = e820_ram(mem_size)
        .into_iter()
        .map(|(a, s)| (a, s, E820_RAM))
        .collect();
    map.insert(1, (EBDA_START, HIGH_RAM_START - EBDA_START, E820_RESERVED));
    map
}

fn write_pvh_start_info(
    mem: &GuestMemory,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
    acpi_rsdp: Option<u64>,
) -> Result<()> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_map(mem_size)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let memmap_addr = PVH_INFO_START + 0x40;
    let modlist_addr = PVH_INFO_START + 0x400;
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: acpi_rsdp.unwrap_or(0),
        memmap_paddr: memmap_addr,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mods: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    if !mods.is_empty() {
        info.nr_modules = mods.len() as u32;
        info.modlist_paddr = modlist_addr;
    }
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(memmap_addr));
    if !mods.is_empty() {
        params.set_modules(&mods, GuestAddress(modlist_addr));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| Error::GuestMemory(format!("PVH start info: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: u64) -> GuestMemory {
        let ranges: Vec<(GuestAddress, usize)> = super::super::layout::ram_ranges(size)
            .into_iter()
            .map(|(a, s)| (GuestAddress(a), s as usize))
            .collect();
        GuestMemory::from_ranges(&ranges).unwrap()
    }

    /// Loads `kernel` (and `initrd`) into a fresh guest of `size` bytes; returns the memory too.
    fn load(
        size: u64,
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: &str,
        acpi_rsdp: Option<u64>,
    ) -> (GuestMemory, Result<BootInfo>) {
        let m = mem(size);
        let mut k = temp_file(kernel);
        let mut rd = initrd.map(temp_file);
        let name = if kernel.starts_with(b"\x7fELF") {
            "vmlinux"
        } else {
            "script.sh"
        };
        let res = load_kernel(
            &m,
            size,
            BootSource {
                kernel: &mut k,
                kernel_name: name,
                initrd: rd.as_mut(),
                cmdline,
                acpi_rsdp,
            },
        );
        (m, res)
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = vmm_tempfile();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    fn vmm_tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "berth-arch-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// A minimal ELF64 with one PT_LOAD of `code` at physical `paddr`, entry at `paddr`.
    fn tiny_elf(paddr: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        let mut v = vec![0u8; 0x78];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2; // 64-bit
        v[5] = 1; // little endian
        v[6] = 1;
        v[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        v[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        v[0x18..0x20].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        v[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        v[0x34..0x36].copy_from_slice(&0x40u16.to_le_bytes()); // e_ehsize
        v[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
        v[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 0x40;
        v[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        v[ph + 8..ph + 0x10].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
        v[ph + 0x10..ph + 0x18].copy_from_slice(&paddr.to_le_bytes());
        v[ph + 0x18..ph + 0x20].copy_from_slice(&paddr.to_le_bytes());
        v[ph + 0x20..ph + 0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
        v[ph + 0x28..ph + 0x30].copy_from_slice(&memsz.to_le_bytes());
        v.extend_from_slice(code);
        v
    }

    #[test]
    fn rejects_what_is_not_a_kernel() {
        let (_, res) = load(64 * MIB, b"#!/bin/sh\necho hello\n", None, "", None);
        let err = res.unwrap_err();
        assert!(matches!(err, Error::NotAKernel(_)), "{err}");
        assert!(err.to_string().contains("script.sh"));
    }

    #[test]
    fn loads_elf_with_boot_params_e820_cmdline_and_initrd() {
        let size = 128 * MIB;
        let kernel = tiny_elf(0x100_0000, &[0xf4, 0xeb, 0xfd], 0x1000);
        let (m, res) = load(
            size,
            &kernel,
            Some(&[0x5a; 10000]),
            "console=ttyS0 quiet",
            Some(0xe0000),
        );
        let info = res.unwrap();
        assert_eq!(info.protocol, BootProtocol::Linux64);
        assert_eq!(info.entry, 0x100_0000);
        let code: [u8; 3] = m.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(code, [0xf4, 0xeb, 0xfd]);
        let (rd_addr, rd_size) = info.initrd.unwrap();
        assert_eq!(rd_size, 10000);
        assert_eq!(rd_addr % 4096, 0);
        assert!(rd_addr + rd_size <= size);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(rd_addr + 9999)).unwrap(),
            0x5a
        );

        let params: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.ramdisk_image }, rd_addr as u32);
        assert_eq!({ hdr.ramdisk_size }, 10000);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(params.e820_entries, 3);
        let last = params.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (HIGH_RAM_START, size - HIGH_RAM_START, E820_RAM)
        );
        let mut cmd = [0u8; 20];
        m.read_slice(&mut cmd, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&cmd, b"console=ttyS0 quiet\0");
    }

    #[test]
    fn too_little_memory_is_reported_with_the_need() {
        let kernel = tiny_elf(0x100_0000, &[0xf4], 24 * MIB);
        let (_, res) = load(32 * MIB, &kernel, None, "", None);
        match res.unwrap_err() {
            Error::MemoryTooSmall { have_mib, need_mib } => {
                assert_eq!(have_mib, 32);
                assert_eq!(need_mib, 16 + 24 + 32);
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn initrd_that_does_not_fit_is_refused() {
        let kernel = tiny_elf(0x100_0000, &[0xf4], 0x1000);
        let initrd = vec![1u8; 50 * MIB as usize];
        let (_, res) = load(64 * MIB, &kernel, Some(&initrd), "", None);
        let err = res.unwrap_err();
        assert!(
            matches!(err, Error::InitrdTooLarge { size_mib: 50, .. }),
            "{err}"
        );
    }

    #[test]
    fn overlong_cmdline_is_refused() {
        let kernel = tiny_elf(0x100_0000, &[0xf4], 0x1000);
        let long = "x".repeat(DEFAULT_CMDLINE_MAX + 1);
        let (_, res) = load(64 * MIB, &kernel, None, &long, None);
        let err = res.unwrap_err();
        assert!(matches!(err, Error::CmdlineTooLong { .. }), "{err}");
    }

    #[test]
    fn e820_reserves_the_legacy_hole() {
        let map = e820_map(512 * MIB);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert_eq!(map[1].0 + map[1].1, HIGH_RAM_START);
    }
}
