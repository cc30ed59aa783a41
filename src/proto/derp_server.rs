//! DERP server session logic: login, key to client map, replacement, PeerGone.
