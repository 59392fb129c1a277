#![no_main]
// The target's code and what it covers: fuzz/src (berth_fuzz::TARGETS).
libfuzzer_sys::fuzz_target!(|data: &[u8]| (berth_fuzz::target("emulator").unwrap().run)(data));
