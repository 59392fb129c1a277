//! Checks of the harness itself, independent of berth.

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
        .script("echo \"uname $(uname -r)\"\nlsmod | sort\ncat /etc/extra\necho TEST-DONE\n")
        .guest_file("/etc/extra", "extra-file-content\n", 0o644);
    let dir = std::env::temp_dir().join(format!("berth-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd");
    run.build_initrd(&initrd).unwrap();
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
        "virtio_blk ".into(),
        "vmw_vsock_virtio_transport ".into(),
        "virtiofs ".into(),
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
