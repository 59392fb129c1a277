//! Bad user input: each case must end in exactly one clear line on stderr and a non-zero exit,
//! never a panic.

mod common;

use common::kvm_usable;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A valid tiny ELF kernel (a `hlt`) whose image claims `memsz` bytes at 16 MiB.
fn tiny_elf(memsz: u64) -> PathBuf {
    common::write_tmp(
        "bad",
        &format!("k-{memsz}.elf"),
        &common::tiny_elf(&[0xf4], memsz),
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Asserts one stderr line containing every `needle`, no stdout, exit status 1.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "want exactly one line, got: {stderr}"
    );
    assert!(stderr.starts_with("berth: error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"));
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_kernel() {
    let out = run(&["run", "--kernel", "/nonexistent/bzImage"]);
    assert_one_line_error(&out, &["/nonexistent/bzImage", "No such file", "--kernel"]);
}

#[test]
fn missing_initrd() {
    let k = tiny_elf(0x1000);
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        "/nonexistent/rd",
    ]);
    assert_one_line_error(&out, &["/nonexistent/rd", "--initrd"]);
}

#[test]
fn zero_cpus() {
    let k = tiny_elf(0x1000);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--cpus", "0"]);
    assert_one_line_error(&out, &["--cpus 0", "at least one vCPU"]);
}

#[test]
fn memory_below_the_minimum() {
    let k = tiny_elf(0x1000);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--memory", "1"]);
    assert_one_line_error(&out, &["--memory 1 MiB is too small"]);
}

#[test]
fn not_a_kernel() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let p = tmp("notes.txt");
    std::fs::write(&p, "just some text, not a kernel\n".repeat(100)).unwrap();
    let out = run(&["run", "--kernel", p.to_str().unwrap()]);
    assert_one_line_error(&out, &["notes.txt", "is not a Linux kernel"]);
}

#[test]
fn memory_too_small_for_the_kernel() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = tiny_elf(100 << 20);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--memory", "64"]);
    assert_one_line_error(
        &out,
        &[
            "--memory 64 MiB is too small for this kernel",
            "at least 148 MiB",
        ],
    );
}

#[test]
fn initrd_that_does_not_fit() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = tiny_elf(0x1000);
    let rd = tmp("huge-initrd");
    let f = std::fs::File::create(&rd).unwrap();
    f.set_len(200 << 20).unwrap(); // sparse
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        rd.to_str().unwrap(),
        "--memory",
        "128",
    ]);
    assert_one_line_error(&out, &["initrd (200 MiB) does not fit", "raise --memory"]);
}

#[test]
fn more_cpus_than_the_hypervisor_allows() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = tiny_elf(0x1000);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--cpus", "100000"]);
    assert_one_line_error(&out, &["--cpus 100000 is more than kvm supports"]);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs berth in a private mount namespace after `setup` (a shell snippet) rearranged /dev.
fn run_in_mount_ns(setup: &str, berth_cmd: &str) -> Option<Output> {
    if !is_root() || Command::new("unshare").arg("--help").output().is_err() {
        return None;
    }
    let script = format!("set -e; mount --make-rprivate /; {setup}; exec {berth_cmd}");
    Some(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

#[test]
fn no_dev_kvm() {
    let k = tiny_elf(0x1000);
    let cmd = format!("{BERTH} run --kernel {}", k.display());
    let Some(out) = run_in_mount_ns("mount -t tmpfs none /dev", &cmd) else {
        eprintln!("skipped: needs root and unshare");
        return;
    };
    assert_one_line_error(&out, &["/dev/kvm does not exist", "modprobe kvm"]);
}

#[test]
fn dev_kvm_without_permission() {
    let k = tiny_elf(0x1000);
    if Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("skipped: needs setpriv");
        return;
    }
    // Copy berth and the kernel where an unprivileged user can read them.
    let dir = std::env::temp_dir().join(format!("berth-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = dir.join("berth");
    std::fs::copy(BERTH, &b).unwrap();
    let kk = dir.join("k.elf");
    std::fs::copy(&k, &kk).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", dir.to_str().unwrap()])
        .status();
    let cmd = format!(
        "setpriv --reuid 65534 --regid 65534 --clear-groups {} run --kernel {}",
        b.display(),
        kk.display()
    );
    let Some(out) = run_in_mount_ns(
        "mount -t tmpfs none /dev && mknod /dev/kvm c 10 232 && chmod 600 /dev/kvm",
        &cmd,
    ) else {
        eprintln!("skipped: needs root and unshare");
        return;
    };
    assert_one_line_error(&out, &["no permission to open /dev/kvm", "kvm' group"]);
}

#[test]
fn missing_disk_image() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = tiny_elf(0x1000);
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        "path=/nonexistent/disk.img",
    ]);
    assert_one_line_error(&out, &["/nonexistent/disk.img", "does not exist"]);
}

/// Another VM has the image: this process holds it locked, as flock(LOCK_EX) and as an OFD
/// write lock over the whole file (the two kinds do not see each other on Linux, and berth may
/// use either), and berth must refuse it rather than share it.
#[test]
fn disk_image_locked_by_another_process() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    use std::os::unix::io::AsRawFd;
    let k = tiny_elf(0x1000);
    let img = tmp("locked.img");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    f.set_len(1 << 20).unwrap();
    // SAFETY: flock and fcntl on a descriptor this test owns; `lk` outlives the call.
    unsafe {
        assert_eq!(libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
        let mut lk: libc::flock = std::mem::zeroed();
        lk.l_type = libc::F_WRLCK as libc::c_short;
        lk.l_whence = libc::SEEK_SET as libc::c_short;
        assert_eq!(libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &lk), 0);
    }
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        &format!("path={}", img.display()),
    ]);
    assert_one_line_error(&out, &["locked.img", "locked"]);
    drop(f);
}
