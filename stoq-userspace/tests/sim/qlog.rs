//! qlog read back by an independent reader: a transfer with loss on a simulated path
//! (20 Mbit/s bottleneck, 40 ms RTT, 2 % random loss, MTU discovery on) is traced at both
//! ends, and Cloudflare's `qlog` crate (the data model quiche writes with) parses every
//! record of both files into its typed schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qlog::events::EventData;
use qlog::events::quic::PacketType;
use qlog::reader::{Event, QlogSeqReader};
use stoq::conn::cc::Congestion;
use stoq::conn::{Dir, Side, StreamId};
use stoq::qlog::QlogWriter;
use stoq::sim::LinkConfig;

use super::common::*;

const BYTES: u64 = 4 << 20;

fn lossy() -> (LinkConfig, LinkConfig) {
    let up = LinkConfig {
        rate_bps: Some(20_000_000),
        delay: Duration::from_millis(20),
        queue_bytes: 100_000,
        loss: 0.02,
        ..LinkConfig::default()
    };
    let down = LinkConfig {
        delay: Duration::from_millis(20),
        loss: 0.02,
        ..LinkConfig::default()
    };
    (up, down)
}

/// Runs the traced transfer; returns the qlog directory.
fn traced_transfer(dir: &Path) -> QlogWriter {
    let writer = QlogWriter::new(dir).expect("qlog dir");
    let mut t = transport(Congestion::Bbr.factory());
    t.qlog = Some(writer.clone());
    let (up, down) = lossy();
    let (mut sim, client) = sim(21, up, down, 1452, t, params());
    let h = connect(&mut sim, &client, Duration::from_secs(10)).expect("handshake");
    let id = sim
        .client
        .connection_mut(h)
        .unwrap()
        .open_stream(Dir::Uni)
        .unwrap();
    let sh = sim.server_conns[0];
    let (mut sent, mut got) = (0u64, 0u64);
    let fin = std::cell::Cell::new(false);
    let mut buf = vec![0u8; 65536];
    let done = sim.run(
        Duration::from_secs(60),
        |s| {
            if sent < BYTES {
                fill(s, Side::Client, h, id, 5, &mut sent);
                if sent >= BYTES {
                    // `fill` may overshoot: the stream ends wherever it stopped.
                    s.client.connection_mut(h).unwrap().finish(id).unwrap();
                }
            }
            s.events.clear();
            let rid = StreamId::new(Side::Client, Dir::Uni, 0);
            if let Ok(end) = drain_and_check(s, Side::Server, sh, rid, 5, &mut got, &mut buf) {
                fin.set(fin.get() | end);
            }
        },
        |_| fin.get(),
    );
    assert!(done, "transfer incomplete: {got} of {sent} bytes");
    assert_eq!(got, sent);
    let lost = sim.client.connection(h).unwrap().stats().lost_packets;
    assert!(
        lost > 10,
        "the path lost only {lost} packets: no recovery to trace"
    );
    sim.client
        .connection_mut(h)
        .unwrap()
        .close(sim.now, 0, b"done");
    sim.run(Duration::from_secs(1), |_| {}, |_| false);
    // Dropping the endpoints drops the connections, which hand their last events over.
    drop(sim);
    writer.flush();
    writer
}

/// Every record of `path` (split on the record separator), and what the reader made of
/// them.
fn read(path: &Path) -> (usize, qlog::QlogSeq, Vec<Event>) {
    let text = std::fs::read_to_string(path).expect("read qlog");
    let records = text
        .split('\u{1e}')
        .filter(|r| !r.trim().is_empty())
        .count();
    let reader = QlogSeqReader::with_file(path).expect("qlog header parses");
    let header = reader.qlog.clone();
    let events: Vec<Event> = reader.collect();
    (records, header, events)
}

