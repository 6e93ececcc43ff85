//! `stoq_xdp`: the XDP program in front of every STOQ endpoint.
//!
//! For each frame it runs the shared classifier from `stoq-common`:
//! - a well-formed STOQ packet to a port in `STOQ_PORTS` is redirected into
//!   `XSKMAP[rx_queue_index]`, or passed to the kernel when no socket is bound there or
//!   when it is larger than an AF_XDP frame (a GSO/GRO super-packet in generic mode, which
//!   the kernel stack segments for the socket reserving the port);
//! - a malformed datagram to a STOQ port is dropped;
//! - everything else is passed.
//!
//! Before an Initial is steered, the per-source-prefix rate limit of `STOQ_INITIAL_LIMIT`
//! (a GCRA bucket per prefix and CPU in `STOQ_INITIAL_BUCKETS`) may drop it: a handshake
//! flood is shed here, before userspace pays for it. Other packets are never limited.
//!
//! Every frame increments exactly one verdict counter in `STOQ_COUNTERS` (per CPU), and
//! every STOQ packet also increments its packet-kind counter.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, LruPerCpuHashMap, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use stoq_common::classify::{PacketKind, Steer, Verdict, classify_frame};
use stoq_common::limit::{INITIAL_BUCKETS, InitialLimit, PrefixKey, source_prefix};
use stoq_common::maps::{
    COUNTER_ABORTED, COUNTER_INITIAL_LIMITED, COUNTER_NO_SOCKET, COUNTER_OVERSIZE,
    COUNTER_REDIRECTED, ClassifierConfig, MAX_QUEUES, NUM_COUNTERS, PORT_WORDS, PortSet,
    XSK_MAX_FRAME,
};
use stoq_common::ptr::Bytes;

#[map(name = "STOQ_PORTS")]
static STOQ_PORTS: Array<u32> = Array::with_max_entries(PORT_WORDS, 0);

#[map(name = "STOQ_CONFIG")]
static STOQ_CONFIG: Array<ClassifierConfig> = Array::with_max_entries(1, 0);

#[map(name = "STOQ_COUNTERS")]
static STOQ_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[map(name = "XSKMAP")]
static XSKMAP: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "STOQ_INITIAL_LIMIT")]
static STOQ_INITIAL_LIMIT: Array<InitialLimit> = Array::with_max_entries(1, 0);

#[map(name = "STOQ_INITIAL_BUCKETS")]
static STOQ_INITIAL_BUCKETS: LruPerCpuHashMap<PrefixKey, u64> =
    LruPerCpuHashMap::with_max_entries(INITIAL_BUCKETS, 0);

/// Whether an Initial from the frame's source prefix is within the rate limit (always,
/// when the limit is off or its state cannot be read: the limit only ever sheds load).
#[inline(always)]
fn initial_allowed(bytes: &Bytes<'_>, s: &Steer) -> bool {
    let Some(limit) = STOQ_INITIAL_LIMIT.get(0) else {
        return true;
    };
    if !limit.is_on() {
        return true;
    }
    let Some(key) = source_prefix(bytes, s, limit) else {
        return true;
    };
    // SAFETY: a helper without arguments; it reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    match STOQ_INITIAL_BUCKETS.get_ptr_mut(&key) {
        // SAFETY: the pointer comes from a successful lookup of this CPU's value in a
        // per-CPU map; only this program writes it, with preemption disabled.
        Some(tat) => limit.admit(unsafe { &mut *tat }, now),
        None => {
            let mut tat = 0;
            let ok = limit.admit(&mut tat, now);
            // A full map evicts its least recently used bucket; a failed insert only
            // means this prefix starts again with a full bucket.
            let _ = STOQ_INITIAL_BUCKETS.insert(&key, &tat, 0);
            ok
        }
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = STOQ_COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup; this CPU's slot
        // is only written by this program, which runs with preemption disabled.
        unsafe { *c += 1 };
    }
}

/// The program entry point.
#[xdp]
pub fn stoq_xdp(ctx: XdpContext) -> u32 {
    let Some(cfg) = STOQ_CONFIG.get(0) else {
        count(COUNTER_ABORTED);
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: `ctx.ctx` is the live `xdp_md`; `data..data_end` is the frame, readable for
    // the whole program run.
    let bytes = unsafe { Bytes::from_xdp(ctx.data(), &raw const (*ctx.ctx).data_end) };
    let verdict = classify_frame(bytes, cfg, |port| {
        let (word, mask) = PortSet::slot(port);
        STOQ_PORTS.get(word).is_some_and(|w| *w & mask != 0)
    });
    match verdict {
        Verdict::Stoq(s) => {
            count(s.kind.counter());
            if s.kind == PacketKind::Initial && !initial_allowed(&bytes, &s) {
                count(COUNTER_INITIAL_LIMITED);
                return xdp_action::XDP_DROP;
            }
            let queue = ctx.rx_queue_index();
            if XSKMAP.get(queue).is_none() {
                count(COUNTER_NO_SOCKET);
                return xdp_action::XDP_PASS;
            }
            if ctx.data_end() - ctx.data() > XSK_MAX_FRAME as usize {
                count(COUNTER_OVERSIZE);
                return xdp_action::XDP_PASS;
            }
            match XSKMAP.redirect(queue, u64::from(xdp_action::XDP_PASS)) {
                Ok(action) if action == xdp_action::XDP_REDIRECT => {
                    count(COUNTER_REDIRECTED);
                    action
                }
                _ => {
                    count(COUNTER_NO_SOCKET);
                    xdp_action::XDP_PASS
                }
            }
        }
        Verdict::Pass(r) => {
            count(r.counter());
            xdp_action::XDP_PASS
        }
        Verdict::Drop(r) => {
            count(r.counter());
            xdp_action::XDP_DROP
        }
    }
}

/// Returns `XDP_PASS` and does nothing else: the baseline that benchmarks subtract to
/// isolate `stoq_xdp`'s own cost from the `BPF_PROG_TEST_RUN` loop around it. Never
/// attached.
#[xdp]
pub fn stoq_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// The license the kernel checks before granting GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
