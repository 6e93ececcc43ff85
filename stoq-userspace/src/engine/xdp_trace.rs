//! The XDP program's verdicts in qlog: with qlog on and the program in front of the
//! endpoint (AF_XDP, or the filter in front of a socket backend), a thread reads the
//! program's counters once a second and records what changed into the endpoint's own trace
//! (`endpoint_<port>_<pid>.sqlog`, event `stoq:xdp_verdicts`): the kernel's drops by reason
//! beside the connections' traces, which never see those datagrams.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stoq_common::classify::DropReason;

use super::open::XdpGuard;
use crate::qlog::{Ev, QlogWriter, Trace, XdpVerdicts};

/// How often the counters are read.
const TICK: Duration = Duration::from_secs(1);

/// The recording thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct XdpTrace {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl XdpTrace {
    /// Records the verdicts of the program in `slot` (whenever one is there) into a trace
    /// of `writer` named after `port`.
    pub(crate) fn spawn(slot: Arc<Mutex<Option<XdpGuard>>>, writer: QlogWriter, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stoq-qlog-xdp".into())
            .spawn(move || run(&slot, &writer, port, &s))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for XdpTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(slot: &Mutex<Option<XdpGuard>>, writer: &QlogWriter, port: u16, stop: &AtomicBool) {
    let start = Instant::now();
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    // Opened at the first verdict: an endpoint whose program saw nothing has no file.
    let mut trace: Option<Trace> = None;
    let mut last = None;
    let mut last_at = start;
    loop {
        std::thread::park_timeout(TICK);
        let done = stop.load(Ordering::Acquire);
        let stats = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(XdpGuard::stats);
        let now = Instant::now();
        match stats {
            Some(s) => {
                // The first look counts from the program's attachment.
                let d = last.as_ref().map_or(s, |p| s.since(p));
                if d.total() > 0 {
                    let mut dropped: Vec<(&'static str, u64)> = DropReason::ALL
                        .iter()
                        .map(|r| (r.name(), d.dropped(*r)))
                        .collect();
                    dropped.push(("oversize", d.oversize()));
                    dropped.push(("initial_rate_limited", d.initial_limited()));
                    dropped.retain(|x| x.1 > 0);
                    let t =
                        trace.get_or_insert_with(|| Trace::endpoint(writer, start, port, unix_us));
                    t.record(
                        now,
                        Ev::Xdp(Box::new(XdpVerdicts {
                            redirected: d.redirected(),
                            passed: d.passed_total() + d.no_socket() + d.oversize(),
                            dropped,
                            interval_us: now.saturating_duration_since(last_at).as_micros() as u64,
                        })),
                    );
                    t.flush();
                }
                last = Some(s);
            }
            // No program (the flood filter comes and goes): a new one counts from zero.
            None => last = None,
        }
        last_at = now;
        if done {
            return;
        }
    }
}
