//! End to end: berth boots the Debian cloud kernel (bzImage and ELF vmlinux) to the guest
//! init, runs a script and exits 0 when the guest reboots; the boot timer logs; with
//! `--irqchip split` the guest finds berth's IOAPIC instead of KVM's and its UART interrupts
//! arrive through it.

#![cfg(target_arch = "x86_64")]

use berth_tests::{assets, Arch, GuestRun, Kernel, Outcome};
use std::time::Duration;

const SCRIPT: &str = r#"echo "uname-r: $(uname -r)"
echo "cpus: $(grep -c ^processor /proc/cpuinfo)"
echo "ioapic: $(dmesg | grep -o 'IOAPIC\[0\]: apic_id 0, version [0-9]*')"
echo "uart-irqs: $(grep ttyS0 /proc/interrupts | tr -s ' ')"
echo BERTH-E2E-SCRIPT-RAN
reboot -f
"#;

/// Boots `kernel` with `cpus` vCPUs, 512 MiB and `args` and checks the guest got to run the
/// script.
fn boot_with(kernel: Kernel, cpus: u32, args: &[&str]) -> Option<Outcome> {
    let cpus = cpus.to_string();
    let out = GuestRun::new(kernel)
        .args(["--cpus", &cpus, "--memory", "512"])
        .args(args.iter().copied())
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
        .assert_console_contains(&format!("cpus: {cpus}"))
        .assert_console_contains("BERTH-E2E-SCRIPT-RAN");
    Some(out)
}

fn boot(kernel: Kernel) -> Option<Outcome> {
    let out = boot_with(kernel, 1, &[])?;
    // KVM's in-kernel IOAPIC is version 0x11.
    out.assert_console_contains("ioapic: IOAPIC[0]: apic_id 0, version 17");
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

/// `--irqchip split`, 2 vCPUs: the guest's IOAPIC is berth's (version 0x20, with the EOI
/// register; KVM's is 0x11), and the UART's interrupts reached the guest through the route
/// berth's IOAPIC programmed for pin 4 (the init's output is interrupt-driven).
#[test]
fn bzimage_boots_with_the_split_irqchip() {
    let Some(out) = boot_with(Kernel::BzImage, 2, &["--irqchip", "split"]) else {
        return;
    };
    out.assert_console_contains("ioapic: IOAPIC[0]: apic_id 0, version 32");
    let line = out.expect_console_line("uart-irqs: ");
    // " 25: 0 96 IO-APIC 4-edge ttyS0": the per-CPU counts come before the chip's name.
    let counts: u64 = line
        .split_whitespace()
        .skip(2)
        .take_while(|w| *w != "IO-APIC")
        .filter_map(|w| w.parse::<u64>().ok())
        .sum();
    if !line.contains("IO-APIC 4-edge ttyS0") || counts == 0 {
        out.fail(&format!(
            "ttyS0 should have taken interrupts on IO-APIC pin 4: {line}"
        ));
    }
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
