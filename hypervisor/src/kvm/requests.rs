//! The KVM ioctl requests berth's threads make once the VM runs, for their seccomp filters.
//! kvm-ioctls keeps its request numbers private: these are built with the same vmm-sys-util
//! macros on the same kvm-bindings types, so they are the numbers it passes.

use kvm_bindings::{kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd, kvm_msi};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr};

use crate::RuntimeIoctls;

const KVMIO: u32 = 0xAE;

ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
#[cfg(target_arch = "x86_64")]
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
#[cfg(target_arch = "x86_64")]
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
#[cfg(target_arch = "aarch64")]
ioctl_iow_nr!(KVM_GET_ONE_REG, KVMIO, 0xab, kvm_bindings::kvm_one_reg);

pub fn runtime_ioctls() -> RuntimeIoctls {
    // What any thread may do to the VM while it runs: interrupt lines (the UART, INTx),
    // MSI routes and irqfds (the guest programming and masking MSI-X or the user-space
    // IOAPIC), ioeventfds (a BAR moved by the guest), MSIs (the user-space IOAPIC's output).
    let vm = vec![
        KVM_IRQ_LINE(),
        KVM_SET_GSI_ROUTING(),
        KVM_IRQFD(),
        KVM_IOEVENTFD(),
        KVM_SIGNAL_MSI(),
    ];
    let mut vcpu = vm.clone();
    vcpu.push(KVM_RUN());
    // The registers a shutdown report shows.
    #[cfg(target_arch = "x86_64")]
    vcpu.extend([KVM_GET_REGS(), KVM_GET_SREGS()]);
    #[cfg(target_arch = "aarch64")]
    vcpu.push(KVM_GET_ONE_REG());
    RuntimeIoctls { vcpu, vm }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of linux/kvm.h (x86_64 and aarch64 agree on these).
    #[test]
    fn requests_match_the_kernel_headers() {
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_IRQ_LINE(), 0x4008_ae61);
        assert_eq!(KVM_IRQFD(), 0x4020_ae76);
        assert_eq!(KVM_IOEVENTFD(), 0x4040_ae79);
        assert_eq!(KVM_SET_GSI_ROUTING(), 0x4008_ae6a);
        assert_eq!(KVM_SIGNAL_MSI(), 0x4020_aea5);
    }
}
