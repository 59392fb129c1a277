//! Driver-side tests: requests built with MockSplitQueue over real guest memory and a
//! temporary image, checked by reading back the image, the guest buffers and the used ring.

use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::virtio::queue_util::test_support::TestVrings;
use crate::virtio::GuestMemory;

const MEM_SIZE: u64 = 0x10_0000;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x8_0000;
const IMAGE_SECTORS: u64 = 64;
const UNWRITTEN: u8 = 0xee;

const IN: u32 = VIRTIO_BLK_T_IN;
const OUT: u32 = VIRTIO_BLK_T_OUT;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const R: bool = false;
const W: bool = true;

/// A guest with one block device over a temporary image whose byte i is `pattern(i)`.
struct Guest {
    mem: GuestMemory,
    image: TempFile,
    block: Block,
    /// Interrupts the device raised so far.
    irqs: std::cell::Cell<u64>,
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

impl Guest {
    fn new(read_only: bool, id: Option<&str>) -> Guest {
        let image = TempFile::new().unwrap();
        let bytes: Vec<u8> = (0..IMAGE_SECTORS * 512).map(pattern).collect();
        image.as_file().write_all_at(&bytes, 0).unwrap();
        let disk = open_image(image.as_path(), read_only).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        // Poison the buffers so a test sees which bytes the device wrote.
        mem.write_slice(&vec![UNWRITTEN; 0x8_0000], GuestAddress(HDR))
            .unwrap();
        mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
        Guest {
            mem,
            image,
            block: Block::new(disk, read_only, id.map(String::from)),
            irqs: Default::default(),
        }
    }

    /// The vring a backend would serve for `vq` (EVENT_IDX as `features` says).
    fn vrings(&self, vq: &MockSplitQueue<GuestMemory>, features: u64) -> TestVrings {
        let q = vq.create_queue::<Queue>().unwrap();
        let event_idx = features & (1 << crate::virtio::VIRTIO_RING_F_EVENT_IDX) != 0;
        TestVrings::from_queues(&self.mem, vec![q], event_idx)
    }

    /// What the backend does on a kick; counts the interrupts it raised in `irqs`.
    fn process(&self, v: &TestVrings) {
        self.block.kicked(0, &v.queues());
        self.irqs.set(self.irqs.get() + v.interrupts(0));
    }

    fn image_bytes(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.image.as_file().read_exact_at(&mut b, off).unwrap();
        b
    }

    fn guest_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    fn header(&self, addr: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(addr)).unwrap();
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// Submits one request of `(addr, len, device-writable)` descriptors, processes the
    /// queue and returns the used length.
    fn submit(&self, descs: &[(u64, u32, bool)]) -> u32 {
        let vq = MockSplitQueue::new(&self.mem, QUEUE_SIZE);
        vq.add_desc_chains(&chain(descs, 0), 0).unwrap();
        self.process(&self.vrings(&vq, 0));
        assert_eq!(vq.used().idx().load(), 1, "request consumed");
        let elem = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(elem.id(), 0);
        elem.len()
    }
}

/// Descriptors linked in order, starting at table index `first`.
fn chain(descs: &[(u64, u32, bool)], first: u16) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, write))| {
            let last = i == descs.len() - 1;
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { first + i as u16 + 1 };
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect()
}

fn image_pattern(off: u64, len: usize) -> Vec<u8> {
    (off..off + len as u64).map(pattern).collect()
}

#[test]
fn read_fills_the_guest_buffer_and_reports_data_plus_status() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 3);
    let len = g.submit(&[(HDR, 16, R), (DATA, 1024, W), (STATUS, 1, W)]);
    assert_eq!(g.status(), OK);
    assert_eq!(len, 1025);
    assert_eq!(g.guest_bytes(DATA, 1024), image_pattern(3 * 512, 1024));
    assert_eq!(g.irqs.get(), 1);
}

#[test]
fn read_works_whatever_the_framing() {
    // Header split in two, data over three descriptors, the status in the last data buffer.
    let g = Guest::new(false, None);
    g.header(HDR, IN, 1);
    let len = g.submit(&[
        (HDR, 8, R),
        (HDR + 8, 8, R),
        (DATA, 100, W),
        (DATA + 0x1000, 412, W),
        (DATA + 0x2000, 513, W),
    ]);
    assert_eq!(len, 1025);
    let want = image_pattern(512, 1024);
    assert_eq!(g.guest_bytes(DATA, 100), want[..100]);
    assert_eq!(g.guest_bytes(DATA + 0x1000, 412), want[100..512]);
    assert_eq!(g.guest_bytes(DATA + 0x2000, 512), want[512..]);
    assert_eq!(g.guest_bytes(DATA + 0x2000 + 512, 1), [OK]);
}

