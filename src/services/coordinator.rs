//! The coordinator server: websocket endpoint over the registry.
