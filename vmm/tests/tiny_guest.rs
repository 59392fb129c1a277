//! Runs the `berth` binary on tiny hand-assembled guests. These need a working /dev/kvm but no
//! Linux kernel, so they run on any KVM (this machine's PVM included); without /dev/kvm they
//! say so and pass, and the end-to-end suite (tests/) covers the real guests.

#![cfg(target_arch = "x86_64")] // the tiny guests are x86_64 machine code

mod common;

use common::kvm_usable;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// 64-bit code: print `text` on COM1 (polling nothing: the UART is always ready), optionally
/// write the boot-timer marker, then reset through the i8042.
fn program(text: &[u8], boot_timer: bool) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in text {
        c.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    if boot_timer {
        c.extend_from_slice(&[0xb8, 0x00, 0x00, 0x00, 0xf0]); // mov eax, 0xf0000000
        c.extend_from_slice(&[0xc6, 0x00, 123]); // mov byte [rax], 123
    }
    c.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]); // mov al, 0xfe; out 0x64, al
    c.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
    c
}

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    common::write_tmp("tiny", name, bytes)
}

/// The tiny kernel for `code`.
fn elf(code: &[u8]) -> Vec<u8> {
    common::tiny_elf(code, 0)
}

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run berth")
}

fn run_kernel(kernel: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "64",
    ];
    args.extend_from_slice(extra);
    berth(&args)
}

#[test]
fn tiny_guest_prints_on_com1_and_resets() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = write_tmp(
        "hello.elf",
        &elf(&program(b"hello from the guest\n", false)),
    );
    let out = run_kernel(&k, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "hello from the guest\n", "stderr: {stderr}");
    assert!(stderr.contains("the guest reset"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn tiny_guest_boot_timer_and_multiple_vcpus() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = write_tmp("timer.elf", &elf(&program(b"t\n", true)));
    let out = run_kernel(&k, &["--boot-timer", "--cpus", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("guest boot time:"))
        .unwrap_or_else(|| panic!("no boot time line in: {stderr}"));
    let us: u64 = line
        .split("guest boot time: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"));
    assert!(us > 0);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn serial_to_file_and_none() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let k = write_tmp("file.elf", &elf(&program(b"to a file\n", false)));
    let log = k.with_file_name("serial.log");
    let arg = format!("file={}", log.display());
    let out = run_kernel(&k, &["--serial", &arg]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to a file\n");
    let out = run_kernel(&k, &["--serial", "none"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

/// Accesses a hostile guest might make: wrong widths on byte devices, unclaimed ports and MMIO,
/// 8-byte MMIO near the top of 4 GiB, a string port read into RAM. None may stop the VMM.
#[test]
fn odd_accesses_are_ignored_and_the_guest_carries_on() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xed, // in eax, dx          (4-byte read of a byte-wide UART)
        0x66, 0xef, // out dx, ax    (2-byte write)
        0x66, 0xba, 0x34, 0x12, // mov dx, 0x1234
        0xec, // in al, dx           (unclaimed port)
        0xb8, 0x00, 0x00, 0x00, 0xf0, // mov eax, 0xf0000000
        0x48, 0x89, 0x00, // mov [rax], rax        (8-byte write to the boot timer)
        0x48, 0x8b, 0x98, 0xf8, 0x0f, 0x00, 0x00, // mov rbx, [rax+0xff8]
        0xb8, 0xf8, 0xff, 0xff, 0xff, // mov eax, 0xfffffff8
        0x48, 0x8b, 0x18, // mov rbx, [rax]        (unclaimed MMIO at the top of 4 GiB)
        0xbf, 0x00, 0x00, 0x20, 0x00, // mov edi, 0x200000
        0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 16
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xf3, 0x6c, // rep insb         (string read from the UART into RAM)
    ];
    code.extend(program(b"survived\n", false));
    let k = write_tmp("odd.elf", &elf(&code));
    let out = run_kernel(&k, &["--boot-timer"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "survived\n",
        "stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        !stderr.contains("guest boot time"),
        "not the magic value: {stderr}"
    );
}
