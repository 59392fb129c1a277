use thiserror::Error;

/// Errors of the boot layer; each message names the problem and what to change.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0} is not a Linux kernel this architecture can boot (expected a bzImage or an ELF vmlinux)")]
    NotAKernel(String),
    #[error("{0} is not an arm64 Linux kernel (expected an Image, or a gzip-compressed Image)")]
    NotAnImage(String),
    #[error("loading the kernel failed: {0}")]
    KernelLoad(String),
    #[error(
        "--memory {have_mib} MiB is too small for this kernel: it needs at least {need_mib} MiB"
    )]
    MemoryTooSmall { have_mib: u64, need_mib: u64 },
    #[error("the initrd ({size_mib} MiB) does not fit in guest memory below {limit_mib} MiB next to the kernel: raise --memory")]
    InitrdTooLarge { size_mib: u64, limit_mib: u64 },
    #[error("reading the initrd failed: {0}")]
    InitrdRead(std::io::Error),
    #[error("the kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    #[error("writing boot data into guest memory failed: {0}")]
    GuestMemory(String),
    #[error("building the device tree failed: {0}")]
    Fdt(String),
    #[error("setting up vCPU {cpu} failed: {source}")]
    Vcpu { cpu: u32, source: hypervisor::Error },
}

/// Result of the boot layer.
pub type Result<T> = std::result::Result<T, Error>;
