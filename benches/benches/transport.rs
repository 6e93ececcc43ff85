//! The transport core's per-packet cost, set against the bare AEAD in the same run.
//!
//! - `transport/send_packet`: the sender's CPU per full-size 1-RTT STREAM packet: the
//!   application's write, scheduling, framing, packet protection, the sent-packet record
//!   and congestion control, plus its share of processing the ACK (one ACK per 8 packets).
//! - `transport/recv_packet`: the receiver's CPU per packet: header protection, decryption,
//!   frame decoding, stream reassembly, the application's read, and its share of writing
//!   the ACK.
//! - `transport/ack_1000`: processing one ACK that acknowledges 1,000 in-flight packets
//!   (RTT and delivery-rate samples, BBR, stream-record retirement, buffer release).
//! - `transport/bare_seal_1400`: sealing a 1,400-byte payload with the connection's suite
//!   on the bare AEAD (aws-lc-rs), the floor the protocol's own overhead is compared with.
//!
//! A summary after criterion prints each figure and its ratio to the bare AEAD.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use stoq::conn::cc::{AckEvent, Bbr, Controller, ControllerFactory, LossEvent};
use stoq::conn::{
    ConnectionHandle, DatagramEvent, DatagramInfo, Dir, Endpoint, EndpointConfig, StreamId,
    TransportConfig,
};
use stoq::crypto::CipherSuite;

/// STOQ's BBR doing all its per-packet work, with its window and pacing opened wide: an
/// in-memory pair has a microsecond RTT, so the real limits would make the benchmark
/// measure waiting, and the ACK benchmark needs 1,000 packets in flight.
#[derive(Debug)]
struct Unbounded(Bbr);

impl Controller for Unbounded {
    fn on_sent(&mut self, now: Instant, bytes: u64, in_flight: u64) {
        self.0.on_sent(now, bytes, in_flight);
    }
    fn on_ack(&mut self, now: Instant, ack: &AckEvent) {
        self.0.on_ack(now, ack);
    }
    fn on_loss(&mut self, now: Instant, loss: &LossEvent) {
        self.0.on_loss(now, loss);
    }
    fn on_mtu(&mut self, mtu: u64) {
        self.0.on_mtu(mtu);
    }
    fn window(&self) -> u64 {
        black_box(self.0.window());
        u64::MAX / 4
    }
    fn pacing_rate(&self) -> Option<u64> {
        black_box(self.0.pacing_rate());
        // 100 GB/s: far above anything this pair reaches, yet a rate a real link could
        // have, so the pacer takes its everyday 64-bit path (an absurd rate would push
        // it onto the 128-bit one and bill the protocol for the benchmark's fiction).
        Some(100_000_000_000)
    }
    fn state(&self) -> &'static str {
        self.0.state()
    }
    fn congestion_events(&self) -> u64 {
        self.0.congestion_events()
    }
}

#[derive(Debug)]
struct UnboundedFactory;

impl ControllerFactory for UnboundedFactory {
    fn build(&self, now: Instant, mtu: u64) -> Box<dyn Controller> {
        Box::new(Unbounded(Bbr::new(now, mtu)))
    }
}

const BATCH: usize = 8;
const CHUNK: usize = 1400;

/// Datagrams in fixed 1,500-byte frames reused from batch to batch, the way the engine's
/// I/O backends hand out ring frames.
#[derive(Default)]
struct Frames {
    frames: Vec<(Box<[u8]>, usize)>,
    used: usize,
}

impl Frames {
    fn clear(&mut self) {
        self.used = 0;
    }

    fn len(&self) -> usize {
        self.used
    }

    /// Lets `fill` write a datagram into the next free frame; keeps it if one was written.
    fn next_frame(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Option<stoq::conn::Transmit>,
    ) -> Option<stoq::conn::Transmit> {
        if self.frames.len() == self.used {
            self.frames.push((vec![0; 1500].into_boxed_slice(), 0));
        }
        let (f, len) = &mut self.frames[self.used];
        let t = fill(f)?;
        *len = t.size;
        self.used += 1;
        Some(t)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.frames[..self.used]
            .iter_mut()
            .map(|(f, len)| &mut f[..*len])
    }
}

