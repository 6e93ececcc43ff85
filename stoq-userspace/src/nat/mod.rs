//! NAT traversal: what an endpoint behind a NAT needs to be reached.
//!
//! - [`binding`]: STUN Binding transactions (RFC 8489), which tell an endpoint its
//!   reflexive address (the public address and port its NAT maps its socket to) as a STUN
//!   server sees it. They run on the endpoint's own socket and backend, so the address
//!   learned is the one its connections use; the XDP classifier and the worker steering
//!   recognise STUN answers beside STOQ packets (`docs/nat.md`).
//! - [`rendezvous`]: the messages two peers exchange through a rendezvous server to learn
//!   each other's candidate addresses before punching (`Endpoint::connect_peer`).
//! - [`turn`]: a TURN client (RFC 8656) for one allocation, the relay fallback between
//!   peers that cannot reach each other directly.
//!
//! The wire codec is `stoq_common::wire::stun` (no_std, shared with the classifier).

pub mod binding;
pub mod rendezvous;
mod retransmit;
pub mod turn;

pub use binding::{BindingError, BindingId, BindingOutcome, StunStats};
pub use retransmit::{INITIAL_RTO, MAX_REQUESTS};
