//! The DERP relay server: /derp upgrade and websocket, /derp/latency-check.
