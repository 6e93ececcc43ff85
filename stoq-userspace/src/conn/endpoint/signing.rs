//! Batch signing at the endpoint: the full handshakes that wait for their server
//! signature when the endpoint is next polled for datagrams share one (see
//! [`handshake::batch`](crate::handshake::batch)).
//!
//! Nothing waits for a batch to fill: the handshakes signed together are those whose
//! ClientHello arrived in the datagrams processed since the last poll (one receive batch
//! of the engine), so a lone handshake is signed alone, at once, as without batching, and
//! a loaded server, whose receive batches hold several ClientHellos, signs once for all of
//! them.

use std::sync::Arc;
use std::time::Instant;

use super::Endpoint;
use crate::handshake::ServerConfig;
use crate::handshake::batch::MAX_BATCH;

impl Endpoint {
    /// Notes that connection `i`'s handshake waits for its signature.
    pub(super) fn wait_for_signature(&mut self, i: usize) {
        if !self.signing.contains(&i) {
            self.signing.push(i);
        }
    }

    /// While `hold` is set, handshakes waiting for their signature stay unsigned, and
    /// their datagrams unsent, while everything else goes out as usual: an I/O loop that
    /// sends part-way through a receive batch holds them, so that the handshakes of the
    /// rest of the batch can share their signature, and releases them at the batch's end
    /// (the next poll for datagrams then signs).
    pub fn hold_signatures(&mut self, hold: bool) {
        self.signatures_held = hold;
    }

    /// Signs for every handshake waiting: in batches of those that accept batch
    /// signatures and share a server configuration, alone otherwise.
    pub(super) fn sign_waiting(&mut self, now: Instant) {
        if self.signing.is_empty() || self.signatures_held {
            return;
        }
        let mut waiting = std::mem::take(&mut self.signing);
        let mut config: Option<Arc<ServerConfig>> = None;
        for &i in &waiting {
            let Some(req) = self.conns[i].as_ref().and_then(|c| c.signature_request()) else {
                continue;
            };
            if !req.batch {
                self.sign_one(now, i);
                continue;
            }
            let other_config = config
                .as_ref()
                .is_some_and(|c| !Arc::ptr_eq(c, &req.config));
            if other_config || self.batch.len() == MAX_BATCH {
                self.sign_batch(now, config.as_deref());
            }
            config = Some(req.config);
            self.batch.push((i, req.transcript));
        }
        self.sign_batch(now, config.as_deref());
        waiting.clear();
        // Keep the allocation for the next round.
        self.signing = waiting;
    }

    fn sign_one(&mut self, now: Instant, i: usize) {
        if let Some(c) = self.conns[i].as_mut() {
            c.sign_alone(now);
            self.stats.signatures += 1;
            self.stats.largest_batch = self.stats.largest_batch.max(1);
            self.sched.touch(i);
        }
    }

    /// Signs the handshakes gathered in `self.batch`, all under `config`.
    fn sign_batch(&mut self, now: Instant, config: Option<&ServerConfig>) {
        match (self.batch.len(), config) {
            (0, _) | (_, None) => {}
            (1, _) => {
                let (i, _) = self.batch[0];
                self.sign_one(now, i);
            }
            (n, Some(config)) => {
                let transcripts: Vec<[u8; 32]> = self.batch.iter().map(|&(_, t)| t).collect();
                let (signature, proofs) = config.credential.sign_batch(&transcripts, &mut self.rng);
                // n <= MAX_BATCH.
                let size = n as u32;
                for (&(i, _), proof) in self.batch.iter().zip(proofs) {
                    if let Some(c) = self.conns[i].as_mut() {
                        c.sign_in_batch(now, proof, signature.clone(), size);
                        self.sched.touch(i);
                    }
                }
                self.stats.signatures += 1;
                self.stats.batch_signed += n as u64;
                self.stats.largest_batch = self.stats.largest_batch.max(n as u64);
            }
        }
        self.batch.clear();
    }
}
