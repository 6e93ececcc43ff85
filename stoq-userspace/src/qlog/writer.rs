//! The writer thread: drains the bounded queue the connections' traces feed and writes one
//! JSON-SEQ file per connection. Connections never wait for it: a full queue drops the
//! batch and counts it.
//!
//! It is built to cost the core it may share with a worker as little as it can: woken by
//! the first batch, it then drains the queue once per [`TICK`] (a steady stream of batches
//! costs one wake-up a tick, not one per batch), formats without `core::fmt`, and writes
//! consecutive batches of one trace with one system call.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::event::{self, Record};

/// Batches queued for the writer at most (each up to [`super::BATCH`] events).
const QUEUE: usize = 1024;
/// While batches keep coming, the writer drains the queue once per tick instead of being
/// woken for each (the queue holds ~100 ms of events at 15 Gbit/s, so a tick is far from
/// filling it). An event waits at most a tick once queued.
const TICK: Duration = Duration::from_millis(1);
/// Formatted events of one trace are written once this many bytes are waiting.
const WRITE_AT: usize = 64 << 10;

/// What opens a trace's file.
#[derive(Debug)]
pub(crate) struct Header {
    /// The file's name before `.sqlog`, and the trace's group: `<odcid>_<side>` for a
    /// connection, `endpoint_<port>_<pid>` for an endpoint's own events.
    pub(crate) stem: String,
    /// The vantage point: `client` or `server`.
    pub(crate) vantage: &'static str,
    /// What the trace is: `connection` or `endpoint`.
    pub(crate) what: &'static str,
    /// Wall-clock time of the trace's start, microseconds since the Unix epoch.
    pub(crate) unix_us: u64,
}

pub(crate) enum Msg {
    Open { id: u64, header: Box<Header> },
    Events { id: u64, events: Vec<Record> },
    Close { id: u64 },
    Flush { done: Sender<()> },
}

/// Counters shared by the writer, its handles and the traces.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) traces: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    /// Traces whose close message found the queue full: the writer closes them later.
    pub(crate) lost_closes: Mutex<Vec<u64>>,
}

/// What a [`QlogWriter`] has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QlogStats {
    /// Connection traces begun.
    pub traces: u64,
    /// Events written to files.
    pub written: u64,
    /// Events dropped: the writer's queue was full (the connection never waits for it), or
    /// the trace's file could not be opened.
    pub dropped: u64,
    /// Files that could not be opened or written.
    pub write_errors: u64,
}

/// Where an endpoint's qlog traces go: one JSON-SEQ file per connection
/// (`<odcid>_<client|server>.sqlog`, draft-ietf-quic-qlog-main-schema's sequential format,
/// readable by qvis and the `qlog` crate), written by a thread of its own so a worker never
/// waits on the disk.
///
/// Turn it on for every connection of an endpoint with
/// [`TransportConfig::qlog`](crate::conn::TransportConfig::qlog), or for one connection
/// with [`Connection::set_qlog`](crate::Connection::set_qlog). Cloning shares the writer.
///
/// ```no_run
/// use std::sync::Arc;
/// let writer = stoq::qlog::QlogWriter::new("/var/log/stoq/qlog")?;
/// let mut transport = stoq::conn::TransportConfig::default();
/// transport.qlog = Some(writer.clone());
/// let mut config = stoq::conn::EndpointConfig::default();
/// config.transport = Arc::new(transport);
/// // ... build the endpoint with `config`; later:
/// println!("{:?}", writer.stats());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct QlogWriter {
    pub(crate) tx: Sender<Msg>,
    pub(crate) recycle: Receiver<Vec<Record>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) next_id: Arc<AtomicU64>,
    dir: Arc<PathBuf>,
}

