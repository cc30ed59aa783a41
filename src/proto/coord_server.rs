//! Coordinator registry: peers, tunnels, authorization and fan-out.
