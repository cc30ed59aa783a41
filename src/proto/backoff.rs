//! Reconnect backoff: jittered exponential, computed from the attempt number.
