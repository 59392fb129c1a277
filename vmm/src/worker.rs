//! Where device workers run: one named thread each. The sandbox will add a process runner.

use devices::virtio::{Running, Spawner, VirtioWorker};
use devices::EventFd;

pub struct ThreadSpawner;

struct Thread(std::thread::JoinHandle<()>);

impl Running for Thread {
    fn join(self: Box<Self>) {
        if self.0.join().is_err() {
            log::error!("a device worker panicked");
        }
    }
}

impl Spawner for ThreadSpawner {
    fn spawn(
        &self,
        name: String,
        worker: Box<dyn VirtioWorker>,
        stop: EventFd,
    ) -> std::io::Result<Box<dyn Running>> {
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run(stop))?;
        Ok(Box::new(Thread(t)))
    }
}
