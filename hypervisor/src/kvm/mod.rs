//! The KVM backend, on kvm-ioctls. The only module in berth that names KVM.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod mmio_check;
mod requests;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
use aarch64::ArchIrqChip;
#[cfg(target_arch = "x86_64")]
use x86_64::ArchIrqChip;

use std::sync::{Arc, RwLock};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_userspace_memory_region, KvmIrqRouting, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI, KVM_MEM_READONLY, KVM_MSI_VALID_DEVID, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit as KvmExit, VcpuFd, VmFd};

use crate::arch::IrqChipConfig;
use crate::irq::{Datamatch, IoEventAddress, IrqChip, IrqRoute, MsiMessage};
use crate::{
    Error, EventFd, Hypervisor, HypervisorKind, IoHandler, MemoryRegion, Result, SystemEvent, Vcpu,
    VcpuExit, Vm,
};

const KVM_PATH: &str = "/dev/kvm";

/// Capabilities berth cannot work without, with the name users see.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
    #[cfg(target_arch = "x86_64")]
    (Cap::Pit2, "KVM_CAP_PIT2"),
    #[cfg(target_arch = "x86_64")]
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    #[cfg(target_arch = "x86_64")]
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    #[cfg(target_arch = "aarch64")]
    (Cap::ArmPsci02, "KVM_CAP_ARM_PSCI_0_2"),
    #[cfg(target_arch = "aarch64")]
    (Cap::OneReg, "KVM_CAP_ONE_REG"),
];

/// Handle on /dev/kvm.
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens /dev/kvm and checks the API version and the capabilities berth needs.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| {
            Error::device_open(
                KVM_PATH,
                e.errno(),
                "load the KVM module (modprobe kvm_intel or kvm_amd) or enable virtualization in the firmware",
            )
        })?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(Error::ApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(*cap) {
                return Err(Error::MissingCapability(name));
            }
        }
        Ok(KvmHypervisor { kvm })
    }
}

impl Hypervisor for KvmHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.get_max_vcpus() as u32
    }

    fn runtime_ioctls(&self) -> crate::RuntimeIoctls {
        requests::runtime_ioctls()
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            irqchip_kernel: self.kvm.check_extension(Cap::Irqchip),
            #[cfg(target_arch = "x86_64")]
            irqchip_split: self.kvm.check_extension(Cap::SplitIrqchip),
            #[cfg(not(target_arch = "x86_64"))]
            irqchip_split: false,
            readonly_memory: self.kvm.check_extension(Cap::ReadonlyMem),
            pio_ioeventfd: cfg!(target_arch = "x86_64") && self.kvm.check_extension(Cap::Ioeventfd),
            decodes_mmio: true,
        }
    }

    fn create_vm(&self) -> Result<Arc<dyn Vm>> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| Error::ioctl("KVM_CREATE_VM", e))?;
        let vm = KvmVm {
            fd: Arc::new(fd),
            regions: Arc::new(RwLock::new(Vec::new())),
        };
        vm.arch_setup()?;
        Ok(Arc::new(vm))
    }
}

/// A KVM VM.
pub struct KvmVm {
    fd: Arc<VmFd>,
    /// The memory slots, for the MMIO check's page walks (x86_64 debug mode).
    regions: Arc<RwLock<Vec<MemoryRegion>>>,
}

impl Vm for KvmVm {
    unsafe fn add_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let mem = kvm_region(&region);
        // SAFETY: the caller guarantees the host mapping outlives the VM (this fn's contract).
        unsafe { self.fd.set_user_memory_region(mem) }
            .map_err(|e| Error::ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        regions.retain(|r| r.slot != region.slot);
        regions.push(region);
        Ok(())
    }

