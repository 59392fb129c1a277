//! Fetch, decode and carry out one instruction.

use iced_x86::{
    Code, Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic, OpKind, Register,
};

use super::{paging, regs, CpuState, Emulated, EmulatorError, GuestRam, MmioAccess};
use crate::IoHandler;

/// The longest x86 instruction.
const MAX_LENGTH: usize = 15;
const PAGE: u64 = 4096;

// RFLAGS bits the arithmetic forms write, and the direction flag the string forms read.
pub(super) const CF: u64 = 1;
pub(super) const PF: u64 = 1 << 2;
pub(super) const AF: u64 = 1 << 4;
pub(super) const ZF: u64 = 1 << 6;
pub(super) const SF: u64 = 1 << 7;
const DF: u64 = 1 << 10;
pub(super) const OF: u64 = 1 << 11;
const ARITH_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

fn bitness(cpu: &CpuState) -> u32 {
    if paging::long_mode(&cpu.sregs) && cpu.sregs.cs.l {
        64
    } else if cpu.sregs.cs.db {
        32
    } else {
        16
    }
}

/// The instruction at RIP, decoded.
pub fn decode(cpu: &CpuState, ram: &dyn GuestRam) -> Result<Instruction, EmulatorError> {
    fetch(cpu, ram, bitness(cpu))
}

/// One iteration of a string instruction: which it is, whether it reads `[RSI]` (MOVS, LODS,
/// OUTS) and writes `[RDI]` (MOVS, STOS, INS), its element size, REP, and the count and index
/// registers of its address size. The emulator carries it out; the KVM check undoes it.
pub struct StringStep {
    op: StringOp,
    pub reads_si: bool,
    pub writes_di: bool,
    pub size: u64,
    pub rep: bool,
    pub cx: Register,
    pub si: Register,
    pub di: Register,
}

pub fn string_step(insn: &Instruction) -> Option<StringStep> {
    let (op, size) = string_op(insn.code())?;
    let (cx, si, di) = match (0..insn.op_count())
        .map(|i| insn.op_kind(i))
        .find(|k| !matches!(k, OpKind::Register))?
    {
        OpKind::MemoryESRDI | OpKind::MemorySegRSI => (Register::RCX, Register::RSI, Register::RDI),
        OpKind::MemoryESEDI | OpKind::MemorySegESI => (Register::ECX, Register::ESI, Register::EDI),
        _ => (Register::CX, Register::SI, Register::DI),
    };
    Some(StringStep {
        op,
        reads_si: matches!(op, StringOp::Movs | StringOp::Lods | StringOp::Outs),
        writes_di: matches!(op, StringOp::Movs | StringOp::Stos | StringOp::Ins),
        size: size as u64,
        rep: insn.has_rep_prefix() || insn.has_repne_prefix(),
        cx,
        si,
        di,
    })
}

pub fn run(
    cpu: &mut CpuState,
    ram: &dyn GuestRam,
    io: &dyn IoHandler,
) -> Result<Emulated, EmulatorError> {
    let long = paging::long_mode(&cpu.sregs);
    let bitness = bitness(cpu);
    let insn = fetch(cpu, ram, bitness)?;
    // The registers change only if the whole instruction went through.
    let mut state = *cpu;
    let mut m = Machine {
        cpu: &mut state,
        ram,
        io,
        out: Emulated {
            length: insn.len(),
            ..Emulated::default()
        },
        long,
        bitness,
    };
    m.execute(&insn)?;
    let out = m.out;
    *cpu = state;
    Ok(out)
}

/// Reads and decodes the instruction at RIP, a page at a time: the second page is read only
/// if the instruction goes on into it.
fn fetch(cpu: &CpuState, ram: &dyn GuestRam, bitness: u32) -> Result<Instruction, EmulatorError> {
    let rip = cpu.regs.rip;
    let linear = if bitness == 64 {
        rip
    } else {
        cpu.sregs.cs.base.wrapping_add(rip) & 0xffff_ffff
    };
    let mut bytes = [0u8; MAX_LENGTH];
    let mut have = 0;
    while have < MAX_LENGTH {
        let gva = linear.wrapping_add(have as u64);
        let room = (PAGE - (gva & (PAGE - 1))) as usize;
        let n = (MAX_LENGTH - have).min(room);
        let gpa = paging::translate(&cpu.sregs, ram, gva).map_err(|_| EmulatorError::Fetch {
            rip,
            why: "RIP does not translate",
        })?;
        if !ram.read(gpa, &mut bytes[have..have + n]) {
            return Err(EmulatorError::Fetch {
                rip,
                why: "the code is not in guest RAM",
            });
        }
        have += n;
        let mut decoder = Decoder::with_ip(bitness, &bytes[..have], rip, DecoderOptions::NONE);
        let insn = decoder.decode();
        if !insn.is_invalid() {
            return Ok(insn);
        }
        if decoder.last_error() != DecoderError::NoMoreBytes {
            break;
        }
    }
    Err(EmulatorError::Decode {
        rip,
        bytes: bytes[..have].to_vec(),
    })
}

