//! Legacy platform devices: the ACPI power-management block, the 16550 UART, the i8042 controller (for reset), the CMOS RTC, pvpanic,
//! the boot timer, a sink for ports Linux probes but berth does not emulate, and the PL031 RTC
//! (aarch64).

pub mod acpi_pm;
pub mod boot_timer;
pub mod cmos;
pub mod i8042;
pub mod pvpanic;
pub mod rtc_pl031;
pub mod serial;
pub mod sink;

pub use acpi_pm::AcpiPm;
pub use boot_timer::BootTimer;
pub use cmos::Cmos;
pub use i8042::I8042;
pub use pvpanic::PvPanic;
pub use rtc_pl031::RtcPl031;
pub use serial::Serial;
pub use sink::Sink;
