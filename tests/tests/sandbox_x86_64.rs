//! End to end, the jail around each device process, proved from outside (/proc of the
//! emulated host, read by a script beside berth): every thread of every device process has
//! seccomp on, no_new_privs and no capabilities; its mount, pid, net and user namespaces are
//! not berth's; it holds only its own fds; its root is empty. The policies are exact: a full
//! workload under `--seccomp log` makes the kernel log no call outside them. An ordinary user
//! gets the same jail. A device that calls outside its policy is stopped and named.

#![cfg(target_arch = "x86_64")]

use berth_tests::ext4::{self, Ext4Image};
use berth_tests::{GuestRun, Kernel, Outcome, HOST_SCRIPT_OUT};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

fn scratch_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-sandbox-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host_out(out: &Outcome) -> String {
    let bytes = out
        .files
        .get(HOST_SCRIPT_OUT)
        .unwrap_or_else(|| out.fail("the host script left no output"));
    String::from_utf8_lossy(bytes).into_owned()
}

/// For berth and each of its device processes: "proc NAME PID uid=U ns:mnt=.. ns:pid=..",
/// one "thread PID TID Seccomp=S NoNewPrivs=N CapEff=C" per thread, "fd PID N -> TARGET" per
/// fd, "root PID ENTRIES".
const INSPECT: &str = r#"show() { # pid name
  p=$1
  echo "proc $2 $p uid=$(awk '/^Uid:/ { print $2 }' /proc/$p/status) $(for n in mnt pid net user ipc uts; do printf 'ns:%s=%s ' $n "$(readlink /proc/$p/ns/$n)"; done)"
  for t in /proc/$p/task/*; do
    echo "thread $p ${t##*/} Seccomp=$(awk '/^Seccomp:/ { print $2 }' $t/status) NoNewPrivs=$(awk '/^NoNewPrivs:/ { print $2 }' $t/status) CapEff=$(awk '/^CapEff:/ { print $2 }' $t/status) CapPrm=$(awk '/^CapPrm:/ { print $2 }' $t/status) CapBnd=$(awk '/^CapBnd:/ { print $2 }' $t/status)"
  done
  for f in /proc/$p/fd/*; do echo "fd $p ${f##*/} -> $(readlink $f)"; done
  echo "root $p $(ls -a /proc/$p/root/ 2>&1 | tr '\n' ' ')"
}
show $BERTH_PID berth
for d in /proc/[0-9]*; do
  [ "$(awk '/^PPid:/ { print $2 }' $d/status 2>/dev/null)" = "$BERTH_PID" ] || continue
  name=$(tr '\0' '\n' <$d/cmdline | awk 'prev == "--name" { print; exit } { prev = $0 }')
  show ${d#/proc/} "$name"
done
"#;

struct Proc<'a> {
    name: &'a str,
    pid: &'a str,
    uid: &'a str,
    ns: Vec<&'a str>,
}

fn procs(text: &str) -> Vec<Proc<'_>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("proc "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let (name, pid) = (w.next().unwrap(), w.next().unwrap());
            let uid = w.next().unwrap().trim_start_matches("uid=");
            Proc {
                name,
                pid,
                uid,
                ns: w.collect(),
            }
        })
        .collect()
}

/// Checks the jail of every device process in `text`; returns how many there were.
fn check_jails(out: &Outcome, text: &str, uid: &str) -> usize {
    let all = procs(text);
    let berth = all
        .iter()
        .find(|p| p.name == "berth")
        .unwrap_or_else(|| out.fail(&format!("berth not inspected:\n{text}")));
    let devices: Vec<&Proc> = all.iter().filter(|p| p.name != "berth").collect();
    for d in &devices {
        if d.uid != uid {
            out.fail(&format!(
                "{} runs as uid {}, not {uid}:\n{text}",
                d.name, d.uid
            ));
        }
        for kind in ["mnt", "pid", "net", "user"] {
            let ns = |p: &Proc| {
                p.ns.iter()
                    .find(|n| n.starts_with(&format!("ns:{kind}=")))
                    .map(|n| n.to_string())
            };
            if ns(d).is_none() || ns(d) == ns(berth) {
                out.fail(&format!(
                    "{} shares berth's {kind} namespace:\n{text}",
                    d.name
                ));
            }
        }
        let threads: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("thread {} ", d.pid)))
            .collect();
        if threads.len() < 2 {
            out.fail(&format!(
                "{} has {} threads:\n{text}",
                d.name,
                threads.len()
            ));
        }
        for t in &threads {
            for want in [
                "Seccomp=2",
                "NoNewPrivs=1",
                "CapEff=0000000000000000",
                "CapPrm=0000000000000000",
                "CapBnd=0000000000000000",
            ] {
                if !t.contains(want) {
                    out.fail(&format!("{}: a thread lacks {want}: {t}", d.name));
                }
            }
        }
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("root {} ", d.pid)))
            .unwrap_or("");
        if root.split_whitespace().collect::<Vec<_>>() != [".", ".."] {
            out.fail(&format!("{}'s root is not empty: {root}", d.name));
        }
        // Its fds: stdio (/dev/null twice, berth's stderr), its socket, the report pipe and
        // its resources; and what the running backend opened (eventfds, epoll, guest RAM,
        // the connection): nothing else, and no path but its disk image.
        for l in text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("fd {} ", d.pid)))
        {
            let target = l.split(" -> ").nth(1).unwrap_or("");
            let expected = target.starts_with("socket:")
                || target.starts_with("pipe:")
                || target.starts_with("anon_inode:")
                || target == "/dev/null"
                || target.starts_with("/#") // guest RAM: the unlinked tmpfs file
                || target.starts_with("/memfd:")
                || (d.name.starts_with("virtio-blk") && target.ends_with(".img"));
            if !expected {
                out.fail(&format!("{}: unexpected fd {l}", d.name));
            }
        }
    }
    devices.len()
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
    let text = host_out(&out);
    eprintln!("{text}");
    // As root, the devices run as nobody.
    let n = check_jails(&out, &text, "65534");
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
    let logged: Vec<&str> = out
        .host_log
        .lines()
        .filter(|l| l.contains("type=1326"))
        .collect();
    if !logged.is_empty() {
        out.fail(&format!(
            "calls outside the policies were logged:\n{}",
            logged.join("\n")
        ));
    }
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
    let text = host_out(&out);
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
