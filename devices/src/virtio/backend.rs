//! Every berth virtio device is a vhost-user backend (rust-vmm `vhost-user-backend`). A device
//! implements the small [`VirtioBackend`] trait: its queues, features and configuration, and
//! what to do when a queue is kicked. [`Backend`] adapts it to `VhostUserBackend`, and
//! [`serve`] runs it on one accepted connection, wherever the VMM placed it (a jailed child
//! process, a thread, or a standalone daemon): the device code is the same in all three.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex, OnceLock};

use thiserror::Error;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{
    VhostUserBackend, VhostUserDaemon, VringEpollHandler, VringMutex, VringT,
};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::queue_util::{self, Chain, Served};
use super::GuestMemory;
use crate::log_limited;
pub use sandbox::seccomp::Allow;

/// Guest memory as the backend framework hands it over (replaced on SET_MEM_TABLE).
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
/// One queue's state inside the framework.
pub type Vring = VringMutex<Mem>;

/// Chains served per lock of a vring: between batches a frontend's GET_VRING_BASE can stop
/// the ring, so a guest that keeps the queue full cannot hold a reset off.
const BATCH: usize = 64;

/// Tokens below this are the framework's (queues and its exit event).
pub const FIRST_DEVICE_TOKEN: u64 = 64;

/// The protocol features every berth backend offers.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// A virtio device's data path, as a vhost-user backend serves it. The device knows nothing
/// of sockets, threads or processes: it gets its queues through [`Queues`].
pub trait VirtioBackend: Send + Sync + 'static {
    /// For logs and thread names, e.g. "virtio-blk".
    fn name(&self) -> &str;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_sizes(&self) -> &[u16];
    /// Virtio feature bits offered to the driver ([`super::COMMON_FEATURES`] included).
    fn features(&self) -> u64;
    /// The device configuration space.
    fn config(&self) -> Vec<u8>;
    /// Queue `index` was notified (or started).
    fn kicked(&self, index: u16, queues: &Queues<'_>);
    /// An fd the device watches ([`Queues::watch`]) is readable.
    fn event(&self, token: u64, queues: &Queues<'_>) {
        let _ = (token, queues);
    }
    /// The connection is up and queues are about to start: watch the device's own fds.
    fn started(&self, queues: &Queues<'_>) {
        let _ = queues;
    }
    /// The driver reset the device: forget per-driver state.
    fn reset(&self) {}
    /// The system calls the device's own work needs, beyond [`FRAMEWORK_SYSCALLS`]: its
    /// seccomp allow-list is both (docs/sandboxing.md says why each is there).
    fn syscalls(&self) -> &'static [Allow] {
        &[]
    }
}

/// What every backend's process needs once it serves (the vhost-user framework, the queues,
/// logging): its seccomp allow-list without the device's own calls. docs/sandboxing.md says
/// why each call is there.
pub const FRAMEWORK_SYSCALLS: &[Allow] = &[
    // vhost-user messages and their fds; eventfd reads and writes; log lines to stderr.
    Allow::Call(libc::SYS_read),
    Allow::Call(libc::SYS_write),
    Allow::Call(libc::SYS_recvmsg),
    Allow::Call(libc::SYS_sendmsg),
    Allow::Call(libc::SYS_close),
    // Fds received with messages are set close-on-exec; EventFds are duplicated.
    Allow::Call(libc::SYS_fcntl),
    // The event loops of the request handler and the queue worker.
    Allow::Call(libc::SYS_epoll_ctl),
    #[cfg(target_arch = "x86_64")]
    Allow::Call(libc::SYS_epoll_wait),
    Allow::Call(libc::SYS_epoll_pwait),
    // SET_MEM_TABLE maps guest RAM; the allocator maps and returns memory.
    Allow::Call(libc::SYS_mmap),
    Allow::Call(libc::SYS_munmap),
    Allow::Call(libc::SYS_mprotect),
    Allow::Call(libc::SYS_madvise),
    Allow::Call(libc::SYS_brk),
    // Locks between the two threads (vrings, the backend's state).
    Allow::Call(libc::SYS_futex),
    // A thread's first calls (glibc's start_thread, with every signal still blocked, so a
    // trap there would kill without a report): the filter may land while the request
    // handler's thread is still starting. Rust then names the thread.
    Allow::Call(libc::SYS_set_robust_list),
    Allow::Call(libc::SYS_rseq),
    Allow::Call(libc::SYS_gettid),
    Allow::CallWithArg0(libc::SYS_prctl, libc::PR_SET_NAME as u64),
    Allow::Call(libc::SYS_rt_sigprocmask),
    // glibc's malloc sizes its arenas by the CPUs a thread may run on, at its first malloc.
    Allow::Call(libc::SYS_sched_getaffinity),
    // Rust's HashMap keys its hasher from the kernel's random bytes, once per thread.
    Allow::Call(libc::SYS_getrandom),
    // The frontend going away ends the connection; threads and the process end.
    Allow::Call(libc::SYS_shutdown),
    Allow::Call(libc::SYS_exit),
    Allow::Call(libc::SYS_exit_group),
    Allow::Call(libc::SYS_sigaltstack),
    Allow::Call(libc::SYS_rt_sigreturn),
    // Timestamps (the vDSO answers most without a system call).
    Allow::Call(libc::SYS_clock_gettime),
];

