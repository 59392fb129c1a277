//! MSHV's intercept messages (`hv_message`, what MSHV_RUN_VP returns) in berth's terms. Pure:
//! the vCPU acts on what this returns, and the tests drive it with message bytes.

use mshv_bindings::*;

/// What the guest did, as far as the VMM needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercept {
    Halt,
    /// A triple fault (the hypervisor could not deliver an exception).
    Unrecoverable,
    /// IN or OUT (`string`: INS/OUTS, `rep` with REP), `size` bytes; RAX as it was.
    Port(PortAccess),
    /// An access to guest physical memory that is not mapped: a device (through the emulator).
    Memory {
        gpa: u64,
        write: bool,
        rip: u64,
        length: u8,
    },
    Cpuid {
        rax: u64,
        rcx: u64,
        rip: u64,
        length: u8,
        /// What the hypervisor would answer.
        default: [u64; 4],
    },
    Msr {
        index: u32,
        write: bool,
        /// EDX:EAX of a write.
        value: u64,
        rip: u64,
        length: u8,
    },
    /// The guest's EOI of a level-triggered vector (for the VMM's IOAPIC).
    ApicEoi {
        vector: u8,
    },
    /// A message berth does not handle (its type).
    Other(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAccess {
    pub port: u16,
    pub size: usize,
    pub write: bool,
    pub string: bool,
    pub rep: bool,
    pub rax: u64,
    pub rip: u64,
    pub length: u8,
}

/// `intercept_access_type` of the intercept header.
const ACCESS_WRITE: u8 = 1;

#[allow(non_upper_case_globals)]
pub fn decode(msg: &hv_message) -> Intercept {
    match msg.header.message_type {
        hv_message_type_HVMSG_X64_HALT => Intercept::Halt,
        hv_message_type_HVMSG_UNRECOVERABLE_EXCEPTION => Intercept::Unrecoverable,
        hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT => match msg.to_ioport_info() {
            Ok(m) => {
                // SAFETY: the access info is a byte-sized union of plain bits.
                let info = unsafe { m.access_info.__bindgen_anon_1 };
                Intercept::Port(PortAccess {
                    port: m.port_number,
                    // 1, 2 or 4; anything else is a broken message and read as 1.
                    size: match info.access_size() {
                        s @ (1 | 2 | 4) => usize::from(s),
                        _ => 1,
                    },
                    write: m.header.intercept_access_type == ACCESS_WRITE,
                    string: info.string_op() != 0,
                    rep: info.rep_prefix() != 0,
                    rax: m.rax,
                    rip: m.header.rip,
                    length: m.header.instruction_length(),
                })
            }
            Err(_) => Intercept::Other(msg.header.message_type),
        },
        hv_message_type_HVMSG_UNMAPPED_GPA | hv_message_type_HVMSG_GPA_INTERCEPT => {
            match msg.to_memory_info() {
                Ok(m) => Intercept::Memory {
                    gpa: m.guest_physical_address,
                    write: m.header.intercept_access_type == ACCESS_WRITE,
                    rip: m.header.rip,
                    length: m.header.instruction_length(),
                },
                Err(_) => Intercept::Other(msg.header.message_type),
            }
        }
        hv_message_type_HVMSG_X64_CPUID_INTERCEPT => match msg.to_cpuid_info() {
            Ok(m) => Intercept::Cpuid {
                rax: m.rax,
                rcx: m.rcx,
                rip: m.header.rip,
                length: m.header.instruction_length(),
                default: [
                    m.default_result_rax,
                    m.default_result_rbx,
                    m.default_result_rcx,
                    m.default_result_rdx,
                ],
            },
            Err(_) => Intercept::Other(msg.header.message_type),
        },
        hv_message_type_HVMSG_X64_MSR_INTERCEPT => match msg.to_msr_info() {
            Ok(m) => Intercept::Msr {
                index: m.msr_number,
                write: m.header.intercept_access_type == ACCESS_WRITE,
                value: (m.rdx << 32) | (m.rax & 0xffff_ffff),
                rip: m.header.rip,
                length: m.header.instruction_length(),
            },
            Err(_) => Intercept::Other(msg.header.message_type),
        },
        hv_message_type_HVMSG_X64_APIC_EOI => match msg.to_apic_eoi_info() {
            Ok(m) => Intercept::ApicEoi {
                vector: m.interrupt_vector as u8,
            },
            Err(_) => Intercept::Other(msg.header.message_type),
        },
        other => Intercept::Other(other),
    }
}

#[cfg(test)]
mod tests {
    //! Message bytes in the Hyper-V TLFS layouts (the 16-byte message header, then the
    //! intercept's payload). They are written down from the specification's layouts, not
    //! recorded from a partition: this machine has no /dev/mshv. The offsets are those the
    //! bindings assert for each struct.
    use super::*;
    use crate::mshv::test_messages::{message, random};

    /// The 40-byte intercept header: VP 0, instruction length, access type, RIP.
    fn header(length: u8, access: u8, rip: u64) -> Vec<(usize, Vec<u8>)> {
        vec![
            (4, vec![length & 0xf, access]),
            (24, rip.to_le_bytes().to_vec()),
        ]
    }

    fn build(kind: u32, mut fields: Vec<(usize, Vec<u8>)>, more: &[(usize, &[u8])]) -> hv_message {
        fields.extend(more.iter().map(|(a, b)| (*a, b.to_vec())));
        let borrowed: Vec<(usize, &[u8])> = fields.iter().map(|(a, b)| (*a, &b[..])).collect();
        message(kind, &borrowed)
    }

    #[test]
    fn port_out_and_rep_insw() {
        // out dx, al to 0x3f8 (access size 1, write), RAX 0x41.
        let m = build(
            hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT,
            header(1, 1, 0xffff_ffff_8100_0010),
            &[
                (40, &0x3f8u16.to_le_bytes()),
                (42, &[0x01]),
                (48, &0x41u64.to_le_bytes()),
            ],
        );
        assert_eq!(
            decode(&m),
            Intercept::Port(PortAccess {
                port: 0x3f8,
                size: 1,
                write: true,
                string: false,
                rep: false,
                rax: 0x41,
                rip: 0xffff_ffff_8100_0010,
                length: 1,
            })
        );
        // rep insw from 0x1f0: size 2, string (bit 3), rep (bit 4), read.
        let m = build(
            hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT,
            header(3, 0, 0x1000),
            &[(40, &0x1f0u16.to_le_bytes()), (42, &[0x02 | 0x08 | 0x10])],
        );
        let Intercept::Port(p) = decode(&m) else {
            panic!("not a port access")
        };
        assert_eq!(
            (p.size, p.write, p.string, p.rep, p.length),
            (2, false, true, true, 3)
        );
    }

    #[test]
    fn unmapped_gpa_read_and_write() {
        for (access, write) in [(0u8, false), (1, true)] {
            let m = build(
                hv_message_type_HVMSG_UNMAPPED_GPA,
                header(3, access, 0xffff_ffff_8123_4567),
                &[(56, &0xfebf_1004u64.to_le_bytes())],
            );
            assert_eq!(
                decode(&m),
                Intercept::Memory {
                    gpa: 0xfebf_1004,
                    write,
                    rip: 0xffff_ffff_8123_4567,
                    length: 3
                }
            );
        }
    }

    #[test]
    fn cpuid_msr_eoi_halt_and_the_rest() {
        let mut defaults = Vec::new();
        for v in [0x11u64, 0x22, 0x33, 0x44] {
            defaults.extend_from_slice(&v.to_le_bytes());
        }
        let m = build(
            hv_message_type_HVMSG_X64_CPUID_INTERCEPT,
            header(2, 2, 0x2000),
            &[
                (40, &7u64.to_le_bytes()),
                (48, &1u64.to_le_bytes()),
                (72, &defaults),
            ],
        );
        // The defaults come as RAX, RCX, RDX, RBX; berth keeps them as EAX, EBX, ECX, EDX.
        assert_eq!(
            decode(&m),
            Intercept::Cpuid {
                rax: 7,
                rcx: 1,
                rip: 0x2000,
                length: 2,
                default: [0x11, 0x44, 0x22, 0x33]
            }
        );
        let m = build(
            hv_message_type_HVMSG_X64_MSR_INTERCEPT,
            header(2, 1, 0x3000),
            &[
                (40, &0xc000_0080u32.to_le_bytes()),
                (48, &0x1u64.to_le_bytes()),
                (56, &0xffff_ffff_0000_0d01u64.to_le_bytes()),
            ],
        );
        assert_eq!(
            decode(&m),
            Intercept::Msr {
                index: 0xc000_0080,
                write: true,
                value: 0x1_0000_0d01,
                rip: 0x3000,
                length: 2
            }
        );
        let m = message(
            hv_message_type_HVMSG_X64_APIC_EOI,
            &[(0, &[0, 0, 0, 0]), (4, &0x31u32.to_le_bytes())],
        );
        assert_eq!(decode(&m), Intercept::ApicEoi { vector: 0x31 });
        assert_eq!(
            decode(&message(hv_message_type_HVMSG_X64_HALT, &[])),
            Intercept::Halt
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
            hv_message_type_HVMSG_X64_IO_PORT_INTERCEPT,
            hv_message_type_HVMSG_UNMAPPED_GPA,
            hv_message_type_HVMSG_X64_CPUID_INTERCEPT,
            hv_message_type_HVMSG_X64_MSR_INTERCEPT,
            hv_message_type_HVMSG_X64_APIC_EOI,
        ]) {
            let _ = decode(&m);
        }
    }
}
