//! DERP client: HTTP upgrade or websocket, login, reconnect.
