//! The hypervisor conformance kit (`berth check`) against real aarch64 KVM: natively on an
//! aarch64 host with KVM, else in the emulated aarch64 host (QEMU virt at EL2, KVM built in).

use berth_tests::{Arch, HostRun, Mode};

/// Every aarch64 case passes and the table says so.
#[test]
fn berth_check_passes_on_aarch64_kvm() {
    let Some(mode) = berth_tests::mode(Arch::Aarch64) else {
        return;
    };
    let berth = berth_tests::berth_bin(Arch::Aarch64).unwrap_or_else(|e| panic!("{e}"));
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
            let Some(out) = HostRun::new(Arch::Aarch64, "/bin/berth check\n")
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
