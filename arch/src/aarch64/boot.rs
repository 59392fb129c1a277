//! Loads an arm64 Image (or Image.gz) at the start of RAM with linux-loader, the initrd and the
//! device tree at the end of RAM, as the arm64 boot protocol allows.

use std::fs::File;

use linux_loader::loader::pe::PE;
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, ReadVolatile};

use super::fdt::{create_fdt, FdtConfig};
use super::image::{self, ImageSource};
use super::layout::{FDT_MAX_SIZE, RAM_START};
use crate::{Error, GuestMemory, Result, MIB};

/// arm64's COMMAND_LINE_SIZE.
pub const CMDLINE_MAX: usize = 2048;
/// Room the kernel needs beyond its image before it reaches user space (page tables,
/// unpacking the initramfs); used only to tell the user a sensible minimum.
const RUNTIME_HEADROOM: u64 = 32 * MIB;
const PAGE_SIZE: u64 = 4096;
/// The kernel's base must be 2 MiB aligned; so is the device tree (it is mapped in 2 MiB blocks).
const ALIGN_2M: u64 = 2 * MIB;

/// A kernel, its optional initrd and command line, to be loaded into guest memory.
pub struct BootSource<'a> {
    pub kernel: &'a mut File,
    /// Shown in errors.
    pub kernel_name: &'a str,
    pub initrd: Option<&'a mut File>,
    pub cmdline: &'a str,
}

/// Where everything landed and how to start the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Guest physical entry address (the Image's first instruction).
    pub entry: u64,
    /// Initrd placement `(address, size)`.
    pub initrd: Option<(u64, u64)>,
    /// Where the device tree goes (written by [`write_fdt`] once the vCPUs and GIC exist).
    pub fdt_addr: u64,
    pub cmdline: String,
}

fn align_down(v: u64, align: u64) -> u64 {
    v / align * align
}

/// Loads the kernel and initrd into `mem` (`mem_size` bytes from [`RAM_START`]).
pub fn load_kernel(mem: &GuestMemory, mem_size: u64, src: BootSource<'_>) -> Result<BootInfo> {
    if src.cmdline.len() >= CMDLINE_MAX {
        return Err(Error::CmdlineTooLong {
            len: src.cmdline.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    let ram_end = RAM_START + mem_size;
    let fdt_addr = align_down(ram_end.saturating_sub(FDT_MAX_SIZE), ALIGN_2M);

    let (mut source, header, file_size) = image::open(src.kernel, src.kernel_name, mem_size)?;
    // image::open bounded the header's fields and the size; the sums are checked anyway.
    let footprint = header.image_size.max(file_size);
    let kernel_end = RAM_START
        .checked_add(header.text_offset)
        .and_then(|v| v.checked_add(footprint))
        .ok_or_else(|| Error::NotAnImage(src.kernel_name.to_string()))?;
    let need = kernel_end.saturating_add(RUNTIME_HEADROOM);
    if need > fdt_addr {
        return Err(Error::MemoryTooSmall {
            have_mib: mem_size / MIB,
            need_mib: (need - RAM_START + FDT_MAX_SIZE).div_ceil(MIB),
        });
    }
    let load = |r: &mut dyn FnMut() -> linux_loader::loader::Result<_>| {
        r().map_err(|e| Error::KernelLoad(format!("{}: {e}", src.kernel_name)))
    };
    let base = Some(GuestAddress(RAM_START));
    let result = match &mut source {
        ImageSource::File(f) => load(&mut || PE::load(mem, base, *f, None))?,
        ImageSource::Decompressed(c) => load(&mut || PE::load(mem, base, c, None))?,
    };

    let initrd = match src.initrd {
        Some(f) => Some(load_initrd(
            mem,
            f,
            kernel_end + RUNTIME_HEADROOM,
            fdt_addr,
        )?),
        None => None,
    };
    Ok(BootInfo {
        entry: result.kernel_load.0,
        initrd,
        fdt_addr,
        cmdline: src.cmdline.to_string(),
    })
}

/// Puts the initrd right below the device tree, above `low` (the kernel and its headroom).
fn load_initrd(mem: &GuestMemory, f: &mut File, low: u64, fdt_addr: u64) -> Result<(u64, u64)> {
    let size = f.metadata().map_err(Error::InitrdRead)?.len();
    let start = align_down(fdt_addr.saturating_sub(size), PAGE_SIZE);
    if size > fdt_addr || start < low {
        return Err(Error::InitrdTooLarge {
            size_mib: size.div_ceil(MIB),
            limit_mib: (fdt_addr.saturating_sub(low)) / MIB,
        });
    }
    let len = usize::try_from(size).map_err(|_| Error::InitrdTooLarge {
        size_mib: size.div_ceil(MIB),
        limit_mib: (fdt_addr - low) / MIB,
    })?;
    read_into(mem, start, f, len)?;
    Ok((start, size))
}

fn read_into(mem: &GuestMemory, addr: u64, f: &mut impl ReadVolatile, len: usize) -> Result<()> {
    mem.read_exact_volatile_from(GuestAddress(addr), f, len)
        .map_err(|e| Error::GuestMemory(format!("initrd: {e}")))
}

/// Builds the device tree for `boot` and writes it at `boot.fdt_addr`.
pub fn write_fdt(mem: &GuestMemory, boot: &BootInfo, cfg: &FdtConfig<'_>) -> Result<()> {
    let blob = create_fdt(cfg)?;
    if blob.len() as u64 > FDT_MAX_SIZE {
        return Err(Error::Fdt(format!(
            "the device tree is {} bytes, more than the {FDT_MAX_SIZE} the boot protocol allows",
            blob.len()
        )));
    }
    mem.write_slice(&blob, GuestAddress(boot.fdt_addr))
        .map_err(|e| Error::GuestMemory(format!("device tree: {e}")))
}
