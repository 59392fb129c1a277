//! MSHV's arm64 intercept messages (`hv_message`, what MSHV_RUN_VP returns) in berth's
//! terms. Pure: the vCPU acts on what this returns, and the tests drive it with message bytes.

use mshv_bindings::*;

use crate::SystemEvent;

/// What the guest did, as far as the VMM needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercept {
    /// A load or store to guest physical memory that is not mapped (a device), or a store
    /// to a read-only slot. `access` is `None` when the syndrome does not describe the
    /// access (ISV clear: e.g. a load pair or a post-indexed access), which needs an
    /// instruction decoder berth does not have on aarch64.
    Memory {
        gpa: u64,
        pc: u64,
        access: Option<DataAbort>,
    },
    /// PSCI SYSTEM_OFF / SYSTEM_RESET (the hypervisor handles the rest of PSCI).
    System(SystemEvent),
    /// A reset intercept of a type berth does not know (hibernate, say).
    OtherReset(u32),
    /// The hypervisor could not deliver an exception.
    Unrecoverable,
    /// A message berth does not handle (its type).
    Other(u32),
}

/// A data abort's access as the syndrome (ESR_EL2 ISS, with ISV set) gives it: the same
/// fields KVM decodes for its MMIO exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// 1, 2, 4 or 8 bytes.
    pub size: usize,
    pub write: bool,
    /// The transfer register: x0..=x30, or 31 for xzr/wzr.
    pub reg: u8,
    /// A load sign-extends (LDRSB, LDRSH, LDRSW)...
    pub sign_extend: bool,
    /// ...to 64 bits (else to 32, the upper half cleared).
    pub sixty_four: bool,
    /// The instruction's length: 4, or 2 for a 16-bit T32 instruction (IL clear).
    pub length: u64,
}

/// ESR exception classes of a data abort from a lower and from the same exception level.
const EC_DATA_ABORT_LOWER: u64 = 0x24;
const EC_DATA_ABORT: u64 = 0x25;

/// The access a data-abort syndrome describes; `None` for another exception class or when
/// the syndrome holds no valid instruction syndrome (ISV, bit 24).
pub fn data_abort(esr: u64) -> Option<DataAbort> {
    let ec = (esr >> 26) & 0x3f;
    if ec != EC_DATA_ABORT_LOWER && ec != EC_DATA_ABORT {
        return None;
    }
    if esr & (1 << 24) == 0 {
        return None;
    }
    Some(DataAbort {
        size: 1 << ((esr >> 22) & 0x3),
        write: esr & (1 << 6) != 0,
        reg: ((esr >> 16) & 0x1f) as u8,
        sign_extend: esr & (1 << 21) != 0,
        sixty_four: esr & (1 << 15) != 0,
        length: if esr & (1 << 25) != 0 { 4 } else { 2 },
    })
}

impl DataAbort {
    /// The register value a load of `data` (little-endian, `size` bytes) leaves.
    pub fn loaded(&self, data: u64) -> u64 {
        let bits = 8 * self.size as u32;
        let v = if bits == 64 {
            data
        } else {
            data & ((1u64 << bits) - 1)
        };
        if !self.sign_extend || bits == 64 {
            return v;
        }
        let shift = 64 - bits;
        let extended = ((v << shift) as i64 >> shift) as u64;
        if self.sixty_four {
            extended
        } else {
            extended & 0xffff_ffff
        }
    }
}

#[allow(non_upper_case_globals)]
pub fn decode(msg: &hv_message) -> Intercept {
    match msg.header.message_type {
        hv_message_type_HVMSG_UNMAPPED_GPA | hv_message_type_HVMSG_GPA_INTERCEPT => {
            match msg.to_memory_info() {
                Ok(m) => Intercept::Memory {
                    gpa: m.guest_physical_address,
                    pc: m.header.pc,
                    access: data_abort(m.syndrome),
                },
                Err(_) => Intercept::Other(msg.header.message_type),
            }
        }
        hv_message_type_HVMSG_ARM64_RESET_INTERCEPT => match msg.to_reset_intercept_msg() {
            Ok(m) => match m.reset_type {
                hv_arm64_reset_type_HV_ARM64_RESET_TYPE_POWER_OFF => {
                    Intercept::System(SystemEvent::PowerOff)
                }
                hv_arm64_reset_type_HV_ARM64_RESET_TYPE_REBOOT
                | hv_arm64_reset_type_HV_ARM64_RESET_TYPE_SYSTEM_RESET2 => {
                    Intercept::System(SystemEvent::Reset)
                }
                other => Intercept::OtherReset(other),
            },
            Err(_) => Intercept::Other(msg.header.message_type),
        },
        hv_message_type_HVMSG_UNRECOVERABLE_EXCEPTION => Intercept::Unrecoverable,
        other => Intercept::Other(other),
    }
}

#[cfg(test)]
mod tests {
    //! Messages are built byte by byte in the layout of the TLFS (as mshv-bindings asserts
    //! it: a 16-byte message header, then the payload); none is recorded from a partition,
    //! since this machine has no /dev/mshv.
    use super::*;
    use crate::mshv::test_messages::{message, random};

    /// hv_arm64_memory_intercept_message: header.pc at 8, GPA at 48, syndrome at 56.
    fn memory(kind: u32, pc: u64, gpa: u64, esr: u64) -> hv_message {
        message(
            kind,
            &[
                (8, &pc.to_le_bytes()),
                (48, &gpa.to_le_bytes()),
                (56, &esr.to_le_bytes()),
            ],
        )
    }

