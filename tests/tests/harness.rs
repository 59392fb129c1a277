//! Checks of the harness itself, independent of berth.

use berth_tests::ext4::{self, Ext4Image};
use berth_tests::{assets, emulator, Arch, GuestRun, HostRun, Kernel, DEFAULT_CMDLINE};
use std::process::Command;
use std::time::Instant;

/// The guest assets boot without berth or KVM, in plain QEMU TCG: the guest init runs the
/// appended /test.sh. When a berth boot fails, this says whether the guest side is sound.
#[test]
fn guest_assets_boot_in_qemu_tcg() {
    if std::env::var("BERTH_E2E_MODE").as_deref() == Ok("skip") {
        eprintln!("skipped (BERTH_E2E_MODE=skip)");
        return;
    }
    let qemu =
        emulator(Arch::X86_64).expect("qemu-system-x86_64 is needed (scripts/test.sh installs it)");
    let a = assets(Arch::X86_64);
    let run = GuestRun::new(Kernel::BzImage)
        .modules(["virtio_blk", "vmw_vsock_virtio_transport", "virtiofs"])
        .script(
            "echo \"uname $(uname -r)\"\n\
             for m in virtio_blk vmw_vsock_virtio_transport virtiofs; do\n\
             if lsmod | grep -q \"^$m \"; then echo \"mod: $m loaded\"\n\
             elif grep -q \"/$m.ko\" /lib/modules/$(uname -r)/modules.builtin; then echo \"mod: $m built in\"; fi\n\
             done\ncat /etc/extra\necho TEST-DONE\n",
        )
        .guest_file("/etc/extra", "extra-file-content\n", 0o644);
    let dir = std::env::temp_dir().join(format!("berth-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd");
    run.build_initrd(&initrd).unwrap();
    let _lock = berth_tests::lock_machine();
    let t = Instant::now();
    let out = Command::new(qemu)
        .args([
            "-accel", "tcg", "-M", "q35", "-cpu", "max", "-m", "512M", "-smp", "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&a.bzimage)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "{DEFAULT_CMDLINE} berth.modules=virtio_blk,vmw_vsock_virtio_transport,virtiofs"
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    eprintln!("QEMU TCG boot took {:.1?}\n{console}", t.elapsed());
    std::fs::remove_dir_all(&dir).unwrap();
    for needle in [
        "Linux version ".to_string(),
        "BERTH-GUEST-INIT ".to_string(),
        format!("uname {}", a.kernel_version),
        // Loaded, or built into the kernel (Debian 13's has virtiofs built in).
        "mod: virtio_blk ".into(),
        "mod: vmw_vsock_virtio_transport ".into(),
        "mod: virtiofs ".into(),
        "extra-file-content".into(),
        "TEST-DONE".into(),
        "BERTH-TEST-EXIT 0".into(),
    ] {
        assert!(
            console.contains(&needle),
            "console lacks {needle:?}:\n{console}"
        );
    }
    assert!(
        !console.contains("modprobe"),
        "a module failed to load:\n{console}"
    );
}

/// With `berth.console=hvc0` the guest init moves to the virtio console once virtio_console
/// has probed (QEMU's virtconsole, plain TCG): /test.sh's output is there, not on the UART.
/// When berth's hvc0 test fails, this says whether the guest side is sound.
#[test]
fn guest_init_moves_to_hvc0_in_qemu_tcg() {
    if std::env::var("BERTH_E2E_MODE").as_deref() == Ok("skip") {
        eprintln!("skipped (BERTH_E2E_MODE=skip)");
        return;
    }
    let qemu =
        emulator(Arch::X86_64).expect("qemu-system-x86_64 is needed (scripts/test.sh installs it)");
    let a = assets(Arch::X86_64);
    let run = GuestRun::new(Kernel::BzImage).script("echo \"tty: $(tty)\"\necho ON-HVC0\n");
    let dir = std::env::temp_dir().join(format!("berth-harness-hvc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd");
    run.build_initrd(&initrd).unwrap();
    let uart = dir.join("uart.log");
    let _lock = berth_tests::lock_machine();
    let out = Command::new(qemu)
        .args([
            "-accel", "tcg", "-M", "q35", "-cpu", "max", "-m", "512M", "-smp", "1",
        ])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-chardev", "stdio,id=hvc"])
        .args([
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtconsole,chardev=hvc",
        ])
        .arg("-serial")
        .arg(format!("file:{}", uart.display()))
        .arg("-kernel")
        .arg(&a.bzimage)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "{DEFAULT_CMDLINE} berth.modules=virtio_pci,virtio_console berth.console=hvc0"
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let hvc = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let uart = std::fs::read_to_string(&uart).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    let both = format!("--- hvc0 ---\n{hvc}\n--- UART ---\n{uart}");
    for needle in [
        "BERTH-GUEST-INIT ",
        "tty: /dev/hvc0",
        "ON-HVC0",
        "BERTH-TEST-EXIT 0",
    ] {
        assert!(hvc.contains(needle), "hvc0 lacks {needle:?}:\n{both}");
    }
    assert!(
        !uart.contains("ON-HVC0"),
        "the script wrote to the UART:\n{both}"
    );
}

/// An ext4 image made here with `mkfs.ext4 -d` reaches the emulated host, is changed there
/// (loop-mounted, a file read and one written) and comes back for debugfs and fsck: the path
/// the virtio-blk tests rely on, checked without berth.
#[test]
fn ext4_image_round_trip_through_the_emulated_host() {
    match berth_tests::mode(Arch::X86_64) {
        None => return,
        Some(berth_tests::Mode::Native) => {
            eprintln!("native KVM here: the emulated host is not used, not checked");
            return;
        }
        Some(berth_tests::Mode::EmulatedHost) => {}
    }
    let dir = std::env::temp_dir().join(format!("berth-harness-ext4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("disk.img");
    Ext4Image::new(16)
        .file("in/host.txt", "made on the host\n")
        .build(&img)
        .unwrap();
    let Some(out) = HostRun::new(
        Arch::X86_64,
        "set -e\n\
         insmod /lib/host-modules/loop.ko\n\
         mkdir -p /mnt\n\
         mount -o loop -t ext4 /files/disk.img /mnt\n\
         echo \"read: $(cat /mnt/in/host.txt)\"\n\
         echo 'made in the emulated host' >/mnt/l1.txt\n\
         umount /mnt\n",
    )
    .file(&img, "/files/disk.img")
    .collect_gz("/files/disk.img")
    .run() else {
        return;
    };
    out.assert_success()
        .assert_stdout_contains("read: made on the host");
    let back = dir.join("back.img");
    std::fs::write(&back, &out.files["/files/disk.img"]).unwrap();
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 16 << 20);
    assert_eq!(
        ext4::read_file(&back, "/l1.txt").unwrap(),
        b"made in the emulated host\n"
    );
    ext4::fsck(&back).unwrap_or_else(|e| out.fail(&e));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The emulated host boots, has /dev/kvm from the kvm modules, runs a script and reports its
/// stdout, stderr, status and a collected file exactly. Only needed (and run) where berth runs
/// in the emulated host.
#[test]
fn emulated_host_runs_a_script_with_kvm() {
    match berth_tests::mode(Arch::X86_64) {
        None => return,
        Some(berth_tests::Mode::Native) => {
            eprintln!("native KVM here: the emulated host is not used, not checked");
            return;
        }
        Some(berth_tests::Mode::EmulatedHost) => {}
    }
    let Some(out) = HostRun::new(
        Arch::X86_64,
        "ls -l /dev/kvm\n\
         cat /sys/module/kvm_amd/parameters/npt\n\
         printf 'line1\\nno-newline' >/tmp/collected\n\
         echo to-stderr >&2\n\
         cat /etc/data\n\
         exit 3\n",
    )
    .bytes("/etc/data", "data-file\n", 0o644)
    .collect("/tmp/collected")
    .collect("/tmp/absent")
    .run() else {
        return;
    };
    eprintln!("{out}");
    assert!(out.problem.is_none(), "{out}");
    assert!(out.kvm, "{out}");
    assert_eq!(out.status, Some(3), "{out}");
    out.assert_stdout_contains("/dev/kvm")
        .assert_stdout_contains("data-file");
    assert_eq!(
        out.stdout.lines().nth(1),
        Some("Y"),
        "kvm_amd npt=Y expected:\n{out}"
    );
    assert_eq!(out.stderr, "to-stderr\n", "{out}");
    assert_eq!(
        out.files.get("/tmp/collected").map(|v| v.as_slice()),
        Some(&b"line1\nno-newline"[..])
    );
    assert!(!out.files.contains_key("/tmp/absent"));
    assert!(out.dmesg.contains("kvm"), "{out}");
}

/// A script that hangs is stopped by the emulated host's watchdog, and what it printed before
/// still comes back. Slow (a minute) and about the harness only: `cargo test -- --ignored`.
#[test]
#[ignore]
fn emulated_host_stops_a_hung_script() {
    let Some(out) = HostRun::new(
        Arch::X86_64,
        "echo before-the-hang\necho on-stderr >&2\nsleep 1000\necho after\n",
    )
    .timeout(std::time::Duration::from_secs(60))
    .run() else {
        return;
    };
    eprintln!("{out}");
    assert!(out.timed_out, "{out}");
    assert!(out.problem.is_none(), "{out}");
    assert_eq!(out.status, Some(143), "SIGTERM expected:\n{out}");
    assert_eq!(out.stdout, "before-the-hang\n", "{out}");
    assert_eq!(out.stderr, "on-stderr\n", "{out}");
}

/// When the emulated host cannot even boot in time, QEMU is killed and the outcome says so.
#[test]
#[ignore]
fn emulated_host_killed_at_the_deadline() {
    let Some(out) = HostRun::new(Arch::X86_64, "true\n")
        .timeout(std::time::Duration::from_secs(2))
        .run()
    else {
        return;
    };
    assert!(out.timed_out, "{out}");
    assert!(out.status.is_none(), "{out}");
    let p = out.problem.as_deref().unwrap_or_default();
    assert!(p.contains("never finished booting"), "{out}");
}