impl std::fmt::Debug for QlogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QlogWriter")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl QlogWriter {
    /// A writer into `dir`, which is created if missing; starts the writer thread.
    ///
    /// # Errors
    /// The directory cannot be created, or the thread cannot be started.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        Self::start(dir.as_ref(), None)
    }

    /// A writer into `dir` whose thread (`stoq-qlog`) runs on CPU `cpu` alone.
    ///
    /// The writer formats and writes every event of every traced connection: tracing every
    /// packet at line rate, it takes about a tenth of the core it runs on, and where that
    /// is a worker's core the worker pays for it (docs/operations.md). Give it a core no
    /// worker uses, such as one kept for housekeeping.
    ///
    /// # Errors
    /// As [`QlogWriter::new`]; also `InvalidInput` where `cpu` is beyond the kernel's CPU
    /// set, the OS's error where the CPU is offline or outside this process's allowed set,
    /// and `Unsupported` off Linux.
    pub fn on_cpu(dir: impl AsRef<Path>, cpu: usize) -> io::Result<Self> {
        Self::start(dir.as_ref(), Some(cpu))
    }

    fn start(dir: &Path, cpu: Option<usize>) -> io::Result<Self> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (recycle_tx, recycle) = crossbeam_channel::bounded(QUEUE);
        let counters = Arc::new(Counters::default());
        let mut w = Writer {
            dir: dir.clone(),
            rx,
            recycle: recycle_tx,
            counters: counters.clone(),
            files: HashMap::new(),
            out: Vec::with_capacity(WRITE_AT + 4096),
            out_id: None,
            out_events: 0,
        };
        let thread = std::thread::Builder::new()
            .name("stoq-qlog".into())
            .spawn(move || w.run())?;
        if let Some(cpu) = cpu {
            // On error the senders drop with this function, and the thread ends.
            crate::os::cpu::pin_thread(&thread, cpu)?;
        }
        Ok(Self {
            tx,
            recycle,
            counters,
            next_id: Arc::new(AtomicU64::new(0)),
            dir: Arc::new(dir),
        })
    }

    /// The directory the traces go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> QlogStats {
        let c = &self.counters;
        QlogStats {
            traces: c.traces.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Waits until everything queued so far is written and flushed to the files (events
    /// still batched inside live connections are not queued yet: they follow within
    /// 100 ms of activity, and at once when the connection is dropped). For shutdown and
    /// tests; never call it from a worker.
    pub fn flush(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Flush { done }).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Queues `msg` without waiting. A full queue gives back a batch's vector (cleared,
    /// its events counted as dropped) for reuse; a lost close is remembered for the writer.
    pub(crate) fn try_send(&self, msg: Msg) -> Result<(), Option<Vec<Record>>> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => match m {
                Msg::Events { mut events, .. } => {
                    self.counters
                        .dropped
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    events.clear();
                    Err(Some(events))
                }
                Msg::Close { id } => {
                    if let Ok(mut l) = self.counters.lost_closes.lock() {
                        l.push(id);
                    }
                    Err(None)
                }
                Msg::Open { .. } | Msg::Flush { .. } => Err(None),
            },
        }
    }

    /// An empty batch vector: a recycled one if the writer returned any.
    pub(crate) fn batch_vec(&self) -> Vec<Record> {
        self.recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(super::BATCH))
    }
}

struct Writer {
    dir: PathBuf,
    rx: Receiver<Msg>,
    recycle: Sender<Vec<Record>>,
    counters: Arc<Counters>,
    files: HashMap<u64, File>,
    /// Formatted events not yet written, all of trace `out_id`'s.
    out: Vec<u8>,
    out_id: Option<u64>,
    /// How many events `out` holds.
    out_events: u64,
}

