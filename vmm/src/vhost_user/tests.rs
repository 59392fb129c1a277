//! The frontend against berth's own backends over a real vhost-user connection: guest memory
//! shared by fd, a driver's queue played with MockSplitQueue, kicks and calls through
//! eventfds. Both placements run the same backend code; the thread one runs here.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use devices::virtio::frontend::{Frontend, QueueSetup};
use devices::virtio::{COMMON_FEATURES, VIRTIO_F_VERSION_1};
use devices::EventFd;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::*;
use crate::cli::HugePages;

const MIB: u64 = 1 << 20;

fn memory() -> arch::GuestMemory {
    crate::memory::create(16 * MIB, &[(0, 16 * MIB)], HugePages::Off)
        .unwrap()
        .0
}

fn wait_readable(fd: &EventFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if fd.read().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn setup(vq: &MockSplitQueue<'_, arch::GuestMemory>) -> QueueSetup {
    QueueSetup {
        size: 16,
        desc: vq.desc_table_addr().0,
        avail: vq.avail_addr().0,
        used: vq.used_addr().0,
    }
}

#[test]
fn rng_requests_are_served_and_interrupt_through_the_call_fd() {
    let mem = memory();
    let (tx, _rx) = mpsc::channel();
    let stream = start("virtio-rng", Backend::Rng, Placement::Thread, &tx).unwrap();
    let mut fe = Frontend::new(stream, 1, Duration::from_secs(5)).unwrap();
    assert_ne!(fe.features() & (1 << VIRTIO_F_VERSION_1), 0);
    assert_eq!(
        fe.config(0).unwrap(),
        None,
        "rng has no configuration space"
    );
    fe.set_mem_table(&mem).unwrap();

    let vq = MockSplitQueue::new(&mem, 16);
    let d = Descriptor::new(
        0x10_0000,
        64,
        virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
        0,
    );
    vq.add_desc_chains(&[RawDescriptor::from(d)], 0).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.start(
        COMMON_FEATURES,
        &mem,
        &[Some(setup(&vq))],
        &[kick.try_clone().unwrap()],
        &[call.try_clone().unwrap()],
    )
    .unwrap();
    kick.write(1).unwrap();
    assert!(wait_readable(&call, Duration::from_secs(5)), "no interrupt");
    assert_eq!(vq.used().idx().load(), 1);
    let used = vq.used().ring().ref_at(0).unwrap().load();
    assert_eq!((used.id(), used.len()), (0, 64));
    let mut bytes = [0u8; 64];
    mem.read_slice(&mut bytes, GuestAddress(0x10_0000)).unwrap();
    assert!(bytes.iter().any(|b| *b != 0));

    // Stopped: GET_VRING_BASE answered, so a later request is not served.
    fe.stop().unwrap();
    let d = Descriptor::new(
        0x10_1000,
        8,
        virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
        0,
    );
    vq.add_desc_chains(&[RawDescriptor::from(d)], 1).unwrap();
    kick.write(1).unwrap();
    assert!(!wait_readable(&call, Duration::from_millis(200)));
    assert_eq!(vq.used().idx().load(), 1);

    // And the device starts again for a new driver.
    let vq = MockSplitQueue::new(&mem, 16);
    let d = Descriptor::new(
        0x10_2000,
        8,
        virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
        0,
    );
    vq.add_desc_chains(&[RawDescriptor::from(d)], 0).unwrap();
    fe.start(
        COMMON_FEATURES,
        &mem,
        &[Some(setup(&vq))],
        &[kick.try_clone().unwrap()],
        &[call.try_clone().unwrap()],
    )
    .unwrap();
    kick.write(1).unwrap();
    assert!(wait_readable(&call, Duration::from_secs(5)));
    assert_eq!(vq.used().idx().load(), 1);
}

fn refused(r: devices::virtio::frontend::Result<Frontend>) -> String {
    match r {
        Ok(_) => panic!("the frontend connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_backend_that_is_gone_fails_the_first_request() {
    let (l, s) = socket::connected_pair().unwrap();
    drop(l);
    let err = refused(Frontend::new(s, 1, Duration::from_secs(1)));
    assert!(
        err.contains("SET_OWNER") || err.contains("GET_FEATURES"),
        "{err}"
    );
}

#[test]
fn a_backend_that_never_answers_times_out() {
    let (l, s) = socket::connected_pair().unwrap();
    let t = Instant::now();
    let err = refused(Frontend::new(s, 1, Duration::from_millis(300)));
    assert!(t.elapsed() < Duration::from_secs(3));
    drop(l);
    assert!(err.contains("GET_FEATURES"), "{err}");
}