#[test]
fn write_lands_in_the_image() {
    let g = Guest::new(false, None);
    g.header(HDR, OUT, 2);
    let data: Vec<u8> = (0..1536u32).map(|i| (i * 7) as u8).collect();
    g.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    let len = g.submit(&[
        (HDR, 16, R),
        (DATA, 512, R),
        (DATA + 512, 1024, R),
        (STATUS, 1, W),
    ]);
    assert_eq!((g.status(), len), (OK, 1));
    assert_eq!(g.image_bytes(1024, 1536), data);
    // Neighbours untouched.
    assert_eq!(g.image_bytes(512, 512), image_pattern(512, 512));
    assert_eq!(g.image_bytes(2560, 512), image_pattern(2560, 512));
}

#[test]
fn flush_succeeds() {
    let g = Guest::new(false, None);
    g.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
    let len = g.submit(&[(HDR, 16, R), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (OK, 1));
}

#[test]
fn get_id_returns_the_configured_or_default_id() {
    let g = Guest::new(false, Some("berth-disk-1"));
    g.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (OK, 21));
    assert_eq!(g.guest_bytes(DATA, 20), b"berth-disk-1\0\0\0\0\0\0\0\0");

    let g = Guest::new(false, None);
    g.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    g.submit(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
    let id = g.guest_bytes(DATA, 20);
    let meta = g.image.as_file().metadata().unwrap();
    use std::os::unix::fs::MetadataExt;
    let want = format!("{:x}:{:x}", meta.dev(), meta.ino());
    assert_eq!(
        &id[..want.len().min(20)],
        &want.as_bytes()[..want.len().min(20)]
    );
}

fn zero_segment(g: &Guest, sector: u64, sectors: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    g.mem.write_slice(&s, GuestAddress(DATA)).unwrap();
}

#[test]
fn discard_reads_back_zeroes() {
    let g = Guest::new(false, None);
    g.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
    zero_segment(&g, 8, 16, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (OK, 1));
    assert_eq!(g.image_bytes(8 * 512, 16 * 512), vec![0; 16 * 512]);
    assert_eq!(g.image_bytes(7 * 512, 512), image_pattern(7 * 512, 512));
    assert_eq!(g.image_bytes(24 * 512, 512), image_pattern(24 * 512, 512));
    assert_eq!(
        g.image.as_file().metadata().unwrap().len(),
        IMAGE_SECTORS * 512
    );
}

#[test]
fn discard_with_the_unmap_flag_is_unsupported() {
    let g = Guest::new(false, None);
    g.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
    zero_segment(&g, 8, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    g.submit(&[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]);
    assert_eq!(g.status(), UNSUPP);
    assert_eq!(g.image_bytes(8 * 512, 512), image_pattern(8 * 512, 512));
}

#[test]
fn write_zeroes_with_and_without_unmap() {
    for flags in [0, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP] {
        let g = Guest::new(false, None);
        g.header(HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        zero_segment(&g, 1, 3, flags);
        let len = g.submit(&[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]);
        assert_eq!((g.status(), len), (OK, 1), "flags {flags}");
        assert_eq!(g.image_bytes(512, 3 * 512), vec![0; 3 * 512]);
        assert_eq!(g.image_bytes(0, 512), image_pattern(0, 512));
        assert_eq!(g.image_bytes(4 * 512, 512), image_pattern(4 * 512, 512));
    }
}

#[test]
fn unknown_request_type_is_unsupported() {
    let g = Guest::new(false, None);
    g.header(HDR, 99, 0);
    let len = g.submit(&[(HDR, 16, R), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (UNSUPP, 1));
}

#[test]
fn read_only_disk_refuses_writes_discards_and_zeroes() {
    let g = Guest::new(true, None);
    let f = g.block.features();
    assert_ne!(f & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(
        f & (1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES),
        0
    );
    g.mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
    g.header(HDR, OUT, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (IOERR, 1));
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        g.header(HDR, kind, 0);
        zero_segment(&g, 0, 1, 0);
        g.mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
        g.submit(&[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]);
        assert_eq!(g.status(), IOERR);
    }
    assert_eq!(g.image_bytes(0, 512), image_pattern(0, 512));
    // Reads still work.
    g.header(HDR, IN, 0);
    g.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(g.status(), OK);
}

#[test]
fn out_of_range_and_overflowing_sectors_fail() {
    let g = Guest::new(false, None);
    for sector in [IMAGE_SECTORS - 1, IMAGE_SECTORS, u64::MAX / 512, u64::MAX] {
        g.header(HDR, IN, sector);
        g.mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
        let len = g.submit(&[(HDR, 16, R), (DATA, 1024, W), (STATUS, 1, W)]);
        assert_eq!((g.status(), len), (IOERR, 1), "sector {sector}");
    }
    // The last sector itself is readable.
    g.header(HDR, IN, IMAGE_SECTORS - 1);
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (OK, 513));
}

#[test]
fn io_error_reports_ioerr() {
    // The image shrinks under the device: the read comes up short.
    let g = Guest::new(false, None);
    g.image.as_file().set_len(512).unwrap();
    g.header(HDR, IN, 1);
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (IOERR, 1));
}

#[test]
fn data_length_not_a_multiple_of_512_fails() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 100, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (IOERR, 1));
}