struct Pair {
    client: Endpoint,
    server: Endpoint,
    ch: ConnectionHandle,
    sh: ConnectionHandle,
    stream: StreamId,
    c_addr: SocketAddr,
    s_addr: SocketAddr,
    buf: Vec<u8>,
    data: Vec<u8>,
    out: Vec<u8>,
    /// The benchmark's clock: it advances with the wall clock, and the ACK benchmark
    /// may move it ahead (to let the pacer release a 1,000-packet flight).
    clock: Instant,
    last_real: Instant,
    /// Time spent in the application's `write` calls (part of the send figure).
    write_time: Duration,
    /// Write with `write_chunk` from `shared` instead of `write` from `data`.
    zero_copy: bool,
    shared: bytes::Bytes,
}

fn pair() -> Pair {
    let (server_cfg, client_cfg) = common::configs();
    let transport = Arc::new(TransportConfig {
        // Room for the ACK-1000 benchmark's flight, written before any of it is sent (the
        // default 1 MiB backlog of unsent bytes would refuse the last 0.4 MB).
        send_buffer: 64 << 20,
        send_backlog: 2 << 20,
        congestion: Arc::new(UnboundedFactory),
        ..TransportConfig::default()
    });
    let cfg = EndpointConfig {
        transport,
        ..EndpointConfig::new()
    };
    let mut client = Endpoint::new(cfg.clone(), None).expect("client");
    let mut server = Endpoint::new(cfg, Some(server_cfg)).expect("server");
    let c_addr: SocketAddr = "[fd00:5710::1]:50000".parse().expect("addr");
    let s_addr: SocketAddr = "[fd00:5710::2]:4433".parse().expect("addr");
    let now = Instant::now();
    let ch = client.connect(now, s_addr, client_cfg).expect("connect");
    let mut buf = Vec::new();
    let mut sh = None;
    for _ in 0..50 {
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            let mut d = buf[..t.size].to_vec();
            if let Some(DatagramEvent::Incoming(i)) =
                server.handle_datagram(now, c_addr, DatagramInfo::default(), &mut d)
            {
                sh = Some(server.accept(i, now).expect("accept"));
            }
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            let mut d = buf[..t.size].to_vec();
            client.handle_datagram(now, s_addr, DatagramInfo::default(), &mut d);
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
    }
    let sh = sh.expect("server connection");
    let c = client.connection_mut(ch).expect("client connection");
    assert!(c.is_established(), "handshake");
    let stream = c.open_stream(Dir::Uni).expect("stream");
    Pair {
        client,
        server,
        ch,
        sh,
        stream,
        c_addr,
        s_addr,
        buf,
        data: vec![0x5a; BATCH * CHUNK],
        out: vec![0; 1 << 20],
        clock: now,
        last_real: Instant::now(),
        write_time: Duration::ZERO,
        zero_copy: false,
        shared: bytes::Bytes::from(vec![0x5a; BATCH * CHUNK]),
    }
}

impl Pair {
    fn now(&mut self) -> Instant {
        self.at(Instant::now())
    }

    /// The benchmark's clock at wall-clock time `real` (read by the caller, whose timing
    /// read doubles as the sans-IO clock input, as an engine reads the clock once per
    /// batch: no extra clock read is billed to the protocol).
    fn at(&mut self, real: Instant) -> Instant {
        self.clock += real.saturating_duration_since(self.last_real);
        self.last_real = self.last_real.max(real);
        self.clock
    }

    /// Writes `n` packets' worth (the application's part): copied from a slice, or with
    /// `zero_copy` handed over as shared `Bytes` (a reference count, no copy).
    fn write(&mut self, n: usize) {
        let c = self.client.connection_mut(self.ch).expect("conn");
        let mut left = n * CHUNK;
        while left > 0 {
            let k = left.min(self.data.len());
            let w = if self.zero_copy {
                c.write_chunk(self.stream, &mut self.shared.slice(..k))
            } else {
                c.write(self.stream, &self.data[..k])
            };
            left -= w.expect("write");
        }
    }

    /// Sends what was written at wall-clock time `real`; returns the datagrams.
    fn send(&mut self, real: Instant, wire: &mut Frames) {
        let now = self.at(real);
        // Datagrams go into fixed frames kept from earlier batches, as the engine writes
        // them into its I/O backend's ring (`poll_transmit_into`): no allocation and no
        // zero-fill is timed.
        wire.clear();
        while wire
            .next_frame(|f| self.client.poll_transmit_into(now, f))
            .is_some()
        {}
    }

