#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| agentwire::fuzzing::oauth::registration(d));
