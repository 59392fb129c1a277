//! End to end: berth boots the Debian cloud kernel (bzImage and ELF vmlinux) to the guest
//! init, runs a script and exits 0 when the guest reboots; the boot timer logs.

#![cfg(target_arch = "x86_64")]

use berth_tests::{assets, Arch, GuestRun, Kernel, Outcome};
use std::time::Duration;

const SCRIPT: &str = r#"echo "uname-r: $(uname -r)"
echo "cpus: $(grep -c ^processor /proc/cpuinfo)"
echo BERTH-E2E-SCRIPT-RAN
reboot -f
"#;

/// Boots `kernel` with 1 vCPU and 512 MiB and checks the guest got to run the script.
fn boot(kernel: Kernel) -> Option<Outcome> {
    let out = GuestRun::new(kernel)
        .args(["--cpus", "1", "--memory", "512"])
        .script(SCRIPT)
        .timeout(Duration::from_secs(240))
        .run()?;
    let version = &assets(Arch::X86_64).kernel_version;
    out.assert_success();
    let line = out.expect_console_line("Linux version ");
    if !line.contains(version.as_str()) {
        out.fail(&format!(
            "the kernel's version line does not name {version}"
        ));
    }
    out.assert_console_contains("BERTH-GUEST-INIT ")
        .assert_console_contains(&format!("uname-r: {version}"))
        .assert_console_contains("cpus: 1")
        .assert_console_contains("BERTH-E2E-SCRIPT-RAN");
    Some(out)
}

#[test]
fn bzimage_boots_to_init_and_reboots() {
    boot(Kernel::BzImage);
}

#[test]
fn elf_vmlinux_boots_to_init_and_reboots() {
    boot(Kernel::ElfVmlinux);
}

#[test]
fn boot_timer_logs_guest_boot_time() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--cpus", "1", "--memory", "512", "--boot-timer"])
        .script("busybox devmem 0xf0000000 8 123\necho BOOT-TIMER-WRITTEN\nreboot -f\n")
        .timeout(Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("BOOT-TIMER-WRITTEN")
        .assert_log_contains("guest boot time:");
    let us = out
        .boot_time_us()
        .unwrap_or_else(|| out.fail("the boot time line has no `<N> us`"));
    if us == 0 {
        out.fail("a boot time of 0 us");
    }
    eprintln!("guest boot time: {us} us ({:?})", out.mode);
}