    /// Delivers datagrams to the server at wall-clock time `real`, reads the stream,
    /// returns the server's ACKs.
    fn receive(&mut self, real: Instant, wire: &mut Frames, acks: &mut Frames) {
        let now = self.at(real);
        for d in wire.iter_mut() {
            self.server
                .handle_datagram(now, self.c_addr, DatagramInfo::default(), d);
        }
        let s = self.server.connection_mut(self.sh).expect("conn");
        while s.accept_stream(Dir::Uni).is_some() {}
        while let Ok(Some(_)) = s.read(self.stream, &mut self.out) {}
        acks.clear();
        while acks
            .next_frame(|f| self.server.poll_transmit_into(now, f))
            .is_some()
        {}
        while self.server.poll_event().is_some() {}
    }

    fn take_acks(&mut self, real: Instant, acks: &mut Frames) {
        let now = self.at(real);
        for d in acks.iter_mut() {
            self.client
                .handle_datagram(now, self.s_addr, DatagramInfo::default(), d);
        }
        while self.client.poll_event().is_some() {}
    }

    fn suite(&self) -> CipherSuite {
        self.client
            .connection(self.ch)
            .and_then(|c| c.suite())
            .expect("negotiated")
    }
}

/// (send per packet, receive per packet) over `iters` packets, timing each side's calls.
fn send_recv(p: &mut Pair, iters: u64) -> (Duration, Duration, u64) {
    let (mut ts, mut tr) = (Duration::ZERO, Duration::ZERO);
    let mut packets = 0u64;
    let mut wire = Frames::default();
    let mut acks = Frames::default();
    // Five clock reads per batch: each times a phase and is the `now` the next phase is
    // given, as an engine reads the clock once per batch.
    let mut t0 = Instant::now();
    while packets < iters {
        p.write(BATCH);
        let t1 = Instant::now();
        p.send(t1, &mut wire);
        let t2 = Instant::now();
        p.receive(t2, &mut wire, &mut acks);
        let t3 = Instant::now();
        p.take_acks(t3, &mut acks);
        let t4 = Instant::now();
        p.write_time += t1 - t0;
        ts += (t2 - t0) + (t4 - t3);
        tr += t3 - t2;
        t0 = t4;
        packets += wire.len().max(1) as u64;
    }
    (ts, tr, packets)
}

fn ack_1000(p: &mut Pair) -> Duration {
    let mut wire = Vec::with_capacity(1100);
    let mut acks = Vec::new();
    // Send 1,000 packets without acknowledging them.
    let mut sent = 0;
    let c = p.client.connection_mut(p.ch).expect("conn");
    let mut left = 1020 * CHUNK;
    while left > 0 {
        let k = left.min(p.data.len());
        left -= c.write(p.stream, &p.data[..k]).expect("write");
    }
    // The pacer's burst is 64 packets: step time forward between bursts.
    let mut now = p.now();
    for _ in 0..100 {
        while let Some(t) = p.client.poll_transmit(now, &mut p.buf) {
            wire.push(p.buf[..t.size].to_vec());
            sent += 1;
        }
        if sent >= 1000 {
            break;
        }
        now += Duration::from_millis(1);
        p.clock = now;
        // The pacer's timer: the sans-IO contract is poll_transmit until None, then
        // handle_timeout when poll_timeout is due.
        p.client.handle_timeout(now);
    }
    assert!(sent >= 1000, "{sent} packets in flight");
    let now = p.now();
    for d in wire.iter_mut() {
        p.server
            .handle_datagram(now, p.c_addr, DatagramInfo::default(), d);
    }
    let s = p.server.connection_mut(p.sh).expect("conn");
    while let Ok(Some(_)) = s.read(p.stream, &mut p.out) {}
    while let Some(t) = p.server.poll_transmit(now, &mut p.buf) {
        acks.push(p.buf[..t.size].to_vec());
    }
    let t = Instant::now();
    for d in acks.iter_mut() {
        p.client
            .handle_datagram(now, p.s_addr, DatagramInfo::default(), d);
    }
    let el = t.elapsed();
    while p.client.poll_event().is_some() {}
    while p.server.poll_event().is_some() {}
    el
}

fn bare_seal(suite: CipherSuite) -> impl FnMut() {
    let alg = match suite {
        CipherSuite::Aes256Gcm => &aws_lc_rs::aead::AES_256_GCM,
        _ => &aws_lc_rs::aead::CHACHA20_POLY1305,
    };
    let key = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(alg, &[7u8; 32]).expect("key"),
    );
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    move || {
        n += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(&[0u8; 20]),
                &mut buf,
            )
            .expect("seal");
        let _ = black_box(tag);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport");
    let mut p = pair();
    let suite = p.suite();
    g.bench_function("send_packet", |b| {
        b.iter_custom(|iters| {
            let (ts, _, n) = send_recv(&mut p, iters);
            ts * iters as u32 / n.max(1) as u32
        })
    });
    g.bench_function("recv_packet", |b| {
        b.iter_custom(|iters| {
            let (_, tr, n) = send_recv(&mut p, iters);
            tr * iters as u32 / n.max(1) as u32
        })
    });
    g.sample_size(20);
    g.bench_function("ack_1000", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| ack_1000(&mut p)).sum())
    });
    g.sample_size(100);
    let mut seal = bare_seal(suite);
    g.bench_function("bare_seal_1400", |b| b.iter(&mut seal));
    g.finish();
}

