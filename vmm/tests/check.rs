//! `berth check` runs the conformance kit and reports it as a table with an honest status.

#![cfg(target_arch = "x86_64")] // the kit's cases are x86_64 for now

mod common;

use std::process::Command;

fn berth_check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("check")
        .args(args)
        .output()
        .expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_case_passes_on_this_kvm() {
    if !common::kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let (code, out, err) = berth_check(&[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("hypervisor: kvm\n"), "{out}");
    // KVM on x86_64 decodes MMIO and has both irqchip modes here (the kit's split cases ran).
    let caps = out.lines().nth(1).unwrap_or("");
    assert!(
        caps.starts_with("capabilities: in-kernel irqchip yes, split irqchip yes")
            && caps.ends_with("MMIO decoded by the hypervisor"),
        "{out}"
    );
    for case in ["port-string-in", "mmio-read", "ioeventfd", "vcpus-at-once"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(case) && l.contains(" PASS ")),
            "{case}: {out}"
        );
    }
    assert!(out.contains(" passed, 0 failed, 0 skipped"), "{out}");
}

#[test]
fn one_case_can_be_picked_and_an_unknown_one_is_refused_in_one_line() {
    if !common::kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let (code, out, _) = berth_check(&["--case", "halt"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 passed, 0 failed, 0 skipped"), "{out}");
    let (code, out, err) = berth_check(&["--case", "no-such-case"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no case named") && err.contains("port-string-in"),
        "{err}"
    );
}
