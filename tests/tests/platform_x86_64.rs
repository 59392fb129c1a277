//! End to end, x86_64 platform: ACPI that Linux parses without complaint, N vCPUs, power-off,
//! reset with and without `reboot=k`, panics, and memory across the 32-bit MMIO hole.

#![cfg(target_arch = "x86_64")]

use berth_tests::{GuestRun, Kernel, DEFAULT_CMDLINE};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

/// `DEFAULT_CMDLINE` without `reboot=k`: Linux then picks its own reboot method.
fn cmdline_without_reboot_k() -> String {
    DEFAULT_CMDLINE.replace("reboot=k ", "")
}

#[test]
fn four_vcpus_clean_acpi_and_poweroff() {
    let script = r#"echo "nproc: $(nproc)"
echo "processors: $(grep -c ^processor /proc/cpuinfo)"
echo "packages: $(cat /sys/devices/system/cpu/cpu*/topology/physical_package_id | sort -u | wc -l)"
echo "cores-per-package: $(grep -m1 '^cpu cores' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')"
echo "acpi-complaints: $(dmesg | grep -cE 'ACPI (BIOS )?(Error|Warning)')"
dmesg | grep -E 'ACPI (BIOS )?(Error|Warning)'
echo "acpi-tables: $(ls /sys/firmware/acpi/tables | tr '\n' ' ')"
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--cpus", "4", "--memory", "512"])
        .script(script)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("nproc: 4")
        .assert_console_contains("processors: 4")
        .assert_console_contains("packages: 1")
        .assert_console_contains("cores-per-package: 4")
        .assert_console_contains("acpi-complaints: 0")
        .assert_log_contains("the guest powered off");
    let tables = out.expect_console_line("acpi-tables: ");
    for t in ["APIC", "DSDT", "FACP"] {
        if !tables.contains(t) {
            out.fail(&format!("ACPI table {t} missing in the guest"));
        }
    }
}

#[test]
fn reboot_without_reboot_k_resets_and_exits_zero() {
    // Without reboot=k Linux reboots through the ACPI/EFI/BIOS chain; berth must still see it.
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .cmdline(cmdline_without_reboot_k())
        .script("echo REBOOTING\nreboot -f\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("REBOOTING")
        .assert_log_contains("the guest reset");
}

#[test]
fn panic_with_pvpanic_exits_three() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .modules(["pvpanic-mmio"])
        .script("echo c > /proc/sysrq-trigger\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(3)
        .assert_console_contains("Kernel panic")
        .assert_log_contains("the guest reported a crash");
}

#[test]
fn panic_without_pvpanic_resets_through_panic_1() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .script("echo c > /proc/sysrq-trigger\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("Kernel panic")
        .assert_log_contains("the guest reset");
}

#[test]
fn six_gib_guest_sees_all_its_memory() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "6144"])
        .script("grep MemTotal /proc/meminfo\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success();
    let line = out.expect_console_line("MemTotal:");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| out.fail("unparsable MemTotal line"));
    let requested = 6144 * 1024;
    // The kernel keeps its own image, page structures and reserved areas out of MemTotal.
    if kib * 100 < requested * 95 || kib > requested {
        out.fail(&format!(
            "MemTotal {kib} KiB is not within 5% of {requested} KiB"
        ));
    }
}
