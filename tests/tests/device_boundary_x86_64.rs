//! End to end, the device boundary: every virtio device is a vhost-user backend in its own
//! process, child of berth; a device process that dies stops the guest with berth's device
//! status and the device's name; berth killed leaves no device process; a backend started on
//! its own (`berth device blk --socket`) serves a VM through `--vhost-user`. Looked at from
//! outside, by a script beside berth (/proc), not by what berth says of itself.

#![cfg(target_arch = "x86_64")]

use berth_tests::ext4::{self, Ext4Image};
use berth_tests::{GuestRun, Kernel, Outcome};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
/// berth's exit status when a device failed (docs/architecture.md).
const EXIT_DEVICE_FAILED: i32 = 4;

/// Lists berth's children: "child: PID PPID STATE ARGS" per line (POSIX sh, busybox too).
const LIST_CHILDREN: &str = r#"children() {
  for d in /proc/[0-9]*; do
    [ "$(awk '/^PPid:/ { print $2 }' $d/status 2>/dev/null)" = "$BERTH_PID" ] || continue
    echo "child: ${d#/proc/} $BERTH_PID $(awk '/^State:/ { print $2 }' $d/status) $(tr '\0' ' ' <$d/cmdline)"
  done
}
# The pid of berth's device process named $1.
device_pid() { children | awk -v n="--name $1 " 'index($0, n) { print $2; exit }'; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
"#;

fn scratch_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-boundary-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host_value<'a>(out: &Outcome, text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| out.fail(&format!("no {key:?} in the host script's output:\n{text}")))
}

/// Disk, rng and virtio console: three device processes, each a child of berth, each
/// `berth device <kind>`; berth itself is not one of them.
#[test]
fn each_virtio_device_is_a_child_process_of_berth() {
    let dir = scratch_dir("children");
    let disk = dir.join("disk.img");
    Ext4Image::new(8).build(&disk).unwrap();
    let host = format!(
        "{LIST_CHILDREN}children\necho \"berth: $(tr '\\0' ' ' </proc/$BERTH_PID/cmdline)\"\n"
    );
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "256", "--rng", "--console", "virtio"])
        .args(["--serial", "file={scratch}/uart.log"])
        .args(["--disk", "path={file:disk.img}"])
        .file(&disk)
        .append_cmdline("berth.console=hvc0")
        .modules(["virtio_pci", "virtio_blk", "virtio-rng", "virtio_console"])
        // Long enough for the script beside berth to look.
        .script("echo DEVICES-UP; sleep 4; poweroff -f\n")
        .host_script("DEVICES-UP", host)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_success().assert_console_contains("DEVICES-UP");
    let text = out.host_script_output();
    let children: Vec<&str> = text.lines().filter(|l| l.starts_with("child: ")).collect();
    for (name, kind) in [
        ("virtio-blk0", "blk"),
        ("virtio-rng", "rng"),
        ("virtio-console", "console"),
    ] {
        let found = children.iter().any(|l| {
            l.contains("berth device ")
                && l.contains(&format!("--name {name} "))
                && l.contains(&format!(" {kind} --listen-fd 3"))
        });
        if !found {
            out.fail(&format!(
                "no device process for {name} among berth's children:\n{text}"
            ));
        }
    }
    let devices = children.iter().filter(|l| l.contains(" device ")).count();
    if devices != 3 {
        out.fail(&format!("{devices} device processes, expected 3:\n{text}"));
    }
    if host_value(&out, &text, "berth:").contains(" device ") {
        out.fail("berth's own command line is a device's");
    }
}

