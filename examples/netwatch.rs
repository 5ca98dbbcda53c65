//! Diagnostics: runs the network monitor and prints one line per status change, so that a
//! person on the box (over SSH) can see what the daemon's watchdog would see, and tests can
//! drive the monitor against real kernel events.
//!
//! ```text
//! cargo run --example netwatch -- --server 192.0.2.1
//! cargo run --example netwatch -- --server whip.example.com --interface 'eth*' --ignore wlan0
//! ```
//!
//! Output: `<seconds since start> online eth0,wlan0 (path eth0 src 192.0.2.2 gw 192.0.2.1)` /
//! `<seconds> offline`. The monitor's own log lines (why it went offline, path switches) go to
//! stderr; `RUST_LOG=debug` shows more. It reports the kernel's own path and never installs
//! the daemon's steering.

use clap::Parser;
use onair::config::{NetworkConfig, PathsMode};
use onair::net::{NetworkMonitor, ServerAddr};
use std::io::Write;
use std::process::ExitCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Print the network monitor's status on every change")]
struct Args {
    /// Server host (IP literal or name) whose route decides "online". Without it, a default
    /// route via a usable interface does.
    #[arg(long)]
    server: Option<String>,
    /// Interfaces to watch (repeatable; `eth*` matches by prefix). Default: all but lo.
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Interfaces to ignore (repeatable; `docker*` matches by prefix).
    #[arg(long)]
    ignore: Vec<String>,
    /// Uplink preference order (repeatable; `eth*` matches by prefix), shown in the uplink
    /// states; netwatch never changes routing.
    #[arg(long)]
    prefer: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = NetworkConfig {
        interfaces: args.interfaces,
        ignore: args.ignore,
        prefer: args.prefer,
        // A diagnostic must not touch the box's routing (nor the running daemon's steering):
        // it reports the kernel's own path.
        paths: PathsMode::Follow,
        ..NetworkConfig::default()
    };
    let shutdown = CancellationToken::new();
    let server = args.server.as_deref().map(ServerAddr::from_host);
    let monitor = match NetworkMonitor::start(&config, server, shutdown.clone()).await {
        Ok(monitor) => monitor,
        Err(e) => {
            eprintln!("netwatch: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut status = monitor.subscribe();
    loop {
        let line = format!(
            "{:8.3} {}",
            started.elapsed().as_secs_f64(),
            *status.borrow_and_update()
        );
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`netwatch | head`) ends the program like Ctrl-C does.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = status.changed() => if changed.is_err() { break },
        }
    }
    shutdown.cancel();
    monitor.join().await;
    ExitCode::SUCCESS
}
