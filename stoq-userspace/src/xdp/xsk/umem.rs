//! The UMEM: one anonymous mapping cut into equal frames, and the list of frames that are
//! in no ring (ours to fill for TX or to give to the fill ring).

use std::io;

use crate::os::mmap::Mmap;

/// The packet memory shared with the kernel.
#[derive(Debug)]
pub(crate) struct Umem {
    map: Mmap,
    frame_size: u32,
    /// Frames in no ring, by address.
    pub(crate) free: Vec<u64>,
}

impl Umem {
    /// `count` frames of `frame_size` bytes (a power of two), all free.
    pub(crate) fn new(frame_size: u32, count: u32) -> io::Result<Self> {
        let map = Mmap::new(frame_size as usize * count as usize, None, 0)?;
        Ok(Self {
            map,
            frame_size,
            free: (0..u64::from(count))
                .map(|i| i * u64::from(frame_size))
                .collect(),
        })
    }

    /// The registration the kernel needs (`XDP_UMEM_REG`).
    pub(crate) fn registration(&self) -> super::if_xdp::xdp_umem_reg {
        super::if_xdp::xdp_umem_reg {
            addr: self.map.ptr.as_ptr() as u64,
            len: self.map.len as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// Bytes per frame.
    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The frame (chunk) an address inside it belongs to: descriptors may point inside
    /// their frame (received data after the headroom, headers placed where they fit).
    pub(crate) fn chunk(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// `len` bytes at `addr`, if inside the UMEM.
    pub(crate) fn bytes(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(u64::from(len))?;
        if end > self.map.len as u64 {
            return None;
        }
        // SAFETY: the range is inside the mapping (checked above); the caller holds the
        // frame (received and not yet recycled), so the kernel does not write it meanwhile.
        Some(unsafe {
            std::slice::from_raw_parts(self.map.ptr.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// The whole frame at `frame`, which the caller took from the free list.
    ///
    /// # Panics
    /// If `frame` is not a frame of this UMEM.
    pub(crate) fn frame_mut(&mut self, frame: u64) -> &mut [u8] {
        let fs = self.frame_size as usize;
        assert!(
            frame as usize + fs <= self.map.len && frame.is_multiple_of(u64::from(self.frame_size)),
            "frame {frame} outside the UMEM"
        );
        // SAFETY: inside the mapping (checked); a frame taken from the free list is in no
        // ring, so the kernel does not touch it, and `&mut self` keeps it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(frame as usize), fs) }
    }
}
