//! End to end on aarch64: berth boots the Debian arm64 kernel with 2 vCPUs to the guest init,
//! on a GICv3 (MSIs through the ITS) and on a GICv2 (the fallback; INTx), reads a virtio-blk
//! disk, and exits 0 when the guest powers off or resets through PSCI. On an x86_64 machine
//! this runs in the emulated aarch64 host (QEMU TCG, virtualization=on).

use berth_tests::jail::{check_berth_filtered, check_jails, check_no_call_logged, INSPECT};
use berth_tests::{assets, Arch, GuestRun, Kernel, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const DISK_MARKER: &[u8] = b"berth-aarch64-disk";

/// A 1 MiB raw disk that starts with [`DISK_MARKER`], in a directory of its own: the tests of
/// this file run in parallel in one process, and each removes its directory when done.
fn disk() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("berth-aarch64-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    data[..DISK_MARKER.len()].copy_from_slice(DISK_MARKER);
    std::fs::write(&path, data).unwrap();
    path
}

fn script(end: &str) -> String {
    format!(
        r#"echo "uname-r: $(uname -r)"
echo "cpus: $(grep -c ^processor /proc/cpuinfo)"
dmesg | grep -m1 -E 'GICv[23]: |GIC: '
dmesg | grep -m1 'ITS@'
[ -b /dev/vda ] && echo "disk: $(head -c {} /dev/vda)"
echo BERTH-E2E-SCRIPT-RAN
{end}
"#,
        DISK_MARKER.len()
    )
}

/// Boots `kernel` with 2 vCPUs, 512 MiB and a disk; checks the guest ran the script.
fn boot(kernel: Kernel, host_args: &[&str], end: &str) -> Option<Outcome> {
    let disk = disk();
    let out = GuestRun::new(kernel)
        .arch(Arch::Aarch64)
        .args(["--cpus", "2", "--memory", "512"])
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .modules(["virtio_pci", "virtio_blk"])
        .host_qemu_args(host_args.iter().copied())
        .script(script(end))
        .timeout(Duration::from_secs(300))
        .run();
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
    let out = out?;
    let version = &assets(Arch::Aarch64).kernel_version;
    out.assert_success()
        .assert_console_contains("BERTH-GUEST-INIT ")
        .assert_console_contains(&format!("uname-r: {version}"))
        .assert_console_contains("cpus: 2")
        .assert_console_contains("disk: berth-aarch64-disk")
        .assert_console_contains("BERTH-E2E-SCRIPT-RAN");
    Some(out)
}

#[test]
fn gic_v3_boots_two_vcpus_with_msi_disk_and_powers_off() {
    let Some(out) = boot(Kernel::BzImage, &[], "poweroff -f") else {
        return;
    };
    out.assert_console_contains("ITS@")
        .assert_log_contains("the guest powered off");
    if out.berth_log.contains("using a GICv2") {
        out.fail("berth fell back to a GICv2 on a GICv3 host");
    }
}

#[test]
fn gic_v2_host_takes_the_fallback_and_uses_intx() {
    let Some(out) = boot(Kernel::BzImage, &["-M", "gic-version=2"], "poweroff -f") else {
        return;
    };
    out.assert_log_contains("cannot provide a GICv3")
        .assert_log_contains("using a GICv2")
        .assert_console_lacks("ITS@");
}

#[test]
fn gzipped_image_boots_and_resets() {
    let Some(out) = boot(Kernel::ElfVmlinux, &[], "reboot -f") else {
        return;
    };
    out.assert_log_contains("the guest reset");
}

/// The disk's backend runs in its own process on aarch64 too: kill -9 of it stops the guest
/// with berth's device status, naming the device.
#[test]
fn a_killed_device_process_stops_the_guest() {
    let disk = disk();
    let host = r#"for d in /proc/[0-9]*; do
  [ "$(awk '/^PPid:/ { print $2 }' $d/status 2>/dev/null)" = "$BERTH_PID" ] || continue
  tr '\0' ' ' <$d/cmdline | grep -q -- '--name virtio-blk0 ' && kill -9 ${d#/proc/} && echo "killed: ${d#/proc/}"
done
"#;
    let out = GuestRun::new(Kernel::BzImage)
        .arch(Arch::Aarch64)
        .args(["--memory", "512"])
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .modules(["virtio_pci", "virtio_blk"])
        .script("echo KILL-ME\nsleep 120\necho STILL-RUNNING\n")
        .host_script("KILL-ME", host)
        .timeout(Duration::from_secs(300))
        .run();
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
    let Some(out) = out else { return };
    out.assert_status(4)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("device virtio-blk0 failed")
        .assert_log_contains("SIGKILL");
    let text = out.host_script_output();
    if !text.contains("killed: ") {
        out.fail(&format!("the host script found no device process:\n{text}"));
    }
}

/// The jail on aarch64: seen from outside, each device process and each of its threads is
/// locked down, every thread of berth runs under its filter, and with `--seccomp log` a boot
/// that reads the disk, draws entropy and powers off makes no call outside any filter.
#[test]
fn devices_are_jailed_and_no_call_leaves_the_filters() {
    let disk = disk();
    let guest = r#"echo "disk: $(head -c 18 /dev/vda)"
echo "rng: $(head -c 16 /dev/hwrng | wc -c)"
echo INSPECT
sleep 4
poweroff -f
"#;
    let out = GuestRun::new(Kernel::BzImage)
        .arch(Arch::Aarch64)
        .args([
            "--cpus",
            "2",
            "--memory",
            "512",
            "--rng",
            "--seccomp",
            "log",
        ])
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .modules(["virtio_pci", "virtio_blk", "virtio-rng"])
        .script(guest)
        .host_script("INSPECT", INSPECT)
        .timeout(Duration::from_secs(300))
        .run();
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
    let Some(out) = out else { return };
    out.assert_success()
        .assert_console_contains("disk: berth-aarch64-disk")
        .assert_console_contains("rng: 16");
    let text = out.host_script_output();
    eprintln!("{text}");
    let n = check_jails(&out, &text, "65534");
    if n != 2 {
        out.fail(&format!("{n} device processes, expected 2:\n{text}"));
    }
    check_berth_filtered(&out, &text);
    check_no_call_logged(&out);
}