    fn remove_memory_region(&self, region: MemoryRegion) -> Result<()> {
        // A slot of size 0 deletes it.
        let mem = kvm_userspace_memory_region {
            flags: 0,
            memory_size: 0,
            ..kvm_region(&region)
        };
        // SAFETY: deleting a slot makes KVM drop its reference to the host mapping; no host
        // memory is handed over.
        unsafe { self.fd.set_user_memory_region(mem) }
            .map_err(|e| Error::ioctl("KVM_SET_USER_MEMORY_REGION (delete)", e))?;
        self.regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.slot != region.slot);
        Ok(())
    }

    fn create_irq_chip(&self, config: &IrqChipConfig) -> Result<Arc<dyn IrqChip>> {
        let arch = self.arch_create_irq_chip(config)?;
        Ok(Arc::new(KvmIrqChip {
            vm: self.fd.clone(),
            arch,
        }))
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|e| Error::ioctl("KVM_CREATE_VCPU", e))?;
        self.arch_init_vcpu(&fd, id)?;
        #[cfg(target_arch = "x86_64")]
        let mmio_check =
            mmio_check::enabled().then(|| mmio_check::MmioCheck::new(id, self.regions.clone()));
        Ok(Box::new(KvmVcpu {
            id,
            fd,
            #[cfg(target_arch = "x86_64")]
            mmio_check,
        }))
    }

    fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()> {
        let addr = kvm_ioevent_addr(addr);
        // kvm-ioctls takes the match width from the value's type.
        match datamatch {
            Datamatch::Any => self
                .fd
                .register_ioevent(evt, &addr, kvm_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U16(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U32(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U64(v) => self.fd.register_ioevent(evt, &addr, v),
        }
        .map_err(|e| Error::ioctl("KVM_IOEVENTFD", e))
    }

    fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()> {
        let addr = kvm_ioevent_addr(addr);
        match datamatch {
            Datamatch::Any => self
                .fd
                .unregister_ioevent(evt, &addr, kvm_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U16(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U32(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U64(v) => self.fd.unregister_ioevent(evt, &addr, v),
        }
        .map_err(|e| Error::ioctl("KVM_IOEVENTFD (deassign)", e))
    }
}

fn kvm_region(region: &MemoryRegion) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot: region.slot,
        flags: if region.read_only {
            KVM_MEM_READONLY
        } else {
            0
        },
        guest_phys_addr: region.guest_addr,
        memory_size: region.size,
        userspace_addr: region.host_addr,
    }
}

fn kvm_ioevent_addr(addr: IoEventAddress) -> kvm_ioctls::IoEventAddress {
    match addr {
        IoEventAddress::Pio(a) => kvm_ioctls::IoEventAddress::Pio(a),
        IoEventAddress::Mmio(a) => kvm_ioctls::IoEventAddress::Mmio(a),
    }
}

/// The in-kernel interrupt controller of a KVM VM.
pub struct KvmIrqChip {
    vm: Arc<VmFd>,
    /// The architecture's part: pin routes, line numbering, the GIC device.
    arch: ArchIrqChip,
}

impl IrqChip for KvmIrqChip {
    fn pin_count(&self) -> u32 {
        self.arch.pin_count()
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()> {
        self.vm
            .set_irq_line(self.arch.irq_line_number(gsi)?, level)
            .map_err(|e| Error::ioctl("KVM_IRQ_LINE", e))
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .register_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("KVM_IRQFD", e))
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .unregister_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("KVM_IRQFD (deassign)", e))
    }

    fn set_msi_routes(&self, routes: &[IrqRoute]) -> Result<()> {
        // KVM_SET_GSI_ROUTING replaces the whole table: restate the platform's pin routes.
        let mut entries: Vec<kvm_irq_routing_entry> = self.arch.pin_routes();
        for route in routes {
            let mut e = kvm_irq_routing_entry::default();
            match *route {
                IrqRoute::Pin { gsi, pin } => {
                    e.gsi = gsi;
                    e.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                    e.u.irqchip.irqchip = self.arch.irqchip_for(pin);
                    e.u.irqchip.pin = pin;
                }
                IrqRoute::Msi { gsi, msi } => {
                    e.gsi = gsi;
                    e.type_ = KVM_IRQ_ROUTING_MSI;
                    e.u.msi.address_lo = msi.address as u32;
                    e.u.msi.address_hi = (msi.address >> 32) as u32;
                    e.u.msi.data = msi.data;
                    if let Some(devid) = msi.devid {
                        e.flags = KVM_MSI_VALID_DEVID;
                        e.u.msi.__bindgen_anon_1.devid = devid;
                    }
                }
            }
            entries.push(e);
        }
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| Error::InvalidArgument(format!("{} irq routes", entries.len())))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| Error::ioctl("KVM_SET_GSI_ROUTING", e))
    }

    fn signal_msi(&self, msi: MsiMessage) -> Result<()> {
        let mut m = kvm_bindings::kvm_msi {
            address_lo: msi.address as u32,
            address_hi: (msi.address >> 32) as u32,
            data: msi.data,
            ..Default::default()
        };
        if let Some(devid) = msi.devid {
            m.flags = KVM_MSI_VALID_DEVID;
            m.devid = devid;
        }
        self.vm
            .signal_msi(m)
            .map(|_| ())
            .map_err(|e| Error::ioctl("KVM_SIGNAL_MSI", e))
    }

    fn finalize(&self) -> Result<()> {
        self.arch.finalize()
    }
}