#[test]
fn chain_without_status_is_consumed_with_len_0() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    assert_eq!(g.submit(&[(HDR, 16, R)]), 0);
    assert_eq!(g.submit(&[(HDR, 16, R), (DATA, 512, R)]), 0);
    assert_eq!(g.submit(&[(HDR, 16, R), (STATUS, 0, W)]), 0);
    assert_eq!(g.guest_bytes(DATA, 1), [UNWRITTEN]);
}

#[test]
fn read_only_status_descriptor_gets_no_status() {
    // The status goes to the last byte of the last writable descriptor, so the
    // readable trailing descriptor makes the chain malformed and the error lands there.
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, R)]);
    assert_eq!(len, 1);
    assert_eq!(g.status(), UNWRITTEN);
    assert_eq!(g.guest_bytes(DATA + 511, 1), [IOERR]);
    // With no writable descriptor at all there is nowhere to report.
    g.header(HDR, OUT, 0);
    assert_eq!(g.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, R)]), 0);
    assert_eq!(g.image_bytes(0, 512), image_pattern(0, 512));
}

#[test]
fn data_in_the_wrong_direction_fails() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (IOERR, 1));
    assert_eq!(g.guest_bytes(DATA, 1), [UNWRITTEN]);

    g.header(HDR, OUT, 0);
    g.mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
    let len = g.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), len), (IOERR, 1));
    assert_eq!(g.image_bytes(0, 512), image_pattern(0, 512));
}

#[test]
fn descriptor_outside_guest_memory_fails() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    for (addr, len) in [
        (MEM_SIZE + 0x1000, 512),
        (MEM_SIZE - 256, 512),
        (u64::MAX - 100, 512),
    ] {
        g.mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
        let used = g.submit(&[(HDR, 16, R), (addr, len, W), (STATUS, 1, W)]);
        assert_eq!((g.status(), used), (IOERR, 1), "{addr:#x}");
    }
    // A status byte outside memory: nowhere to report.
    assert_eq!(
        g.submit(&[(HDR, 16, R), (DATA, 512, W), (MEM_SIZE, 1, W)]),
        0
    );
    // A header outside memory.
    g.mem.write_obj(UNWRITTEN, GuestAddress(STATUS)).unwrap();
    let used = g.submit(&[(MEM_SIZE, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), used), (IOERR, 1));
}

#[test]
fn huge_lengths_fail_without_touching_memory() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    let used = g.submit(&[(HDR, 16, R), (DATA, 0x8000_0000, W), (STATUS, 1, W)]);
    assert_eq!((g.status(), used), (IOERR, 1));
    // Over 4 GiB in total: the chain ends early, so there is no status to write.
    let used = g.submit(&[(HDR, 16, R), (DATA, u32::MAX, W), (STATUS, 1, W)]);
    assert_eq!(used, 0);
    assert_eq!(g.guest_bytes(DATA, 1), [UNWRITTEN]);
}

