//! Serving one split virtqueue, the same way in every worker: pop chains, hand each to the
//! device, publish used entries, re-arm notifications without losing a kick, and interrupt
//! the driver only when it asked to be interrupted.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::GuestMemory;
use vm_memory::GuestAddress;

use crate::log_limited;

/// A chain as a worker sees it: borrowed guest memory, nothing else.
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The driver has no more chains for now (or the ring is broken); notifications are on.
    OutOfChains,
    /// The device declined a chain, which stays at the head of the ring for a later call.
    Declined,
    /// `budget` chains were served and more may wait; notifications are still off, so the
    /// caller must call again.
    Batch,
}

/// Serves up to `budget` available chains of queue `index`. `handle` returns the used length
/// of a chain, or `None` to leave it (and all after it) in the ring. Also returns whether the
/// driver wants an interrupt for what was used (the caller signals it: the interrupt's
/// mechanism is the caller's).
pub fn serve<F>(
    mem: &GuestMemory,
    queue: &mut Queue,
    index: u16,
    budget: usize,
    mut handle: F,
) -> (Served, bool)
where
    F: FnMut(Chain<'_>) -> Option<u32>,
{
    let mut added = false;
    let mut left = budget;
    let served = 'outer: loop {
        if let Err(e) = queue.disable_notification(mem) {
            log_limited!(log::Level::Warn, "virtio queue {index}: {e}");
            break Served::OutOfChains;
        }
        let mut progressed = false;
        let declined = loop {
            if left == 0 {
                break 'outer Served::Batch;
            }
            // `iter` per chain rather than `pop_descriptor_chain`, whose errors go to an
            // unlimited log line the guest could flood.
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    log_limited!(log::Level::Warn, "virtio queue {index}: {e}");
                    None
                }
            };
            let Some(chain) = chain else { break false };
            #[cfg(berth_record_chains)]
            record::chain(mem, index, &chain);
            let head = chain.head_index();
            let Some(len) = handle(chain) else {
                queue.go_to_previous_position();
                break true;
            };
            progressed = true;
            left -= 1;
            // Checked here because add_used reports a bad head through an unlimited log.
            if head >= queue.size() {
                log_limited!(
                    log::Level::Warn,
                    "virtio queue {index}: head {head} out of range"
                );
                continue;
            }
            match queue.add_used(mem, head, len) {
                Ok(()) => added = true,
                Err(e) => log_limited!(log::Level::Warn, "virtio queue {index}: used ring: {e}"),
            }
        };
        if declined {
            break Served::Declined;
        }
        match queue.enable_notification(mem) {
            // The driver added chains while notifications were off: serve them too.
            Ok(true) if progressed => continue,
            // Chains are pending but none can be popped: a broken ring, not worth a spin.
            Ok(true) => {
                log_limited!(log::Level::Warn, "virtio queue {index}: unreadable chains");
                break Served::OutOfChains;
            }
            Ok(false) => break Served::OutOfChains,
            Err(e) => {
                log_limited!(log::Level::Warn, "virtio queue {index}: {e}");
                break Served::OutOfChains;
            }
        }
    };
    // Unsure whether the driver wants it: a spurious interrupt is harmless.
    let notify = added && queue.needs_notification(mem).unwrap_or(true);
    (served, notify)
}

/// Recording real traffic as seeds for the virtqueue fuzz targets (fuzz/src/queue.rs gives
/// the format): built only with `--cfg berth_record_chains` (scripts/record-chains.sh), it
/// writes the first chains each device thread sees to `$BERTH_RECORD_CHAINS/`, their
/// descriptors and buffers moved into the fuzz targets' 64 KiB of guest memory.
#[cfg(berth_record_chains)]
mod record {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vm_memory::{Bytes, GuestAddress};

    use super::{Chain, GuestMemory};

