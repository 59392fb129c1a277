//! Builds a VM from the command line through the hypervisor traits, runs it, and stops it.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arch::MIB;
use hypervisor::{Kicker, SystemEvent};

use devices::virtio::blk::{self, DiskImage};

use crate::cli::{ConsoleChoice, IrqchipChoice, RunArgs, SerialDest};
use crate::error::{Error, Result};
use crate::events::{Outcome, VmEvent};
use crate::filters::Filter;
use crate::platform::{GuestFiles, MAX_CPUS, MIN_MEMORY};
use crate::vhost_user::{self, Backend, Placement};
use crate::{console, guest_output, memory, pci, platform, vcpu};

/// How long the control loop waits for vCPU threads to leave the guest before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

static SIGNAL: AtomicI32 = AtomicI32::new(0);

fn install_signal_handlers() {
    extern "C" fn on_signal(sig: libc::c_int) {
        SIGNAL.store(sig, Ordering::SeqCst);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// What the supervisor of `device` reported, if its process ended within a moment.
fn died(events: &mpsc::Receiver<VmEvent>, device: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(ev) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let VmEvent::DeviceFailed { device: d, what } = ev {
            if d == device {
                return Some(what);
            }
        }
    }
    None
}

pub fn run(args: &RunArgs, start: Instant) -> Result<Outcome> {
    // Check what the user gave before touching the hypervisor.
    if args.cpus == 0 {
        return Err(Error::NoCpus);
    }
    let mib = args.memory;
    if mib < MIN_MEMORY / MIB {
        return Err(Error::MemoryTooSmall {
            mib,
            min: MIN_MEMORY / MIB,
        });
    }
    let mem_size = mib
        .checked_mul(MIB)
        .filter(|&s| s <= 1 << 46)
        .ok_or(Error::MemoryTooLarge { mib })?;
    let mut kernel = File::open(&args.kernel).map_err(|source| Error::KernelOpen {
        path: args.kernel.clone(),
        source,
    })?;
    let mut initrd = match &args.initrd {
        Some(p) => Some(File::open(p).map_err(|source| Error::InitrdOpen {
            path: p.clone(),
            source,
        })?),
        None => None,
    };
    // Disks are opened (and locked) before anything else can fail late.
    let mut disks: Vec<DiskImage> = Vec::with_capacity(args.disks.len());
    for d in &args.disks {
        disks.push(blk::open_image(&d.path, d.read_only).map_err(Error::Disk)?);
    }
    let serial_dest = args.serial_dest();
    let serial_out = match &serial_dest {
        SerialDest::Stdio => {
            console::stdout_writer().map_err(|e| Error::Device(format!("stdout: {e}")))?
        }
        SerialDest::File(p) => Box::new(File::create(p).map_err(|source| Error::SerialFile {
            path: p.clone(),
            source,
        })?),
        SerialDest::None => Box::new(std::io::sink()),
    };

    let lap = |stage: &str| log::debug!("{stage}: {} us after start", start.elapsed().as_micros());
    lap("arguments checked");
    let hv = hypervisor::open(args.hypervisor.kind())?;
    // Compiled before berth starts its first helper thread, which enters its filter.
    crate::filters::init(args.seccomp, &hv.runtime_ioctls())?;
    devices::virtio::frontend::set_thread_start(|| crate::filters::enter(Filter::Control));
    // The UART writes into a bounded buffer that a thread of its own empties.
    let (serial_out, serial_drain): (Box<dyn std::io::Write + Send>, _) = match serial_dest {
        SerialDest::None => (serial_out, None),
        _ => {
            let (w, d) = guest_output::start(serial_out, guest_output::CAPACITY)
                .map_err(|e| Error::Device(format!("console output thread: {e}")))?;
            (Box::new(w), Some(d))
        }
    };
    let max = hv.max_vcpus().min(MAX_CPUS);
    if args.cpus > max {
        return Err(Error::TooManyCpus {
            requested: args.cpus,
            max,
            backend: hv.kind().to_string(),
        });
    }
    // The architecture's interrupt controller (aarch64 refuses split mode, saying why), which
    // must be one the backend has (MSHV: split only).
    let irq_config = platform::irq_chip_config(args.cpus, args.irqchip)?;
    let caps = hv.capabilities();
    let (offered, wanted, other) = match args.irqchip {
        IrqchipChoice::Kernel => (caps.irqchip_kernel, "kernel", "split"),
        IrqchipChoice::Split => (caps.irqchip_split, "split", "kernel"),
    };
    if !offered {
        return Err(Error::IrqchipMode {
            wanted,
            other,
            backend: hv.kind().to_string(),
        });
    }
    let vm = hv.create_vm()?;
    lap("VM created");
    let (mem, backing) = memory::create(mem_size, &platform::ram_ranges(mem_size), args.hugepages)?;
    match &backing {
        memory::Backing::Memfd(Some(_)) => log::warn!("guest RAM: {mib} MiB on {backing}"),
        _ => log::debug!("guest RAM: {mib} MiB on {backing}"),
    }
    memory::register(&*vm, &mem)?;
    // The interrupt controller comes first and is finalised once every vCPU exists (the GIC
    // sizes itself by them); irqfds can be registered only after that.
    let irqchip = vm.create_irq_chip(&irq_config)?;
    let mut vcpus = Vec::with_capacity(args.cpus as usize);
    for id in 0..args.cpus {
        vcpus.push(vm.create_vcpu(id)?);
    }
    irqchip.finalize()?;
    lap("memory, interrupt controller and vCPUs ready");

    let kernel_name = args.kernel.display().to_string();
    let boot = platform::load_guest(
        &*hv,
        &mem,
        mem_size,
        args.cpus,
        GuestFiles {
            kernel: &mut kernel,
            kernel_name: &kernel_name,
            initrd: initrd.as_mut(),
            cmdline: &args.cmdline,
        },
    )?;
    lap("kernel loaded");

    let (events_tx, events_rx) = mpsc::channel();
    let interrupts = Arc::new(platform::interrupts(irqchip.clone(), args.irqchip));
    let mut platform = platform::build_devices(
        &interrupts,
        serial_out,
        args.boot_timer,
        start,
        events_tx.clone(),
    )?;

    let pci_layout = platform::pci_layout(mem_size, &*irqchip);
    let mut pci = pci::PciBuilder::new(
        vm.clone(),
        interrupts.clone(),
        mem.clone(),
        pci_layout,
        events_tx.clone(),
    )?;
    let placement = if args.disable_sandbox {
        Placement::Thread
    } else {
        Placement::Process(args.seccomp)
    };
    let mut add = |name: String, backend: Backend| -> Result<()> {
        let kind = backend.kind();
        let stream = vhost_user::start(&name, backend, placement, &events_tx)?;
        pci.add_vhost_user(&name, kind, stream).map_err(|e| {
            // A device process that died while berth set it up says why through its
            // supervisor: that, not the broken socket, is the error.
            match died(&events_rx, &name) {
                Some(what) => Error::Device(format!("{name}: {what}")),
                None => e,
            }
        })
    };
    for (i, (image, spec)) in disks.into_iter().zip(&args.disks).enumerate() {
        add(
            format!("virtio-blk{i}"),
            Backend::Blk {
                image,
                read_only: spec.read_only,
                id: spec.id.clone(),
            },
        )?;
    }
    if args.rng {
        add("virtio-rng".into(), Backend::Rng)?;
    }
    let console_input = match args.console {
        ConsoleChoice::Serial if serial_dest == SerialDest::Stdio => {
            Some(console::ConsoleInput::Serial {
                serial: platform.serial.clone(),
                drained: platform.serial_drained,
            })
        }
        ConsoleChoice::Serial => None,
        ConsoleChoice::Virtio => {
            let (rx, tx) = console::pipe().map_err(|e| Error::Device(format!("pipe: {e}")))?;
            let output =
                console::stdout_file().map_err(|e| Error::Device(format!("stdout: {e}")))?;
            add(
                "virtio-console".into(),
                Backend::Console { input: rx, output },
            )?;
            Some(console::ConsoleInput::Pipe(tx))
        }
    };
    for (i, spec) in args.vhost_user.iter().enumerate() {
        let name = format!("vhost-user-{}{i}", spec.kind.name());
        let stream = vhost_user::connect_external(&spec.socket)?;
        pci.add_vhost_user(&name, spec.kind, stream)?;
    }
    pci.attach(&mut platform.pio, &mut platform.mmio)?;
    let pio = Arc::new(platform.pio);
    let mmio = Arc::new(platform.mmio);
    lap("devices ready");

    hypervisor::install_kick_handler()?;
    install_signal_handlers();
    platform::configure_vcpus(&vcpus, &mem, &boot, &*irqchip)?;
    lap("vCPUs configured");

    let terminal = console::RawTerminal::enter();
    if let Some(input) = console_input {
        console::spawn_stdin_feeder(input, events_tx.clone(), terminal.is_active())
            .map_err(|e| Error::Device(format!("stdin thread: {e}")))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (kick_tx, kick_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        let id = vcpu.id();
        let ctx = vcpu::VcpuContext {
            pio: pio.clone(),
            mmio: mmio.clone(),
            interrupts: interrupts.clone(),
            stop: stop.clone(),
            events: events_tx.clone(),
            start,
        };
        let tx = kick_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::run(vcpu, ctx, tx))
            .map_err(|source| Error::VcpuThread { cpu: id, source })?;
        threads.push(t);
    }
    drop(kick_tx);
    drop(events_tx);
    let kickers: Vec<Kicker> = kick_rx.iter().map(|(_, k)| k).collect();
    // Every thread of berth exists now: the control loop enters its filter too (stopping the
    // VM and exiting included).
    crate::filters::enter(Filter::Control);
    // A test trigger (BERTH_TEST_FORBIDDEN_CALL=berth@SECONDS): that long after the guest
    // starts, the control loop makes a call outside its filter, as a compromised thread of
    // berth would. No guest action can do this.
    let forbidden_call_at = test_trigger_at("BERTH_TEST_FORBIDDEN_CALL", "berth");

    // A test trigger (BERTH_TEST_PANIC=control@SECONDS): the control loop panics, as a bug
    // in berth would (the vCPU's twin is in vcpu.rs).
    let panic_at = test_trigger_at("BERTH_TEST_PANIC", "control");

    let result = loop {
        match events_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(VmEvent::System(SystemEvent::PowerOff)) => break Ok(Outcome::PowerOff),
            Ok(VmEvent::System(SystemEvent::Reset)) => break Ok(Outcome::Reset),
            Ok(VmEvent::System(SystemEvent::Crash)) => break Ok(Outcome::Crash),
            Ok(VmEvent::UserQuit) => break Ok(Outcome::UserQuit),
            Ok(VmEvent::VcpuFailed { cpu, what }) => break Err(Error::VcpuRun { cpu, what }),
            Ok(VmEvent::DeviceFailed { device, what }) => {
                break Ok(Outcome::DeviceFailed { device, what })
            }
            Err(RecvTimeoutError::Timeout) => {
                if panic_at.is_some_and(|t| Instant::now() >= t) {
                    panic!("test trigger: the control loop panics");
                }
                if forbidden_call_at.is_some_and(|t| Instant::now() >= t) {
                    // SAFETY: a system call without arguments.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
                let sig = SIGNAL.load(Ordering::SeqCst);
                if sig != 0 {
                    break Ok(Outcome::Signal(sig));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(Error::VcpuRun {
                    cpu: 0,
                    what: "all vCPU threads ended without a reason".into(),
                })
            }
        }
    };

    log::debug!("control loop: {result:?}; stopping vCPUs");
    // Stop the vCPUs: a kick that lands before a thread enters the guest is lost, so repeat.
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        kickers.iter().for_each(Kicker::kick);
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("a vCPU thread did not stop within {STOP_TIMEOUT:?}");
        }
    }
    // The guest's last words (a panic, "reboot: Power down") are out before berth is, as long
    // as the reader keeps taking them.
    if let Some(d) = serial_drain {
        d.finish(Duration::from_secs(2));
    }
    drop(terminal);
    result
}

/// When a test trigger `VAR=<place>@SECONDS` (BERTH_TEST_PANIC, BERTH_TEST_FORBIDDEN_CALL)
/// fires in `place`: that long from now. No guest action can set them.
pub fn test_trigger_at(var: &str, place: &str) -> Option<Instant> {
    std::env::var(var)
        .ok()
        .and_then(|v| {
            v.strip_prefix(place)?
                .strip_prefix('@')?
                .parse::<u64>()
                .ok()
        })
        .map(|s| Instant::now() + Duration::from_secs(s))
}
