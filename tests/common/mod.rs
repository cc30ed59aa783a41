pub mod cluster;
pub mod faults;
pub mod link;
pub mod mcp_http;
pub mod nat;
pub mod netns;
pub mod pki;
pub mod raw_http;
