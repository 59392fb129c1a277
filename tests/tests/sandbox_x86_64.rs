//! End to end, the jail around each device process, proved from outside (/proc of the
//! emulated host, read by a script beside berth): every thread of every device process has
//! seccomp on, no_new_privs and no capabilities; its mount, pid, net and user namespaces are
//! not berth's; it holds only its own fds; its root is empty. The policies are exact: a full
//! workload under `--seccomp log` makes the kernel log no call outside them. An ordinary user
//! gets the same jail. A device that calls outside its policy is stopped and named.

#![cfg(target_arch = "x86_64")]

use berth_tests::ext4::{self, Ext4Image};
use berth_tests::jail::{
    check_berth_filtered, check_jails, check_no_call_logged, check_no_device_left, procs, INSPECT,
    NO_DEVICE_LEFT,
};
use berth_tests::{GuestRun, Kernel};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

fn scratch_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-sandbox-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A jailed boot with disk, rng and console: seen from outside, each device process and each
/// of its threads is locked down as the jail says.
#[test]
fn every_device_process_and_thread_is_jailed() {
    let dir = scratch_dir("jailed");
    let disk = dir.join("disk.img");
    Ext4Image::new(8)
        .file("f.txt", "jailed disk\n")
        .build(&disk)
        .unwrap();
    let guest = r#"mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo "disk: $(cat /mnt/f.txt)"
echo "rng: $(head -c 16 /dev/hwrng | wc -c)"
echo INSPECT
sleep 4
umount /mnt
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "256", "--rng", "--console", "virtio"])
        .args(["--serial", "file={scratch}/uart.log"])
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .append_cmdline("berth.console=hvc0")
        .modules(["virtio_pci", "virtio_blk", "virtio-rng", "virtio_console"])
        .script(guest)
        .host_script("INSPECT", INSPECT)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_success()
        .assert_console_contains("disk: jailed disk")
        .assert_console_contains("rng: 16");
    let text = out.host_script_output();
    eprintln!("{text}");
    // As root, the devices run as nobody.
    let n = check_jails(&out, &text, "65534");
    check_berth_filtered(&out, &text);
    if n != 3 {
        out.fail(&format!("{n} device processes, expected 3:\n{text}"));
    }
}

/// The whole workload of each device under `--seccomp log`: the kernel logs every call
/// outside a policy (audit type 1326) and lets it run. None may be logged.
#[test]
fn the_policies_cover_the_workload_exactly() {
    let dir = scratch_dir("policies");
    let disk = dir.join("disk.img");
    Ext4Image::new(16)
        .file("in.txt", "read me\n")
        .build(&disk)
        .unwrap();
    // Read, write, flush, discard and write-zeroes on the disk; entropy; console both ways.
    let guest = r#"mkdir -p /mnt && mount -t ext4 -o discard /dev/vda /mnt
cat /mnt/in.txt >/dev/null
dd if=/dev/urandom of=/mnt/big bs=64k count=64 2>/dev/null; sync
rm /mnt/big; sync
fstrim /mnt 2>/dev/null; echo "fstrim: $?"
umount /mnt
blkdiscard -z -o 0 -l 65536 /dev/vda 2>/dev/null; echo "zeroout: $?"
head -c 4096 /dev/hwrng | wc -c
echo CONSOLE-OUT
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args([
            "--memory",
            "256",
            "--rng",
            "--console",
            "virtio",
            "--seccomp",
            "log",
        ])
        .args(["--serial", "file={scratch}/uart.log"])
        .args(["--disk", "path={file:disk.img}"])
        .writable_file(&disk)
        .append_cmdline("berth.console=hvc0")
        .modules(["virtio_pci", "virtio_blk", "virtio-rng", "virtio_console"])
        .script(guest)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_success().assert_console_contains("CONSOLE-OUT");
    check_no_call_logged(&out);
}

/// berth run by an ordinary user who can open /dev/kvm: the same jail, the devices running
/// as that user; the disk is read and written.
#[test]
fn an_ordinary_user_gets_the_same_jail() {
    let dir = scratch_dir("user");
    let disk = dir.join("disk.img");
    Ext4Image::new(8)
        .file("f.txt", "user disk\n")
        .build(&disk)
        .unwrap();
    let guest = r#"mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo "disk: $(cat /mnt/f.txt)"
echo "from the guest" >/mnt/g.txt; sync; umount /mnt
echo INSPECT
sleep 4
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .as_user(1000, 1000, env!("CARGO_BIN_EXE_berth-test-runas"))
        .args(["--memory", "256", "--rng"])
        .args(["--disk", "path={file:disk.img}"])
        .writable_file(&disk)
        .modules(["virtio_pci", "virtio_blk", "virtio-rng"])
        .script(guest)
        .host_script("INSPECT", INSPECT)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("disk: user disk");
    let text = out.host_script_output();
    if procs(&text)
        .iter()
        .find(|p| p.name == "berth")
        .map(|p| p.uid)
        != Some("1000")
    {
        out.fail(&format!("berth did not run as uid 1000:\n{text}"));
    }
    let n = check_jails(&out, &text, "1000");
    if n != 2 {
        out.fail(&format!("{n} device processes, expected 2:\n{text}"));
    }
    assert_eq!(
        ext4::read_file(&disk, "/g.txt").unwrap_or_else(|e| out.fail(&e)),
        b"from the guest\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A device that makes a call outside its policy is stopped by its filter: berth stops the
/// guest with the device status and names the device and the call. (The call comes from a
/// test trigger, `BERTH_TEST_DEVICE_FORBIDDEN_CALL`: no guest action can make berth's devices
/// step outside their policies.)
#[test]
fn a_call_outside_the_policy_stops_the_device_and_is_named() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .env("BERTH_TEST_DEVICE_FORBIDDEN_CALL", "virtio-rng")
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("head -c 16 /dev/hwrng >/dev/null; sleep 60; echo STILL-RUNNING\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(4)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("device virtio-rng failed")
        .assert_log_contains("(getppid) is not in its policy");
}

/// A thread of berth that makes a call outside its filter stops berth: status 159, the call
/// and the thread's filter named, the device processes gone with it. (The call comes from a
/// test trigger, `BERTH_TEST_FORBIDDEN_CALL=berth@SECONDS`, in the control loop, once the
/// guest is up: the host script looks for device processes after berth is gone.)
#[test]
fn a_call_outside_berths_own_filter_stops_berth_and_is_named() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .env("BERTH_TEST_FORBIDDEN_CALL", "berth@40")
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("echo UP\nsleep 90\necho STILL-RUNNING\n")
        .host_script("UP", NO_DEVICE_LEFT)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(159)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains(
            "system call 110 (getppid) by a thread under the control filter is outside that filter",
        );
    check_no_device_left(&out);
}

/// Where user namespaces are off, berth never runs a device unjailed: one line names the
/// problem and the way out (`--disable-sandbox`), the guest never starts, the status is 1.
#[test]
fn without_user_namespaces_berth_says_so_in_one_line() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .before("echo 0 >/proc/sys/user/max_user_namespaces")
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("echo SHOULD-NOT-RUN\npoweroff -f\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(1)
        .assert_console_lacks("SHOULD-NOT-RUN")
        .assert_log_contains("error: cannot jail virtio-rng")
        .assert_log_contains("run with --disable-sandbox");
    let errors = out
        .berth_log
        .lines()
        .filter(|l| l.contains("error"))
        .count();
    if errors != 1 {
        out.fail(&format!("{errors} error lines, expected one"));
    }
}
