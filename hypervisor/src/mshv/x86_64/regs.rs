//! MSHV's register types in berth's neutral ones, and the host CPUID leaves MSHV guests start
//! from.

use mshv_bindings::{
    hv_cpuid_entry, FloatingPointUnit, LapicState as MshvLapic, SegmentRegister, SpecialRegisters,
    StandardRegisters, TableRegister,
};

use crate::x86_64::{
    CpuidEntry, DescriptorTable, Fpu, LapicState, Regs, Segment, Sregs,
    CPUID_FLAG_SIGNIFICANT_INDEX,
};

pub fn regs_from(r: &StandardRegisters) -> Regs {
    Regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub fn regs_into(r: &Regs) -> StandardRegisters {
    StandardRegisters {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn segment_from(s: &SegmentRegister) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

fn segment_into(s: &Segment) -> SegmentRegister {
    SegmentRegister {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present.into(),
        dpl: s.dpl,
        db: s.db.into(),
        s: s.s.into(),
        l: s.l.into(),
        g: s.g.into(),
        avl: s.avl.into(),
        unusable: s.unusable.into(),
        padding: 0,
    }
}

pub fn sregs_from(s: &SpecialRegisters) -> Sregs {
    let table = |t: &TableRegister| DescriptorTable {
        base: t.base,
        limit: t.limit,
    };
    Sregs {
        cs: segment_from(&s.cs),
        ds: segment_from(&s.ds),
        es: segment_from(&s.es),
        fs: segment_from(&s.fs),
        gs: segment_from(&s.gs),
        ss: segment_from(&s.ss),
        tr: segment_from(&s.tr),
        ldt: segment_from(&s.ldt),
        gdt: table(&s.gdt),
        idt: table(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// Writes `s` over `m`, keeping what berth's type does not hold (pending interrupts).
pub fn sregs_into(s: &Sregs, m: &mut SpecialRegisters) {
    let table = |t: &DescriptorTable| TableRegister {
        base: t.base,
        limit: t.limit,
    };
    m.cs = segment_into(&s.cs);
    m.ds = segment_into(&s.ds);
    m.es = segment_into(&s.es);
    m.fs = segment_into(&s.fs);
    m.gs = segment_into(&s.gs);
    m.ss = segment_into(&s.ss);
    m.tr = segment_into(&s.tr);
    m.ldt = segment_into(&s.ldt);
    m.gdt = table(&s.gdt);
    m.idt = table(&s.idt);
    m.cr0 = s.cr0;
    m.cr2 = s.cr2;
    m.cr3 = s.cr3;
    m.cr4 = s.cr4;
    m.cr8 = s.cr8;
    m.efer = s.efer;
    m.apic_base = s.apic_base;
}

pub fn fpu_from(f: &FloatingPointUnit) -> Fpu {
    Fpu {
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftwx,
        mxcsr: f.mxcsr,
        fpr: f.fpr,
        xmm: f.xmm,
    }
}

pub fn fpu_into(f: &Fpu) -> FloatingPointUnit {
    FloatingPointUnit {
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftwx,
        mxcsr: f.mxcsr,
        fpr: f.fpr,
        xmm: f.xmm,
        ..Default::default()
    }
}

pub fn lapic_from(l: &MshvLapic) -> LapicState {
    let mut out = LapicState::default();
    for (d, s) in out.regs.iter_mut().zip(l.regs.iter()) {
        *d = *s as u8;
    }
    out
}

pub fn lapic_into(l: &LapicState) -> MshvLapic {
    let mut out = MshvLapic::default();
    for (d, s) in out.regs.iter_mut().zip(l.regs.iter()) {
        *d = *s as _;
    }
    out
}

pub fn cpuid_into(e: &CpuidEntry) -> hv_cpuid_entry {
    hv_cpuid_entry {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        padding: [0; 3],
    }
}

/// The host's CPUID leaves, the starting point berth's policy filters (MSHV has no "supported
/// CPUID" call; Hyper-V presents the host's features and the registered results override
/// them). Sub-leaves are enumerated for the leaves that have them.
pub fn host_cpuid() -> Vec<CpuidEntry> {
    use std::arch::x86_64::__cpuid_count;
    let mut out = Vec::new();
    for base in [0u32, 0x8000_0000] {
        let max = __cpuid_count(base, 0).eax;
        if max < base || max - base > 0x100 {
            continue;
        }
        for leaf in base..=max {
            let subleaves: u32 = match leaf {
                0x4 | 0xb | 0x1f | 0x8000_001d | 0x8000_0026 => 8,
                0x7 | 0x14 | 0x12 => 4,
                0xd => 64,
                _ => 1,
            };
            for index in 0..subleaves {
                let r = __cpuid_count(leaf, index);
                out.push(CpuidEntry {
                    function: leaf,
                    index,
                    flags: if subleaves > 1 {
                        CPUID_FLAG_SIGNIFICANT_INDEX
                    } else {
                        0
                    },
                    eax: r.eax,
                    ebx: r.ebx,
                    ecx: r.ecx,
                    edx: r.edx,
                });
            }
        }
    }
    out
}
