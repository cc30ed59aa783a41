#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| agentwire::fuzzing::coord::replica_note(d));