/// A test trigger the VMM sets (`BERTH_TEST_DEVICE_PANIC`): the queue worker panics on its
/// first kick, as a bug in a device would. No guest action can set it.
pub static TEST_PANIC_ON_KICK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Where a jail takes its next steps while a backend starts.
pub trait ServeHooks {
    /// Before the backend's threads start; the process will have `threads` in all.
    fn before_threads(&self, threads: u64) -> Result<(), String> {
        let _ = threads;
        Ok(())
    }
    /// The frontend is connected and every thread runs; none is started after this. The
    /// device's own system calls ([`VirtioBackend::syscalls`]) come along.
    fn serving(&self, device_syscalls: &[Allow]) -> Result<(), String> {
        let _ = device_syscalls;
        Ok(())
    }
}

/// No jail: a backend on a thread of berth, or a daemon started by hand.
pub struct NoHooks;
impl ServeHooks for NoHooks {}

/// What a device sees of its queues during one event.
pub struct Queues<'a> {
    vrings: &'a [Vring],
    mem: &'a GuestMemory,
    watcher: Option<&'a dyn Watch>,
}

/// Adds and removes a device's own fds in the event loop that serves it.
pub trait Watch: Send + Sync {
    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()>;
    fn unwatch(&self, fd: RawFd, token: u64) -> io::Result<()>;
}

impl<'a> Queues<'a> {
    pub fn new(vrings: &'a [Vring], mem: &'a GuestMemory, watcher: Option<&'a dyn Watch>) -> Self {
        Queues {
            vrings,
            mem,
            watcher,
        }
    }

    pub fn mem(&self) -> &'a GuestMemory {
        self.mem
    }

    /// Serves the available chains of queue `index` with `handle` (see [`queue_util::serve`]),
    /// in batches, and signals its call fd when the driver asked to be interrupted. A queue
    /// that is stopped or disabled is left alone.
    pub fn serve<F>(&self, index: u16, mut handle: F) -> Served
    where
        F: FnMut(Chain<'_>) -> Option<u32>,
    {
        let Some(vring) = self.vrings.get(usize::from(index)) else {
            return Served::OutOfChains;
        };
        loop {
            let mut state = vring.get_mut();
            if !state.get_queue().ready() || !state.is_enabled() {
                return Served::OutOfChains;
            }
            let (served, notify) =
                queue_util::serve(self.mem, state.get_queue_mut(), index, BATCH, &mut handle);
            if notify {
                if let Err(e) = state.signal_used_queue() {
                    log_limited!(log::Level::Warn, "virtio queue {index}: call fd: {e}");
                }
            }
            drop(state);
            if served != Served::Batch {
                return served;
            }
        }
    }

    /// Watches `fd` (readable) and calls [`VirtioBackend::event`] with `token`, which must be
    /// at least [`FIRST_DEVICE_TOKEN`].
    pub fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        match self.watcher {
            Some(w) => w.watch(fd, token),
            None => Ok(()),
        }
    }

    pub fn unwatch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        match self.watcher {
            Some(w) => w.unwatch(fd, token),
            None => Ok(()),
        }
    }
}