impl Writer {
    fn run(&mut self) {
        // Idle: sleep until a connection queues something.
        while let Ok(msg) = self.rx.recv() {
            self.handle(msg);
            // Busy: drain what has queued, write it, rest a tick; until a tick brings
            // nothing.
            loop {
                while let Ok(m) = self.rx.try_recv() {
                    self.handle(m);
                }
                self.write_out();
                self.close_lost();
                std::thread::sleep(TICK);
                if self.rx.is_empty() {
                    break;
                }
            }
        }
        // Every handle is gone.
        self.write_out();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Open { id, header } => match self.open(&header) {
                Ok(f) => {
                    self.files.insert(id, f);
                }
                Err(e) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, dir = %self.dir.display(), "qlog: cannot open a trace file");
                }
            },
            Msg::Events { id, mut events } => {
                if self.out_id != Some(id) {
                    self.write_out();
                }
                if self.files.contains_key(&id) {
                    for r in &events {
                        self.out.push(0x1e);
                        event::write_json(&mut self.out, r);
                        self.out.push(b'\n');
                    }
                    self.out_id = Some(id);
                    self.out_events += events.len() as u64;
                    if self.out.len() >= WRITE_AT {
                        self.write_out();
                    }
                } else {
                    self.counters
                        .dropped
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                }
                events.clear();
                let _ = self.recycle.try_send(events);
            }
            Msg::Close { id } => {
                if self.out_id == Some(id) {
                    self.write_out();
                }
                self.files.remove(&id);
            }
            Msg::Flush { done } => {
                self.write_out();
                self.close_lost();
                let _ = done.send(());
            }
        }
    }

    /// Writes the formatted events waiting in `out` to their trace's file.
    fn write_out(&mut self) {
        let (Some(id), n) = (self.out_id.take(), std::mem::take(&mut self.out_events)) else {
            return;
        };
        let ok = self
            .files
            .get_mut(&id)
            .is_some_and(|f| f.write_all(&self.out).is_ok());
        self.out.clear();
        if ok {
            self.counters.written.fetch_add(n, Ordering::Relaxed);
        } else {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn close_lost(&mut self) {
        let lost = match self.counters.lost_closes.lock() {
            Ok(mut l) if !l.is_empty() => std::mem::take(&mut *l),
            _ => return,
        };
        for id in lost {
            if self.out_id == Some(id) {
                self.write_out();
            }
            self.files.remove(&id);
        }
    }

    /// Creates the trace's file (a new name if taken) and writes its header.
    fn open(&mut self, h: &Header) -> io::Result<File> {
        let name = &h.stem;
        let mut n = 0;
        let mut file = loop {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("-{n}")
            };
            let path = self.dir.join(format!("{name}{suffix}.sqlog"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut line = Vec::with_capacity(640);
        line.push(0x1e);
        line.extend_from_slice(
            b"{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\",\
             \"serialization_format\":\"application/qlog+json-seq\",\
             \"title\":\"STOQ\",\"trace\":{\"title\":\"STOQ ",
        );
        line.extend_from_slice(h.what.as_bytes());
        line.push(b' ');
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b"\",\"common_fields\":{\"group_id\":\"");
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(
            b"\",\"protocol_types\":[\"QUIC\"],\"reference_time\":{\"clock_type\":\"monotonic\",\
             \"epoch\":\"unknown\",\"wall_clock_time\":",
        );
        event::string(&mut line, &rfc3339(h.unix_us));
        line.extend_from_slice(
            b"},\"time_format\":\"relative_to_epoch\"},\"vantage_point\":{\"type\":\"",
        );
        line.extend_from_slice(h.vantage.as_bytes());
        line.extend_from_slice(
            b"\"},\"event_schemas\":[\"urn:ietf:params:qlog:events:quic\",\
             \"urn:ietf:params:qlog:events:stoq\"]}}\n",
        );
        file.write_all(&line)?;
        self.counters.traces.fetch_add(1, Ordering::Relaxed);
        Ok(file)
    }
}

/// `unix_us` as an RFC 3339 UTC timestamp with microseconds.
fn rfc3339(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_us % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use super::QlogWriter;
    use super::rfc3339;

    /// The writer threads of this process whose allowed CPUs read exactly `list`.
    #[cfg(target_os = "linux")]
    fn writer_threads_on(list: &str) -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        tasks
            .filter_map(|t| {
                let p = t.ok()?.path();
                let comm = std::fs::read_to_string(p.join("comm")).ok()?;
                let status = std::fs::read_to_string(p.join("status")).ok()?;
                let cpus = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                    .trim()
                    .to_string();
                (comm.trim() == "stoq-qlog" && cpus == list).then_some(())
            })
            .count()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_writer_runs_on_the_cpu_it_is_given() {
        let dir = std::env::temp_dir().join(format!("stoq-qlog-pin-{}", std::process::id()));
        let allowed = crate::os::cpu::allowed();
        // The last allowed CPU: where the process may use several, no unpinned writer of
        // another test reads as pinned to it alone.
        let cpu = *allowed.last().expect("some CPU");
        let before = writer_threads_on(&cpu.to_string());
        let w = QlogWriter::on_cpu(&dir, cpu).expect("pin to an allowed CPU");
        // The thread names itself once it runs: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while writer_threads_on(&cpu.to_string()) <= before && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            writer_threads_on(&cpu.to_string()) > before,
            "no stoq-qlog thread is pinned to CPU {cpu} alone"
        );
        drop(w);

        let e = QlogWriter::on_cpu(&dir, libc::CPU_SETSIZE as usize).expect_err("beyond the set");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        let outside = (0..libc::CPU_SETSIZE as usize)
            .find(|c| !allowed.contains(c))
            .expect("a CPU outside the allowed set");
        let e = QlogWriter::on_cpu(&dir, outside).expect_err("outside the allowed set");
        assert!(e.to_string().contains(&format!("CPU {outside}")), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wall_clock_times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @1796553296 → Sun Dec  6 10:34:56 UTC 2026
        assert_eq!(
            rfc3339(1_796_553_296_000_123),
            "2026-12-06T10:34:56.000123Z"
        );
        // A leap day: date -u -d @1709210096 → Thu Feb 29 12:34:56 UTC 2024
        assert_eq!(
            rfc3339(1_709_210_096_500_000),
            "2024-02-29T12:34:56.500000Z"
        );
    }
}
