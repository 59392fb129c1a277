//! `vhost_user_frontend`: berth's vhost-user frontend against a hostile backend. The backend
//! is the bytes: every reply (headers, sizes, feature words, queue counts, configuration
//! space, acknowledgements), short, long or out of order, then the socket closes. The
//! frontend goes through what the VMM does with a device (connect, read the configuration,
//! share memory, start the queues, stop them) and must end in an error or success, never a
//! panic or a wait: a closed socket ends every request at once.
//!
//! Input: one byte for the device's queue count, one for its configuration length, then the
//! backend's side of the conversation.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use devices::virtio::frontend::{Frontend, QueueSetup};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::util::shared_memory;

const MEM_SIZE: usize = 0x10_0000;

/// The VMM's conversation with a device whose backend answers `replies`: `None` if it broke
/// off, else the configuration space the backend gave (if it offers CONFIG).
pub fn converse(queues: usize, config_len: usize, replies: &[u8]) -> Option<Option<Vec<u8>>> {
    let (ours, mut theirs) = UnixStream::pair().ok()?;
    // The replies fit the socket's buffer; the frontend's requests wait in the other
    // direction's, unread, until the backend end is dropped.
    theirs.write_all(replies).ok()?;
    theirs.shutdown(std::net::Shutdown::Write).ok()?;
    let mut fe = Frontend::new(ours, queues, Duration::from_secs(5)).ok()?;
    let config = fe.config(config_len).ok()?;
    if let Some(c) = &config {
        assert_eq!(c.len(), config_len, "configuration space of the wrong size");
    }
    let mem = shared_memory(MEM_SIZE);
    fe.set_mem_table(&mem).ok()?;
    let setups: Vec<Option<QueueSetup>> = (0..queues)
        .map(|i| {
            let base = 0x1_0000 * (i as u64 + 1);
            Some(QueueSetup {
                size: 16,
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
            })
        })
        .collect();
    let fds = || -> Vec<EventFd> {
        (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect()
    };
    let (kicks, calls) = (fds(), fds());
    let features = fe.features();
    fe.start(features, &mem, &setups, &kicks, &calls).ok()?;
    assert!(fe.running());
    fe.stop().ok()?;
    assert!(!fe.running());
    drop(theirs);
    Some(config)
}

pub fn run(data: &[u8]) {
    let [queues, config_len, replies @ ..] = data else {
        return;
    };
    // The socket buffer holds about 200 KiB; a longer reply stream would block the writer.
    if replies.len() > 64 << 10 {
        return;
    }
    let queues = 1 + usize::from(*queues % 4);
    let _ = converse(queues, usize::from(*config_len), replies);
}
