//! `stoq-bench`: STOQ end to end against quinn, kernel TCP and raw UDP, in one run, on the
//! same path, interleaved (A B C … A B C …) so the machine's drift hits every subject alike.
//!
//! ```text
//! stoq-bench [--quick] [--reps N] [--queues N] [--delay-ms N] [--only G,G]   (root)
//! stoq-bench --iface IF --peer ADDR [...]     across a real NIC; the peer runs the agent
//! stoq-bench agent [--listen ADDR]            the peer side of --peer (TCP port 4499)
//! stoq-bench role JSON                        one server or client (spawned by the above)
//! stoq-bench render DIR                       report.md and charts again from DIR/report.json
//! ```
//!
//! Every server and client is its own process, pinned to its own CPUs, so each side's CPU
//! time and memory are its own. Output: `target/bench/<unix time>/report.{json,md}` and
//! SVG charts; see `docs/benchmarks.md`.

mod delay;
mod handlers;
mod plain;
mod plan;
mod quinn_side;
mod report;
mod roles;
mod spec;
mod stoq_side;
mod streams;
mod tls;
mod topo;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("role") => {
            let Some(json) = args.get(1) else {
                eprintln!("stoq-bench role: needs the role's JSON");
                return ExitCode::from(2);
            };
            match serde_json::from_str::<spec::RoleSpec>(json) {
                Ok(s) => roles::run(&s),
                Err(e) => {
                    println!("ERROR bad role spec: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some("agent") => {
            let listen = args
                .iter()
                .position(|a| a == "--listen")
                .and_then(|i| args.get(i + 1))
                .map_or(Ok(([0, 0, 0, 0], topo::AGENT_PORT).into()), |s| {
                    s.parse::<std::net::SocketAddr>()
                });
            match listen.map_err(|e| e.to_string()).and_then(topo::agent) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stoq-bench agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("render") => {
            // Writes report.md and the charts again from a run's report.json.
            let Some(dir) = args.get(1).map(std::path::PathBuf::from) else {
                eprintln!("stoq-bench render: needs the run's directory");
                return ExitCode::from(2);
            };
            let r = std::fs::read_to_string(dir.join("report.json"))
                .map_err(|e| e.to_string())
                .and_then(|t| report::Report::from_json(&t))
                .and_then(|r| r.write(&dir));
            match r {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stoq-bench render: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("-h" | "--help") => {
            eprintln!("{}", plan::USAGE);
            ExitCode::SUCCESS
        }
        _ => match plan::Options::parse(&args).and_then(|o| plan::run(&o)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("stoq-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests;
