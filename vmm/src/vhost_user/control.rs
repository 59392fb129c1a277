//! A device's control thread: it owns the vhost-user frontend and carries out what the
//! transport asks (activation, reset, configuration writes) off the vCPU threads, one request
//! at a time. Any protocol failure (a backend that died, hung past the socket timeout, or
//! refused a request) makes the device fail: the driver sees DEVICE_NEEDS_RESET and the
//! control loop stops the VM.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use devices::virtio::frontend::{Frontend, QueueSetup};
use devices::virtio::pci::{ControlState, DeviceControl};
use devices::virtio::GuestMemory;
use devices::EventFd;

use crate::events::VmEvent;

enum Request {
    Activate(u64, Vec<Option<QueueSetup>>),
    Reset,
    WriteConfig(u32, Vec<u8>),
}

/// The transport's handle on a control thread.
pub struct Controller {
    tx: Sender<Request>,
}

impl DeviceControl for Controller {
    fn activate(&self, features: u64, queues: Vec<Option<QueueSetup>>) {
        let _ = self.tx.send(Request::Activate(features, queues));
    }

    fn reset(&self) {
        let _ = self.tx.send(Request::Reset);
    }

    fn write_config(&self, offset: u32, data: Vec<u8>) {
        let _ = self.tx.send(Request::WriteConfig(offset, data));
    }
}

/// What the control thread works with.
pub struct ControlParts {
    pub name: String,
    pub frontend: Frontend,
    pub mem: GuestMemory,
    pub kicks: Vec<EventFd>,
    pub calls: Vec<EventFd>,
    pub state: Arc<ControlState>,
    pub events: Sender<VmEvent>,
}

/// Starts the control thread of one device.
pub fn start(parts: ControlParts) -> std::io::Result<Controller> {
    let (tx, rx) = mpsc::channel();
    crate::filters::spawn_helper(format!("{}-ctl", parts.name), move || run(parts, rx))?;
    Ok(Controller { tx })
}

fn run(mut p: ControlParts, rx: Receiver<Request>) {
    // Ends when the transport (and its Controller) goes away with the VM.
    while let Ok(req) = rx.recv() {
        let (what, result) = match req {
            Request::Activate(features, queues) => (
                "starting the device",
                p.frontend
                    .start(features, &p.mem, &queues, &p.kicks, &p.calls),
            ),
            Request::Reset => {
                let r = p.frontend.stop();
                if r.is_ok() {
                    p.state.reset_done();
                }
                ("resetting the device", r)
            }
            Request::WriteConfig(offset, data) => (
                "writing its configuration",
                p.frontend.set_config(offset, &data),
            ),
        };
        if let Err(e) = result {
            p.state.fail();
            let _ = p.events.send(VmEvent::DeviceFailed {
                device: p.name.clone(),
                what: format!("{what}: {e}"),
            });
            // The frontend's connection is in an unknown state: serve no more requests.
            // Later resets complete at once so the driver is not left polling.
            for req in rx.iter() {
                if let Request::Reset = req {
                    p.state.fail();
                }
            }
            return;
        }
    }
}