#[test]
fn a_lossy_transfer_reads_back_with_the_qlog_crate() {
    let dir = std::env::temp_dir().join(format!("stoq-qlog-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let writer = traced_transfer(&dir);
    let stats = writer.stats();
    assert_eq!(stats.traces, 2, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut written = 0;
    for path in &files {
        let (records, header, events) = read(path);
        let side = if path.to_string_lossy().ends_with("_client.sqlog") {
            "client"
        } else {
            "server"
        };
        // The header and every event parsed: nothing was skipped by the reader.
        assert_eq!(
            events.len() + 1,
            records,
            "{}: unparsed records",
            path.display()
        );
        written += events.len() as u64;
        assert_eq!(header.file_schema, "urn:ietf:params:qlog:file:sequential");
        assert_eq!(
            header
                .trace
                .vantage_point
                .as_ref()
                .map(|v| format!("{:?}", v.ty)),
            Some(if side == "client" { "Client" } else { "Server" }.to_string())
        );
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut last_time = 0.0;
        let (mut lost_numbers, mut cwnds, mut states) = (0, 0, Vec::new());
        for e in &events {
            let (time, name) = match e {
                Event::Qlog(q) => {
                    let v = serde_json::to_value(q).expect("re-serialise");
                    (q.time, v["name"].as_str().unwrap_or("?").to_string())
                }
                Event::Json(j) => (j.time, j.name.clone()),
            };
            assert!(time >= last_time, "{name} at {time} after {last_time}");
            last_time = time;
            *names.entry(name.clone()).or_default() += 1;
            // Events of the quic: schema must parse into the crate's typed events, with
            // their required fields; only STOQ's own are free-form.
            if let Event::Json(j) = e {
                assert!(
                    j.name.starts_with("stoq:"),
                    "untyped {}: {:?}",
                    j.name,
                    j.data
                );
            }
            if let Event::Qlog(q) = e {
                match &q.data {
                    EventData::QuicPacketSent(p) => {
                        assert!(p.header.packet_number.is_some());
                        assert_ne!(p.header.packet_type, PacketType::Unknown);
                        assert!(p.raw.as_ref().and_then(|r| r.length).is_some());
                    }
                    EventData::QuicPacketReceived(p) => {
                        assert!(p.header.packet_number.is_some());
                        assert_ne!(p.header.packet_type, PacketType::Unknown);
                    }
                    EventData::QuicPacketLost(p) => {
                        let h = p.header.as_ref().expect("lost packet header");
                        assert!(h.packet_number.is_some());
                        assert!(p.trigger.is_some());
                        lost_numbers += 1;
                    }
                    EventData::QuicMetricsUpdated(m) => {
                        cwnds += usize::from(m.congestion_window.is_some());
                    }
                    EventData::QuicCongestionStateUpdated(c) => states.push(c.new.clone()),
                    _ => {}
                }
            }
        }
        println!("{side}: {} events {names:?}", events.len());
        for n in [
            "quic:connection_started",
            "quic:packet_sent",
            "quic:packet_received",
            "quic:recovery_metrics_updated",
            "quic:congestion_state_updated",
            "stoq:handshake_completed",
            "quic:connection_closed",
        ] {
            assert!(names.contains_key(n), "{side}: no {n}: {names:?}");
        }
        if side == "client" {
            // The sender: losses, probe or loss timers, cwnd updates, BBR's phases.
            assert!(lost_numbers > 10, "client lost events: {lost_numbers}");
            assert!(names.contains_key("quic:timer_updated"), "{names:?}");
            assert!(names.contains_key("quic:mtu_updated"), "{names:?}");
            assert!(cwnds > 10, "cwnd updates: {cwnds}");
            assert!(
                states.iter().any(|s| s == "bbr_startup")
                    && states.iter().any(|s| s.starts_with("bbr_probe_bw")),
                "BBR states: {states:?}"
            );
        }
    }
    assert_eq!(written, stats.written);
    if std::env::var_os("STOQ_KEEP_QLOG").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("qlog kept in {}", dir.display());
    }
}
