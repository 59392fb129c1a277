//! `virtio_pci`: the virtio-pci transport as a hostile driver sees it: configuration space
//! (capabilities, BAR sizing and moves, MSI-X control), the BAR (common configuration, ISR,
//! notifications, device configuration, MSI-X table and PBA) in any order and width, and the
//! control side answering late, failing or changing the configuration between accesses.
//! The fakes check the transport's promises to the VMM: an irqfd is never connected twice
//! nor disconnected when it was not connected, and queues handed over lie in guest memory.
//!
//! Input: the device's shape ([`Shape`]: type, queues and their sizes, features, configuration
//! length), then a sequence of operations ([`run`]).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use devices::pci::{IntxLine, MsiMessage, MsiVector, PciDevice};
use devices::virtio::frontend::QueueSetup;
use devices::virtio::pci::{
    ControlState, DeviceControl, DeviceInfo, TransportParts, VirtioPci, Wiring,
};
use vmm_sys_util::eventfd::EventFd;

use crate::util::{memory, Fields, GuestMemory, Writer};

pub const BAR_ADDR: u64 = 0x1_0000_0000;
pub const MEM_SIZE: usize = 1 << 20;

type OnSignal = Arc<dyn Fn() + Send + Sync>;

/// What the VMM side saw; shared by the fakes.
#[derive(Default)]
pub struct Seen {
    state: Mutex<Option<Arc<ControlState>>>,
    connected: Mutex<HashMap<usize, Vec<RawFd>>>,
    watched: Mutex<Vec<(RawFd, OnSignal)>>,
    /// Resets asked for and not yet completed.
    resets: Mutex<u32>,
    calls: Mutex<Vec<EventFd>>,
    mem: Mutex<Option<GuestMemory>>,
}

struct Control(Arc<Seen>);

impl DeviceControl for Control {
    fn activate(&self, _features: u64, queues: Vec<Option<QueueSetup>>) {
        let mem = self.0.mem.lock().unwrap();
        let mem = mem.as_ref().unwrap();
        for q in queues.into_iter().flatten() {
            assert!(
                devices::virtio::rings_in_memory(mem, q.size, q.desc, q.avail, q.used),
                "activated with rings outside guest memory: {q:?}"
            );
        }
    }
    fn reset(&self) {
        *self.0.resets.lock().unwrap() += 1;
    }
    fn write_config(&self, _offset: u32, _data: Vec<u8>) {}
}

struct Vector(usize, Arc<Seen>);

impl MsiVector for Vector {
    fn set_message(&self, _msg: MsiMessage) {}
    fn trigger(&self) {}
    fn connect(&self, fd: &EventFd) {
        let mut c = self.1.connected.lock().unwrap();
        let fds = c.entry(self.0).or_default();
        assert!(!fds.contains(&fd.as_raw_fd()), "irqfd connected twice");
        fds.push(fd.as_raw_fd());
    }
    fn disconnect(&self, fd: &EventFd) {
        let mut c = self.1.connected.lock().unwrap();
        let fds = c.entry(self.0).or_default();
        let before = fds.len();
        fds.retain(|f| *f != fd.as_raw_fd());
        assert_eq!(
            fds.len() + 1,
            before,
            "disconnected an irqfd that was not connected"
        );
    }
}

struct Line;

impl IntxLine for Line {
    fn set_level(&self, _high: bool) {}
}

struct FakeWiring(Arc<Seen>);

impl Wiring for FakeWiring {
    fn watch_call(&self, fd: &EventFd, on_signal: Box<dyn Fn() + Send + Sync>) {
        let mut w = self.0.watched.lock().unwrap();
        assert!(
            w.iter().all(|(f, _)| *f != fd.as_raw_fd()),
            "call fd watched twice"
        );
        w.push((fd.as_raw_fd(), Arc::from(on_signal)));
    }
    fn unwatch_call(&self, fd: &EventFd) {
        self.0
            .watched
            .lock()
            .unwrap()
            .retain(|(f, _)| *f != fd.as_raw_fd());
    }
    fn move_notify(&self, _fd: &EventFd, _old: u64, _new: u64) {}
}

/// A device as the bytes describe it: type, queue count (1 to 8) and each queue's size,
/// offered features, configuration length.
pub struct Shape {
    device_type: u8,
    queue_sizes: Vec<u16>,
    features: u64,
    config_len: u8,
}

impl Shape {
    pub fn read(f: &mut Fields<'_>) -> Option<Shape> {
        let device_type = f.u8()?;
        let n = 1 + f.u8()? % 8;
        let queue_sizes = (0..n).map(|_| f.u16()).collect::<Option<Vec<u16>>>()?;
        Some(Shape {
            device_type,
            queue_sizes,
            features: f.u64()?,
            config_len: f.u8()?,
        })
    }

    pub fn write(
        w: &mut Writer,
        device_type: u8,
        queue_sizes: &[u16],
        features: u64,
        config_len: u8,
    ) {
        w.u8(device_type).u8(queue_sizes.len() as u8 - 1);
        for &q in queue_sizes {
            w.u16(q);
        }
        w.u64(features).u8(config_len);
    }
}

