//! A guest that hammers a platform register cannot flood berth's log: the ACPI sleep and
//! reset registers, pvpanic's CRASH_LOADED and the boot timer each log a bounded number of
//! lines however often they are written. (Its own test binary: it installs a logger.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use devices::legacy::{acpi_pm, pvpanic, AcpiPm, BootTimer, PvPanic};
use devices::{BusDevice, Trigger};

static LINES: AtomicUsize = AtomicUsize::new(0);

struct Counter;
impl log::Log for Counter {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, _: &log::Record) {
        LINES.fetch_add(1, Ordering::Relaxed);
    }
    fn flush(&self) {}
}
static COUNTER: Counter = Counter;

struct Nothing;
impl Trigger for Nothing {
    type E = ();
    fn trigger(&self) -> Result<(), ()> {
        Ok(())
    }
}

/// Lines logged by `writes` register writes.
fn lines(mut dev: impl BusDevice, offset: u64, value: u8, writes: usize) -> usize {
    let before = LINES.load(Ordering::Relaxed);
    for _ in 0..writes {
        dev.write(offset, &[value]);
    }
    LINES.load(Ordering::Relaxed) - before
}

#[test]
fn hammered_registers_log_a_bounded_number_of_lines() {
    log::set_logger(&COUNTER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // Sleep type 1 with SLP_EN: a sleep state berth does not offer (S5 is type 5 here).
    let sleep = (1 << 2) | (1 << 5);
    let acpi = || AcpiPm::new(Nothing, Nothing, 5, 0x0f);
    for (name, n) in [
        (
            "ACPI sleep",
            lines(acpi(), acpi_pm::SLEEP_CONTROL, sleep, 10_000),
        ),
        ("ACPI reset", lines(acpi(), acpi_pm::RESET, 0x0f, 10_000)),
        (
            "pvpanic CRASH_LOADED",
            lines(
                PvPanic::new(Nothing),
                0,
                pvpanic::PVPANIC_CRASH_LOADED,
                10_000,
            ),
        ),
        (
            "boot timer",
            lines(BootTimer::new(Instant::now()), 0, 123, 10_000),
        ),
    ] {
        // Ten lines a call site in a window of five seconds, per message of a write.
        assert!(n > 0 && n <= 20, "{name}: {n} lines for 10000 writes");
    }
}