    const MEM: usize = 0x1_0000;
    const MAX_DESCS: usize = 64;
    const DESC: usize = 0;
    const AVAIL: usize = 0x400;
    const USED: usize = 0x500;
    const DATA: usize = 0x800;
    const PER_DEVICE: usize = 64;

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    pub fn chain(mem: &GuestMemory, index: u16, chain: &Chain<'_>) {
        let Some(dir) = std::env::var_os("BERTH_RECORD_CHAINS") else {
            return;
        };
        let n = SEEN.fetch_add(1, Ordering::Relaxed);
        if n >= PER_DEVICE * 8 {
            return;
        }
        let mut image = vec![0u8; MEM];
        let mut at = DATA;
        let mut count = 0u16;
        for d in chain.clone().take(MAX_DESCS) {
            let len = (d.len() as usize).min(MEM - at);
            if !d.is_write_only() {
                let mut buf = vec![0u8; len];
                let _ = mem.read_slice(&mut buf, GuestAddress(d.addr().0));
                image[at..at + len].copy_from_slice(&buf);
            }
            let e = DESC + 16 * usize::from(count);
            image[e..e + 8].copy_from_slice(&(at as u64).to_le_bytes());
            image[e + 8..e + 12].copy_from_slice(&(len as u32).to_le_bytes());
            let flags: u16 = if d.is_write_only() { 2 } else { 0 };
            image[e + 12..e + 14].copy_from_slice(&(flags | 1).to_le_bytes());
            image[e + 14..e + 16].copy_from_slice(&(count + 1).to_le_bytes());
            at += len;
            count += 1;
        }
        if count == 0 {
            return;
        }
        // The last descriptor ends the chain.
        let e = DESC + 16 * usize::from(count - 1);
        image[e + 12] &= !1;
        image[e + 14..e + 16].copy_from_slice(&0u16.to_le_bytes());
        image[AVAIL + 2..AVAIL + 4].copy_from_slice(&1u16.to_le_bytes());
        // Header: queue size 64 (2^6), flags (bit 1: the queue), the ring offsets, options.
        let mut out = vec![6, ((index & 1) as u8) << 1];
        for off in [DESC, AVAIL, USED] {
            out.extend_from_slice(&(off as u16).to_le_bytes());
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        // Trailing zeros add nothing for the fuzzer.
        let end = image.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        out.extend_from_slice(&image[..end]);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("device").replace('/', "_");
        let path = std::path::Path::new(&dir)
            .join(format!("{}-{name}-q{index}-{n:04}", std::process::id()));
        let _ = std::fs::write(path, out);
    }
}

/// Whether a queue of `size` entries with its rings at these guest addresses lies inside
/// guest memory. Queue::is_valid checks the same, but logs without limit on failure, which
/// the guest could provoke at will.
pub fn rings_in_memory(mem: &GuestMemory, size: u16, desc: u64, avail: u64, used: u64) -> bool {
    use vm_memory::{GuestMemory as _, Permissions};
    let n = usize::from(size);
    let fits = |addr: u64, len: usize, access| mem.check_range(GuestAddress(addr), len, access);
    fits(desc, 16 * n, Permissions::Read)
        && fits(avail, 6 + 2 * n, Permissions::Read)
        && fits(used, 6 + 8 * n, Permissions::Write)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Guest memory, a queue the test plays the driver of, and the vrings a backend serves.

    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    /// 16 MiB of guest memory from address 0; buffers go at 1 MiB and up.
    pub fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    /// A device-writable (`true`) or device-readable descriptor.
    pub fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
        let flags = if writable {
            VRING_DESC_F_WRITE as u16
        } else {
            0
        };
        RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
    }

