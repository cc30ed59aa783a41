//! Per-destination lease counts with idle expiry.
