//! The transport's hypervisor plumbing: moving notification ioeventfds with a BAR, and
//! watching backends' call fds while a driver uses INTx (then the VMM, not an irqfd, raises
//! the interrupt: one thread for the whole VM, idle unless some driver runs without MSI-X).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use devices::virtio::pci::Wiring;
use devices::{log_limited, EventFd};
use hypervisor::{Datamatch, IoEventAddress, Vm};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

type Callback = Arc<dyn Fn() + Send + Sync>;

pub struct VmWiring {
    vm: Arc<dyn Vm>,
    watcher: Option<Arc<CallWatcher>>,
}

struct CallWatcher {
    epoll: Epoll,
    callbacks: Mutex<HashMap<RawFd, Callback>>,
}

impl VmWiring {
    /// Starts the watcher thread now, while berth sets the VM up: a driver may switch to INTx
    /// at any time, and by then berth's threads are under seccomp filters that start no
    /// thread. It sleeps in epoll_wait until then.
    pub fn new(vm: Arc<dyn Vm>) -> Self {
        let watcher = match CallWatcher::start() {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!("cannot start the INTx call watcher: {e}");
                None
            }
        };
        VmWiring { vm, watcher }
    }

    fn watcher(&self) -> Option<&Arc<CallWatcher>> {
        self.watcher.as_ref()
    }
}

impl CallWatcher {
    fn start() -> std::io::Result<Arc<Self>> {
        let w = Arc::new(CallWatcher {
            epoll: Epoll::new()?,
            callbacks: Mutex::new(HashMap::new()),
        });
        let w2 = w.clone();
        crate::filters::spawn_helper("intx-calls".into(), move || w2.run())?;
        Ok(w)
    }

    fn run(&self) {
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("INTx call watcher: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                let cb = self
                    .callbacks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&fd)
                    .cloned();
                if let Some(cb) = cb {
                    // Clear the count first: a signal after this read is seen next time.
                    let mut count = 0u64;
                    // SAFETY: reads 8 bytes from an eventfd the transport keeps open while
                    // it is watched.
                    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
                    cb();
                }
            }
        }
    }
}

impl Wiring for VmWiring {
    fn watch_call(&self, fd: &EventFd, on_signal: Box<dyn Fn() + Send + Sync>) {
        let Some(w) = self.watcher() else { return };
        let raw = fd.as_raw_fd();
        w.callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(raw, Arc::from(on_signal));
        if let Err(e) = w.epoll.ctl(
            ControlOperation::Add,
            raw,
            EpollEvent::new(EventSet::IN, raw as u64),
        ) {
            log_limited!(log::Level::Error, "watching a call fd: {e}");
        }
    }

    fn unwatch_call(&self, fd: &EventFd) {
        let Some(w) = self.watcher() else { return };
        let raw = fd.as_raw_fd();
        let _ = w
            .epoll
            .ctl(ControlOperation::Delete, raw, EpollEvent::default());
        w.callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&raw);
    }

    fn move_notify(&self, fd: &EventFd, old: u64, new: u64) {
        if let Err(e) = self
            .vm
            .unregister_ioevent(fd, IoEventAddress::Mmio(old), Datamatch::Any)
        {
            log_limited!(log::Level::Debug, "ioeventfd at {old:#x}: {e}");
        }
        // Where registering fails, notifications trap and the transport forwards them.
        if let Err(e) = self
            .vm
            .register_ioevent(fd, IoEventAddress::Mmio(new), Datamatch::Any)
        {
            log_limited!(log::Level::Warn, "ioeventfd at {new:#x}: {e}");
        }
    }
}
