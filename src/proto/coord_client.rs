//! Coordinator client state: our node, the tunnels to replay after a reconnect.
