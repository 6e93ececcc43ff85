//! The userspace twin of the XDP classifier.
//!
//! It runs the very same `stoq_common::classify` code as the kernel program, with the port
//! set held in a fixed array instead of a BPF map. Tests use it as the oracle for the
//! in-kernel program; the socket backends use it to filter what they receive.

use stoq_common::cid::CidLayout;
use stoq_common::classify::{Verdict, classify_frame};
use stoq_common::maps::{ClassifierConfig, MAX_PORTS};
use stoq_common::ptr::Bytes;

/// Error returned when more ports are configured than the XDP map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "at most {MAX_PORTS} STOQ ports can be configured, got {0}; serve fewer ports per endpoint"
)]
pub struct TooManyPorts(pub usize);

/// The classifier with its configuration: STOQ ports and the CID layout.
#[derive(Debug, Clone)]
pub struct Classifier {
    config: ClassifierConfig,
    ports: [u16; MAX_PORTS as usize],
    n_ports: usize,
}

impl Classifier {
    /// A classifier for `ports` under `layout`.
    pub fn new(layout: &CidLayout, ports: &[u16]) -> Result<Self, TooManyPorts> {
        if ports.len() > MAX_PORTS as usize {
            return Err(TooManyPorts(ports.len()));
        }
        let mut p = [0u16; MAX_PORTS as usize];
        p[..ports.len()].copy_from_slice(ports);
        Ok(Self {
            config: ClassifierConfig::new(layout),
            ports: p,
            n_ports: ports.len(),
        })
    }

    /// The configuration written into the XDP program's config map.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The configured ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports[..self.n_ports]
    }

    /// Classifies an Ethernet frame exactly as the XDP program does.
    pub fn classify(&self, frame: &[u8]) -> Verdict {
        let ports = self.ports();
        classify_frame(Bytes::new(frame), &self.config, |p| ports.contains(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_limit_is_typed() {
        let ports: Vec<u16> = (0..=MAX_PORTS as u16).collect();
        let e = Classifier::new(&CidLayout::DEFAULT, &ports).unwrap_err();
        assert_eq!(e, TooManyPorts(ports.len()));
        assert!(e.to_string().contains("at most 64"));
        let c = Classifier::new(&CidLayout::DEFAULT, &[1, 2]).unwrap();
        assert_eq!(c.ports(), &[1, 2]);
        assert_eq!(
            c.classify(&[]),
            Verdict::Pass(stoq_common::classify::PassReason::Truncated)
        );
    }
}
