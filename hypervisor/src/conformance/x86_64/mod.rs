//! The kit's x86_64 cases: 64-bit guests hand-assembled in [`asm`], run by [`guest`].

mod asm;
mod cases;
mod guest;

pub use cases::CASES;