#[derive(Clone, Copy)]
enum StringOp {
    Movs,
    Stos,
    Lods,
    /// Port DX into [RDI].
    Ins,
    /// [RSI] out to port DX.
    Outs,
}

/// The string instructions, with their element size.
fn string_op(code: Code) -> Option<(StringOp, usize)> {
    use StringOp::*;
    Some(match code {
        Code::Movsb_m8_m8 => (Movs, 1),
        Code::Movsw_m16_m16 => (Movs, 2),
        Code::Movsd_m32_m32 => (Movs, 4),
        Code::Movsq_m64_m64 => (Movs, 8),
        Code::Stosb_m8_AL => (Stos, 1),
        Code::Stosw_m16_AX => (Stos, 2),
        Code::Stosd_m32_EAX => (Stos, 4),
        Code::Stosq_m64_RAX => (Stos, 8),
        Code::Lodsb_AL_m8 => (Lods, 1),
        Code::Lodsw_AX_m16 => (Lods, 2),
        Code::Lodsd_EAX_m32 => (Lods, 4),
        Code::Lodsq_RAX_m64 => (Lods, 8),
        Code::Insb_m8_DX => (Ins, 1),
        Code::Insw_m16_DX => (Ins, 2),
        Code::Insd_m32_DX => (Ins, 4),
        Code::Outsb_DX_m8 => (Outs, 1),
        Code::Outsw_DX_m16 => (Outs, 2),
        Code::Outsd_DX_m32 => (Outs, 4),
        _ => return None,
    })
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

struct Machine<'a> {
    cpu: &'a mut CpuState,
    ram: &'a dyn GuestRam,
    io: &'a dyn IoHandler,
    out: Emulated,
    long: bool,
    bitness: u32,
}

