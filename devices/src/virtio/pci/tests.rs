//! The transport driven the way Linux's virtio_pci_modern driver drives it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestAddress;

use super::common::{STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use super::*;
use crate::pci::{IntxLine, MsiMessage, MsiVector, PciDevice};
use crate::virtio::{ActivateError, VirtioWorker};

const BAR_ADDR: u64 = 0x1_0000_0000;
const ACK_DRIVER: u8 = 1 | 2;

#[derive(Default)]
struct Record {
    activations: AtomicUsize,
    resets: AtomicUsize,
    triggers: Mutex<Vec<usize>>,
    intx: Mutex<Vec<bool>>,
    messages: Mutex<Vec<(usize, MsiMessage)>>,
}

/// One queue; its worker answers each kick with a used-buffer interrupt.
struct FakeDevice(Arc<Record>);

struct FakeWorker(Activation);

impl VirtioWorker for FakeWorker {
    fn run(self: Box<Self>, stop: EventFd) {
        let mut el = crate::virtio::worker::EventLoop::new().unwrap();
        el.add(&self.0.kicks[0], 0).unwrap();
        el.add(&stop, 1).unwrap();
        loop {
            for t in el.wait().unwrap() {
                if t == 1 {
                    return;
                }
                let _ = self.0.kicks[0].read();
                self.0.interrupt.signal_used(0);
            }
        }
    }
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        crate::virtio::COMMON_FEATURES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(offset as u8 + 0x40);
    }
    fn activate(&mut self, act: Activation) -> Result<Box<dyn VirtioWorker>, ActivateError> {
        self.0.activations.fetch_add(1, Ordering::SeqCst);
        assert!(act.queues[0].ready());
        Ok(Box::new(FakeWorker(act)))
    }
    fn reset(&mut self) {
        self.0.resets.fetch_add(1, Ordering::SeqCst);
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
}

struct Line(Arc<Record>);

impl IntxLine for Line {
    fn set_level(&self, high: bool) {
        self.0.intx.lock().unwrap().push(high);
    }
}

struct Threads;

struct Joined(std::thread::JoinHandle<()>);

impl Running for Joined {
    fn join(self: Box<Self>) {
        self.0.join().unwrap();
    }
}

impl Spawner for Threads {
    fn spawn(
        &self,
        name: String,
        worker: Box<dyn VirtioWorker>,
        stop: EventFd,
    ) -> std::io::Result<Box<dyn Running>> {
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run(stop))?;
        Ok(Box::new(Joined(t)))
    }
}

fn device() -> (VirtioPci, Arc<Record>) {
    let rec = Arc::new(Record::default());
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let vectors: Vec<Arc<dyn MsiVector>> = (0..2)
        .map(|i| Arc::new(Vector(i, rec.clone())) as Arc<dyn MsiVector>)
        .collect();
    let d = VirtioPci::new(
        "test".into(),
        Box::new(FakeDevice(rec.clone())),
        mem,
        BAR_ADDR,
        vectors,
        Some(Arc::new(Line(rec.clone()))),
        Arc::new(Threads),
    )
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

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
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
fn negotiation_activation_kick_interrupt_and_reset() {
    let (mut d, rec) = device();
    enable(&mut d);
    assert_eq!(r(&mut d, 0x12, 2), 1, "num_queues");
    assert_eq!(r(&mut d, 0x18, 2), 16, "queue size defaults to the maximum");
    assert_eq!(
        r(&mut d, DEVICE_CFG_OFFSET + 2, 1),
        0x42,
        "device config reaches the device"
    );
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_eq!(status & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    assert_eq!(rec.activations.load(Ordering::SeqCst), 1);
    let msgs = rec.messages.lock().unwrap().clone();
    assert!(msgs.contains(&(
        1,
        MsiMessage {
            address: 0xfee0_0000,
            data: 0x41
        }
    )));

    // A notify that trapped (no ioeventfd) still reaches the worker, whose interrupt
    // goes out on the queue's vector.
    w(&mut d, NOTIFY_OFFSET, &0u16.to_le_bytes());
    assert!(wait_for(|| rec.triggers.lock().unwrap().contains(&1)));
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 1, "ISR says queue interrupt");
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 0, "and reading cleared it");

    w(&mut d, 0x14, &[0]);
    assert_eq!(r(&mut d, 0x14, 1), 0);
    assert_eq!(rec.resets.load(Ordering::SeqCst), 1);
    assert_eq!(r(&mut d, 0x1a, 2), u64::from(common::NO_VECTOR));
    // After reset the device comes up again.
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    assert_eq!(rec.activations.load(Ordering::SeqCst), 2);
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
    assert_eq!(rec.activations.load(Ordering::SeqCst), 0);
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
    assert_eq!(rec.activations.load(Ordering::SeqCst), 0);
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
fn without_msix_interrupts_use_intx_until_the_isr_is_read() {
    let (mut d, rec) = device();
    assert_eq!(d.read_config(0x3c / 4) >> 8 & 0xff, 1, "interrupt pin A");
    d.write_config(1, 0, &[0x06, 0]);
    let status = bring_up(&mut d, crate::virtio::COMMON_FEATURES);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    w(&mut d, NOTIFY_OFFSET, &0u16.to_le_bytes());
    assert!(wait_for(|| rec.intx.lock().unwrap().contains(&true)));
    assert!(
        rec.triggers.lock().unwrap().is_empty(),
        "no MSI-X vector fired"
    );
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 1);
    assert_eq!(
        rec.intx.lock().unwrap().last(),
        Some(&false),
        "the ISR read lowered the line"
    );
}
