//! Which worker owns a datagram: the rule userspace applies, the classic-BPF program that
//! applies the same rule in the kernel on the SO_REUSEPORT group of a socket backend, and
//! where a new connection goes ([`Placer`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::home::Worker;
use crate::wire::cid::{CidLayout, ConnectionId};

/// How a datagram is routed among workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// Its destination CID follows the layout: the worker named inside it.
    Owner(u8),
    /// A long header under a CID this server did not issue: a client's first Initials,
    /// under the destination CID it chose.
    New(&'a [u8]),
    /// Anything else: whichever worker received it.
    Anyone,
}

/// How `d` is routed (see [`Route`]); `worker_of` names the worker of a CID of the
/// layout (the octet at its offset, or what a QUIC-LB decryption finds there).
pub(crate) fn route<'a>(
    d: &'a [u8],
    layout: &CidLayout,
    worker_of: impl Fn(&[u8]) -> u8,
) -> Route<'a> {
    let Some(first) = d.first() else {
        return Route::Anyone;
    };
    if first & 0x80 == 0 {
        return match d.get(1..1 + layout.len()) {
            Some(cid) if layout.matches_first_octet(cid[0]) => Route::Owner(worker_of(cid)),
            _ => Route::Anyone,
        };
    }
    let Some(dcid_len) = d.get(5).map(|l| usize::from(*l)) else {
        return Route::Anyone;
    };
    let Some(cid) = d.get(6..6 + dcid_len) else {
        return Route::Anyone;
    };
    if dcid_len == layout.len() && layout.matches_first_octet(cid[0]) {
        return Route::Owner(worker_of(cid));
    }
    Route::New(cid)
}

/// Where new connections go.
///
/// - **With the client's other connections.** GRO coalesces the datagrams of one address
///   pair before any steering sees them, so connections from one client address and port
///   that live on different workers would have their datagrams handed from worker to
///   worker. A new connection from an address that already has one goes to that worker.
/// - **Else, the least loaded.** The kernel spreads a client's first Initials by the first
///   byte of the CID the client chose, which balances only over many connections. The
///   worker that receives a new client's first Initial keeps it unless another worker has
///   fewer connections (their counts, plus datagrams queued for them, read without a lock).
///
/// The choice is remembered by CID, so the connection's later Initials follow it; once the
/// server answers, the client uses the owner's CIDs and the kernel steers by them.
#[derive(Debug, Default)]
pub(crate) struct Placer {
    chosen: HashMap<ConnectionId, u8>,
    order: VecDeque<ConnectionId>,
    by_peer: HashMap<SocketAddr, u8>,
    peers: VecDeque<SocketAddr>,
}

/// New connections whose placement is remembered (oldest forgotten first).
const PLACED: usize = 4096;

impl Placer {
    /// The worker for the new connection from `from` whose client chose `dcid`, received
    /// by worker `me`.
    pub(crate) fn place(
        &mut self,
        from: SocketAddr,
        dcid: &[u8],
        me: u8,
        peers: &[Arc<Worker>],
    ) -> u8 {
        if let Some(o) = self.chosen.get(dcid) {
            return *o;
        }
        let o = match self.by_peer.get(&from) {
            Some(o) => *o,
            None => {
                let load = |w: &Worker| w.load() + w.handoff.len();
                let mine = peers.get(usize::from(me)).map_or(usize::MAX, |w| load(w));
                let (best, least) = peers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (i, load(w)))
                    .min_by_key(|(i, l)| (*l, *i != usize::from(me)))
                    .unwrap_or((usize::from(me), mine));
                let o = if least < mine { best as u8 } else { me };
                if self.peers.len() >= PLACED
                    && let Some(old) = self.peers.pop_front()
                {
                    self.by_peer.remove(&old);
                }
                self.by_peer.insert(from, o);
                self.peers.push_back(from);
                o
            }
        };
        if let Ok(cid) = ConnectionId::from_slice(dcid) {
            if self.order.len() >= PLACED
                && let Some(old) = self.order.pop_front()
            {
                self.chosen.remove(&old);
            }
            if self.chosen.insert(cid, o).is_none() {
                self.order.push_back(cid);
            }
        }
        o
    }
}

/// The worker that owns a datagram, by the same rule as the kernel's steering program: the
/// worker id inside a destination CID that follows `layout`; with `spread`, any other long
/// header (a client's first Initials, under the CID it chose) belongs to worker
/// `first CID byte % workers`. `None`: whichever worker received it handles it.
///
/// Userspace must agree with the kernel because the kernel does not always ask the
/// program: GRO may merge datagrams of one client address (several new connections
/// from one socket) and deliver them by the first one's verdict.
#[cfg(test)]
mod tests {
    use super::*;

