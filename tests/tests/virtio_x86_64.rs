//! End to end, virtio-pci devices: virtio-blk disks (ext4 images read, written and checked on
//! the host, read-only, two at once), virtio-rng, the virtio console (a shell on hvc0), and a
//! PCI bus the guest enumerates without complaint. Each runs with every device backend in a
//! process of its own (the default) and as threads of berth (`--disable-sandbox`); disks and
//! INTx also with berth's user-space IOAPIC (`--irqchip split`). Eight boots in all: each
//! costs 20-40 s in the emulated host.

#![cfg(target_arch = "x86_64")]

use berth_tests::ext4::{self, Ext4Image};
use berth_tests::{GuestRun, Kernel, Outcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
/// Small images: in the emulated host they live in RAM and travel over a serial port.
const DISK_MIB: u64 = 16;

/// A directory for a test's images, removed at the end unless the test failed.
struct Images(PathBuf);

impl Images {
    fn new(test: &str) -> Images {
        let d = std::env::temp_dir().join(format!("berth-virtio-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Images(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("images kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where the device backends run: `berth run` arguments.
const PROCESSES: &[&str] = &[];
const THREADS: &[&str] = &["--disable-sandbox"];
/// berth's user-space IOAPIC, KVM's local APICs.
const SPLIT: &[&str] = &["--irqchip", "split"];

/// The value after `key` on the console line that starts with it.
fn value<'a>(out: &'a Outcome, key: &str) -> &'a str {
    out.expect_console_line(key)[key.len()..].trim()
}

#[track_caller]
fn expect_value(out: &Outcome, key: &str, want: &str) {
    let got = value(out, key);
    if got != want {
        out.fail(&format!("{key} {got:?}, expected {want:?}"));
    }
}

fn read_back(out: &Outcome, image: &Path, path: &str) -> Vec<u8> {
    ext4::read_file(image, path).unwrap_or_else(|e| out.fail(&e))
}

/// vda (read-write) and vdb (`readonly=on`), each an ext4 image made with `mkfs.ext4 -d`: the
/// guest reads both files, writes one to vda, syncs, unmounts and powers off; the host then
/// finds that file with debugfs and fsck finds vda clean. Writes to vdb fail in the guest (the
/// mount ends up read-only, a file write and a raw write fail, /sys/block/vdb/ro is 1) and vdb
/// is byte-for-byte unchanged.
#[test]
fn ext4_disks_read_write_and_readonly_side_by_side() {
    disks(PROCESSES, "disks");
}

#[test]
fn ext4_disks_with_backends_in_threads() {
    disks(THREADS, "disks-threads");
}

/// MSI-X vectors are irqfds in both irqchip modes; this checks they still are with berth's
/// IOAPIC owning GSIs 0-23.
#[test]
fn ext4_disks_with_the_split_irqchip() {
    disks(SPLIT, "disks-split");
}

fn disks(placement: &[&str], test: &str) {
    let dir = Images::new(test);
    let (vda, vdb) = (dir.path("vda.img"), dir.path("vdb.img"));
    Ext4Image::new(DISK_MIB)
        .label("vda")
        .file("hello.txt", "hello from the host on vda\n")
        .build(&vda)
        .unwrap();
    Ext4Image::new(DISK_MIB)
        .label("vdb")
        .file("data/only-on-vdb.txt", "vdb has its own content\n")
        .build(&vdb)
        .unwrap();
    let vdb_before = std::fs::read(&vdb).unwrap();
    let script = r#"mkdir -p /mnt/a /mnt/b
echo "disks: $(ls /sys/block | grep '^vd' | tr '\n' ' ')"
echo "vda-ro: $(cat /sys/block/vda/ro)"
echo "vdb-ro: $(cat /sys/block/vdb/ro)"
mount -t ext4 /dev/vda /mnt/a || echo "vda mount failed"
echo "vda-hello: $(cat /mnt/a/hello.txt)"
echo "written by the guest" >/mnt/a/from-guest.txt
sync
umount /mnt/a && echo "vda-unmounted: yes"
# busybox mount retries read-only when the device refuses rw: the mount's flags tell.
mount -t ext4 -o rw /dev/vdb /mnt/b 2>/dev/null || echo "vdb mount failed"
echo "vdb-mount-flags: $(awk '$2 == "/mnt/b" { split($4, o, ","); print o[1] }' /proc/mounts)"
echo "vdb-content: $(cat /mnt/b/data/only-on-vdb.txt)"
echo nope >/mnt/b/new.txt 2>/dev/null; echo "vdb-file-write: $?"
umount /mnt/b
dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null; echo "vdb-raw-write: $?"
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "512"])
        .args(placement.iter().copied())
        .args(["--disk", "path={file:vda.img}"])
        .args(["--disk", "path={file:vdb.img},readonly=on,id=ro0"])
        .writable_file(&vda)
        .writable_file(&vdb)
        .modules(["virtio_pci", "virtio_blk"])
        .script(script)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_log_contains("the guest powered off")
        .assert_console_lacks("mount failed");
    expect_value(&out, "disks:", "vda vdb");
    expect_value(&out, "vda-ro:", "0");
    expect_value(&out, "vdb-ro:", "1");
    expect_value(&out, "vda-hello:", "hello from the host on vda");
    expect_value(&out, "vda-unmounted:", "yes");
    expect_value(&out, "vdb-mount-flags:", "ro");
    expect_value(&out, "vdb-content:", "vdb has its own content");
    if value(&out, "vdb-file-write:") == "0" || value(&out, "vdb-raw-write:") == "0" {
        out.fail("a write to the readonly=on disk succeeded in the guest");
    }
    assert_eq!(
        read_back(&out, &vda, "/from-guest.txt"),
        b"written by the guest\n",
        "the guest's file in vda.img, read with debugfs"
    );
    assert_eq!(
        read_back(&out, &vda, "/hello.txt"),
        b"hello from the host on vda\n"
    );
    if let Err(e) = ext4::fsck(&vda) {
        out.fail(&format!(
            "vda.img is not clean after the guest's writes: {e}"
        ));
    }
    if std::fs::read(&vdb).unwrap() != vdb_before {
        out.fail("vdb.img (readonly=on) changed");
    }
}

/// `--rng` and a disk on the PCI bus, with the guest's MSI support off (`pci=nomsi`) so both
/// devices interrupt through INTx (IOAPIC pins routed by the DSDT's `_PRT`): the guest's
/// hw_random uses virtio_rng.0 and /dev/hwrng gives 64 varied bytes; a file on the disk reads
/// back; /proc/interrupts shows the virtio devices on IO-APIC lines; /sys/bus/pci/devices lists
/// a virtio (vendor 0x1af4) rng and block device; dmesg has no "PCI: Fatal" and no "ACPI Error".
#[test]
fn rng_and_disk_enumerate_cleanly_and_work_on_intx() {
    rng_and_disk(PROCESSES, "rng");
}

#[test]
fn rng_and_disk_on_intx_with_backends_in_threads() {
    rng_and_disk(THREADS, "rng-threads");
}

/// INTx with `--irqchip split`: each interrupt is a level on a pin of berth's IOAPIC, sent as
/// an MSI and held (remote IRR) until KVM reports the guest's EOI of its vector; a lost EOI
/// would stop the disk and rng after their first interrupt.
#[test]
fn rng_and_disk_on_intx_with_the_split_irqchip() {
    rng_and_disk(SPLIT, "rng-split");
}

fn rng_and_disk(placement: &[&str], test: &str) {
    let dir = Images::new(test);
    let disk = dir.path("disk.img");
    Ext4Image::new(DISK_MIB)
        .file("intx.txt", "read through INTx\n")
        .build(&disk)
        .unwrap();
    let script = r#"echo "rng-current: $(cat /sys/class/misc/hw_random/rng_current)"
mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt && echo "disk-file: $(cat /mnt/intx.txt)"
echo "intx-lines: $(grep virtio /proc/interrupts | grep -c IO-APIC)"
echo "msi-lines: $(grep virtio /proc/interrupts | grep -c MSI)"
head -c 64 /dev/hwrng >/tmp/r
echo "rng-bytes: $(wc -c </tmp/r)"
echo "rng-distinct: $(od -An -v -tx1 /tmp/r | tr -s ' ' '\n' | grep . | sort -u | wc -l)"
for d in /sys/bus/pci/devices/*; do echo "pci-dev: ${d##*/} $(cat $d/vendor) $(cat $d/device)"; done
echo "pci-fatal: $(dmesg | grep -c 'PCI: Fatal')"
echo "acpi-error: $(dmesg | grep -c 'ACPI Error')"
dmesg | grep -E 'PCI: Fatal|ACPI Error'
true
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "512", "--rng"])
        .args(placement.iter().copied())
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .append_cmdline("pci=nomsi")
        .modules(["virtio_pci", "virtio-rng", "virtio_blk"])
        .script(script)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success().assert_test_exit(0);
    expect_value(&out, "rng-current:", "virtio_rng.0");
    expect_value(&out, "disk-file:", "read through INTx");
    expect_value(&out, "msi-lines:", "0");
    // One line per device: virtio-pci without MSI-X has a single shared INTx handler.
    expect_value(&out, "intx-lines:", "2");
    expect_value(&out, "rng-bytes:", "64");
    // 64 random bytes have about 57 distinct values; fewer than 16 means a pattern, not noise.
    let distinct: u32 = value(&out, "rng-distinct:").parse().unwrap_or(0);
    if distinct < 16 {
        out.fail(&format!(
            "64 bytes of /dev/hwrng have {distinct} distinct values"
        ));
    }
    expect_value(&out, "pci-fatal:", "0");
    expect_value(&out, "acpi-error:", "0");
    let virtio: Vec<&str> = out
        .console
        .lines()
        .filter(|l| l.starts_with("pci-dev: ") && l.contains(" 0x1af4 "))
        .collect();
    // Device IDs: transitional (0x1000 + n) or modern (0x1040 + virtio type).
    for (what, ids) in [
        ("block", ["0x1001", "0x1042"]),
        ("rng", ["0x1005", "0x1044"]),
    ] {
        if !virtio
            .iter()
            .any(|l| ids.iter().any(|id| l.ends_with(&format!(" {id}"))))
        {
            out.fail(&format!(
                "no virtio {what} device ({ids:?}) in /sys/bus/pci/devices"
            ));
        }
    }
}

