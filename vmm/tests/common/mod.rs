//! Helpers shared by the berth binary's integration tests.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;

/// Physical address the tiny kernels load and start at (16 MiB, where Linux's vmlinux goes).
pub const TINY_KERNEL_ADDR: u64 = 0x100_0000;

/// Whether /dev/kvm can be opened for the tests that run tiny guests.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A minimal x86_64 ELF64 executable: one PT_LOAD of `code` at [`TINY_KERNEL_ADDR`], claiming
/// `memsz` bytes (at least the code's length), entered at its first byte.
pub fn tiny_elf(code: &[u8], memsz: u64) -> Vec<u8> {
    let memsz = memsz.max(code.len() as u64);
    let mut v = vec![0u8; 0x78];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = 2; // 64-bit
    v[5] = 1; // little endian
    v[6] = 1; // ELF version
    v[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    v[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    v[0x18..0x20].copy_from_slice(&TINY_KERNEL_ADDR.to_le_bytes()); // e_entry
    v[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
    v[0x34..0x36].copy_from_slice(&0x40u16.to_le_bytes()); // e_ehsize
    v[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
    v[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 0x40;
    v[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    v[ph + 8..ph + 0x10].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
    v[ph + 0x10..ph + 0x18].copy_from_slice(&TINY_KERNEL_ADDR.to_le_bytes());
    v[ph + 0x18..ph + 0x20].copy_from_slice(&TINY_KERNEL_ADDR.to_le_bytes());
    v[ph + 0x20..ph + 0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
    v[ph + 0x28..ph + 0x30].copy_from_slice(&memsz.to_le_bytes());
    v.extend_from_slice(code);
    v
}

/// Writes `bytes` to a file named `name` in a per-process scratch directory of `suite`.
pub fn write_tmp(suite: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-{suite}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
