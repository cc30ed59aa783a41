//! The WireGuard device: many peers in one sans-IO state machine.