/// A KVM vCPU.
pub struct KvmVcpu {
    id: u32,
    fd: VcpuFd,
    /// Set in the MMIO check's debug mode.
    #[cfg(target_arch = "x86_64")]
    mmio_check: Option<mmio_check::MmioCheck>,
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit> {
        // For string port I/O and internal errors: details are in kvm_run, which `run`'s
        // borrow holds.
        let run_area: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        // An MMIO access to check after the exit's borrow of kvm_run ends: address, data,
        // length, write.
        // Only in the check's debug mode: nothing is copied otherwise.
        #[cfg(target_arch = "x86_64")]
        let checking = self.mmio_check.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let checking = false;
        let mut to_check: Option<(u64, [u8; 8], usize, bool)> = None;
        let mut note = |addr: u64, data: &[u8], write: bool| {
            if !checking {
                return;
            }
            let mut b = [0u8; 8];
            let n = data.len().min(8);
            b[..n].copy_from_slice(&data[..n]);
            to_check = Some((addr, b, n, write));
        };
        let result = match self.fd.run() {
            Ok(exit) => Ok(match exit {
                KvmExit::IoIn(port, data) => {
                    // SAFETY: the exit is KVM_EXIT_IO and run_area is this vCPU's kvm_run.
                    let size = unsafe { port_io_size(run_area) };
                    for access in data.chunks_mut(size) {
                        io.pio_read(port, access);
                    }
                    VcpuExit::Io
                }
                KvmExit::IoOut(port, data) => {
                    // SAFETY: the exit is KVM_EXIT_IO and run_area is this vCPU's kvm_run.
                    let size = unsafe { port_io_size(run_area) };
                    for access in data.chunks(size) {
                        io.pio_write(port, access);
                    }
                    VcpuExit::Io
                }
                KvmExit::MmioRead(addr, data) => {
                    io.mmio_read(addr, data);
                    note(addr, data, false);
                    VcpuExit::Io
                }
                KvmExit::MmioWrite(addr, data) => {
                    io.mmio_write(addr, data);
                    note(addr, data, true);
                    VcpuExit::Io
                }
                KvmExit::Hlt => VcpuExit::Halt,
                KvmExit::IoapicEoi(vector) => VcpuExit::IoapicEoi { vector },
                // x86: a triple fault; the guest wants a reset (Linux's last-resort reboot).
                KvmExit::Shutdown => VcpuExit::Shutdown,
                KvmExit::SystemEvent(kind, _) => match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VcpuExit::System(SystemEvent::PowerOff),
                    KVM_SYSTEM_EVENT_RESET => VcpuExit::System(SystemEvent::Reset),
                    KVM_SYSTEM_EVENT_CRASH => VcpuExit::System(SystemEvent::Crash),
                    other => VcpuExit::Unhandled {
                        what: format!("KVM system event {other}"),
                    },
                },
                KvmExit::Intr => VcpuExit::Interrupted,
                KvmExit::InternalError => {
                    // SAFETY: the kvm_run mapping lives as long as the vCPU fd; KVM filled
                    // it before KVM_RUN returned and nothing writes it until the next run.
                    internal_error(unsafe { &*run_area })
                }
                KvmExit::FailEntry(reason, _cpu) => VcpuExit::FailEntry { reason },
                other => VcpuExit::Unhandled {
                    what: format!("KVM exit {other:?}"),
                },
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuExit::Interrupted)
            }
            Err(e) => Err(Error::ioctl("KVM_RUN", e)),
        };
        #[cfg(target_arch = "x86_64")]
        if let (Some(check), Some((addr, data, n, write))) = (&mut self.mmio_check, to_check) {
            check.check(&self.fd, addr, &data[..n], write);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = to_check;
        result
    }
}

/// The width of one access of a KVM_EXIT_IO exit. KVM hands a string instruction (`rep outsb`
/// and friends) over as `count` accesses of `size` bytes in one buffer; each is a separate
/// access for the device. Never 0, so the buffer always splits.
///
/// Reads through a raw pointer, field only: the exit's data buffer lives in the same mapping
/// and is mutably borrowed while this runs.
///
/// # Safety
/// `run` must point at a vCPU's mapped kvm_run whose exit reason is KVM_EXIT_IO.
unsafe fn port_io_size(run: *const kvm_bindings::kvm_run) -> usize {
    // SAFETY: the caller guarantees the mapping and that `io` is the union member KVM wrote;
    // `size` is a plain integer outside the data buffer.
    let size = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read() };
    usize::from(size).max(1)
}

/// What a KVM internal error exit says: its suberror and what that means.
fn internal_error(run: &kvm_bindings::kvm_run) -> VcpuExit {
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union's
    // member KVM wrote; it is plain integers.
    let code = unsafe { run.__bindgen_anon_1.internal.suberror };
    let what = match code {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "it could not emulate an instruction",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "an exception arrived while delivering one",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => {
            "an exit came while it delivered an event to the guest"
        }
        kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => {
            "the processor exited for a reason it does not handle"
        }
        _ => "an internal error of an unknown kind",
    };
    VcpuExit::InternalError { code, what }
}

#[cfg(test)]
mod internal_error_tests {
    use super::*;

    /// The suberror KVM reports reaches the exit, not a fixed 0.
    #[test]
    fn the_suberror_is_reported() {
        // SAFETY: kvm_run is plain data; all zeroes is a valid value.
        let mut run: kvm_bindings::kvm_run = unsafe { std::mem::zeroed() };
        run.__bindgen_anon_1.internal.suberror = kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX;
        assert!(matches!(
            internal_error(&run),
            VcpuExit::InternalError { code: 2, what } if what.contains("exception")
        ));
        run.__bindgen_anon_1.internal.suberror = 77;
        assert!(matches!(
            internal_error(&run),
            VcpuExit::InternalError { code: 77, .. }
        ));
    }
}
