//! The hypervisor conformance kit (`berth check`) against real KVM: natively where the host has
//! hardware KVM, else in the emulated x86_64 host (nested SVM). The kit's own tests run it on
//! whatever /dev/kvm this machine has (`hypervisor/tests/conformance.rs`); this is the KVM
//! berth boots Linux on.

use berth_tests::{Arch, HostRun, Mode};

/// Every case passes, in both interrupt-controller modes, and the table says so.
#[test]
fn berth_check_passes_on_real_kvm() {
    let Some(mode) = berth_tests::mode(Arch::X86_64) else {
        return;
    };
    let berth = berth_tests::berth_bin(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let (status, stdout, context) = match mode {
        Mode::Native => {
            let out = std::process::Command::new(&berth)
                .arg("check")
                .output()
                .expect("run berth check");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Mode::EmulatedHost => {
            let Some(out) = HostRun::new(Arch::X86_64, "/bin/berth check\n")
                .executable(&berth, "/bin/berth")
                .run()
            else {
                return;
            };
            assert!(out.problem.is_none() && out.kvm, "{out}");
            (out.status, out.stdout.clone(), format!("{out}"))
        }
    };
    eprintln!("{stdout}");
    assert_eq!(status, Some(0), "{stdout}\n{context}");
    assert!(stdout.starts_with("hypervisor: kvm\n"), "{stdout}");
    for case in [
        "port-string-in",
        "mmio-read",
        "ioeventfd",
        "msi-irqfd",
        "msi-irqfd-split",
        "split-ioapic-eoi",
        "vcpus-at-once",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([case, "PASS"])),
            "{case} did not pass:\n{stdout}"
        );
    }
    assert!(stdout.contains(" passed, 0 failed, 0 skipped"), "{stdout}");
}
