//! `virtqueue_blk`, `virtqueue_rng`, `virtqueue_console`: a device's request handling behind
//! one split virtqueue whose every byte the guest wrote: the descriptor table, the rings
//! (anywhere, overlapping if the guest likes), the chains (any length, indirect tables, loops,
//! addresses outside RAM or wrapping) and the buffers. The device is driven the way its
//! vhost-user backend drives it (`VirtioBackend::kicked` on vrings), over 64 KiB of guest
//! memory and, for blk, a 64-sector image.
//!
//! Input: a 12-byte header (queue size exponent, flags, then the descriptor table, avail ring
//! and used ring offsets, 16-bit each, and two bytes of device options), then the guest
//! memory's contents from address 0.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use devices::virtio::backend::{Mem, Queues, VirtioBackend, Vring, FIRST_DEVICE_TOKEN};
use devices::virtio::blk::{from_file, Block};
use devices::virtio::console::Console;
use devices::virtio::rng::Rng;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::util::{memory, sparse, GuestMemory};

pub const MEM_SIZE: usize = 0x1_0000;
pub const HEADER: usize = 12;
const IMAGE_SECTORS: u64 = 64;

/// The queue as the header describes it.
struct Setup {
    size: u16,
    event_idx: bool,
    /// Which queue the kicks go to (console: 0 receive, 1 transmit).
    queue: u16,
    kicks: u8,
    desc: u64,
    avail: u64,
    used: u64,
    options: [u8; 2],
}

fn setup(data: &[u8]) -> Option<(Setup, &[u8])> {
    if data.len() < HEADER {
        return None;
    }
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([data[i], data[i + 1]]));
    let s = Setup {
        size: 1 << (data[0] % 9),
        event_idx: data[1] & 1 != 0,
        queue: u16::from(data[1] >> 1 & 1),
        kicks: 1 + (data[1] >> 2 & 3),
        desc: u16_at(2) & !15,
        avail: u16_at(4) & !1,
        used: u16_at(6) & !3,
        options: [data[8], data[9]],
    };
    Some((s, &data[HEADER..]))
}

/// Guest memory holding `image`, and the vrings a backend would have for `queues` queues
/// (all on the same rings: a guest may make them overlap).
struct Guest {
    mem: GuestMemory,
    vrings: Vec<Vring>,
    _calls: Vec<EventFd>,
}

fn guest(s: &Setup, image: &[u8], queues: &[u16]) -> Guest {
    let mem = memory(MEM_SIZE);
    mem.write_slice(&image[..image.len().min(MEM_SIZE)], GuestAddress(0))
        .unwrap();
    let atomic: Mem = GuestMemoryAtomic::new(mem.clone());
    let mut vrings = Vec::new();
    let mut calls = Vec::new();
    for &max in queues {
        let v = Vring::new(atomic.clone(), max).unwrap();
        v.set_queue_size(s.size.min(max));
        // Refused (misaligned, outside memory): the queue is not ready and stays unserved.
        let _ = v.set_queue_info(s.desc, s.avail, s.used);
        v.set_queue_event_idx(s.event_idx);
        v.set_queue_ready(true);
        v.set_enabled(true);
        let call = EventFd::new(EFD_NONBLOCK).unwrap();
        let dup = call.try_clone().unwrap();
        // SAFETY: the duplicate's fd is owned by nothing else; the File takes it over.
        let file = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) };
        v.set_call(Some(file));
        vrings.push(v);
        calls.push(call);
    }
    Guest {
        mem,
        vrings,
        _calls: calls,
    }
}

/// Where a queue's driver and device indexes stand (next available, next used).
fn positions(g: &Guest, q: u16) -> (u16, u16) {
    let state = g.vrings[usize::from(q)].get_mut();
    let queue = state.get_queue();
    (queue.next_avail(), queue.next_used())
}

/// Kicks queue `s.queue` of `dev` as often as the header says. A kick returns no more chains
/// than it took (it returns every chain whose head is in range: these devices complete
/// requests before the kick ends; a head out of range has no used entry to go to).
fn drive(dev: &dyn VirtioBackend, s: &Setup, g: &Guest) {
    let queues = Queues::new(&g.vrings, &g.mem, None);
    let q = s.queue.min(dev.queue_sizes().len() as u16 - 1);
    for _ in 0..s.kicks {
        let (avail0, used0) = positions(g, q);
        dev.kicked(q, &queues);
        let (avail1, used1) = positions(g, q);
        assert!(
            used1.wrapping_sub(used0) <= avail1.wrapping_sub(avail0),
            "more chains returned than taken"
        );
    }
}

pub fn blk(data: &[u8]) {
    let Some((s, image)) = setup(data) else {
        return;
    };
    let read_only = s.options[0] & 1 != 0;
    let disk = sparse(IMAGE_SECTORS * 512);
    let Ok(disk) = from_file(disk, Path::new("fuzz.img"), read_only) else {
        return;
    };
    let dev = Block::new(
        disk,
        read_only,
        (s.options[0] & 2 != 0).then(|| "fuzz-id".to_string()),
    );
    let g = guest(&s, image, dev.queue_sizes());
    drive(&dev, &s, &g);
}

pub fn rng(data: &[u8]) {
    let Some((s, image)) = setup(data) else {
        return;
    };
    let dev = Rng::new();
    let g = guest(&s, image, dev.queue_sizes());
    drive(&dev, &s, &g);
}

pub fn console(data: &[u8]) {
    let Some((s, image)) = setup(data) else {
        return;
    };
    // Host input: a pipe holding `options[1]` * 64 bytes, then closed or left open.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut wr = std::fs::File::from(wr);
    let input = vec![b'x'; usize::from(s.options[1] & 0x7f) * 64];
    wr.write_all(&input).unwrap();
    let keep_open = s.options[1] & 0x80 != 0;
    let writer = keep_open.then_some(wr);
    let Ok(dev) = Console::new(Some(rd), Box::new(std::io::sink())) else {
        return;
    };
    let g = guest(&s, image, dev.queue_sizes());
    let queues = Queues::new(&g.vrings, &g.mem, None);
    dev.started(&queues);
    dev.event(FIRST_DEVICE_TOKEN, &queues);
    drive(&dev, &s, &g);
    dev.event(FIRST_DEVICE_TOKEN, &queues);
    drop(writer);
}
