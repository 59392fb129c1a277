//! The kit's aarch64 cases: EL1 guests with the MMU off, hand-assembled in [`asm`], run by
//! [`guest`].

mod asm;
mod cases;
mod guest;

pub use cases::CASES;
