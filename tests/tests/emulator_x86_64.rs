//! End to end, the MMIO instruction emulator proven against KVM: with
//! `BERTH_KVM_CHECK_MMIO=1` the KVM backend re-decodes every MMIO exit of a Linux boot with
//! berth's emulator (fetching at RIP through the guest's page tables) and compares the
//! access (address, width, direction, data for writes) with KVM's. The guest uses a disk, the
//! rng and a virtio console (its shell runs on hvc0), with 2 vCPUs, in both irqchip modes
//! (split adds the IOAPIC's MMIO). Each vCPU logs its totals; all must show 0 mismatches and
//! 0 instructions the emulator could not do.

#![cfg(target_arch = "x86_64")]

use berth_tests::ext4::Ext4Image;
use berth_tests::{GuestRun, Kernel, Outcome};
use std::time::Duration;

const SCRIPT: &str = r#"mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo "disk-file: $(cat /mnt/hello.txt)"
echo "from the guest" >/mnt/out.txt && sync && umount /mnt
head -c 4096 /dev/hwrng | wc -c | sed 's/^/rng-bytes: /'
echo "tty: $(tty)"
echo EMULATOR-CHECK-DONE
poweroff -f
"#;

/// `(vcpu, compared, mismatches, not emulated)` from each vCPU's summary line.
fn summaries(out: &Outcome) -> Vec<(u32, u64, u64, u64)> {
    out.berth_log
        .lines()
        .filter_map(|l| {
            let rest = l.split("MMIO check, vCPU ").nth(1)?;
            let nums: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            match nums[..] {
                [v, c, m, n] => Some((v as u32, c, m, n)),
                _ => None,
            }
        })
        .collect()
}

fn check(irqchip: &str, test: &str) {
    let dir = std::env::temp_dir().join(format!("berth-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    Ext4Image::new(16)
        .file("hello.txt", "hello through the emulator check\n")
        .build(&disk)
        .unwrap();
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args([
            "--cpus",
            "2",
            "--memory",
            "512",
            "--rng",
            "--irqchip",
            irqchip,
        ])
        .args(["--disk", "path={file:disk.img}", "--console", "virtio"])
        .args(["--serial", "file={scratch}/uart.log"])
        .writable_file(&disk)
        .env("BERTH_KVM_CHECK_MMIO", "1")
        .append_cmdline("berth.console=hvc0")
        .modules(["virtio_pci", "virtio_blk", "virtio-rng", "virtio_console"])
        .script(SCRIPT)
        .timeout(Duration::from_secs(300))
        .run()
    else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_success()
        .assert_console_contains("disk-file: hello through the emulator check")
        .assert_console_contains("rng-bytes: 4096")
        .assert_console_contains("tty: /dev/hvc0")
        .assert_console_contains("EMULATOR-CHECK-DONE");
    let s = summaries(&out);
    if s.len() != 2 {
        out.fail(&format!(
            "expected a summary from each of 2 vCPUs, got {s:?}"
        ));
    }
    let compared: u64 = s.iter().map(|x| x.1).sum();
    eprintln!("--irqchip {irqchip}: MMIO exits compared per vCPU {s:?}, {compared} in all");
    for &(vcpu, c, m, n) in &s {
        if m != 0 || n != 0 {
            out.fail(&format!(
                "vCPU {vcpu}: {m} mismatches and {n} not emulated of {c} MMIO exits"
            ));
        }
    }
    // A boot with virtio-pci makes hundreds of MMIO exits (configuration, MSI-X table).
    if compared < 100 {
        out.fail(&format!("only {compared} MMIO exits were compared"));
    }
}

#[test]
fn every_mmio_exit_of_a_boot_matches_the_emulator() {
    check("kernel", "emu-kernel");
}

#[test]
fn every_mmio_exit_of_a_boot_matches_the_emulator_with_the_split_irqchip() {
    check("split", "emu-split");
}