/// [`VirtioBackend`] as a `VhostUserBackend`.
pub struct Backend<D: VirtioBackend> {
    dev: D,
    mem: Mutex<Option<Mem>>,
    handler: OnceLock<Arc<VringEpollHandler<Arc<Backend<D>>>>>,
}

impl<D: VirtioBackend> Backend<D> {
    pub fn new(dev: D) -> Arc<Self> {
        Arc::new(Backend {
            dev,
            mem: Mutex::new(None),
            handler: OnceLock::new(),
        })
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    fn with_queues(&self, vrings: &[Vring], f: impl FnOnce(&Queues<'_>)) {
        let Some(mem) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return; // no memory table yet: nothing can be served
        };
        let guard = mem.memory();
        let watcher = self.handler.get().map(|h| h as &dyn Watch);
        f(&Queues::new(vrings, &guard, watcher));
    }
}

impl<D: VirtioBackend> Watch for Arc<VringEpollHandler<Arc<Backend<D>>>> {
    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.register_listener(fd, EventSet::IN, token)
    }

    fn unwatch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.unregister_listener(fd, EventSet::IN, token)
    }
}

impl<D: VirtioBackend> VhostUserBackend for Backend<D> {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.dev.queue_sizes().len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.dev.queue_sizes().iter().copied().max().unwrap_or(0))
    }

    fn features(&self) -> u64 {
        self.dev.features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The framework sets it on each vring's queue; the devices read it from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.dev.config();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        let mut out = config[start..end].to_vec();
        // Past the end reads as zero, as on the transport.
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *self.mem.lock().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    fn reset_device(&self) {
        self.dev.reset();
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        let token = u64::from(device_event);
        let queue = usize::from(device_event) < vrings.len();
        if queue && TEST_PANIC_ON_KICK.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("test trigger: the device worker panics");
        }
        // A device's own fd may also report HANG_UP or ERROR (a pipe whose writer went away):
        // the device's read then finds the end of file and stops watching it.
        if queue && !evset.contains(EventSet::IN) {
            log_limited!(
                log::Level::Warn,
                "{}: unexpected event {evset:?} on queue {device_event}",
                self.dev.name()
            );
            return Ok(());
        }
        self.with_queues(vrings, |q| {
            if queue {
                self.dev.kicked(device_event, q)
            } else {
                self.dev.event(token, q)
            }
        });
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("starting the vhost-user backend: {0}")]
    Daemon(String),
    #[error("serving the vhost-user connection: {0}")]
    Connection(String),
    #[error("the sandbox: {0}")]
    Jail(String),
}

/// Serves `dev` over the first connection `listener` accepts, until the frontend goes away
/// (which is how a VM's end reaches its device processes). Returns when the connection ends.
/// `hooks` run before the backend's threads start and once all of them serve.
pub fn serve<D: VirtioBackend>(
    dev: D,
    listener: UnixListener,
    hooks: &dyn ServeHooks,
) -> Result<(), ServeError> {
    let name = dev.name().to_string();
    let backend = Backend::new(dev);
    // This thread, the framework's queue worker (one: queues_per_thread is the default) and
    // its request handler.
    hooks.before_threads(3).map_err(ServeError::Jail)?;
    let mut daemon = VhostUserDaemon::new(
        name,
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| ServeError::Daemon(e.to_string()))?;
    if let Some(h) = daemon.get_epoll_handlers().into_iter().next() {
        let _ = backend.handler.set(h);
    }
    let watcher = backend.handler.get().map(|h| h as &dyn Watch);
    backend
        .dev
        .started(&Queues::new(&[], &GuestMemoryMmap::new(), watcher));
    let mut listener = Listener::from(listener);
    daemon
        .start(&mut listener)
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    hooks
        .serving(backend.dev.syscalls())
        .map_err(ServeError::Jail)?;
    let r = daemon.wait();
    match r {
        Ok(()) => Ok(()),
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        Err(e) => Err(ServeError::Connection(e.to_string())),
    }
}
