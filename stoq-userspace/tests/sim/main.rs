//! Simulator tests of the transport core (feature `sim`; run them in release mode:
//! `cargo test --release -p stoq --features sim --test sim`, or `cargo xtask sim`).

mod cc;
mod common;
mod engine;
mod path;
mod property;
mod qlog;