/// The transport over `shape`, with fakes on every side.
pub fn transport(shape: Shape) -> Option<(VirtioPci, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let mem = memory(MEM_SIZE);
    *seen.mem.lock().unwrap() = Some(mem.clone());
    let queues = shape.queue_sizes;
    let vectors: Vec<Arc<dyn MsiVector>> = (0..=queues.len())
        .map(|i| Arc::new(Vector(i, seen.clone())) as Arc<dyn MsiVector>)
        .collect();
    let info = DeviceInfo {
        device_type: u32::from(shape.device_type),
        queue_sizes: queues,
        features: shape.features | devices::virtio::COMMON_FEATURES,
        config: (0..shape.config_len).collect(),
    };
    let parts = TransportParts {
        mem,
        bar_addr: BAR_ADDR,
        vectors,
        intx: Some(Arc::new(Line)),
        wiring: Arc::new(FakeWiring(seen.clone())),
    };
    let s = seen.clone();
    let d = VirtioPci::new("fuzz".into(), info, parts, move |state, _kicks, calls| {
        *s.state.lock().unwrap() = Some(state);
        *s.calls.lock().unwrap() = calls.iter().map(|c| c.try_clone().unwrap()).collect();
        Ok(Box::new(Control(s.clone())))
    })
    .ok()?;
    Some((d, seen))
}

/// What the VMM and the backend do between two guest accesses.
pub enum Event {
    /// The control side finishes a reset it was asked for.
    ResetDone,
    /// The backend failed.
    Fail,
    /// The backend's configuration changed.
    Config(Vec<u8>),
    /// The backend signals queue `n`'s call fd (an interrupt).
    Call(u8),
}

/// Event codes: one byte, then for `CONFIG` a length byte and the bytes, for `CALL` the queue.
pub const RESET_DONE: u8 = 0;
pub const FAIL: u8 = 1;
pub const CONFIG: u8 = 2;
pub const CALL: u8 = 3;

impl Event {
    pub fn read(f: &mut Fields<'_>) -> Option<Event> {
        Some(match f.u8()? % 4 {
            RESET_DONE => Event::ResetDone,
            FAIL => Event::Fail,
            CONFIG => {
                let n = usize::from(f.u8()?);
                Event::Config(f.take(n)?.to_vec())
            }
            _ => Event::Call(f.u8()?),
        })
    }
}

impl Seen {
    /// Drops what the fakes hold of the transport (its interrupt closures hold the fakes in
    /// turn: a cycle that would leak every run).
    pub fn clear(&self) {
        self.watched.lock().unwrap().clear();
        self.state.lock().unwrap().take();
        self.calls.lock().unwrap().clear();
    }

    pub fn apply(&self, e: Event) {
        let Some(state) = self.state.lock().unwrap().clone() else {
            return;
        };
        match e {
            Event::ResetDone => {
                let mut r = self.resets.lock().unwrap();
                if *r > 0 {
                    *r -= 1;
                    state.reset_done();
                }
            }
            Event::Fail => state.fail(),
            Event::Config(c) => state.set_config(c.into_iter().take(256).collect()),
            Event::Call(n) => {
                let calls = self.calls.lock().unwrap();
                if let Some(fd) = calls.get(usize::from(n) % calls.len().max(1)) {
                    let _ = fd.write(1);
                    let raw = fd.as_raw_fd();
                    let watched: Vec<OnSignal> = self
                        .watched
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(f, _)| *f == raw)
                        .map(|(_, s)| s.clone())
                        .collect();
                    for s in watched {
                        s();
                    }
                }
            }
        }
    }
}

/// Operation codes (the first byte of each, modulo their number). Configuration accesses
/// take a register (`u16`); a write adds a byte offset in it and the data. BAR accesses take
/// an offset (`u16`) and the data (a read uses only its length). An event is as [`Event`].
pub const READ_CONFIG: u8 = 0;
pub const WRITE_CONFIG: u8 = 1;
pub const READ_BAR: u8 = 2;
pub const WRITE_BAR: u8 = 3;
pub const EVENT: u8 = 4;
const OPS: u8 = 5;

/// Input: the device's [`Shape`], then operations.
pub fn run(data: &[u8]) {
    let mut f = Fields(data);
    let Some(shape) = Shape::read(&mut f) else {
        return;
    };
    let Some((mut d, seen)) = transport(shape) else {
        return;
    };
    while !f.is_empty() {
        if step(&mut f, &mut d, &seen).is_none() {
            break;
        }
    }
    seen.clear();
}

fn step(f: &mut Fields<'_>, d: &mut VirtioPci, seen: &Seen) -> Option<()> {
    let mut buf = [0u8; 8];
    match f.u8()? % OPS {
        READ_CONFIG => {
            d.read_config(usize::from(f.u16()? % 1024));
        }
        WRITE_CONFIG => {
            let reg = usize::from(f.u16()? % 1024);
            let offset = usize::from(f.u8()?);
            let data = f.data()?;
            // What the root hands over: 1, 2 or 4 bytes, not straddling the dword.
            let len = match data.len() {
                0 => return Some(()),
                1 => 1,
                2 | 3 => 2,
                _ => 4,
            };
            d.write_config(reg, offset % 4 / len * len, &data[..len]);
        }
        op @ (READ_BAR | WRITE_BAR) => {
            let offset = u64::from(f.u16()?);
            let data = f.data()?;
            if let Some((bar, off)) = d.decode(BAR_ADDR + offset) {
                if op == WRITE_BAR {
                    d.write_bar(bar, off, data);
                } else {
                    d.read_bar(bar, off, &mut buf[..data.len()]);
                }
            }
        }
        _ => seen.apply(Event::read(f)?),
    }
    Some(())
}
