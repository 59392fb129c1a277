//! iced-x86's registers in berth's neutral register file.

use iced_x86::Register;

use crate::x86_64::{Regs, Sregs};

/// The 64-bit register a general-purpose register is part of.
fn full(regs: &mut Regs, reg: Register) -> Option<&mut u64> {
    Some(match reg.full_register() {
        Register::RAX => &mut regs.rax,
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RBX => &mut regs.rbx,
        Register::RSP => &mut regs.rsp,
        Register::RBP => &mut regs.rbp,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        _ => return None,
    })
}

/// AH, CH, DH and BH are bits 8-15 of their register.
fn high_byte(reg: Register) -> bool {
    matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    )
}

/// The value of a general-purpose register of any width (zero-extended), or `None` for
/// anything else.
pub fn get(regs: &Regs, reg: Register) -> Option<u64> {
    let mut copy = *regs;
    let v = *full(&mut copy, reg)?;
    Some(match reg.size() {
        8 => v,
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        1 if high_byte(reg) => (v >> 8) & 0xff,
        1 => v & 0xff,
        _ => return None,
    })
}

/// Writes a general-purpose register as the CPU does: a 32-bit write zero-extends into the
/// 64-bit register, 8- and 16-bit writes keep the other bits. `false` for anything else.
pub fn set(regs: &mut Regs, reg: Register, value: u64) -> bool {
    let size = reg.size();
    let Some(r) = full(regs, reg) else {
        return false;
    };
    *r = match size {
        8 => value,
        4 => value & 0xffff_ffff,
        2 => (*r & !0xffff) | (value & 0xffff),
        1 if high_byte(reg) => (*r & !0xff00) | ((value & 0xff) << 8),
        1 => (*r & !0xff) | (value & 0xff),
        _ => return false,
    };
    true
}

/// What iced-x86 asks for to compute an address: register values and segment bases (in
/// 64-bit mode only FS and GS have one).
pub fn address_input(regs: &Regs, sregs: &Sregs, long_mode: bool, reg: Register) -> Option<u64> {
    let seg = |s: &crate::x86_64::Segment| Some(s.base);
    match reg {
        Register::FS => seg(&sregs.fs),
        Register::GS => seg(&sregs.gs),
        Register::ES | Register::CS | Register::SS | Register::DS if long_mode => Some(0),
        Register::ES => seg(&sregs.es),
        Register::CS => seg(&sregs.cs),
        Register::SS => seg(&sregs.ss),
        Register::DS => seg(&sregs.ds),
        _ => get(regs, reg),
    }
}
