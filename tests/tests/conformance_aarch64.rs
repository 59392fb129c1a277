//! The hypervisor conformance kit (`berth check`) against real aarch64 KVM: natively on an
//! aarch64 host with KVM, else in the emulated aarch64 host (QEMU virt at EL2, KVM built in).

use berth_tests::host::{assert_check_passed, berth_check};
use berth_tests::Arch;

/// Every aarch64 case passes and the table says so.
#[test]
fn berth_check_passes_on_aarch64_kvm() {
    let Some((status, stdout, context)) = berth_check(Arch::Aarch64) else {
        return;
    };
    assert_check_passed(
        status,
        &stdout,
        &context,
        &[
            "mmio-write",
            "mmio-read",
            "read-only-slot",
            "slot-remove",
            "ioeventfd",
            "psci-system-off",
            "psci-system-reset",
            "psci-cpu-on",
            "spi-irqfd",
            "kick",
        ],
    );
}
