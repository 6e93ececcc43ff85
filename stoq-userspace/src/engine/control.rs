//! Starting and stopping an engine: the backend choice, one worker per backend (each on a
//! thread of its own, or one on the caller's runtime), and the calls that reach every
//! worker (statistics, rebinding, stopping).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::home::{State, Worker};
use super::worker::LoopConfig;
use super::{EngineConfig, EngineError, EngineInfo, WorkerStats};
use crate::conn::Endpoint;
use crate::handshake::ServerConfig;
use crate::io::select::{self, SelectError};
use crate::io::{Backend, BackendKind};

/// Where an engine's workers run.
#[derive(Debug, Clone)]
pub(crate) enum Placement {
    /// One thread per worker, each with its own current-thread runtime: the worker's state
    /// lives on its thread, and tasks served there reach it without a lock.
    Threads,
    /// One worker, as a task on this runtime (the caller's): its state is behind a lock.
    Runtime(tokio::runtime::Handle),
}

/// The running engine: its workers and their threads.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) workers: Vec<Arc<Worker>>,
    pub(crate) info: EngineInfo,
    /// The XDP program and its attachment (AF_XDP, or the filter in front of a socket
    /// backend), removed when the engine stops.
    #[cfg(target_os = "linux")]
    xdp: Arc<Mutex<Option<super::open::XdpGuard>>>,
    /// Attaches the filter during a handshake flood (a server on a socket backend).
    #[cfg(target_os = "linux")]
    flood_watch: Mutex<Option<super::flood::FloodWatch>>,
    /// Records the XDP program's verdicts into qlog (with qlog on).
    #[cfg(target_os = "linux")]
    xdp_trace: Mutex<Option<super::xdp_trace::XdpTrace>>,
    pub(crate) socket_buffer: usize,
    /// Where the connections' qlog traces go, if anywhere (for the metrics).
    pub(crate) qlog: Option<crate::qlog::QlogWriter>,
    batch: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
    /// Worker 0 holds a TURN allocation: new connections are made there, so that any of
    /// them can reach its peer through the relay (`docs/nat.md`).
    pub(crate) relaying: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Chooses the backend, binds one socket per worker and starts the workers.
    pub(crate) fn start(
        config: EngineConfig,
        server: Option<Arc<ServerConfig>>,
        placement: Placement,
    ) -> Result<Arc<Self>, EngineError> {
        Self::start_with(config, server, None, placement)
    }

    /// As [`start`](Self::start), on backends the application built (one per worker).
    #[allow(clippy::too_many_lines)]
    pub(crate) fn start_with(
        config: EngineConfig,
        server: Option<Arc<ServerConfig>>,
        given: Option<Vec<Box<dyn Backend>>>,
        placement: Placement,
    ) -> Result<Arc<Self>, EngineError> {
        config.endpoint.validate()?;
        if server.is_some() && config.endpoint.cluster_keys.is_none() {
            tracing::info!(
                "no cluster keys (EndpointConfig::cluster_keys, `stoq server --cluster-keys`): \
                 stateless resets and Retry tokens are good only until this process restarts, \
                 and on no other server"
            );
        }
        let selection = match &given {
            Some(b) if !b.is_empty() => select::Selection {
                chosen: b[0].kind(),
                forced: true,
                skipped: Vec::new(),
            },
            Some(_) => {
                return Err(EngineError::Os(io::Error::other("no backend given")));
            }
            None => select::select(config.backend)?,
        };
        let n = match (&placement, config.workers) {
            (Placement::Runtime(_), _) => 1,
            (_, 0) if server.is_some() => super::available_cores(),
            (_, 0) => 1,
            (_, n) => n,
        };
        if n > 255 {
            return Err(EngineError::TooManyWorkers(n));
        }
        // The chosen backend, else (unless forced) the next ones in order, each failure
        // recorded as the reason it was skipped.
        let mut selection = selection;
        let order: Vec<BackendKind> = if selection.forced {
            vec![selection.chosen]
        } else {
            BackendKind::ALL
                .iter()
                .copied()
                .skip_while(|k| *k != selection.chosen)
                .collect()
        };
        let mut opened = given.map(|backends| super::open::Opened {
            kind: BackendKind::Custom,
            detail: "supplied by the application".into(),
            backends,
            #[cfg(target_os = "linux")]
            xdp: None,
        });
        let order = if opened.is_some() { Vec::new() } else { order };
        for kind in order {
            // The chosen one passed its probe; the ones after it have not been asked yet.
            if kind != selection.chosen
                && let Err(reason) = select::probe(kind).result
            {
                selection.skipped.push((kind, reason));
                continue;
            }
            match super::open::open(kind, &config, n, server.is_some(), selection.forced) {
                Ok(o) => {
                    opened = Some(o);
                    break;
                }
                Err(reason) if selection.forced => {
                    return Err(EngineError::Backend(SelectError::ForcedUnavailable {
                        kind,
                        reason,
                    }));
                }
                Err(reason) => selection.skipped.push((kind, reason)),
            }
        }
        let opened = opened.ok_or_else(|| {
            EngineError::Os(io::Error::other(format!(
                "no backend could start: {selection}"
            )))
        })?;
        selection.chosen = opened.kind;
        // The fallback decisions, for an operator who wonders why not AF_XDP.
        for (kind, reason) in &selection.skipped {
            tracing::info!(backend = %kind, %reason, "backend skipped");
        }
        tracing::info!(
            backend = %selection.chosen,
            forced = selection.forced,
            detail = %opened.detail,
            workers = opened.backends.len(),
            "backend chosen"
        );
        let backends = opened.backends;
        let n = backends.len();
        let encrypted = config
            .endpoint
            .cluster_keys
            .as_ref()
            .is_some_and(|k| k.encrypts_cids());
        #[cfg(target_os = "linux")]
        if n > 1 && config.steering && server.is_some() {
            if encrypted {
                // The kernel's classic-BPF program cannot decrypt a QUIC-LB CID: the kernel
                // hashes addresses instead, and userspace hands the rest over.
                tracing::info!(
                    "QUIC-LB encrypted CIDs: kernel steering off, workers hand datagrams over"
                );
            } else {
                crate::os::cbpf::attach(backends[0].socket_fd(), &config.endpoint.cid_layout)
                    .map_err(EngineError::Os)?;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = encrypted;
        let info = EngineInfo {
            selection,
            local_addr: backends[0].local_addr(),
            workers: n,
            capabilities: backends[0].capabilities(),
            detail: opened.detail,
        };
        let max_accept = config.endpoint.max_incoming;
        let mut workers = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for (i, backend) in backends.into_iter().enumerate() {
            let mut ecfg = config.endpoint.clone();
            ecfg.worker_id = i as u8;
            // Each worker's endpoint draws its own secrets from its own seed.
            ecfg.rng_seed[31] ^= i as u8;
            let state = State {
                endpoint: Endpoint::new(ecfg, server.clone())?,
                api: super::app::ApiState::new(),
                handler: config.handler.as_ref().map(|f| f.build(i as u8)),
                stats: WorkerStats {
                    worker: i as u8,
                    ..WorkerStats::default()
                },
                stop: false,
                rebind: None,
                relay_server: None,
            };
            let (worker, inbox, state) = match placement {
                Placement::Threads => {
                    let (w, inbox) = Worker::pinned(i as u8, max_accept);
                    (w, inbox, Some(state))
                }
                Placement::Runtime(_) => {
                    let (w, inbox) = Worker::locked(i as u8, state, max_accept);
                    (w, inbox, None)
                }
            };
            worker
                .api
                .set_application_admission(config.admission == super::Admission::Application);
            workers.push(worker);
            parts.push((backend, inbox, state));
        }
        let engine = Arc::new(Self {
            workers,
            info,
            #[cfg(target_os = "linux")]
            xdp: Arc::new(Mutex::new(opened.xdp)),
            #[cfg(target_os = "linux")]
            flood_watch: Mutex::new(None),
            #[cfg(target_os = "linux")]
            xdp_trace: Mutex::new(None),
            socket_buffer: config.socket_buffer,
            qlog: config.endpoint.transport.qlog.clone(),
            batch: config.batch,
            threads: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            relaying: std::sync::atomic::AtomicBool::new(false),
        });
        // With qlog on, the XDP program's verdicts go into the endpoint's trace: a server's
        // (AF_XDP, or the filter in front of its socket) or an AF_XDP client's.
        #[cfg(target_os = "linux")]
        if let Some(w) = &config.endpoint.transport.qlog
            && (server.is_some() || engine.info.selection.chosen == BackendKind::AfXdp)
        {
            *engine
                .xdp_trace
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(super::xdp_trace::XdpTrace::spawn(
                    engine.xdp.clone(),
                    w.clone(),
                    engine.info.local_addr.port(),
                ));
        }
        #[cfg(target_os = "linux")]
        if server.is_some()
            && config.xdp_filter == super::XdpFilter::UnderFlood
            && matches!(
                engine.info.selection.chosen,
                BackendKind::Udp | BackendKind::IoUring
            )
            && !engine.info.local_addr.ip().is_unspecified()
        {
            *engine
                .flood_watch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(super::flood::FloodWatch::spawn(
                    &engine.workers,
                    engine.xdp.clone(),
                    config.clone(),
                    engine.info.local_addr,
                ));
        }
        let mut threads = Vec::with_capacity(n);
        for (i, (backend, inbox, state)) in parts.into_iter().enumerate() {
            let worker = engine.workers[i].clone();
            let cfg = LoopConfig {
                peers: engine.workers.clone(),
                layout: config.endpoint.cid_layout,
                batch: config.batch.max(1),
                idle_poll: config.idle_poll,
                // A self-woken runtime task is not reliably queued behind the tasks it
                // woke (measured: the in-runtime client's round trip went from 13 to 75
                // us): on the caller's runtime the loop uses tokio's yield.
                queue_yield: matches!(placement, Placement::Threads),
            };
            match (&placement, state) {
                (Placement::Runtime(handle), _) => {
                    handle.spawn(super::worker::run(worker, backend, inbox, cfg));
                }
                (Placement::Threads, Some(state)) => {
                    let pin = config.pin_workers.then_some(config.first_cpu + i);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(EngineError::Os)?;
                    let kind = backend.kind().name();
                    let t = std::thread::Builder::new()
                        .name(format!("stoq-worker-{i}"))
                        .spawn(move || {
                            // Every log line of this thread names its worker and backend.
                            let _span =
                                tracing::info_span!("worker", id = i, backend = kind).entered();
                            if let Some(cpu) = pin {
                                crate::os::cpu::pin_to_core(cpu);
                            }
                            worker.make_home(state);
                            super::home::register_own_jobs(&worker, &inbox.jobs);
                            let local = tokio::task::LocalSet::new();
                            // The loop is a task of the set like the ones it serves: when it
                            // yields to them, the set runs them and then the loop again,
                            // without going back to the runtime (and its poll of the
                            // reactor) in between.
                            local.block_on(&rt, async move {
                                let _ = tokio::task::spawn_local(super::worker::run(
                                    worker, backend, inbox, cfg,
                                ))
                                .await;
                            });
                            // Tasks still served here end with the set, on this thread.
                            drop(local);
                        })
                        .map_err(EngineError::Os)?;
                    threads.push(t);
                }
                (Placement::Threads, None) => unreachable!("a pinned worker carries its state"),
            }
        }
        *engine
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = threads;
        Ok(engine)
    }

    /// Moves worker `i` to a new socket bound to `bind` (a client's rebinding).
    pub(crate) fn rebind(
        &self,
        i: usize,
        bind: SocketAddr,
        buffer: usize,
    ) -> io::Result<SocketAddr> {
        // The same kind of socket backend; AF_XDP and custom backends move to UDP.
        let kind = match self.info.selection.chosen {
            BackendKind::IoUring => BackendKind::IoUring,
            _ => BackendKind::Udp,
        };
        let b = super::open::open_socket_backend(kind, bind, false, buffer, self.batch)?;
        let addr = b.local_addr();
        let w = &self.workers[i];
        w.call(move |st| st.rebind = Some(b))
            .ok_or_else(|| io::Error::other("the worker has stopped"))?;
        w.kick();
        Ok(addr)
    }

    /// The worker a new outgoing connection lives on: round robin, or worker 0 while it
    /// holds a TURN allocation.
    pub(crate) fn pick_for_connection(&self) -> &Arc<Worker> {
        if self.relaying.load(Ordering::Relaxed) {
            return &self.workers[0];
        }
        self.pick()
    }

    /// The next worker, round robin (client connections, STUN transactions, punches).
    pub(crate) fn pick(&self) -> &Arc<Worker> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }

    /// Stops every worker and joins its thread. Connections still open are dropped
    /// without a close (call the graceful shutdown first).
    pub(crate) fn stop(&self) {
        for w in &self.workers {
            if w.is_here() {
                w.with(|st| st.stop = true);
                w.kick();
            } else {
                w.post(Box::new(|w: &Arc<Worker>| {
                    w.with(|st| st.stop = true);
                }));
            }
        }
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let me = std::thread::current().id();
        for t in threads {
            // A worker cannot wait for itself: its loop ends after this call returns.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        #[cfg(target_os = "linux")]
        {
            drop(
                self.flood_watch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
            // Its last look reads the program before the program goes.
            drop(
                self.xdp_trace
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
            drop(
                self.xdp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
        }
    }

    /// The XDP program's verdict counters (AF_XDP only): what the kernel dropped, by
    /// reason, redirected and passed.
    #[cfg(target_os = "linux")]
    pub(crate) fn xdp_stats(&self) -> Option<crate::xdp::SteerStats> {
        self.xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(super::open::XdpGuard::stats)
    }

    /// Counters of every worker, each read on its worker.
    pub(crate) fn stats(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .map(|w| {
                let mut s = w
                    .call(|st| WorkerStats {
                        connections: st.endpoint.connection_count(),
                        ..st.stats
                    })
                    .unwrap_or_default();
                s.worker = w.id;
                s.crossings = w.crossings.count.load(Ordering::Relaxed);
                s.locks = w.crossings.locks.load(Ordering::Relaxed);
                s
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
