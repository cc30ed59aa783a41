#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| agentwire::fuzzing::agent::agent_paths(d));
