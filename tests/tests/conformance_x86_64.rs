//! The hypervisor conformance kit (`berth check`) against real KVM: natively where the host has
//! hardware KVM, else in the emulated x86_64 host (nested SVM). The kit's own tests run it on
//! whatever /dev/kvm this machine has (`hypervisor/tests/conformance.rs`); this is the KVM
//! berth boots Linux on.

use berth_tests::host::{assert_check_passed, berth_check};
use berth_tests::Arch;

/// Every case passes, in both interrupt-controller modes, and the table says so.
#[test]
fn berth_check_passes_on_real_kvm() {
    let Some((status, stdout, context)) = berth_check(Arch::X86_64) else {
        return;
    };
    assert_check_passed(
        status,
        &stdout,
        &context,
        &[
            "port-string-in",
            "mmio-read",
            "ioeventfd",
            "msi-irqfd",
            "msi-irqfd-split",
            "split-ioapic-eoi",
            "vcpus-at-once",
        ],
    );
}
