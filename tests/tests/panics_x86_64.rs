//! End to end, x86_64: a panic anywhere in berth (the control loop, a vCPU thread, a device
//! process) ends the VM with one line and its documented status (docs/architecture.md: 70
//! for berth's own threads, 4 for a device, which berth names), and leaves no device process
//! behind. The panics come from test triggers (`BERTH_TEST_PANIC=control|vcpu@SECONDS`,
//! `BERTH_TEST_DEVICE_PANIC=<device>`); no guest action can set them.

#![cfg(target_arch = "x86_64")]

use std::time::Duration;

use berth_tests::jail::{check_no_device_left, NO_DEVICE_LEFT};
use berth_tests::{GuestRun, Kernel, Outcome};

const TIMEOUT: Duration = Duration::from_secs(300);

fn run_with(env: (&str, &str)) -> Option<Outcome> {
    GuestRun::new(Kernel::BzImage)
        .env(env.0, env.1)
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("echo UP\nsleep 90\necho STILL-RUNNING\n")
        .host_script("UP", NO_DEVICE_LEFT)
        .timeout(TIMEOUT)
        .run()
}

#[test]
fn a_panic_in_the_control_loop_ends_berth_with_one_line_and_status_70() {
    let Some(out) = run_with(("BERTH_TEST_PANIC", "control@40")) else {
        return;
    };
    out.assert_status(70)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("berth: internal error at vmm/src/vm.rs")
        .assert_log_contains("test trigger: the control loop panics (please report this bug)")
        .assert_log_lacks("stack backtrace");
    check_no_device_left(&out);
}

#[test]
fn a_panic_in_a_vcpu_thread_ends_berth_with_one_line_and_status_70() {
    let Some(out) = run_with(("BERTH_TEST_PANIC", "vcpu@40")) else {
        return;
    };
    out.assert_status(70)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("test trigger: vCPU 0 panics (please report this bug)")
        .assert_log_lacks("stack backtrace");
    check_no_device_left(&out);
}

/// The worker panics on the queue's first kick, which comes as the driver starts the device:
/// the guest never gets to its script (so there is no host script to run either; that the
/// other device processes go with berth is tested in device_boundary_x86_64.rs).
#[test]
fn a_panic_in_a_device_process_stops_the_guest_and_names_the_device() {
    let Some(out) = GuestRun::new(Kernel::BzImage)
        .env("BERTH_TEST_DEVICE_PANIC", "virtio-rng")
        .args(["--memory", "256", "--rng"])
        .modules(["virtio_pci", "virtio-rng"])
        .script("echo UP\nsleep 90\necho STILL-RUNNING\n")
        .timeout(TIMEOUT)
        .run()
    else {
        return;
    };
    out.assert_status(4)
        .assert_console_lacks("STILL-RUNNING")
        .assert_log_contains("test trigger: the device worker panics (please report this bug)")
        .assert_log_contains("device virtio-rng failed")
        .assert_log_lacks("stack backtrace");
}
