//! The tokio shell. The only layer that spawns tasks, does IO or reads the clock.

pub mod alloc;
pub mod clock;
pub mod coord;
pub mod datagram;
pub mod derp;
pub mod driver;
pub mod netmon;
pub mod relay;
pub mod stack;
pub mod stream;
pub mod tailnet;
pub mod tls;
pub mod tunnel;
pub mod udp;

pub use datagram::UdpSocket;
pub use stream::{TcpListener, TcpStream};
pub use tunnel::{Tunnel, TunnelConfig, TunnelError, TunnelStats};
