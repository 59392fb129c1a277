//! The vhost-user frontend: what the VMM says to a device backend, berth's own or anyone
//! else's (virtiofsd, qemu-storage-daemon). Synchronous: the VMM calls it from a device's
//! control thread, never from a vCPU, and every request has a deadline, so a hung backend is a
//! device failure, not a frozen guest.

mod deadline;

use std::io;
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub use deadline::set_thread_start;
use deadline::Deadline;

use thiserror::Error;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend as Connection, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::GuestMemory;

/// One queue as the driver set it up (guest physical addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSetup {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("{op}: {source}")]
    Request {
        op: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the backend does not offer {0}")]
    Missing(&'static str),
    #[error("the backend serves {have} queues, the device needs {need}")]
    TooFewQueues { have: u64, need: usize },
    #[error("queue {0}: its rings are not inside guest memory")]
    Rings(usize),
    #[error("guest memory region: {0}")]
    Memory(String),
    #[error("{op}: no answer from the backend within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("the socket: {0}")]
    Socket(#[source] io::Error),
}

pub type Result<T> = std::result::Result<T, FrontendError>;

/// What berth asks of a backend's protocol; `CONFIG` and `MQ` are used when offered.
fn wanted_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// A connected vhost-user frontend for one device.
pub struct Frontend {
    conn: Connection,
    deadline: Deadline,
    /// Virtio features the backend offers (without the vhost-user PROTOCOL_FEATURES bit).
    features: u64,
    protocol: VhostUserProtocolFeatures,
    /// The backend offered PROTOCOL_FEATURES (then rings start disabled and are enabled).
    protocol_bit: bool,
    queues: usize,
    started: Vec<bool>,
}

impl Frontend {
    /// Takes over `stream`, connected to a backend, for a device with `queues` queues; every
    /// request then waits at most `timeout`. Negotiates ownership and protocol features.
    pub fn new(stream: UnixStream, queues: usize, timeout: Duration) -> Result<Self> {
        // Socket timeouts would not do: the vhost crate retries EAGAIN for ever. A watchdog
        // shuts the socket down instead, which fails the request in progress.
        let watched = stream.try_clone().map_err(FrontendError::Socket)?;
        let deadline = Deadline::new(watched, timeout).map_err(FrontendError::Socket)?;
        let mut fe = Frontend {
            conn: Connection::from_stream(stream, queues as u64),
            deadline,
            features: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            protocol_bit: false,
            queues,
            started: vec![false; queues],
        };
        fe.req("SET_OWNER", |c| c.set_owner())?;
        let offered = fe.req("GET_FEATURES", |c| c.get_features())?;
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        fe.features = offered & !proto_bit;
        fe.protocol_bit = offered & proto_bit != 0;
        if fe.protocol_bit {
            let theirs = fe.req("GET_PROTOCOL_FEATURES", |c| c.get_protocol_features())?;
            let protocol = theirs & wanted_protocol();
            fe.req("SET_PROTOCOL_FEATURES", |c| {
                c.set_protocol_features(protocol)
            })?;
            fe.protocol = protocol;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every request is acknowledged: a backend's refusal shows where it happens.
                fe.conn.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        if fe.has(VhostUserProtocolFeatures::MQ) {
            let have = fe.req("GET_QUEUE_NUM", |c| c.get_queue_num())?;
            if have < queues as u64 {
                return Err(FrontendError::TooFewQueues { have, need: queues });
            }
        }
        Ok(fe)
    }

    /// One request, under the deadline.
    fn req<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> vhost::Result<T>,
    ) -> Result<T> {
        let conn = &mut self.conn;
        let (r, late) = self.deadline.run(|| f(conn));
        match r {
            Ok(v) => Ok(v),
            Err(_) if late => Err(FrontendError::Timeout {
                op,
                after: self.deadline.timeout(),
            }),
            Err(source) => Err(FrontendError::Request { op, source }),
        }
    }

    /// The virtio features the backend offers.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The negotiated protocol features.
    pub fn protocol(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    fn has(&self, f: VhostUserProtocolFeatures) -> bool {
        self.protocol.contains(f)
    }

    /// Reads `len` bytes of the device configuration space; without the CONFIG protocol
    /// feature the space is `None` (the caller supplies it).
    pub fn config(&mut self, len: usize) -> Result<Option<Vec<u8>>> {
        if len == 0 || !self.has(VhostUserProtocolFeatures::CONFIG) {
            return Ok(None);
        }
        let buf = vec![0u8; len];
        let (_, data) = self.req("GET_CONFIG", |c| {
            c.get_config(0, len as u32, VhostUserConfigFlags::WRITABLE, &buf)
        })?;
        Ok(Some(data))
    }

    /// Writes the device configuration space at `offset`.
    pub fn set_config(&mut self, offset: u32, data: &[u8]) -> Result<()> {
        if !self.has(VhostUserProtocolFeatures::CONFIG) {
            return Err(FrontendError::Missing("configuration writes (CONFIG)"));
        }
        self.req("SET_CONFIG", |c| {
            c.set_config(offset, VhostUserConfigFlags::WRITABLE, data)
        })
    }

    /// Shares guest memory: every region must be file-backed (the memfd or tmpfs file).
    pub fn set_mem_table(&mut self, mem: &GuestMemory) -> Result<()> {
        let regions = mem
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r)
                    .map_err(|e| FrontendError::Memory(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.req("SET_MEM_TABLE", |c| c.set_mem_table(&regions))
            .map(|_| ())
    }

    /// Starts the device for a driver that accepted `features`: queue `i` runs when
    /// `queues[i]` is set, notified through `kicks[i]` and interrupting through `calls[i]`.
    /// The rings were checked to lie in guest memory; they are translated to this process's
    /// addresses, as the protocol wants.
    pub fn start(
        &mut self,
        features: u64,
        mem: &GuestMemory,
        queues: &[Option<QueueSetup>],
        kicks: &[EventFd],
        calls: &[EventFd],
    ) -> Result<()> {
        let mut acked = features & self.features;
        if self.protocol_bit {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.req("SET_FEATURES", |c| c.set_features(acked))?;
        for (i, q) in queues.iter().enumerate().take(self.queues) {
            let Some(q) = q else { continue };
            let host = |gpa: u64, len: usize| {
                host_address(mem, gpa, len as u64).ok_or(FrontendError::Rings(i))
            };
            let n = usize::from(q.size);
            let config = VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: host(q.desc, 16 * n)?,
                used_ring_addr: host(q.used, 6 + 8 * n)?,
                avail_ring_addr: host(q.avail, 6 + 2 * n)?,
                log_addr: None,
            };
            self.req("SET_VRING_NUM", |c| c.set_vring_num(i, q.size))?;
            self.req("SET_VRING_ADDR", |c| c.set_vring_addr(i, &config))?;
            self.req("SET_VRING_BASE", |c| c.set_vring_base(i, 0))?;
            self.req("SET_VRING_CALL", |c| c.set_vring_call(i, &calls[i]))?;
            self.req("SET_VRING_KICK", |c| c.set_vring_kick(i, &kicks[i]))?;
            if self.protocol_bit {
                self.req("SET_VRING_ENABLE", |c| c.set_vring_enable(i, true))?;
            }
            self.started[i] = true;
        }
        Ok(())
    }

    /// Stops every started queue (GET_VRING_BASE: the backend has finished with the ring when
    /// it answers) and resets the device where the backend supports it.
    pub fn stop(&mut self) -> Result<()> {
        for i in 0..self.queues {
            if std::mem::take(&mut self.started[i]) {
                self.req("GET_VRING_BASE", |c| c.get_vring_base(i))?;
            }
        }
        if self.has(VhostUserProtocolFeatures::RESET_DEVICE) {
            self.req("RESET_DEVICE", |c| c.reset_device())?;
        }
        Ok(())
    }

    /// Whether any queue runs.
    pub fn running(&self) -> bool {
        self.started.iter().any(|s| *s)
    }
}

/// This process's address of `len` bytes of guest memory at `gpa`, all inside one region
/// (the protocol names rings by frontend address).
fn host_address(mem: &GuestMemory, gpa: u64, len: u64) -> Option<u64> {
    let region = mem.find_region(GuestAddress(gpa))?;
    let offset = gpa - region.start_addr().0;
    if offset.checked_add(len)? > region.len() {
        return None;
    }
    let base = region
        .get_host_address(vm_memory::MemoryRegionAddress(offset))
        .ok()?;
    Some(base as u64)
}
