//! smoltcp over an in-memory IP device (MTU 1280).
