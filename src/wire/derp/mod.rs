//! DERP frames (Tailscale DERP protocol version 2).
