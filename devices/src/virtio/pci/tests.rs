//! The transport driven the way Linux's virtio_pci_modern driver drives it, over a fake
//! control side (the vhost-user frontend's place) and fake hypervisor wiring.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestAddress;

use super::common::{STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use super::*;
use crate::pci::{IntxLine, MsiMessage, MsiVector, PciDevice};
use crate::virtio::VIRTIO_RING_F_EVENT_IDX;

const BAR_ADDR: u64 = 0x1_0000_0000;
const ACK_DRIVER: u8 = 1 | 2;

type OnSignal = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Record {
    activations: Mutex<Vec<(u64, Vec<Option<QueueSetup>>)>>,
    resets: AtomicUsize,
    config_writes: Mutex<Vec<(u32, Vec<u8>)>>,
    triggers: Mutex<Vec<usize>>,
    intx: Mutex<Vec<bool>>,
    messages: Mutex<Vec<(usize, MsiMessage)>>,
    /// Call fds connected to each vector, as the VMM would register irqfds.
    connected: Mutex<HashMap<usize, Vec<RawFd>>>,
    /// Call fds the VMM watches for INTx, with what to run on a signal.
    watched: Mutex<Vec<(RawFd, OnSignal)>>,
    moves: Mutex<Vec<(u64, u64)>>,
    state: Mutex<Option<Arc<ControlState>>>,
    calls: Mutex<Vec<RawFd>>,
}

impl Record {
    fn activations(&self) -> usize {
        self.activations.lock().unwrap().len()
    }
    fn state(&self) -> Arc<ControlState> {
        self.state.lock().unwrap().clone().unwrap()
    }
    fn connected(&self, v: usize) -> Vec<RawFd> {
        self.connected
            .lock()
            .unwrap()
            .get(&v)
            .cloned()
            .unwrap_or_default()
    }
    fn call(&self, q: usize) -> RawFd {
        self.calls.lock().unwrap()[q]
    }
}

/// The control side: records requests; the test completes resets by hand.
struct FakeControl(Arc<Record>);

impl DeviceControl for FakeControl {
    fn activate(&self, features: u64, queues: Vec<Option<QueueSetup>>) {
        self.0.activations.lock().unwrap().push((features, queues));
    }
    fn reset(&self) {
        self.0.resets.fetch_add(1, Ordering::SeqCst);
    }
    fn write_config(&self, offset: u32, data: Vec<u8>) {
        self.0.config_writes.lock().unwrap().push((offset, data));
    }
}

struct Vector(usize, Arc<Record>);

impl MsiVector for Vector {
    fn set_message(&self, msg: MsiMessage) {
        self.1.messages.lock().unwrap().push((self.0, msg));
    }
    fn trigger(&self) {
        self.1.triggers.lock().unwrap().push(self.0);
    }
    fn connect(&self, fd: &EventFd) {
        let mut c = self.1.connected.lock().unwrap();
        let fds = c.entry(self.0).or_default();
        assert!(!fds.contains(&fd.as_raw_fd()), "connected twice");
        fds.push(fd.as_raw_fd());
    }
    fn disconnect(&self, fd: &EventFd) {
        let mut c = self.1.connected.lock().unwrap();
        let fds = c.entry(self.0).or_default();
        let before = fds.len();
        fds.retain(|f| *f != fd.as_raw_fd());
        assert_eq!(fds.len() + 1, before, "disconnected what was not connected");
    }
}

struct Line(Arc<Record>);

impl IntxLine for Line {
    fn set_level(&self, high: bool) {
        self.0.intx.lock().unwrap().push(high);
    }
}

struct FakeWiring(Arc<Record>);

impl Wiring for FakeWiring {
    fn watch_call(&self, fd: &EventFd, on_signal: Box<dyn Fn() + Send + Sync>) {
        self.0
            .watched
            .lock()
            .unwrap()
            .push((fd.as_raw_fd(), Arc::from(on_signal)));
    }
    fn unwatch_call(&self, fd: &EventFd) {
        self.0
            .watched
            .lock()
            .unwrap()
            .retain(|(f, _)| *f != fd.as_raw_fd());
    }
    fn move_notify(&self, _fd: &EventFd, old: u64, new: u64) {
        self.0.moves.lock().unwrap().push((old, new));
    }
}

fn device() -> (VirtioPci, Arc<Record>) {
    let rec = Arc::new(Record::default());
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let vectors: Vec<Arc<dyn MsiVector>> = (0..2)
        .map(|i| Arc::new(Vector(i, rec.clone())) as Arc<dyn MsiVector>)
        .collect();
    let info = DeviceInfo {
        device_type: 4,
        queue_sizes: vec![16],
        features: crate::virtio::COMMON_FEATURES,
        config: (0..8).map(|i| 0x40 + i).collect(),
    };
    let parts = TransportParts {
        mem,
        bar_addr: BAR_ADDR,
        vectors,
        intx: Some(Arc::new(Line(rec.clone()))),
        wiring: Arc::new(FakeWiring(rec.clone())),
    };
    let r2 = rec.clone();
    let d = VirtioPci::new("test".into(), info, parts, move |state, kicks, calls| {
        assert_eq!((kicks.len(), calls.len()), (1, 1));
        *r2.state.lock().unwrap() = Some(state);
        *r2.calls.lock().unwrap() = calls.iter().map(|c| c.as_raw_fd()).collect();
        Ok(Box::new(FakeControl(r2.clone())))
    })
    .unwrap();
    (d, rec)
}

fn w(d: &mut VirtioPci, offset: u64, data: &[u8]) {
    let (bar, off) = d.decode(BAR_ADDR + offset).expect("BAR decodes");
    d.write_bar(bar, off, data);
}

fn r(d: &mut VirtioPci, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    let (bar, off) = d.decode(BAR_ADDR + offset).expect("BAR decodes");
    d.read_bar(bar, off, &mut b[..len]);
    u64::from_le_bytes(b)
}

/// The vendor capabilities by cfg_type: (config offset, bar offset, length).
fn virtio_caps(d: &mut VirtioPci) -> Vec<(u8, usize, u32, u32)> {
    let mut caps = vec![];
    let mut at = (d.read_config(0x34 / 4) & 0xff) as usize;
    while at != 0 {
        let head = d.read_config(at / 4);
        if head & 0xff == 0x09 {
            let cfg_type = (head >> 24) as u8;
            caps.push((
                cfg_type,
                at,
                d.read_config(at / 4 + 2),
                d.read_config(at / 4 + 3),
            ));
        }
        at = ((head >> 8) & 0xff) as usize;
    }
    caps
}

/// Memory decoding on, MSI-X enabled, both vectors unmasked.
fn enable(d: &mut VirtioPci) {
    d.write_config(1, 0, &[0x06, 0]);
    let mut at = (d.read_config(0x34 / 4) & 0xff) as usize;
    while d.read_config(at / 4) & 0xff != 0x11 {
        at = ((d.read_config(at / 4) >> 8) & 0xff) as usize;
    }
    d.write_config(at / 4, 3, &[0x80]);
    for v in 0..2u64 {
        let e = MSIX_TABLE_OFFSET + v * 16;
        w(d, e, &0xfee0_0000u32.to_le_bytes());
        w(d, e + 8, &(0x40 + v as u32).to_le_bytes());
        w(d, e + 12, &0u32.to_le_bytes());
    }
}

/// The driver's side of start-up with rings at 0x1000.. and queue 0 on vector 1.
fn bring_up(d: &mut VirtioPci, features: u64) -> u8 {
    w(d, 0x14, &[ACK_DRIVER]);
    w(d, 0x08, &0u32.to_le_bytes());
    w(d, 0x0c, &(features as u32).to_le_bytes());
    w(d, 0x08, &1u32.to_le_bytes());
    w(d, 0x0c, &((features >> 32) as u32).to_le_bytes());
    w(d, 0x14, &[ACK_DRIVER | STATUS_FEATURES_OK]);
    let status = r(d, 0x14, 1) as u8;
    if status & STATUS_FEATURES_OK == 0 {
        return status;
    }
    w(d, 0x10, &0u16.to_le_bytes());
    w(d, 0x16, &0u16.to_le_bytes());
    w(d, 0x1a, &1u16.to_le_bytes());
    w(d, 0x20, &0x1000u64.to_le_bytes());
    w(d, 0x28, &0x2000u32.to_le_bytes());
    w(d, 0x2c, &0u32.to_le_bytes());
    w(d, 0x30, &0x3000u64.to_le_bytes());
    w(d, 0x1c, &1u16.to_le_bytes());
    w(
        d,
        0x14,
        &[ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
    );
    r(d, 0x14, 1) as u8
}

#[test]
fn capabilities_describe_the_bar_layout() {
    let (mut d, _) = device();
    assert_eq!(
        d.read_config(0),
        0x1044_1af4,
        "virtio vendor, modern id 0x1040 + 4"
    );
    let caps = virtio_caps(&mut d);
    let types: Vec<u8> = caps.iter().map(|c| c.0).collect();
    assert_eq!(
        types,
        [CAP_COMMON, CAP_ISR, CAP_DEVICE, CAP_NOTIFY, CAP_PCI_CFG]
    );
    let notify = caps.iter().find(|c| c.0 == CAP_NOTIFY).unwrap();
    assert_eq!(
        (notify.2, notify.3),
        (NOTIFY_OFFSET as u32, NOTIFY_LEN as u32)
    );
    assert_eq!(d.read_config(notify.1 / 4 + 4), NOTIFY_MULTIPLIER);
    assert_eq!(
        d.decode(BAR_ADDR),
        None,
        "no decoding before the command register says so"
    );
    d.write_config(1, 0, &[0x02, 0]);
    assert_eq!(d.decode(BAR_ADDR + 0x10), Some((0, 0x10)));
    assert_eq!(d.ioevents()[0].0, BAR_ADDR + NOTIFY_OFFSET);
}

#[test]
fn negotiation_activation_routing_and_an_asynchronous_reset() {
    let (mut d, rec) = device();
    enable(&mut d);
    assert_eq!(r(&mut d, 0x12, 2), 1, "num_queues");
    assert_eq!(r(&mut d, 0x18, 2), 16, "queue size defaults to the maximum");
    assert_eq!(
        r(&mut d, DEVICE_CFG_OFFSET + 2, 1),
        0x42,
        "device config comes from the backend's, cached"
    );
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_eq!(status & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    let acts = rec.activations.lock().unwrap().clone();
    assert_eq!(
        acts,
        [(
            crate::virtio::COMMON_FEATURES,
            vec![Some(QueueSetup {
                size: 16,
                desc: 0x1000,
                avail: 0x2000,
                used: 0x3000
            })]
        )]
    );
    let msgs = rec.messages.lock().unwrap().clone();
    assert!(msgs.contains(&(
        1,
        MsiMessage {
            address: 0xfee0_0000,
            data: 0x41
        }
    )));
    // The queue's call fd goes straight to its vector.
    assert_eq!(rec.connected(1), [rec.call(0)]);

    // A notify that trapped (no ioeventfd) still reaches the backend's kick fd.
    w(&mut d, NOTIFY_OFFSET, &0u16.to_le_bytes());
    assert_eq!(d.kicks[0].read().unwrap(), 1);

    // Reset: the status stays non-zero until the control side has stopped the rings.
    w(&mut d, 0x14, &[0]);
    assert_eq!(rec.resets.load(Ordering::SeqCst), 1);
    assert!(rec.connected(1).is_empty(), "call fd disconnected at reset");
    assert_ne!(r(&mut d, 0x14, 1), 0, "still resetting");
    w(&mut d, 0x14, &[ACK_DRIVER]);
    assert_eq!(
        rec.resets.load(Ordering::SeqCst),
        1,
        "writes during a reset ignored"
    );
    rec.state().reset_done();
    assert_eq!(r(&mut d, 0x14, 1), 0);
    assert_eq!(r(&mut d, 0x1a, 2), u64::from(common::NO_VECTOR));
    // After reset the device comes up again.
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    assert_eq!(rec.activations(), 2);
}

#[test]
fn driver_ok_toggled_without_a_reset_does_not_start_a_second_backend() {
    let (mut d, rec) = device();
    enable(&mut d);
    bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    for _ in 0..100 {
        w(&mut d, 0x14, &[ACK_DRIVER | STATUS_FEATURES_OK]);
        w(
            &mut d,
            0x14,
            &[ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
        );
    }
    assert_eq!(rec.activations(), 1);
    assert_eq!(rec.connected(1).len(), 1);
}

#[test]
fn a_reset_of_a_device_never_started_completes_at_once() {
    let (mut d, rec) = device();
    d.write_config(1, 0, &[0x02, 0]);
    w(&mut d, 0x14, &[ACK_DRIVER]);
    w(&mut d, 0x14, &[0]);
    assert_eq!(r(&mut d, 0x14, 1), 0);
    assert_eq!(rec.resets.load(Ordering::SeqCst), 0, "nothing to stop");
}

#[test]
fn a_failed_backend_shows_needs_reset_and_a_config_interrupt() {
    let (mut d, rec) = device();
    enable(&mut d);
    // Configuration changes on vector 0.
    w(&mut d, 0x10, &0u16.to_le_bytes());
    bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    rec.state().fail();
    assert_ne!(r(&mut d, 0x14, 1) as u8 & STATUS_DEVICE_NEEDS_RESET, 0);
    assert!(rec.triggers.lock().unwrap().contains(&0));
    // A reset clears it.
    w(&mut d, 0x14, &[0]);
    rec.state().reset_done();
    assert_eq!(r(&mut d, 0x14, 1), 0);
}

#[test]
fn masking_disconnects_the_call_fd_and_unmasking_reconnects_it() {
    let (mut d, rec) = device();
    enable(&mut d);
    bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    let call = rec.call(0);
    // Mask vector 1: its irqfd goes, so a signal waits in the call fd.
    w(&mut d, MSIX_TABLE_OFFSET + 16 + 12, &1u32.to_le_bytes());
    assert!(rec.connected(1).is_empty());
    d.calls[0].write(1).unwrap();
    // Unmask: connected again, and (with KVM) the pending signal is delivered at once.
    w(&mut d, MSIX_TABLE_OFFSET + 16 + 12, &0u32.to_le_bytes());
    assert_eq!(rec.connected(1), [call]);
    assert_eq!(d.calls[0].read().unwrap(), 1, "the signal waited in the fd");
    // The function mask works the same.
    let mut at = (d.read_config(0x34 / 4) & 0xff) as usize;
    while d.read_config(at / 4) & 0xff != 0x11 {
        at = ((d.read_config(at / 4) >> 8) & 0xff) as usize;
    }
    d.write_config(at / 4, 3, &[0xc0]);
    assert!(rec.connected(1).is_empty());
    d.write_config(at / 4, 3, &[0x80]);
    assert_eq!(rec.connected(1), [call]);
    // MSI-X off: the VMM watches the call fd and raises INTx instead.
    d.write_config(at / 4, 3, &[0x00]);
    assert!(rec.connected(1).is_empty());
    assert_eq!(rec.watched.lock().unwrap().len(), 1);
}

#[test]
fn device_config_writes_go_to_the_backend_and_the_cache() {
    let (mut d, rec) = device();
    d.write_config(1, 0, &[0x02, 0]);
    w(&mut d, DEVICE_CFG_OFFSET + 4, &[9, 9]);
    assert_eq!(r(&mut d, DEVICE_CFG_OFFSET + 4, 2), 0x0909);
    assert_eq!(*rec.config_writes.lock().unwrap(), [(4, vec![9, 9])]);
    // Past the end: nothing cached, reads zero.
    w(&mut d, DEVICE_CFG_OFFSET + 0xffe, &[1, 2]);
    assert_eq!(r(&mut d, DEVICE_CFG_OFFSET + 0xffe, 2), 0);
}

#[test]
fn notifications_follow_a_moved_bar_but_not_a_sizing_probe() {
    let (mut d, rec) = device();
    let bar_reg = 4; // BAR 0 at config offset 0x10
                     // Sizing: all ones into each half, then the old value back.
    for (reg, v) in [
        (bar_reg, u32::MAX),
        (bar_reg + 1, u32::MAX),
        (bar_reg, BAR_ADDR as u32 | 4),
        (bar_reg + 1, (BAR_ADDR >> 32) as u32),
    ] {
        d.write_config(reg, 0, &v.to_le_bytes());
    }
    assert!(rec.moves.lock().unwrap().is_empty(), "a probe is no move");
    // A real move (high half only, as Linux reassigns within the window).
    d.write_config(bar_reg + 1, 0, &2u32.to_le_bytes());
    let new = 0x2_0000_0000 + NOTIFY_OFFSET;
    assert_eq!(
        *rec.moves.lock().unwrap(),
        [(BAR_ADDR + NOTIFY_OFFSET, new)]
    );
    assert_eq!(d.ioevents()[0].0, new);
}

#[test]
fn features_without_version_1_or_unoffered_are_refused() {
    let (mut d, rec) = device();
    enable(&mut d);
    let status = bring_up(&mut d, 1 << VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(status & STATUS_FEATURES_OK, 0, "legacy drivers are refused");
    w(&mut d, 0x14, &[0]);
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES | 1 << 5);
    assert_eq!(status & STATUS_FEATURES_OK, 0, "a feature never offered");
    assert_eq!(rec.activations(), 0);
}

#[test]
fn rings_outside_guest_memory_need_reset_instead_of_activating() {
    let (mut d, rec) = device();
    enable(&mut d);
    w(&mut d, 0x14, &[ACK_DRIVER]);
    w(
        &mut d,
        0x0c,
        &(crate::virtio::COMMON_FEATURES as u32).to_le_bytes(),
    );
    w(&mut d, 0x08, &1u32.to_le_bytes());
    w(
        &mut d,
        0x0c,
        &((crate::virtio::COMMON_FEATURES >> 32) as u32).to_le_bytes(),
    );
    w(&mut d, 0x14, &[ACK_DRIVER | STATUS_FEATURES_OK]);
    w(&mut d, 0x20, &u64::MAX.to_le_bytes());
    w(&mut d, 0x28, &0x2000u64.to_le_bytes());
    w(&mut d, 0x30, &0x3000u64.to_le_bytes());
    w(&mut d, 0x1c, &1u16.to_le_bytes());
    w(
        &mut d,
        0x14,
        &[ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
    );
    assert_ne!(r(&mut d, 0x14, 1) as u8 & STATUS_DEVICE_NEEDS_RESET, 0);
    assert_eq!(rec.activations(), 0);
    // The config-change interrupt told the driver (config vector 0 is unassigned: none).
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 2);
}

#[test]
fn hostile_bar_accesses_are_harmless() {
    let (mut d, _) = device();
    enable(&mut d);
    w(&mut d, NOTIFY_OFFSET + 4 * 9, &[1, 0]);
    w(&mut d, 0x14, &[1, 2, 3]);
    w(&mut d, ISR_OFFSET, &[0xff]);
    w(&mut d, BAR_SIZE - 1, &[0xff]);
    w(&mut d, MSIX_TABLE_OFFSET + 3, &[0xff; 3]);
    assert_eq!(r(&mut d, 0x14, 1), 0, "status unchanged");
    assert_eq!(r(&mut d, ISR_OFFSET, 4), 0, "a wide ISR read gets nothing");
    assert_eq!(r(&mut d, 0x38, 2), 0);
    // Past the BAR nothing decodes; BAR 1 does not exist.
    assert_eq!(d.decode(BAR_ADDR + BAR_SIZE), None);
    let mut b = [0u8; 4];
    d.read_bar(1, 0, &mut b);
    d.write_bar(1, 0, &b);
}

#[test]
fn the_pci_cfg_window_reaches_the_bar() {
    let (mut d, _) = device();
    let (_, at, _, _) = virtio_caps(&mut d)
        .into_iter()
        .find(|c| c.0 == CAP_PCI_CFG)
        .unwrap();
    // bar 0, offset of num_queues, 2 bytes; then read the data window.
    d.write_config(at / 4 + 1, 0, &[0]);
    d.write_config(at / 4 + 2, 0, &0x12u32.to_le_bytes());
    d.write_config(at / 4 + 3, 0, &2u32.to_le_bytes());
    assert_eq!(d.read_config(at / 4 + 4), 1);
    // A window past the BAR reads as the plain register (zero), never out of bounds.
    d.write_config(at / 4 + 2, 0, &(BAR_SIZE as u32).to_le_bytes());
    assert_eq!(d.read_config(at / 4 + 4), 0);
}

#[test]
fn without_msix_call_signals_raise_intx_until_the_isr_is_read() {
    let (mut d, rec) = device();
    assert_eq!(d.read_config(0x3c / 4) >> 8 & 0xff, 1, "interrupt pin A");
    d.write_config(1, 0, &[0x06, 0]);
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    let watched = rec.watched.lock().unwrap().clone();
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].0, rec.call(0));
    assert!(rec.connected(1).is_empty(), "no MSI-X vector");
    // The VMM saw the backend signal its call fd.
    (watched[0].1)();
    assert_eq!(rec.intx.lock().unwrap().last(), Some(&true));
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 1);
    assert_eq!(
        rec.intx.lock().unwrap().last(),
        Some(&false),
        "the ISR read lowered the line"
    );
    // A reset stops the watching.
    w(&mut d, 0x14, &[0]);
    assert!(rec.watched.lock().unwrap().is_empty());
}