#[test]
fn looping_chain_is_consumed_and_the_queue_goes_on() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    let vq = MockSplitQueue::new(&g.mem, QUEUE_SIZE);
    // 0 -> 1 -> 0 -> ...
    let looped = [
        RawDescriptor::from(SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            0,
        )),
    ];
    vq.add_desc_chains(&looped, 0).unwrap();
    vq.add_desc_chains(
        &chain(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)], 2),
        2,
    )
    .unwrap();
    g.process(&g.vrings(&vq, 0));
    assert_eq!(vq.used().idx().load(), 2);
    let first = vq.used().ring().ref_at(0).unwrap().load();
    let second = vq.used().ring().ref_at(1).unwrap().load();
    assert_eq!((first.id(), first.len()), (0, 0));
    assert_eq!((second.id(), second.len()), (2, 513));
    assert_eq!(g.status(), OK);
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let g = Guest::new(false, None);
    let vq = MockSplitQueue::new(&g.mem, QUEUE_SIZE);
    let event_idx = 1 << crate::virtio::VIRTIO_RING_F_EVENT_IDX;
    let v = g.vrings(&vq, event_idx);
    // used_event (after the avail ring) = 1: interrupt once the used index passes 1.
    let used_event = vq.avail_addr().unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
    g.mem.write_obj(1u16, used_event).unwrap();
    g.header(HDR, IN, 0);
    let req = [(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)];
    vq.add_desc_chains(&chain(&req, 0), 0).unwrap();
    g.process(&v);
    assert_eq!(vq.used().idx().load(), 1);
    assert_eq!(g.irqs.get(), 0, "suppressed");
    // avail_event (after the used ring) tells the driver to kick for the next request.
    let avail_event = vq.used_addr().unchecked_add(4 + 8 * u64::from(QUEUE_SIZE));
    assert_eq!(g.mem.read_obj::<u16>(avail_event).unwrap(), 1);
    vq.add_desc_chains(&chain(&req, 3), 3).unwrap();
    g.process(&v);
    assert_eq!(vq.used().idx().load(), 2);
    assert_eq!(g.irqs.get(), 1);
}

#[test]
fn config_space_is_little_endian_and_zero_past_the_end() {
    let g = Guest::new(false, None);
    assert_eq!(g.block.queue_sizes(), [256]);
    let f = g.block.features();
    for bit in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_ne!(f & 1 << bit, 0, "feature {bit}");
    }
    assert_eq!(
        f & crate::virtio::COMMON_FEATURES,
        crate::virtio::COMMON_FEATURES
    );
    assert_eq!(f & 1 << VIRTIO_BLK_F_RO, 0);
    let backend = crate::virtio::backend::Backend::new(g.block);
    // What a frontend's GET_CONFIG returns.
    let read =
        |off: u32, len: u32| vhost_user_backend::VhostUserBackend::get_config(&backend, off, len);
    assert_eq!(read(0, 8), IMAGE_SECTORS.to_le_bytes());
    assert_eq!(read(12, 4), SEG_MAX.to_le_bytes());
    assert_eq!(read(20, 4), 512u32.to_le_bytes());
    assert_eq!(read(40, 4), 1u32.to_le_bytes());
    assert_eq!(read(56, 1), [1]);
    assert_eq!(read(58, 4), [0; 4]);
    assert_eq!(read(4096, 4), [0; 4]);
    assert_eq!(read(u32::MAX, 2), [0; 2]);
}

/// A last writable descriptor ending past u64::MAX: its "last byte" must not wrap to a low
/// address (which could be inside guest RAM and get the status): no status is written
/// anywhere, and nothing panics.
#[test]
fn status_descriptor_wrapping_the_address_space_gets_no_status() {
    let g = Guest::new(false, None);
    g.header(HDR, IN, 0);
    // (u64::MAX - 0x0f) + 0x3_0011 - 1 wraps to 0x3_0000, inside guest memory.
    const WRAPPED: u64 = 0x3_0000;
    g.mem.write_obj(UNWRITTEN, GuestAddress(WRAPPED)).unwrap();
    let used = g.submit(&[(HDR, 16, R), (u64::MAX - 0x0f, 0x3_0011, W)]);
    assert_eq!(g.guest_bytes(WRAPPED, 1), [UNWRITTEN]);
    assert_eq!(used, 0);
}

/// Discard and write-zeroes beyond the advertised per-request maximum are refused before any
/// work: one request must not keep the worker busy zeroing a whole disk.
#[test]
fn discard_and_write_zeroes_past_the_advertised_maximum_are_refused() {
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let g = Guest::new(false, None);
        g.header(HDR, kind, 0);
        zero_segment(&g, 0, super::request::MAX_ZERO_SECTORS + 1, 0);
        g.submit(&[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]);
        assert_eq!(g.status(), UNSUPP, "request type {kind}");
        assert_eq!(g.image_bytes(0, 512), image_pattern(0, 512));
    }
}