/// Per-packet figures from many short runs, each run measuring every figure once (the
/// protocol with copied writes, with zero-copy writes, an ACK of 1,000 packets, and the
/// bare AEAD), printed as the median run and the fastest run.
///
/// Why both: this benchmark runs on shared machines whose cores are intermittently
/// contended (the bare AEAD itself then slows by a third), and contention slows the
/// protocol's memory-bound work more than the AES instructions. The median shows what a
/// run on the machine as it is gives; the fastest run (the lower envelope; noise only
/// ever adds time) shows each figure on an uncontended core, where the protocol's
/// overhead is compared with the AEAD's.
fn summary() {
    let runs: usize = std::env::var("STOQ_SUMMARY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(1);
    const PACKETS: u64 = 4_000;
    let mut p = pair();
    let suite = p.suite();
    let mut seal = bare_seal(suite);
    // Per run: [send, write, send zero-copy, write_chunk, receive, ack_1000, seal].
    let mut m: Vec<[f64; 7]> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut r = [0.0; 7];
        p.zero_copy = false;
        p.write_time = Duration::ZERO;
        let (ts, tr, n) = send_recv(&mut p, PACKETS);
        r[0] = ts.as_nanos() as f64 / n as f64;
        r[1] = p.write_time.as_nanos() as f64 / n as f64;
        r[4] = tr.as_nanos() as f64 / n as f64;
        p.zero_copy = true;
        p.write_time = Duration::ZERO;
        let (ts, _, n) = send_recv(&mut p, PACKETS);
        r[2] = ts.as_nanos() as f64 / n as f64;
        r[3] = p.write_time.as_nanos() as f64 / n as f64;
        p.zero_copy = false;
        r[5] = ack_1000(&mut p).as_nanos() as f64;
        let t = Instant::now();
        for _ in 0..PACKETS {
            seal();
        }
        r[6] = t.elapsed().as_nanos() as f64 / PACKETS as f64;
        m.push(r);
    }
    let stat = |i: usize, fastest: bool| {
        let mut v: Vec<f64> = m.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        if fastest { v[0] } else { v[v.len() / 2] }
    };
    println!(
        "\nsummary: {runs} runs of {PACKETS} packets each; suite {suite:?}; {CHUNK}-byte STREAM \
         payloads; ns per packet, and the protocol's time over the bare AEAD's"
    );
    println!("                                        median run          fastest run");
    let line = |name: &str, i: usize, minus: Option<usize>| {
        let cells: Vec<String> = [false, true]
            .into_iter()
            .map(|f| {
                let e = stat(6, f);
                let v = stat(i, f) - minus.map_or(0.0, |j| stat(j, f));
                if i == 6 {
                    format!("{v:6.0}          ")
                } else {
                    format!("{v:6.0} ({:.2}x)  ", (v - e) / e)
                }
            })
            .collect();
        println!("  {name:<36} {}     {}", cells[0], cells[1]);
    };
    line("bare AEAD seal", 6, None);
    line("send, all included", 0, None);
    line("  the same without the app's write", 0, Some(1));
    line("send, zero-copy write_chunk", 2, None);
    line("receive, all included", 4, None);
    println!(
        "  (the application's write: {:.0} ns copied, {:.0} ns zero-copy, median)",
        stat(1, false),
        stat(3, false)
    );
    let a = stat(5, false);
    println!(
        "  one ACK of 1,000 packets {:.1} us ({:.0} ns per acknowledged packet), median",
        a / 1e3,
        a / 1000.0
    );
}

criterion_group!(benches, bench);

fn main() {
    // `STOQ_PROFILE_SECS=N`: only the send/receive loop, for N seconds, for a profiler
    // (no criterion, no bare AEAD, no ACK benchmark in the samples).
    if let Some(secs) = std::env::var("STOQ_PROFILE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut p = pair();
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            black_box(send_recv(&mut p, 20_000));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
