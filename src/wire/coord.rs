//! Coordinator messages: JSON text over a websocket.
