//! `fdt`: the device tree berth writes for aarch64 guests, for random vCPU affinities, memory
//! sizes, command lines, initrds, GIC versions and PCI windows. The blob must parse (the `fdt`
//! crate here, dtc in the corpus test) and say what it was given.
//!
//! Input: `arbitrary` picks the configuration.

use arbitrary::Unstructured;
use arch::aarch64::fdt::{create_fdt, FdtConfig};
use arch::aarch64::layout::{pci_mmio64, MAX_CPUS, MIN_MEMORY, RAM_START};
use hypervisor::aarch64::GicVersion;

pub fn run(data: &[u8]) {
    let _ = blob(data);
}

/// The blob for the configuration `data` picks, checked; `None` when the bytes do not make a
/// configuration or the builder refused it.
pub fn blob(data: &[u8]) -> Option<Vec<u8>> {
    let mut u = Unstructured::new(data);
    let cpus: usize = u.int_in_range(1..=MAX_CPUS as usize).ok()?;
    let mut mpidrs = Vec::with_capacity(cpus);
    for i in 0..cpus {
        // What KVM reports: affinity levels 0-2 (and 3), mostly the vCPU index.
        let m: u64 = if u.ratio(7, 8).ok()? {
            i as u64
        } else {
            u.arbitrary::<u64>().ok()? & 0xff_00ff_ffff
        };
        mpidrs.push(m);
    }
    let mem_size = u.int_in_range(MIN_MEMORY >> 20..=1u64 << 20).ok()? << 20;
    let cmdline: String = u.arbitrary().ok()?;
    // Mostly where a loader puts it (inside RAM), sometimes anywhere.
    let initrd: Option<(u64, u64)> = if u.arbitrary().ok()? {
        if u.ratio(3, 4).ok()? {
            let size = u.int_in_range(0..=mem_size / 2).ok()?;
            Some((RAM_START + u.int_in_range(0..=mem_size - size).ok()?, size))
        } else {
            Some((u.arbitrary().ok()?, u.arbitrary().ok()?))
        }
    } else {
        None
    };
    let gic = match u.int_in_range(0..=2).ok()? {
        0 => GicVersion::V2,
        1 => GicVersion::V3 { its: false },
        _ => GicVersion::V3 { its: true },
    };
    let rtc: bool = u.arbitrary().ok()?;
    let cfg = FdtConfig {
        mpidrs: &mpidrs,
        mem_size,
        cmdline: &cmdline,
        initrd,
        gic,
        rtc,
        pci_mmio64: pci_mmio64(mem_size),
    };
    let blob = create_fdt(&cfg).ok()?;
    let tree = fdt::Fdt::new(&blob).expect("the blob parses");
    assert_eq!(tree.cpus().count(), cpus);
    let chosen = tree.chosen();
    if !cmdline.contains('\0') {
        assert_eq!(chosen.bootargs().unwrap_or(""), cmdline);
    }
    if let Some((start, size)) = initrd {
        let prop = |name: &str| {
            let p = chosen_node(&tree).property(name).expect(name);
            u64::from_be_bytes(p.value.try_into().expect("a 64-bit value"))
        };
        assert_eq!(prop("linux,initrd-start"), start);
        let end = start
            .checked_add(size)
            .expect("the tree holds an initrd end past 2^64");
        assert_eq!(prop("linux,initrd-end"), end);
    }
    let region = tree.memory().regions().next().expect("a memory node");
    assert_eq!(region.starting_address as u64, RAM_START);
    assert_eq!(region.size.map(|s| s as u64), Some(mem_size));
    Some(blob)
}

fn chosen_node<'b, 'a>(tree: &'b fdt::Fdt<'a>) -> fdt::node::FdtNode<'b, 'a> {
    tree.find_node("/chosen").expect("a /chosen node")
}
