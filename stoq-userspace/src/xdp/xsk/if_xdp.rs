//! The kernel's AF_XDP interface (`linux/if_xdp.h`), as libc exposes it, and the constants
//! STOQ relies on.

pub(crate) use libc::{
    XDP_COPY, XDP_MMAP_OFFSETS, XDP_OPTIONS, XDP_OPTIONS_ZEROCOPY, XDP_PGOFF_RX_RING,
    XDP_PGOFF_TX_RING, XDP_RING_NEED_WAKEUP, XDP_RX_RING, XDP_STATISTICS, XDP_TX_RING,
    XDP_UMEM_COMPLETION_RING, XDP_UMEM_FILL_RING, XDP_UMEM_PGOFF_COMPLETION_RING,
    XDP_UMEM_PGOFF_FILL_RING, XDP_UMEM_REG, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY, sockaddr_xdp,
    xdp_desc, xdp_mmap_offsets, xdp_options, xdp_ring_offset, xdp_statistics, xdp_umem_reg,
};

/// Headroom the kernel keeps in front of each received frame in copy mode.
pub const XDP_PACKET_HEADROOM: usize = 256;
