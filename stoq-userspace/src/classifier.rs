//! The userspace twin of the XDP classifier.
//!
//! It runs the very same `stoq_common::classify` code as the kernel program, with the same
//! port bitmap ([`PortSet`]). Tests use it as the oracle for the in-kernel program; the
//! socket backends use it to filter what they receive.

use stoq_common::cid::CidLayout;
use stoq_common::classify::{Verdict, classify_frame};
use stoq_common::maps::{ClassifierConfig, PortSet};
use stoq_common::ptr::Bytes;

/// The classifier with its configuration: STOQ ports and the CID layout.
#[derive(Debug, Clone)]
pub struct Classifier {
    config: ClassifierConfig,
    ports: PortSet,
}

impl Classifier {
    /// A classifier for `ports` under `layout`.
    pub fn new(layout: &CidLayout, ports: &[u16]) -> Self {
        Self {
            config: ClassifierConfig::new(layout),
            ports: PortSet::from_ports(ports),
        }
    }

    /// The configuration written into the XDP program's config map.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The configured ports.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// Classifies an Ethernet frame exactly as the XDP program does.
    pub fn classify(&self, frame: &[u8]) -> Verdict {
        classify_frame(Bytes::new(frame), &self.config, |p| self.ports.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_empty_frames() {
        let c = Classifier::new(&CidLayout::DEFAULT, &[1, 2, 65535]);
        assert_eq!(c.ports().iter().collect::<Vec<_>>(), [1, 2, 65535]);
        assert_eq!(
            c.classify(&[]),
            Verdict::Pass(stoq_common::classify::PassReason::Truncated)
        );
    }
}
