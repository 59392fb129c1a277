//! Legacy platform devices: the ACPI power-management block, the 16550 UART, the i8042 controller (for reset), the CMOS RTC, pvpanic,
//! the boot timer, and a sink for ports Linux probes but berth does not emulate.

pub mod acpi_pm;
pub mod boot_timer;
pub mod cmos;
pub mod i8042;
pub mod pvpanic;
pub mod serial;
pub mod sink;

pub use acpi_pm::AcpiPm;
pub use boot_timer::BootTimer;
pub use cmos::Cmos;
pub use i8042::I8042;
pub use pvpanic::PvPanic;
pub use serial::Serial;
pub use sink::Sink;