    /// The driver side of one queue. MockSplitQueue writes descriptors and the avail ring,
    /// but its used ring overlaps its avail ring (it sizes the avail ring in elements, not
    /// bytes), so the used ring lives on a page of its own here.
    pub struct TestQueue<'a> {
        pub mock: MockSplitQueue<'a, GuestMemory>,
        mem: &'a GuestMemory,
        size: u16,
        used: GuestAddress,
    }

    impl<'a> TestQueue<'a> {
        /// Queue `n` (0, 1, ...) of a device: each gets its own 64 KiB of rings.
        pub fn new(mem: &'a GuestMemory, n: u64, size: u16) -> Self {
            let base = GuestAddress(n * 0x1_0000);
            TestQueue {
                mock: MockSplitQueue::create(mem, base, size),
                mem,
                size,
                used: GuestAddress(base.0 + 0x8000),
            }
        }

        /// The device's view, as the transport would hand it over.
        pub fn queue(&self) -> Queue {
            let mut q: Queue = self.mock.create_queue().unwrap();
            q.set_used_ring_address(Some(self.used.0 as u32), Some(0));
            q
        }

        /// Publishes `chain` (links filled in) at descriptor index `at`.
        pub fn add(&self, at: u16, chain: &[RawDescriptor]) {
            let n = chain.len() as u16;
            let linked: Vec<RawDescriptor> = (0..n)
                .map(|i| {
                    let d = Descriptor::from(chain[usize::from(i)]);
                    let (flags, next) = if i + 1 == n {
                        (d.flags(), 0)
                    } else {
                        (d.flags() | VRING_DESC_F_NEXT as u16, at + i + 1)
                    };
                    RawDescriptor::from(Descriptor::new(d.addr().0, d.len(), flags, next))
                })
                .collect();
            // Only the head enters the avail ring, because the links are set.
            self.mock.add_desc_chains(&linked, at).unwrap();
        }

        /// Publishes a one-descriptor chain at `at` that points to an indirect table at
        /// `table` holding `chain` (links filled in).
        pub fn add_indirect(&self, at: u16, table: u64, chain: &[RawDescriptor]) {
            let n = chain.len() as u16;
            for i in 0..n {
                let d = Descriptor::from(chain[usize::from(i)]);
                let (flags, next) = if i + 1 == n {
                    (d.flags(), 0)
                } else {
                    (d.flags() | VRING_DESC_F_NEXT as u16, i + 1)
                };
                let d = Descriptor::new(d.addr().0, d.len(), flags, next);
                let addr = GuestAddress(table + 16 * u64::from(i));
                self.mem.write_obj(RawDescriptor::from(d), addr).unwrap();
            }
            let head = Descriptor::new(table, 16 * u32::from(n), VRING_DESC_F_INDIRECT as u16, 0);
            self.mock
                .add_desc_chains(&[RawDescriptor::from(head)], at)
                .unwrap();
        }

        /// Used ring entry `i` as (head, len).
        pub fn used(&self, i: u16) -> (u32, u32) {
            let at = self.used.0 + 4 + 8 * u64::from(i);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            (id, len)
        }

        pub fn used_idx(&self) -> u16 {
            self.mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap()
        }

        /// EVENT_IDX: the driver wants an interrupt once used index passes `v`.
        pub fn set_used_event(&self, v: u16) {
            let at = self.mock.avail_addr().0 + 4 + 2 * u64::from(self.size);
            self.mem.write_obj(v, GuestAddress(at)).unwrap();
        }

        /// EVENT_IDX: the device wants a kick once the avail index passes this.
        pub fn avail_event(&self) -> u16 {
            let at = self.used.0 + 4 + 8 * u64::from(self.size);
            self.mem.read_obj(GuestAddress(at)).unwrap()
        }

        /// Without EVENT_IDX: whether the device asked not to be kicked.
        pub fn no_notify(&self) -> bool {
            let flags: u16 = self.mem.read_obj(self.used).unwrap();
            flags & 1 != 0
        }
    }

    /// Queues as a backend sees them: vrings set up on `TestQueue`s, each with a call
    /// eventfd that counts the interrupts the device raised.
    pub struct TestVrings {
        pub vrings: Vec<crate::virtio::backend::Vring>,
        calls: Vec<vmm_sys_util::eventfd::EventFd>,
        pub mem: GuestMemory,
    }

    impl TestVrings {
        /// Vrings on `queues` (their rings), EVENT_IDX as given.
        pub fn new(mem: &GuestMemory, queues: &[&TestQueue<'_>], event_idx: bool) -> Self {
            Self::from_queues(mem, queues.iter().map(|tq| tq.queue()).collect(), event_idx)
        }

        /// Vrings with the size and ring addresses of `queues`.
        pub fn from_queues(mem: &GuestMemory, queues: Vec<Queue>, event_idx: bool) -> Self {
            use std::os::fd::FromRawFd;
            use vhost_user_backend::VringT;
            use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
            let atomic = vm_memory::GuestMemoryAtomic::new(mem.clone());
            let mut vrings = Vec::new();
            let mut calls = Vec::new();
            for q in queues {
                let v = crate::virtio::backend::Vring::new(atomic.clone(), q.max_size()).unwrap();
                v.set_queue_size(q.size());
                v.set_queue_info(q.desc_table(), q.avail_ring(), q.used_ring())
                    .unwrap();
                v.set_queue_event_idx(event_idx);
                v.set_queue_ready(true);
                v.set_enabled(true);
                let call = EventFd::new(EFD_NONBLOCK).unwrap();
                let dup = std::os::fd::IntoRawFd::into_raw_fd(call.try_clone().unwrap());
                // SAFETY: the duplicate fd is owned by nothing else.
                let file = unsafe { std::fs::File::from_raw_fd(dup) };
                v.set_call(Some(file));
                vrings.push(v);
                calls.push(call);
            }
            TestVrings {
                vrings,
                calls,
                mem: mem.clone(),
            }
        }

        pub fn queues(&self) -> crate::virtio::backend::Queues<'_> {
            crate::virtio::backend::Queues::new(&self.vrings, &self.mem, None)
        }

        /// Interrupts raised on queue `i` since the last call.
        pub fn interrupts(&self, i: usize) -> u64 {
            self.calls[i].read().unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use virtio_queue::QueueT;

    /// serve() with no budget, counting the interrupts it asks for in `irq`.
    fn run(
        irq: &mut usize,
        mem: &GuestMemory,
        q: &mut Queue,
        f: impl FnMut(Chain<'_>) -> Option<u32>,
    ) -> Served {
        let (served, notify) = serve(mem, q, 0, usize::MAX, f);
        *irq += usize::from(notify);
        served
    }

    #[test]
    fn serves_each_chain_once_and_interrupts_once() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        tq.add(0, &[desc(0x10_0000, 8, true)]);
        tq.add(1, &[desc(0x10_1000, 8, true)]);
        let mut irq = 0;
        let mut seen = Vec::new();
        let r = run(&mut irq, &mem, &mut q, |c| {
            seen.push(c.head_index());
            Some(3)
        });
        assert_eq!(r, Served::OutOfChains);
        assert_eq!(seen, [0, 1]);
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(tq.used(1), (1, 3));
        assert_eq!(irq, 1);
        assert!(!tq.no_notify(), "kicks re-enabled once the ring is empty");
    }

    #[test]
    fn a_declined_chain_stays_in_the_ring() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        tq.add(0, &[desc(0x10_0000, 8, true)]);
        let mut irq = 0;
        assert_eq!(run(&mut irq, &mem, &mut q, |_| None), Served::Declined);
        assert_eq!(tq.used_idx(), 0);
        assert_eq!(irq, 0);
        let mut heads = Vec::new();
        run(&mut irq, &mem, &mut q, |c| {
            heads.push(c.head_index());
            Some(0)
        });
        assert_eq!(heads, [0]);
    }

    #[test]
    fn a_wild_avail_index_is_refused_without_spinning() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        tq.mock.avail().idx().store(1000); // more chains than the ring holds
        let mut irq = 0;
        let r = run(&mut irq, &mem, &mut q, |_| panic!("no chain is valid"));
        assert_eq!(r, Served::OutOfChains);
        assert_eq!(irq, 0);
    }

    #[test]
    fn a_head_index_out_of_range_is_skipped() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        tq.add(0, &[desc(0x10_0000, 8, true)]);
        tq.mock.avail().ring().ref_at(0).unwrap().store(500);
        tq.add(1, &[desc(0x10_0000, 8, true)]);
        let mut irq = 0;
        let mut n = 0;
        run(&mut irq, &mem, &mut q, |_| {
            n += 1;
            Some(0)
        });
        assert_eq!(n, 2, "both heads handed over");
        assert_eq!(tq.used_idx(), 1, "only the valid one used");
        assert_eq!(tq.used(0), (1, 0));
    }

    #[test]
    fn event_idx_interrupts_only_when_the_driver_asked() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        q.set_event_idx(true);
        // used_event = 1: interrupt once the second chain is used, not before.
        tq.set_used_event(1);
        let mut irq = 0;
        tq.add(0, &[desc(0x10_0000, 8, true)]);
        run(&mut irq, &mem, &mut q, |_| Some(0));
        assert_eq!(irq, 0);
        tq.add(1, &[desc(0x10_0000, 8, true)]);
        run(&mut irq, &mem, &mut q, |_| Some(0));
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(irq, 1);
    }

    #[test]
    fn chains_added_while_serving_are_served_and_kicks_rearmed() {
        for event_idx in [false, true] {
            let mem = memory();
            let tq = TestQueue::new(&mem, 0, 16);
            let mut q = tq.queue();
            q.set_event_idx(event_idx);
            tq.add(0, &[desc(0x10_0000, 8, true)]);
            let mut irq = 0;
            let mut heads = Vec::new();
            run(&mut irq, &mem, &mut q, |c| {
                if heads.is_empty() {
                    // The driver races the device and, seeing no need to kick, does not.
                    tq.add(1, &[desc(0x10_0000, 8, true)]);
                }
                heads.push(c.head_index());
                Some(0)
            });
            assert_eq!(heads, [0, 1], "event_idx {event_idx}");
            assert_eq!(tq.used_idx(), 2);
            // The driver must kick for its next chain, index 2.
            if event_idx {
                assert_eq!(tq.avail_event(), 2);
            } else {
                assert!(!tq.no_notify());
            }
        }
    }

    #[test]
    fn a_batch_ends_after_the_budget_with_the_rest_left() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.queue();
        for i in 0..3 {
            tq.add(i, &[desc(0x10_0000, 8, true)]);
        }
        let (r, notify) = serve(&mem, &mut q, 0, 2, |_| Some(0));
        assert_eq!((r, notify), (Served::Batch, true));
        assert_eq!(tq.used_idx(), 2);
        let (r, _) = serve(&mem, &mut q, 0, 2, |_| Some(0));
        assert_eq!(r, Served::OutOfChains);
        assert_eq!(tq.used_idx(), 3);
    }
}
