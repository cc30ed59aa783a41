//! The DERP map, in Tailscale's JSON format (Regions → Nodes).