    /// A data abort from EL1 (EC 0x24), 32-bit instruction, ISV set, with these fields.
    fn esr(sas: u64, sse: bool, srt: u64, sf: bool, wnr: bool) -> u64 {
        (EC_DATA_ABORT_LOWER << 26)
            | (1 << 25)
            | (1 << 24)
            | (sas << 22)
            | (u64::from(sse) << 21)
            | (srt << 16)
            | (u64::from(sf) << 15)
            | (u64::from(wnr) << 6)
    }

    #[test]
    fn a_store_and_a_load_from_their_syndromes() {
        // str w1, [x0] to a virtio-mmio register: 4 bytes, write, x1.
        let m = memory(
            hv_message_type_HVMSG_UNMAPPED_GPA,
            0xffff_8000_1000_2000,
            0x0a00_0070,
            esr(2, false, 1, false, true),
        );
        assert_eq!(
            decode(&m),
            Intercept::Memory {
                gpa: 0x0a00_0070,
                pc: 0xffff_8000_1000_2000,
                access: Some(DataAbort {
                    size: 4,
                    write: true,
                    reg: 1,
                    sign_extend: false,
                    sixty_four: false,
                    length: 4,
                }),
            }
        );
        // ldrb w30, [x2] from the UART: 1 byte, read, x30; through a read-only slot's
        // GPA intercept the same way.
        let m = memory(
            hv_message_type_HVMSG_GPA_INTERCEPT,
            0x4000,
            0x0900_0018,
            esr(0, false, 30, false, false),
        );
        let Intercept::Memory {
            access: Some(a), ..
        } = decode(&m)
        else {
            panic!("not a decoded access")
        };
        assert_eq!((a.size, a.write, a.reg), (1, false, 30));
    }

    #[test]
    fn loads_extend_as_the_instruction_says() {
        let a = |sas, sse, sf| data_abort(esr(sas, sse, 0, sf, false)).unwrap();
        // ldr x0 (8 bytes): the value as it is.
        assert_eq!(
            a(3, false, true).loaded(0x8877_6655_4433_2211),
            0x8877_6655_4433_2211
        );
        // ldrh w0: zero-extended, upper bytes of the bus value ignored.
        assert_eq!(a(1, false, false).loaded(0xdead_8001), 0x8001);
        // ldrsb x0 of 0x80: -128 in 64 bits; ldrsb w0: in 32 bits, upper half clear.
        assert_eq!(a(0, true, true).loaded(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(a(0, true, false).loaded(0x80), 0xffff_ff80);
        // ldrsw x0 of 0x7fff_ffff: positive stays positive.
        assert_eq!(a(2, true, true).loaded(0x7fff_ffff), 0x7fff_ffff);
    }

    #[test]
    fn syndromes_without_an_access_are_not_guessed() {
        // ISV clear (ldp, say): no access to act on.
        let no_isv = esr(2, false, 1, false, true) & !(1 << 24);
        assert_eq!(data_abort(no_isv), None);
        let m = memory(
            hv_message_type_HVMSG_UNMAPPED_GPA,
            0x1000,
            0x0a00_0000,
            no_isv,
        );
        assert!(matches!(decode(&m), Intercept::Memory { access: None, .. }));
        // An instruction abort (EC 0x20) is no data access either.
        assert_eq!(data_abort((0x20 << 26) | (1 << 25) | (1 << 24)), None);
        // A 16-bit T32 instruction (IL clear) is 2 bytes long.
        let t32 = esr(2, false, 1, false, true) & !(1 << 25);
        assert_eq!(data_abort(t32).unwrap().length, 2);
    }

    #[test]
    fn psci_off_and_reset_and_the_rest() {
        // hv_arm64_reset_intercept_message: reset_type at 24.
        let reset = |t: u32| {
            decode(&message(
                hv_message_type_HVMSG_ARM64_RESET_INTERCEPT,
                &[(24, &t.to_le_bytes())],
            ))
        };
        assert_eq!(
            reset(hv_arm64_reset_type_HV_ARM64_RESET_TYPE_POWER_OFF),
            Intercept::System(SystemEvent::PowerOff)
        );
        assert_eq!(
            reset(hv_arm64_reset_type_HV_ARM64_RESET_TYPE_REBOOT),
            Intercept::System(SystemEvent::Reset)
        );
        assert_eq!(
            reset(hv_arm64_reset_type_HV_ARM64_RESET_TYPE_SYSTEM_RESET2),
            Intercept::System(SystemEvent::Reset)
        );
        assert_eq!(
            reset(hv_arm64_reset_type_HV_ARM64_RESET_TYPE_HIBERNATE),
            Intercept::OtherReset(hv_arm64_reset_type_HV_ARM64_RESET_TYPE_HIBERNATE)
        );
        assert_eq!(
            decode(&message(hv_message_type_HVMSG_UNRECOVERABLE_EXCEPTION, &[])),
            Intercept::Unrecoverable
        );
        assert_eq!(
            decode(&message(hv_message_type_HVMSG_HYPERCALL_INTERCEPT, &[])),
            Intercept::Other(hv_message_type_HVMSG_HYPERCALL_INTERCEPT)
        );
    }

    #[test]
    fn any_bytes_decode_to_something() {
        for m in random(&[
            hv_message_type_HVMSG_UNMAPPED_GPA,
            hv_message_type_HVMSG_GPA_INTERCEPT,
            hv_message_type_HVMSG_ARM64_RESET_INTERCEPT,
        ]) {
            if let Intercept::Memory {
                access: Some(a), ..
            } = decode(&m)
            {
                assert!(matches!(a.size, 1 | 2 | 4 | 8) && a.reg <= 31);
                let _ = a.loaded(u64::MAX);
            }
        }
    }
}
