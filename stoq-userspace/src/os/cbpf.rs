//! A classic-BPF program on the SO_REUSEPORT group: datagrams whose destination CID
//! follows the layout go to the socket of the worker named inside it; the rest (a
//! client's first Initial, random CIDs) are spread by the kernel's hash.

use std::io;
use std::os::fd::RawFd;

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
///   same worker, whose [`Placer`](crate::engine::steer::Placer) decides where it lives.
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

/// Attaches the program to the SO_REUSEPORT group of socket `fd` (any member will do).
pub(crate) fn attach(fd: RawFd, layout: &CidLayout) -> io::Result<()> {
    let prog = program(layout);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
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
        attach(backends[0].socket_fd(), &layout).expect("attach");
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
        use crate::engine::steer::{Route, route};
        let plain = |cid: &[u8]| cid[layout.worker_offset()];
        assert_eq!(route(&short, &layout, plain), Route::Owner(3));
        assert_eq!(route(&long, &layout, plain), Route::Owner(3));
        assert_eq!(route(&foreign, &layout, plain), Route::Anyone);
        assert_eq!(route(&initial, &layout, plain), Route::New(&[0xab; 16]));
        assert_eq!(route(&[0x40, 1], &layout, plain), Route::Anyone);
    }
}