/// kill -9 of the disk's device process: berth stops the guest within 2 s, exits with the
/// device status and names the device and the signal; the image, synced and unmounted before
/// the kill, is fsck-clean.
#[test]
fn kill_9_of_a_device_process_stops_the_guest_cleanly() {
    let dir = scratch_dir("kill-device");
    let disk = dir.join("disk.img");
    Ext4Image::new(16)
        .file("before.txt", "there before\n")
        .build(&disk)
        .unwrap();
    let guest = r#"mkdir -p /mnt && mount -t ext4 /dev/vda /mnt
echo "written before the kill" >/mnt/guest.txt
sync; umount /mnt
echo KILL-ME
sleep 120
echo STILL-RUNNING
"#;
    let host = format!(
        "{LIST_CHILDREN}pid=$(device_pid virtio-blk0)\necho \"device-pid: $pid\"\nt0=$(uptime_s)\nkill -9 $pid\n\
         while [ -d /proc/$BERTH_PID ] && [ \"$(awk '/^State:/ {{ print $2 }}' /proc/$BERTH_PID/status 2>/dev/null)\" != Z ]; do sleep 0.05; done\n\
         echo \"berth-gone-after: $(awk -v a=$t0 -v b=$(uptime_s) 'BEGIN {{ print b - a }}')\"\n"
    );
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "256"])
        .args(["--disk", "path={file:disk.img}"])
        .writable_file(&disk)
        .modules(["virtio_pci", "virtio_blk"])
        .script(guest)
        .host_script("KILL-ME", host)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(EXIT_DEVICE_FAILED)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("device virtio-blk0 failed")
        .assert_log_contains("SIGKILL")
        .assert_log_contains("the guest was stopped");
    let text = out.host_script_output();
    let gone: f64 = host_value(&out, &text, "berth-gone-after:")
        .parse()
        .unwrap_or(f64::MAX);
    if gone > 2.0 {
        out.fail(&format!("berth took {gone} s to stop after the kill"));
    }
    eprintln!("berth stopped {gone} s after its disk's process was killed");
    assert_eq!(
        ext4::read_file(&disk, "/guest.txt").unwrap_or_else(|e| out.fail(&e)),
        b"written before the kill\n"
    );
    if let Err(e) = ext4::fsck(&disk) {
        out.fail(&format!("the image is not clean: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// kill -9 of berth: one second later none of its device processes runs (PR_SET_PDEATHSIG).
#[test]
fn kill_9_of_berth_leaves_no_device_process() {
    let host = format!(
        "{LIST_CHILDREN}pids=$(children | awk '/ device / {{ print $2 }}')\necho \"devices: $(echo $pids | wc -w)\"\n\
         kill -9 $BERTH_PID\nsleep 1\nleft=0\n\
         for p in $pids; do s=$(awk '/^State:/ {{ print $2 }}' /proc/$p/status 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != Z ] && left=$((left + 1)) && echo \"alive: $p $s\"; done\n\
         echo \"left: $left\"\n"
    );
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("echo KILL-BERTH\nsleep 120\n")
        .host_script("KILL-BERTH", host)
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(128 + 9);
    let text = out.host_script_output();
    if host_value(&out, &text, "devices:") != "1" {
        out.fail(&format!(
            "expected one device process before the kill:\n{text}"
        ));
    }
    if host_value(&out, &text, "left:") != "0" {
        out.fail(&format!("device processes outlived berth:\n{text}"));
    }
}

/// `berth device blk --socket PATH` started on its own serves the guest's /dev/vda through
/// `--vhost-user type=blk,socket=PATH`: ext4 read and write, fsck clean afterwards, and the
/// daemon ends when the VM does.
#[test]
fn a_standalone_berth_device_blk_serves_a_vm() {
    let dir = scratch_dir("external");
    let disk = dir.join("ext.img");
    Ext4Image::new(16)
        .file("from-host.txt", "served by berth device blk\n")
        .build(&disk)
        .unwrap();
    let guest = r#"mkdir -p /mnt && mount -t ext4 /dev/vda /mnt
echo "read: $(cat /mnt/from-host.txt)"
echo "written through an external backend" >/mnt/from-guest.txt
sync; umount /mnt && echo UNMOUNTED
poweroff -f
"#;
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .before("$BERTH device blk --socket {scratch}/blk.sock --disk path={file:ext.img} 2>{scratch}/daemon.log &")
        .args(["--memory", "256"])
        .args(["--vhost-user", "type=blk,socket={scratch}/blk.sock"])
        .writable_file(&disk)
        .modules(["virtio_pci", "virtio_blk"])
        .script(guest)
        .collect("daemon.log")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_success()
        .assert_console_contains("read: served by berth device blk")
        .assert_console_contains("UNMOUNTED");
    let log = out
        .files
        .get("daemon.log")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    if !log.contains("serving on") {
        out.fail(&format!("the daemon did not say where it served:\n{log}"));
    }
    assert_eq!(
        ext4::read_file(&disk, "/from-guest.txt").unwrap_or_else(|e| out.fail(&e)),
        b"written through an external backend\n"
    );
    if let Err(e) = ext4::fsck(&disk) {
        out.fail(&format!("the image is not clean: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
