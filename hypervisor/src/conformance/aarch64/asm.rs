//! The A64 instructions the kit's guests use, encoded by hand (a handful of fixed encodings;
//! an assembler crate would be a heavy dependency for them). Registers are numbers 0-30.

use crate::arch::SysReg;
use crate::conformance::recorder::DONE_MMIO;

/// Register x28 holds the done address in every guest.
const DONE_REG: u8 = 28;

#[derive(Default)]
pub struct Asm(pub Vec<u8>);

impl Asm {
    fn op(&mut self, w: u32) -> &mut Self {
        self.0.extend_from_slice(&w.to_le_bytes());
        self
    }

    /// MOVZ and MOVK: `rd = v`.
    pub fn mov64(&mut self, rd: u8, v: u64) -> &mut Self {
        let rd = u32::from(rd);
        self.op(0xd280_0000 | ((v & 0xffff) as u32) << 5 | rd);
        for hw in 1..4u32 {
            let part = ((v >> (16 * hw)) & 0xffff) as u32;
            if part != 0 {
                self.op(0xf280_0000 | hw << 21 | part << 5 | rd);
            }
        }
        self
    }

    /// STRB, STRH, STR (W), STR (X) of `rt` to `[rn]`, by width in bytes.
    pub fn str(&mut self, width: usize, rt: u8, rn: u8) -> &mut Self {
        self.op(size_bits(width) | u32::from(rn) << 5 | u32::from(rt))
    }

    /// LDRB, LDRH, LDR (W), LDR (X) of `[rn]` into `rt` (zero-extended), by width.
    pub fn ldr(&mut self, width: usize, rt: u8, rn: u8) -> &mut Self {
        self.op(size_bits(width) | 0x0040_0000 | u32::from(rn) << 5 | u32::from(rt))
    }

    /// MSR `reg`, `rt`.
    pub fn msr(&mut self, reg: SysReg, rt: u8) -> &mut Self {
        self.op(0xd510_0000 | sysreg_bits(reg) | u32::from(rt))
    }

    /// MRS `rt`, `reg`.
    pub fn mrs(&mut self, rt: u8, reg: SysReg) -> &mut Self {
        self.op(0xd530_0000 | sysreg_bits(reg) | u32::from(rt))
    }

    pub fn isb(&mut self) -> &mut Self {
        self.op(0xd503_3fdf)
    }

    /// MSR DAIFClr, #2: take IRQs.
    pub fn unmask_irq(&mut self) -> &mut Self {
        self.op(0xd503_42ff)
    }

    pub fn wfi(&mut self) -> &mut Self {
        self.op(0xd503_207f)
    }

    pub fn eret(&mut self) -> &mut Self {
        self.op(0xd69f_03e0)
    }

    /// The offset of the next instruction.
    pub fn here(&self) -> usize {
        self.0.len()
    }

    /// B to the instruction at offset `target` of this code.
    pub fn b_to(&mut self, target: usize) -> &mut Self {
        let delta = (target as i64 - self.here() as i64) / 4;
        self.op(0x1400_0000 | (delta as u32 & 0x03ff_ffff))
    }

    /// Pads with zeros to offset `at` (vector table entries sit at fixed offsets).
    pub fn pad_to(&mut self, at: usize) -> &mut Self {
        assert!(self.0.len() <= at, "kit guest code overlaps at {at:#x}");
        self.0.resize(at, 0);
        self
    }

    /// HVC #0: a PSCI call (function in x0).
    pub fn hvc(&mut self) -> &mut Self {
        self.op(0xd400_0002)
    }

    /// B . (spins for ever).
    pub fn spin(&mut self) -> &mut Self {
        self.op(0x1400_0000)
    }

    /// Writes the done address, then spins (the kit stops at the write).
    pub fn done(&mut self) -> &mut Self {
        self.mov64(DONE_REG, DONE_MMIO).str(4, 31, DONE_REG).spin()
    }
}

/// The op0 (as o0), op1, CRn, CRm and op2 fields of MRS/MSR.
fn sysreg_bits(r: SysReg) -> u32 {
    u32::from(r.op0 & 1) << 19
        | u32::from(r.op1) << 16
        | u32::from(r.crn) << 12
        | u32::from(r.crm) << 8
        | u32::from(r.op2) << 5
}

/// The size field and opcode of the unsigned-offset load/store forms, offset 0.
fn size_bits(width: usize) -> u32 {
    let size = match width {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    };
    size << 30 | 0x3900_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &Asm) -> Vec<u32> {
        a.0.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Against the encodings GNU as gives.
    #[test]
    fn encodings() {
        let mut a = Asm::default();
        a.mov64(1, 0x1000_0000)
            .str(1, 2, 1)
            .str(2, 2, 1)
            .str(4, 2, 1)
            .str(8, 2, 1)
            .ldr(1, 6, 1)
            .ldr(8, 9, 5)
            .hvc()
            .spin()
            .mrs(0, SysReg::new(3, 0, 12, 12, 0))
            .msr(SysReg::new(3, 0, 12, 0, 0), 0)
            .unmask_irq()
            .wfi()
            .eret()
            .b_to(0);
        assert_eq!(
            words(&a),
            [
                0xd280_0001, // movz x1, #0
                0xf2a2_0001, // movk x1, #0x1000, lsl #16
                0x3900_0022, // strb w2, [x1]
                0x7900_0022, // strh w2, [x1]
                0xb900_0022, // str w2, [x1]
                0xf900_0022, // str x2, [x1]
                0x3940_0026, // ldrb w6, [x1]
                0xf940_00a9, // ldr x9, [x5]
                0xd400_0002, // hvc #0
                0x1400_0000, // b .
                0xd538_cc00, // mrs x0, icc_iar1_el1
                0xd518_c000, // msr vbar_el1, x0
                0xd503_42ff, // msr daifclr, #2
                0xd503_207f, // wfi
                0xd69f_03e0, // eret
                0x17ff_fff1, // b <start>
            ]
        );
    }
}
