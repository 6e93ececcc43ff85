//! The flood watch: a server on a socket backend attaches the XDP program in front of its
//! socket while it answers a handshake flood, and detaches it once the flood has passed
//! ([`XdpFilter::UnderFlood`](super::XdpFilter::UnderFlood)). The kernel then sheds the
//! Initials beyond each source prefix's rate before the socket queues them ahead of real
//! clients, and bulk transfers do not pay for the filter the rest of the time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::EngineConfig;
use super::home::Worker;
use super::open::{XdpGuard, attach_filter};

/// How often the Retry rate is read.
const TICK: Duration = super::FLOOD_WATCH_PERIOD;
/// Retries a second (all workers) that mean a flood: far above what a burst of real
/// clients makes (a thousand connecting at once cause about 2,000), and at 0.6 µs each a
/// rate the workers absorb on their own below it.
const FLOOD_RETRIES_PER_SEC: f64 = 50_000.0;
/// How long the filter stays after the rate falls below that.
const CALM: Duration = Duration::from_secs(10);
/// How long to wait before trying again after attaching failed.
const RETRY_ATTACH: Duration = Duration::from_secs(60);

/// The watch's thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct FloodWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FloodWatch {
    /// Starts watching `workers`; the filter goes into `slot`.
    pub(crate) fn spawn(
        workers: &[Arc<Worker>],
        slot: Arc<Mutex<Option<XdpGuard>>>,
        config: EngineConfig,
        bind: SocketAddr,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<Weak<Worker>> = workers.iter().map(Arc::downgrade).collect();
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stoq-flood-watch".into())
            .spawn(move || watch(&workers, &slot, &config, bind, &s))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for FloodWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // Wake it from its tick, so an engine stops at once, not up to a tick later.
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn lock(slot: &Mutex<Option<XdpGuard>>) -> std::sync::MutexGuard<'_, Option<XdpGuard>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits one `tick`, or less if the watch is stopped (its owner unparks the thread);
/// whether it should go on.
fn wait_tick(stop: &AtomicBool, tick: Duration) -> bool {
    let end = Instant::now() + tick;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        // A spurious wake-up only loops.
        std::thread::park_timeout(end - now);
    }
}

fn watch(
    workers: &[Weak<Worker>],
    slot: &Mutex<Option<XdpGuard>>,
    config: &EngineConfig,
    bind: SocketAddr,
    stop: &AtomicBool,
) {
    let retries = || -> Option<u64> {
        let mut sum = 0;
        for w in workers {
            // Published by each loop every turn: reading it wakes no worker.
            sum += w.upgrade()?.retries();
        }
        Some(sum)
    };
    let Some(mut last) = retries() else { return };
    let mut at = Instant::now();
    let mut flood_seen: Option<Instant> = None;
    let mut failed: Option<Instant> = None;
    let mut ours = false;
    while wait_tick(stop, TICK) {
        let Some(now_retries) = retries() else { return };
        let now = Instant::now();
        let rate = (now_retries - last) as f64 / now.duration_since(at).as_secs_f64();
        (last, at) = (now_retries, now);
        if rate >= FLOOD_RETRIES_PER_SEC {
            flood_seen = Some(now);
            let retry_due = failed.is_none_or(|t| now.duration_since(t) >= RETRY_ATTACH);
            let mut g = lock(slot);
            if g.is_none() && retry_due {
                match attach_filter(config, bind) {
                    Ok(guard) => {
                        *g = Some(guard);
                        ours = true;
                        tracing::warn!(
                            rate = rate as u64,
                            "handshake flood ({rate:.0} Retries/s): the XDP filter is now in \
                             front of the socket"
                        );
                    }
                    Err(e) => {
                        failed = Some(now);
                        tracing::warn!(
                            "handshake flood ({rate:.0} Retries/s), but the XDP filter \
                             cannot attach: {e}"
                        );
                    }
                }
            }
        } else if ours && flood_seen.is_some_and(|t| now.duration_since(t) >= CALM) {
            drop(lock(slot).take());
            ours = false;
            tracing::info!("handshake flood over: the XDP filter is detached");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping the watch wakes it from its tick: an engine's drop does not wait a tick.
    #[test]
    fn a_stopped_watch_ends_without_waiting_out_its_tick() {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let _ = tx.send(wait_tick(&s, Duration::from_secs(3600)));
        });
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Release);
        t.thread().unpark();
        // An hour's tick: only the unpark can end the wait within the test.
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(false));
        t.join().expect("join");
        assert!(wait_tick(&AtomicBool::new(false), Duration::from_millis(1)));
    }
}
