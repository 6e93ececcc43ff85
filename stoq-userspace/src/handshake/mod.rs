//! The STOQ handshake: hybrid post-quantum key exchange, FALCON authentication, a TLS
//! 1.3-shaped key schedule. See `docs/security.md` for the protocol and its argument.

pub mod cert;
pub mod messages;
pub mod params;
pub mod schedule;