/// `--console virtio`: with `berth.console=hvc0` the guest's init and shell use hvc0. Commands
/// typed on berth's stdin run and their output is on berth's stdout; what the guest writes to
/// the UART goes to `--serial file=`, not to stdout.
#[test]
fn shell_on_virtio_console_hvc0() {
    hvc0_shell(PROCESSES);
}

#[test]
fn shell_on_virtio_console_hvc0_with_the_backend_in_a_thread() {
    hvc0_shell(THREADS);
}

fn hvc0_shell(placement: &[&str]) {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "512", "--console", "virtio"])
        .args(placement.iter().copied())
        .args(["--serial", "file={scratch}/uart.log"])
        .append_cmdline("berth.console=hvc0")
        .modules(["virtio_pci", "virtio_console"])
        .collect("uart.log")
        // No /test.sh: init starts a shell on hvc0; `$((6*7))` shows it ran, not echoed.
        .stdin_after(
            "BERTH-GUEST-INIT",
            "echo HVC-SHELL-$((6*7)); echo \"tty: $(tty)\"; echo UART-ONLY >/dev/ttyS0\nexit\n",
        )
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("BERTH-GUEST-INIT ")
        .assert_console_contains("HVC-SHELL-42")
        .assert_console_lacks("UART-ONLY\n");
    expect_value(&out, "tty:", "/dev/hvc0");
    let uart = out
        .files
        .get("uart.log")
        .unwrap_or_else(|| out.fail("no --serial file uart.log"));
    if !String::from_utf8_lossy(uart).contains("UART-ONLY") {
        out.fail("the guest's UART line is not in the --serial file");
    }
}
