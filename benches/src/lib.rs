//! Micro-benchmarks live in `benches/`; the end-to-end harness is `src/bin/stoq-bench.rs`.
//! This crate has no library code.
