//! Hand-encoded x86_64 instructions for the kit's guests. Few enough that an assembler crate
//! would cost more than it saves; each encoding is the one from the SDM, named by its mnemonic.

/// Machine code, built one instruction at a time.
#[derive(Default)]
pub struct Asm(pub Vec<u8>);

fn width_prefix(width: usize) -> &'static [u8] {
    match width {
        1 | 4 => &[],
        2 => &[0x66],
        8 => &[0x48],
        _ => panic!("no access of width {width}"),
    }
}

impl Asm {
    fn emit(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// `mov dx, port`
    pub fn mov_dx(&mut self, port: u16) -> &mut Self {
        self.emit(&[0x66, 0xba]).emit(&port.to_le_bytes())
    }
    /// `mov eax, imm` (zero-extends into rax)
    pub fn mov_eax(&mut self, imm: u32) -> &mut Self {
        self.emit(&[0xb8]).emit(&imm.to_le_bytes())
    }
    /// `mov rax, imm64`
    pub fn mov_rax(&mut self, imm: u64) -> &mut Self {
        self.emit(&[0x48, 0xb8]).emit(&imm.to_le_bytes())
    }
    /// `mov rbx, imm64`
    pub fn mov_rbx(&mut self, imm: u64) -> &mut Self {
        self.emit(&[0x48, 0xbb]).emit(&imm.to_le_bytes())
    }
    /// `mov rsi, imm32` / `mov rdi, imm32` / `mov rcx, imm32` (sign-extended)
    pub fn mov_rsi(&mut self, imm: u32) -> &mut Self {
        self.emit(&[0x48, 0xc7, 0xc6]).emit(&imm.to_le_bytes())
    }
    pub fn mov_rdi(&mut self, imm: u32) -> &mut Self {
        self.emit(&[0x48, 0xc7, 0xc7]).emit(&imm.to_le_bytes())
    }
    pub fn mov_rcx(&mut self, imm: u32) -> &mut Self {
        self.emit(&[0x48, 0xc7, 0xc1]).emit(&imm.to_le_bytes())
    }
    /// `out dx, al|ax|eax`
    pub fn out_dx(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0xee } else { 0xef };
        self.emit(width_prefix(width)).emit(&[op])
    }
    /// `in al|ax|eax, dx`
    pub fn in_dx(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0xec } else { 0xed };
        self.emit(width_prefix(width)).emit(&[op])
    }
    /// `rep outsb|outsw|outsd` (port dx, from [rsi], rcx times)
    pub fn rep_outs(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0x6e } else { 0x6f };
        self.emit(width_prefix(width)).emit(&[0xf3, op])
    }
    /// `rep insb|insw|insd` (port dx, to [rdi], rcx times)
    pub fn rep_ins(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0x6c } else { 0x6d };
        self.emit(width_prefix(width)).emit(&[0xf3, op])
    }
    /// `mov [abs32], al|ax|eax|rax`
    pub fn store_rax(&mut self, width: usize, addr: u32) -> &mut Self {
        let op = if width == 1 { 0x88 } else { 0x89 };
        self.emit(width_prefix(width))
            .emit(&[op, 0x04, 0x25])
            .emit(&addr.to_le_bytes())
    }
    /// `mov [abs32], bl|bx|ebx|rbx`
    pub fn store_rbx(&mut self, width: usize, addr: u32) -> &mut Self {
        let op = if width == 1 { 0x88 } else { 0x89 };
        self.emit(width_prefix(width))
            .emit(&[op, 0x1c, 0x25])
            .emit(&addr.to_le_bytes())
    }
    /// `mov [rax], bl|bx|ebx|rbx`
    pub fn store_rbx_at_rax(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0x88 } else { 0x89 };
        self.emit(width_prefix(width)).emit(&[op, 0x18])
    }
    /// `mov bl|bx|ebx|rbx, [rax]`
    pub fn load_rbx_from_rax(&mut self, width: usize) -> &mut Self {
        let op = if width == 1 { 0x8a } else { 0x8b };
        self.emit(width_prefix(width)).emit(&[op, 0x18])
    }
    /// `dec ecx; jnz <start of the loop body of `body_len` bytes>`
    pub fn loop_back(&mut self, body_len: usize) -> &mut Self {
        let back = -((body_len + 4) as i8);
        self.emit(&[0xff, 0xc9, 0x75, back as u8])
    }
    /// `mov dword [rax], imm32`
    pub fn store_imm32_at_rax(&mut self, imm: u32) -> &mut Self {
        self.emit(&[0xc7, 0x00]).emit(&imm.to_le_bytes())
    }
    pub fn sti(&mut self) -> &mut Self {
        self.emit(&[0xfb])
    }
    pub fn iretq(&mut self) -> &mut Self {
        self.emit(&[0x48, 0xcf])
    }
    /// `hlt; jmp <the hlt>`: wait for interrupts forever.
    pub fn halt_loop(&mut self) -> &mut Self {
        self.emit(&[0xf4, 0xeb, 0xfd])
    }
    pub fn cld(&mut self) -> &mut Self {
        self.emit(&[0xfc])
    }
    pub fn hlt(&mut self) -> &mut Self {
        self.emit(&[0xf4])
    }
    pub fn ud2(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x0b])
    }
    /// `jmp $`: spin forever.
    pub fn spin(&mut self) -> &mut Self {
        self.emit(&[0xeb, 0xfe])
    }
    /// Write to the kit's done port, then spin.
    pub fn done(&mut self) -> &mut Self {
        self.mov_dx(super::super::recorder::DONE_PORT)
            .out_dx(1)
            .spin()
    }
}
