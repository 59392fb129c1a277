//! CPUID as the guest sees it: the hypervisor's supported set, with this vCPU's identity and a
//! topology of `cpus` cores in one socket, one thread each.

use hypervisor::arch::{CpuidEntry, CPUID_FLAG_SIGNIFICANT_INDEX};

/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: EBX[23:16] holds the logical processor count.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0xB/0x1F level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` items (ceil(log2 n)).
fn id_bits(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// Returns the CPUID table for vCPU `cpu_id` of a guest with `cpus` vCPUs.
pub fn filter(supported: &[CpuidEntry], cpu_id: u32, cpus: u32) -> Vec<CpuidEntry> {
    let core_bits = id_bits(cpus);
    let mut out = Vec::with_capacity(supported.len() + 2);
    for e in supported {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (cpu_id << 24) | ((cpus.min(255)) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // Deterministic cache parameters (Intel): cores per package - 1 in EAX[31:26];
                // caches are reported per core (threads sharing = 1).
                e.eax = (e.eax & 0x0000_3fff) | ((cpus.min(64) - 1) << 26);
            }
            0xb | 0x1f => {
                e.flags |= CPUID_FLAG_SIGNIFICANT_INDEX;
                e.edx = cpu_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = cpus;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 => {
                // AMD: ApicIdCoreIdSize and NC (cores - 1).
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (cpus - 1).min(255);
            }
            0x8000_001e => {
                // AMD extended APIC id, compute-unit id, node id.
                e.eax = cpu_id;
                e.ebx = cpu_id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            eax: 0xdead,
            ebx: 0x0800,
            ecx: 0,
            edx: 0,
            ..Default::default()
        }
    }

    fn find(v: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn apic_id_count_and_hypervisor_bit() {
        let sup = [leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1), leaf(0x8000_001e, 0)];
        let v = filter(&sup, 3, 4);
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let smt = find(&v, 0xb, 0);
        let core = find(&v, 0xb, 1);
        assert_eq!((smt.ebx, smt.edx, smt.ecx >> 8), (1, 3, LEVEL_SMT));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, LEVEL_CORE));
        assert_eq!(find(&v, 0x8000_001e, 0).eax, 3);
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let mut l = leaf(1, 0);
        l.edx = EDX_HTT;
        let v = filter(&[l], 0, 1);
        assert_eq!(find(&v, 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 16, 17].map(id_bits), [0, 1, 2, 2, 3, 4, 5]);
    }
}
