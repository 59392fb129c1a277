//! `berth check`: the hypervisor conformance kit on this machine.

use std::process::ExitCode;

use hypervisor::conformance::{self, Outcome};

use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs) -> ExitCode {
    let hv = match hypervisor::open(args.hypervisor.kind()) {
        Ok(hv) => hv,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let unknown: Vec<&String> = args
        .cases
        .iter()
        .filter(|n| !conformance::cases().iter().any(|c| c.name == n.as_str()))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = conformance::cases().iter().map(|c| c.name).collect();
        log::error!(
            "no case named {unknown:?}; the cases are: {}",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    }
    // The kit's case threads may outlive a hung case; the handle lives for the process.
    let hv: &'static dyn hypervisor::Hypervisor = &**Box::leak(Box::new(hv));
    println!("hypervisor: {}", hv.kind());
    println!("capabilities: {}", hv.capabilities());
    let reports = conformance::run(hv, |name| {
        args.cases.is_empty() || args.cases.iter().any(|c| c == name)
    });
    print!("{}", conformance::table(&reports));
    if reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
