use super::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn config(gic: GicVersion) -> FdtConfig<'static> {
    FdtConfig {
        mpidrs: &[0x8000_0000, 0x8000_0001],
        mem_size: 512 << 20,
        cmdline: "console=ttyS0 panic=1",
        initrd: Some((0x5000_0000, 0x10_0000)),
        gic,
        rtc: true,
        pci_mmio64: (0x8000_0000, 64 << 30),
    }
}

/// Decompiles `blob` with dtc, which also checks its structure; `None` when dtc is missing.
fn dts(blob: &[u8]) -> Option<String> {
    let mut child = match Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("dtc not installed (device-tree-compiler): structure checks only");
            return None;
        }
        Err(e) => panic!("dtc: {e}"),
    };
    child.stdin.take().unwrap().write_all(blob).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dtc rejected the blob: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn blob_is_a_flattened_device_tree() {
    let blob = create_fdt(&config(GicVersion::V3 { its: true })).unwrap();
    assert_eq!(blob[..4], 0xd00d_feedu32.to_be_bytes());
    let total = u32::from_be_bytes(blob[4..8].try_into().unwrap()) as usize;
    assert_eq!(total, blob.len());
    assert!(blob.len() as u64 <= super::super::layout::FDT_MAX_SIZE);
}

#[test]
fn gic_v3_tree_has_the_expected_nodes() {
    let blob = create_fdt(&config(GicVersion::V3 { its: true })).unwrap();
    let Some(s) = dts(&blob) else { return };
    for want in [
        // MPIDR bit 31 (RES1) is not part of the affinity.
        "cpu@0 {",
        "cpu@1 {",
        "reg = <0x00 0x01>;",
        "enable-method = \"psci\";",
        "memory@40000000 {",
        "reg = <0x00 0x40000000 0x00 0x20000000>;",
        "bootargs = \"console=ttyS0 panic=1\";",
        "linux,initrd-start = <0x00 0x50000000>;",
        "linux,initrd-end = <0x00 0x50100000>;",
        "stdout-path = \"/uart@9000000\";",
        "compatible = \"arm,gic-v3\";",
        "compatible = \"arm,gic-v3-its\";",
        "compatible = \"arm,armv8-timer\";",
        "compatible = \"arm,psci-0.2\";",
        "method = \"hvc\";",
        "compatible = \"ns16550a\";",
        "compatible = \"arm,pl031\\0arm,primecell\";",
        "compatible = \"pci-host-ecam-generic\";",
        "msi-map = <0x00 0x02 0x00 0x10000>;",
        "interrupt-map-mask = <0x1800 0x00 0x00 0x07>;",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    // Redistributors for two vCPUs after the distributor.
    assert!(s.contains("reg = <0x00 0x8000000 0x00 0x10000 0x00 0xa000000 0x00 0x40000>;"));
}

#[test]
fn gic_v2_tree_has_no_msi_and_cpu_masked_ppis() {
    let blob = create_fdt(&config(GicVersion::V2)).unwrap();
    let Some(s) = dts(&blob) else { return };
    assert!(s.contains("compatible = \"arm,cortex-a15-gic\";"));
    assert!(!s.contains("msi-map"));
    assert!(!s.contains("gic-v3-its"));
    // Timer PPIs wired to CPUs 0 and 1, level low.
    assert!(
        s.contains("interrupts = <0x01 0x0d 0x308 0x01 0x0e 0x308"),
        "{s}"
    );
}