    fn workers(loads: &[usize]) -> Vec<Arc<Worker>> {
        loads
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (w, _) = Worker::pinned(i as u8, 16);
                w.set_load(*l);
                w
            })
            .collect()
    }

    #[test]
    fn a_new_client_goes_to_the_least_loaded_worker_and_its_next_connections_follow() {
        let peers = workers(&[3, 1, 2]);
        let mut p = Placer::default();
        let a: SocketAddr = "10.200.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "10.200.0.1:5001".parse().expect("addr");
        // Received by worker 0, which has the most: worker 1 has the fewest.
        assert_eq!(p.place(a, &[1; 8], 0, &peers), 1);
        // The same connection's later Initials, wherever they arrive, follow.
        assert_eq!(p.place(a, &[1; 8], 0, &peers), 1);
        // Another connection from the same address and port joins it, even if worker 1
        // now has more than others (its datagrams arrive coalesced with the first's).
        peers[1].set_load(9);
        assert_eq!(p.place(a, &[2; 8], 0, &peers), 1);
        // A new client address: the least loaded again (worker 2 now).
        assert_eq!(p.place(b, &[3; 8], 0, &peers), 2);
        // A tie keeps it where it arrived.
        let peers = workers(&[1, 1]);
        assert_eq!(
            p.place("10.200.0.2:1".parse().expect("addr"), &[4; 8], 1, &peers),
            1
        );
    }

    #[test]
    fn placements_are_bounded() {
        let peers = workers(&[0, 0]);
        let mut p = Placer::default();
        for i in 0..(PLACED as u32 * 3) {
            let from =
                SocketAddr::from(([10, 200, (i >> 8) as u8, i as u8], (i % 60_000) as u16 + 1));
            p.place(from, &i.to_be_bytes(), 0, &peers);
        }
        assert!(p.chosen.len() <= PLACED && p.order.len() <= PLACED);
        assert!(p.by_peer.len() <= PLACED && p.peers.len() <= PLACED);
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod kernel {
    //! A classic-BPF program on the SO_REUSEPORT group: datagrams whose destination CID
    //! follows the layout go to the socket of the worker named inside it; the rest (a
    //! client's first Initial, random CIDs) are spread by the kernel's hash.

    use std::io;
    use std::os::fd::RawFd;

    use crate::io::Backend;
    use crate::wire::cid::CidLayout;

    // Classic BPF opcodes (linux/filter.h).
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_W_LEN: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
    const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_A: u16 = 0x16; // BPF_RET | BPF_A
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The program for a group of `workers` sockets. Offsets are into the UDP payload
    /// (the kernel pulls the UDP header before running it); the return value indexes the
    /// group's sockets in bind order, and an index past the group makes the kernel fall
    /// back to its address hash.
    ///
    /// - A CID in the layout (short or long header): the worker byte inside it.
    /// - Anything else, a client's first Initials among it: the kernel's hash of the
    ///   addresses, so every new connection from one client address and port reaches the
    ///   same worker, whose [`Placer`](super::Placer) decides where it lives.
    pub(crate) fn program(layout: &CidLayout) -> Vec<libc::sock_filter> {
        let len = layout.len() as u32;
        let w_short = 1 + layout.worker_offset() as u32;
        let w_long = 6 + layout.worker_offset() as u32;
        vec![
            op(LD_W_LEN, 0, 0, 0),       // 0: A = payload length
            op(JGT_K, 0, 16, w_short),   // 1: long enough for a short header's worker byte?
            op(LD_B_ABS, 0, 0, 0),       // 2: A = first byte
            op(JSET_K, 0, 9, 0x80),      // 3: long header -> 4, short -> 13
            op(LD_W_LEN, 0, 0, 0),       // 4: long:
            op(JGT_K, 0, 12, w_long),    // 5: long enough for the worker byte? else hash
            op(LD_B_ABS, 0, 0, 5),       // 6: DCID length
            op(JEQ_K, 0, 10, len),       // 7: the layout's? else hash
            op(LD_B_ABS, 0, 0, 6),       // 8: the CID's first octet
            op(ALU_AND_K, 0, 0, 0x1f),   // 9
            op(JEQ_K, 0, 7, len - 1),    // 10: describes the layout's length? else hash
            op(LD_B_ABS, 0, 0, w_long),  // 11: the worker id
            op(RET_A, 0, 0, 0),          // 12
            op(LD_B_ABS, 0, 0, 1),       // 13: short: the CID's first octet
            op(ALU_AND_K, 0, 0, 0x1f),   // 14
            op(JEQ_K, 0, 2, len - 1),    // 15: describes the layout's length? else hash
            op(LD_B_ABS, 0, 0, w_short), // 16: the worker id
            op(RET_A, 0, 0, 0),          // 17
            op(RET_K, 0, 0, u32::MAX),   // 18: not ours to steer: the kernel's hash
        ]
    }

    /// Attaches the program to the group (through the first socket).
    pub(crate) fn attach(backends: &[Box<dyn Backend>], layout: &CidLayout) -> io::Result<()> {
        let prog = program(layout);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        let fd: RawFd = backends[0].socket_fd();
        // SAFETY: a valid socket fd and a sock_fprog pointing at `prog`, alive for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&raw const fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A tiny interpreter for the instructions the program uses, to check it
        /// without a kernel.
        fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
            let (mut a, mut pc) = (0u32, 0usize);
            loop {
                let f = prog[pc];
                pc += 1;
                match f.code {
                    LD_W_LEN => a = pkt.len() as u32,
                    LD_B_ABS => match pkt.get(f.k as usize) {
                        Some(b) => a = u32::from(*b),
                        None => return 0,
                    },
                    ALU_AND_K => a &= f.k,
                    JEQ_K => pc += usize::from(if a == f.k { f.jt } else { f.jf }),
                    JGT_K => pc += usize::from(if a > f.k { f.jt } else { f.jf }),
                    JSET_K => pc += usize::from(if a & f.k != 0 { f.jt } else { f.jf }),
                    RET_A => return a,
                    RET_K => return f.k,
                    c => panic!("opcode {c:#x}"),
                }
            }
        }

        /// The program in the kernel: two sockets in a SO_REUSEPORT group on loopback,
        /// and datagrams naming worker 0 or 1 must arrive at that socket.
        #[test]
        fn kernel_steers_to_the_named_socket() {
            use crate::io::udp::{UdpBackend, UdpConfig};
            use crate::io::{Backend, RxBatch};
            let layout = CidLayout::DEFAULT;
            let mut cfg = UdpConfig::new("127.0.0.1:0".parse().expect("addr"));
            cfg.reuse_port = true;
            let a = UdpBackend::bind(&cfg).expect("a");
            cfg.bind = a.local_addr();
            let b = UdpBackend::bind(&cfg).expect("b");
            let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(a), Box::new(b)];
            attach(&backends, &layout).expect("attach");
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
            let mut want = [0usize; 2];
            for i in 0..40u8 {
                let worker = i % 2;
                let cid = layout.build(0, 7, worker, &[i; 8]).expect("cid");
                let mut d = vec![0x40];
                d.extend_from_slice(cid.as_bytes());
                d.extend_from_slice(&[0; 40]);
                tx.send_to(&d, backends[0].local_addr()).expect("send");
                want[usize::from(worker)] += 1;
                // A client's Initial with a random 16-byte CID: the kernel's address
                // hash, the same socket for every one from this sender.
                let mut init = vec![0xc0, 0, 0, 0, 1, 16, 0x10 + i];
                init.extend_from_slice(&[worker; 15]);
                init.extend_from_slice(&[0; 1200]);
                tx.send_to(&init, backends[0].local_addr()).expect("send");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut rx = RxBatch::new(64, 2048);
            let mut initials = [0usize; 2];
            for (w, b) in backends.iter_mut().enumerate() {
                let mut got = 0;
                while b.recv(&mut rx).expect("recv") > 0 {
                    rx.for_each(|_, _, d| {
                        if d[0] & 0x80 == 0 {
                            assert_eq!(usize::from(d[1 + layout.worker_offset()]), w);
                            got += 1;
                        } else {
                            initials[w] += 1;
                        }
                    });
                }
                assert_eq!(got, want[w], "socket {w}");
            }
            assert!(
                initials == [40, 0] || initials == [0, 40],
                "one sender's Initials reach one socket: {initials:?}"
            );
        }

        #[test]
        fn steers_by_the_worker_byte() {
            let layout = CidLayout::DEFAULT;
            let prog = program(&layout);
            let cid = layout.build(0, 7, 3, &[9; 8]).expect("cid");
            let mut short = vec![0x40];
            short.extend_from_slice(cid.as_bytes());
            short.extend_from_slice(&[0; 30]);
            assert_eq!(run(&prog, &short), 3);
            let mut long = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
            long.extend_from_slice(cid.as_bytes());
            long.extend_from_slice(&[0; 30]);
            assert_eq!(run(&prog, &long), 3);
            // A client's first Initial with a 16-byte random CID: the kernel's hash.
            let mut initial = vec![0xc0, 0, 0, 0, 1, 16];
            initial.extend_from_slice(&[0xab; 16]);
            initial.extend_from_slice(&[0; 1200]);
            assert_eq!(run(&prog, &initial), u32::MAX);
            // A short header with a foreign CID: the kernel's hash.
            let mut foreign = vec![0x40, 0xff];
            foreign.extend_from_slice(&[0; 40]);
            assert_eq!(run(&prog, &foreign), u32::MAX);
            // Too short: the kernel's hash.
            assert_eq!(run(&prog, &[0x40, 1]), u32::MAX);
            // Userspace agrees with the program.
            use super::super::{Route, route};
            let plain = |cid: &[u8]| cid[layout.worker_offset()];
            assert_eq!(route(&short, &layout, plain), Route::Owner(3));
            assert_eq!(route(&long, &layout, plain), Route::Owner(3));
            assert_eq!(route(&foreign, &layout, plain), Route::Anyone);
            assert_eq!(route(&initial, &layout, plain), Route::New(&[0xab; 16]));
            assert_eq!(route(&[0x40, 1], &layout, plain), Route::Anyone);
        }
    }
}
