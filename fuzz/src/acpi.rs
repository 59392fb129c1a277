//! `acpi`: the ACPI tables berth writes for x86_64 guests (RSDP, XSDT, FADT, DSDT, MADT,
//! MCFG), for random vCPU counts and memory sizes. Every table must lie below 1 MiB, be as long
//! as it says and sum to zero; the corpus test also has ACPICA's `iasl` disassemble them.
//!
//! Input: `arbitrary` picks the vCPU count (1..=255) and the memory size (16 MiB..=1 TiB).

#[cfg(target_arch = "x86_64")]
pub use x86::{run, tables};

#[cfg(not(target_arch = "x86_64"))]
pub fn run(_data: &[u8]) {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use arbitrary::Unstructured;
    use arch::x86_64::acpi::write_tables;
    use arch::x86_64::layout::MIN_MEMORY;
    use vm_memory::{Bytes, GuestAddress};

    use crate::util::memory;

    const TOP: u64 = 0x10_0000;

    pub fn run(data: &[u8]) {
        let _ = tables(data);
    }

    fn read(mem: &crate::util::GuestMemory, at: u64, len: u64) -> Vec<u8> {
        assert!(
            at.checked_add(len).unwrap() <= TOP,
            "{at:#x}+{len:#x} is above 1 MiB"
        );
        let mut v = vec![0; len as usize];
        mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    /// A system description table at `at`, checked; its signature and bytes.
    fn table(mem: &crate::util::GuestMemory, at: u64) -> ([u8; 4], Vec<u8>) {
        let head = read(mem, at, 36);
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap());
        assert!(len >= 36, "table at {at:#x}: length {len}");
        let t = read(mem, at, u64::from(len));
        assert!(sums_to_zero(&t), "table {:?}: bad checksum", &t[..4]);
        (t[..4].try_into().unwrap(), t)
    }

    /// The tables written for the configuration `data` picks, each checked; `None` when the
    /// bytes do not make a configuration.
    pub fn tables(data: &[u8]) -> Option<Vec<([u8; 4], Vec<u8>)>> {
        let mut u = Unstructured::new(data);
        let cpus: u32 = u.int_in_range(1..=255).ok()?;
        let mem_mib: u64 = u.int_in_range(MIN_MEMORY >> 20..=1 << 20).ok()?;
        let mem = memory(TOP as usize);
        let rsdp_at = write_tables(&mem, cpus, mem_mib << 20).ok()?;
        let rsdp = read(&mem, rsdp_at, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp));
        let (sig, xsdt) = table(&mem, u64::from_le_bytes(rsdp[24..32].try_into().unwrap()));
        assert_eq!(&sig, b"XSDT");
        let mut out = vec![(sig, xsdt.clone())];
        for entry in xsdt[36..].chunks(8) {
            let (sig, t) = table(&mem, u64::from_le_bytes(entry.try_into().unwrap()));
            if &sig == b"FACP" {
                let dsdt = u64::from_le_bytes(t[140..148].try_into().unwrap());
                let (dsig, d) = table(&mem, dsdt);
                assert_eq!(&dsig, b"DSDT");
                out.push((dsig, d));
            }
            if &sig == b"APIC" {
                // One local APIC entry (type 0) per vCPU.
                let mut at = 44;
                let mut lapics = 0;
                while at + 2 <= t.len() {
                    let (kind, len) = (t[at], usize::from(t[at + 1]));
                    assert!(len >= 2 && at + len <= t.len(), "MADT entry at {at}");
                    lapics += u32::from(kind == 0);
                    at += len;
                }
                assert_eq!(lapics, cpus);
            }
            out.push((sig, t));
        }
        Some(out)
    }
}
