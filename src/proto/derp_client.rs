//! DERP client session: login, keepalive and ping bookkeeping.