impl Machine<'_> {
    fn unsupported(&self, insn: &Instruction, what: &'static str) -> EmulatorError {
        EmulatorError::Unsupported {
            rip: self.cpu.regs.rip,
            mnemonic: format!("{:?}", insn.mnemonic()),
            what,
        }
    }

    fn execute(&mut self, insn: &Instruction) -> Result<(), EmulatorError> {
        if let Some(step) = string_step(insn) {
            return self.string(insn, &step);
        }
        let has_memory = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
        let size = insn.memory_size().size();
        if !has_memory {
            return Err(self.unsupported(insn, "no memory operand"));
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(self.unsupported(insn, "a memory operand wider than 8 bytes"));
        }
        match insn.mnemonic() {
            Mnemonic::Mov => self.mov(insn, size)?,
            Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => self.extend(insn, size)?,
            Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Cmp
            | Mnemonic::Test => self.arith(insn, size)?,
            _ => return Err(self.unsupported(insn, "not an instruction the emulator knows")),
        }
        self.advance(insn);
        Ok(())
    }

    fn advance(&mut self, insn: &Instruction) {
        let next = insn.next_ip();
        self.cpu.regs.rip = match self.bitness {
            64 => next,
            32 => next & 0xffff_ffff,
            _ => next & 0xffff,
        };
        self.out.completed = true;
    }

    fn address(&self, insn: &Instruction, operand: u32) -> Result<u64, EmulatorError> {
        let (r, s, long) = (&self.cpu.regs, &self.cpu.sregs, self.long);
        let va = insn
            .virtual_address(operand, 0, |reg, _, _| regs::address_input(r, s, long, reg))
            .ok_or_else(|| self.unsupported(insn, "an address from registers it does not model"))?;
        Ok(if long { va } else { va & 0xffff_ffff })
    }

    fn reg(&self, insn: &Instruction, reg: Register) -> Result<u64, EmulatorError> {
        regs::get(&self.cpu.regs, reg)
            .ok_or_else(|| self.unsupported(insn, "a register other than a general-purpose one"))
    }

    fn set_reg(&mut self, insn: &Instruction, reg: Register, v: u64) -> Result<(), EmulatorError> {
        if regs::set(&mut self.cpu.regs, reg, v) {
            Ok(())
        } else {
            Err(self.unsupported(insn, "a register other than a general-purpose one"))
        }
    }

    /// Reads or writes `data` at guest linear `gva`: from RAM where it is RAM, otherwise from
    /// the device (recorded), a page at a time.
    fn access(&mut self, gva: u64, data: &mut [u8], write: bool) -> Result<(), EmulatorError> {
        let mut done = 0;
        while done < data.len() {
            let mut va = gva.wrapping_add(done as u64);
            if !self.long {
                va &= 0xffff_ffff;
            }
            let room = (PAGE - (va & (PAGE - 1))) as usize;
            let n = (data.len() - done).min(room);
            let gpa = paging::translate(&self.cpu.sregs, self.ram, va)?;
            let chunk = &mut data[done..done + n];
            if write {
                if !self.ram.write(gpa, chunk) {
                    self.io.mmio_write(gpa, chunk);
                    self.out.record(MmioAccess::new(gpa, true, chunk));
                }
            } else if !self.ram.read(gpa, chunk) {
                self.io.mmio_read(gpa, chunk);
                self.out.record(MmioAccess::new(gpa, false, chunk));
            }
            done += n;
        }
        Ok(())
    }

    fn load(&mut self, gva: u64, size: usize) -> Result<u64, EmulatorError> {
        let mut b = [0u8; 8];
        self.access(gva, &mut b[..size], false)?;
        Ok(u64::from_le_bytes(b))
    }

    fn store(&mut self, gva: u64, size: usize, value: u64) -> Result<(), EmulatorError> {
        let mut b = value.to_le_bytes();
        self.access(gva, &mut b[..size], true)
    }

    fn mov(&mut self, insn: &Instruction, size: usize) -> Result<(), EmulatorError> {
        match (insn.op0_kind(), insn.op1_kind()) {
            (OpKind::Memory, OpKind::Register) => {
                let v = self.reg(insn, insn.op1_register())?;
                let a = self.address(insn, 0)?;
                self.store(a, size, v)
            }
            (OpKind::Register, OpKind::Memory) => {
                let a = self.address(insn, 1)?;
                let v = self.load(a, size)?;
                // Checked before the read would be better, but a register MOV cannot fail.
                self.set_reg(insn, insn.op0_register(), v)
            }
            (OpKind::Memory, k) if is_immediate(k) => {
                let a = self.address(insn, 0)?;
                self.store(a, size, insn.immediate(1))
            }
            _ => Err(self.unsupported(insn, "these operands")),
        }
    }

    /// MOVZX, MOVSX, MOVSXD: a narrower memory operand into a register.
    fn extend(&mut self, insn: &Instruction, size: usize) -> Result<(), EmulatorError> {
        if insn.op0_kind() != OpKind::Register || insn.op1_kind() != OpKind::Memory {
            return Err(self.unsupported(insn, "these operands"));
        }
        let dest = insn.op0_register();
        self.reg(insn, dest)?;
        let a = self.address(insn, 1)?;
        let v = self.load(a, size)?;
        let v = if insn.mnemonic() == Mnemonic::Movzx {
            v
        } else {
            let shift = 64 - 8 * size as u32;
            (((v << shift) as i64) >> shift) as u64
        };
        self.set_reg(insn, dest, v)
    }

    /// The arithmetic forms with a memory operand: read it, compute, write the result back
    /// (not for CMP and TEST), set the flags.
    fn arith(&mut self, insn: &Instruction, size: usize) -> Result<(), EmulatorError> {
        let op = insn.mnemonic();
        let writes = !matches!(op, Mnemonic::Cmp | Mnemonic::Test);
        let (a, b, dest_mem) = match (insn.op0_kind(), insn.op1_kind()) {
            (OpKind::Memory, OpKind::Register) => {
                let b = self.reg(insn, insn.op1_register())?;
                let addr = self.address(insn, 0)?;
                (self.load(addr, size)?, b, Some(addr))
            }
            (OpKind::Register, OpKind::Memory) => {
                let a = self.reg(insn, insn.op0_register())?;
                let addr = self.address(insn, 1)?;
                (a, self.load(addr, size)?, None)
            }
            (OpKind::Memory, k) if is_immediate(k) => {
                let addr = self.address(insn, 0)?;
                (self.load(addr, size)?, insn.immediate(1), Some(addr))
            }
            _ => return Err(self.unsupported(insn, "these operands")),
        };
        let m = mask(size);
        let (a, b) = (a & m, b & m);
        let r = match op {
            Mnemonic::Add => a.wrapping_add(b),
            Mnemonic::Sub | Mnemonic::Cmp => a.wrapping_sub(b),
            Mnemonic::And | Mnemonic::Test => a & b,
            Mnemonic::Or => a | b,
            _ => a ^ b,
        } & m;
        let sign = 1u64 << (size * 8 - 1);
        let (carry, overflow, adjust) = match op {
            Mnemonic::Add => (
                r < a,
                (!(a ^ b) & (a ^ r)) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            ),
            Mnemonic::Sub | Mnemonic::Cmp => (
                a < b,
                ((a ^ b) & (a ^ r)) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            ),
            _ => (false, false, false),
        };
        let mut f = 0;
        f |= if carry { CF } else { 0 };
        f |= if (r as u8).count_ones() % 2 == 0 {
            PF
        } else {
            0
        };
        f |= if adjust { AF } else { 0 };
        f |= if r == 0 { ZF } else { 0 };
        f |= if r & sign != 0 { SF } else { 0 };
        f |= if overflow { OF } else { 0 };
        if writes {
            match dest_mem {
                Some(addr) => self.store(addr, size, r)?,
                None => self.set_reg(insn, insn.op0_register(), r)?,
            }
        }
        self.cpu.regs.rflags = (self.cpu.regs.rflags & !ARITH_FLAGS) | f;
        Ok(())
    }

    /// One iteration of MOVS, STOS, LODS, INS or OUTS; with REP, RIP stays until the count is
    /// spent. The port accesses of INS and OUTS go to the handler's port side and are not
    /// among the recorded (MMIO) accesses.
    fn string(&mut self, insn: &Instruction, s: &StringStep) -> Result<(), EmulatorError> {
        if s.rep && self.reg(insn, s.cx)? == 0 {
            self.advance(insn);
            return Ok(());
        }
        let operand = |kinds: [OpKind; 3]| {
            (0..insn.op_count())
                .find(|&i| kinds.contains(&insn.op_kind(i)))
                .ok_or_else(|| self.unsupported(insn, "a string operand form it does not know"))
        };
        let src = if s.reads_si {
            let i = operand([
                OpKind::MemorySegRSI,
                OpKind::MemorySegESI,
                OpKind::MemorySegSI,
            ])?;
            Some(self.address(insn, i)?)
        } else {
            None
        };
        let dst = if s.writes_di {
            let i = operand([OpKind::MemoryESRDI, OpKind::MemoryESEDI, OpKind::MemoryESDI])?;
            Some(self.address(insn, i)?)
        } else {
            None
        };
        let size = s.size as usize;
        // The element: from [RSI], a port (INS) or the accumulator (STOS)...
        let v = match (src, s.op) {
            (Some(a), _) => self.load(a, size)?,
            (None, StringOp::Ins) => {
                let port = self.reg(insn, Register::DX)? as u16;
                let mut b = [0u8; 8];
                self.io.pio_read(port, &mut b[..size]);
                u64::from_le_bytes(b)
            }
            (None, _) => self.reg(insn, insn.op1_register())?,
        };
        // ...to [RDI], a port (OUTS) or the accumulator (LODS).
        match (dst, s.op) {
            (Some(a), _) => self.store(a, size, v)?,
            (None, StringOp::Outs) => {
                let port = self.reg(insn, Register::DX)? as u16;
                self.io.pio_write(port, &v.to_le_bytes()[..size]);
            }
            (None, _) => self.set_reg(insn, insn.op0_register(), v)?,
        }
        let step = if self.cpu.regs.rflags & DF != 0 {
            s.size.wrapping_neg()
        } else {
            s.size
        };
        if s.reads_si {
            self.bump(insn, s.si, step)?;
        }
        if s.writes_di {
            self.bump(insn, s.di, step)?;
        }
        if s.rep {
            let left = self.reg(insn, s.cx)?.wrapping_sub(1);
            self.set_reg(insn, s.cx, left)?;
            if left & mask(s.cx.size()) != 0 {
                self.out.completed = false;
                return Ok(());
            }
        }
        self.advance(insn);
        Ok(())
    }

    fn bump(&mut self, insn: &Instruction, reg: Register, step: u64) -> Result<(), EmulatorError> {
        let v = self.reg(insn, reg)?.wrapping_add(step);
        self.set_reg(insn, reg, v)
    }
}
