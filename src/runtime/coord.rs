//! Coordinator client: websocket, reconnect with backoff, tunnel replay.
