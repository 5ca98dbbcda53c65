//! The `onair` command: parse, call the library, print one clear line, exit with a code a
//! script can act on (0 ok, 1 runtime failure, 2 bad config, 3 daemon not running, 4 the
//! daemon said no).

use clap::{Args, Parser, Subcommand};
use onair::config::{Config, DEFAULT_STATUS_SOCKET};
use onair::status::client::{self, ClientError};
use onair::status::protocol::Request;
use onair::status::render;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_REFUSED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "onair",
    version,
    about = "Broadcast box daemon: camera/HDMI -> H.264 -> WHIP or RTMP, and stays live"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT/SIGTERM (SIGHUP reloads the config).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Where `network-files` wrote the Wi-Fi and modem files: a SIGHUP writes them
        /// again from the new config and has the radios read them.
        #[arg(long, value_name = "DIR")]
        network_files: Option<PathBuf>,
    },
    /// Write the operating system's Wi-Fi and modem files from a config (mode 0600).
    NetworkFiles {
        #[arg(long, short)]
        config: PathBuf,
        /// The directory to write them into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Validate a config file without running anything.
    CheckConfig { config: PathBuf },
    /// Remove what a stopped daemon left of its policy routing in this network namespace
    /// (rules 8500-8502 and routes marked proto 111; nothing unmarked). Refuses while a
    /// daemon steers. onair.service runs it when the daemon has stopped, however it stopped.
    CleanupRoutes,
    /// Show what the running daemon is doing (exit 3 if it is not running).
    Status {
        /// Print the daemon's JSON document instead of text (with --history: the recorder's).
        #[arg(long)]
        json: bool,
        /// Print the flight recorder (recent transitions and errors) instead of the status.
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
    /// Ask the running daemon to leave `failed` (or stop waiting) and connect now. At most one
    /// attempt per 5 s, and not while the server's Retry-After runs (exit 4 says why).
    Retry {
        /// Override the server's Retry-After (root only: the server may rate-limit or ban the
        /// stream key of a box that does not wait).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
    /// Install a signed update bundle into the inactive system slot while the stream goes on,
    /// then reboot into it once; it is kept only if it proves itself (exit 1 refused or failed).
    Update {
        /// The bundle (`.raucb`), copied onto the box (e.g. `scp -O FILE root@box:/data/`).
        bundle: PathBuf,
        /// Install only: the next `systemctl reboot --reboot-argument='0 tryboot'` tries it.
        #[arg(long)]
        no_reboot: bool,
        /// The update record [default: /data/onair/update.json]
        #[arg(long, value_name = "FILE", hide = true)]
        record: Option<PathBuf>,
        /// Where `onair status` reads the update's progress (the daemon's state directory).
        #[arg(long, value_name = "DIR", default_value = onair::config::DEFAULT_STATE_DIR, hide = true)]
        state_dir: PathBuf,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
    /// Run at every boot by onair-update-check.service: settle the last update and, on the one
    /// try of a new system, keep it once healthy or exit 1 (systemd reboots into the old one).
    UpdateCheck {
        /// Seconds a system on trial has to go live (to be ready, if the box was not live).
        #[arg(
            long,
            value_name = "S",
            default_value_t = 120,
            env = "ONAIR_UPDATE_LIVE_WITHIN_S"
        )]
        live_within: u64,
        /// Seconds of network down (offline) after which a ready system is kept unseen live.
        #[arg(
            long,
            value_name = "S",
            default_value_t = 600,
            env = "ONAIR_UPDATE_OFFLINE_GRACE_S"
        )]
        offline_grace: u64,
        /// Where the status document goes (the daemon's state directory).
        #[arg(long, value_name = "DIR", default_value = onair::config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The update record [default: /data/onair/update.json]
        #[arg(long, value_name = "FILE", hide = true)]
        record: Option<PathBuf>,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
    /// List the recordings, with the windows in each when the stream was not live.
    Recordings {
        /// Print the daemon's JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
}

/// Where the running daemon answers.
#[derive(Args)]
struct DaemonSocket {
    /// The daemon's status socket [default: `status.socket` of --config, else /run/onair/status.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Read the socket path from this config file's `status.socket`.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DaemonSocket {
    fn path(&self) -> Result<PathBuf, ExitCode> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        match &self.config {
            Some(path) => match Config::load(path) {
                Ok(config) => Ok(config.status.socket),
                Err(e) => {
                    eprintln!("onair: {e}");
                    Err(ExitCode::from(EXIT_CONFIG))
                }
            },
            None => Ok(PathBuf::from(DEFAULT_STATUS_SOCKET)),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,onair=info,rtc_dtls=error"),
    )
    .format_timestamp_millis()
    .init();
    match cli.command {
        // A config that still carries the example's placeholders is not one to install.
        Command::CheckConfig { config } => {
            match Config::load(&config).and_then(|c| c.check_no_placeholders()) {
                Ok(()) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("onair: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::CleanupRoutes => cleanup_routes(),
        Command::Status {
            json,
            history,
            daemon,
        } => ask_daemon(&daemon, EXIT_FAILURE, |path| async move {
            let request = if history {
                Request::History
            } else {
                Request::Status
            };
            if json {
                // The daemon's document as it came, so fields newer than this client survive.
                return client::ask(&path, request).await;
            }
            let text = if history {
                render::history(&client::history(&path).await?)
            } else {
                render::status(&client::status(&path).await?)
            };
            Ok(text.into_bytes())
        }),
        Command::Retry { force, daemon } => ask_daemon(&daemon, EXIT_REFUSED, |path| async move {
            Ok(render::retry(&client::retry(&path, force).await?).into_bytes())
        }),
        Command::Update {
            bundle,
            no_reboot,
            record,
            state_dir,
            daemon,
        } => {
            let socket = match daemon.path() {
                Ok(path) => path,
                Err(code) => return code,
            };
            let install = onair::update::install::Install {
                bundle,
                rauc: Default::default(),
                socket,
                record: record.unwrap_or_else(onair::update::install::default_record),
                state_dir,
                reboot: !no_reboot,
            };
            let say = |line: &str| println!("onair update: {line}");
            match current_thread().map(|rt| rt.block_on(install.run(say))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("onair update: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
                Err(code) => code,
            }
        }
        Command::UpdateCheck {
            live_within,
            offline_grace,
            state_dir,
            record,
            daemon,
        } => {
            let socket = match daemon.path() {
                Ok(path) => path,
                Err(code) => return code,
            };
            let check = onair::update::check::Check {
                rauc: Default::default(),
                socket,
                record: record.unwrap_or_else(onair::update::install::default_record),
                state_dir,
                rules: onair::update::verdict::Rules {
                    live_within: std::time::Duration::from_secs(live_within),
                    offline_grace: std::time::Duration::from_secs(offline_grace),
                },
                net_dir: onair::update::check::default_net_dir(),
                poll: std::time::Duration::from_secs(1),
            };
            let say = |line: &str| eprintln!("onair-update-check: {line}");
            match current_thread().map(|rt| rt.block_on(check.run(say))) {
                Ok(onair::update::check::Outcome::Left(_)) => ExitCode::from(EXIT_FAILURE),
                Ok(_) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Command::Recordings { json, daemon } => {
            ask_daemon(&daemon, EXIT_FAILURE, |path| async move {
                if json {
                    return client::ask(&path, Request::Recordings).await;
                }
                Ok(render::recordings(&client::recordings(&path).await?).into_bytes())
            })
        }
        Command::NetworkFiles { config, out } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("onair: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match onair::net::field::write_files(&config.network, &out) {
                Ok(written) => {
                    let country = config
                        .network
                        .wifi_country
                        .as_deref()
                        .unwrap_or("none: world regulatory domain");
                    println!(
                        "{}: {} Wi-Fi network(s), country {country}; {}",
                        written.wpa_supplicant.display(),
                        config.network.wifi.len(),
                        match &written.modem_connect {
                            Some(path) => format!("modem settings in {}", path.display()),
                            None => "no modem settings".into(),
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("onair: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Run {
            config: path,
            network_files,
        } => {
            for (name, value) in onair::media::capture::GST_ENVIRONMENT {
                if std::env::var_os(name).is_none() {
                    // SAFETY: no other thread exists yet (the runtime is built below), so
                    // nothing can read the environment while it changes.
                    unsafe { std::env::set_var(name, value) };
                }
            }
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("onair: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            // The image's default config is the example: run it (the LEDs and `onair status`
            // work), but say why the box cannot stream.
            if let Err(e) = config.check_no_placeholders() {
                log::warn!("{e} (this config cannot stream until it is replaced)");
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("onair")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("onair: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            match runtime.block_on(onair::daemon::run(path, config, network_files)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("onair: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// `onair cleanup-routes`: one line saying what was removed; exit 1 when a daemon steers or
/// the kernel refused.
fn cleanup_routes() -> ExitCode {
    let runtime = match current_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(onair::net::cleanup_routes()) {
        Ok(removed) => {
            println!(
                "onair: removed {} rules and {} routes left by onair",
                removed.rules, removed.routes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onair: cleanup-routes: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A runtime for one command of the CLI, or the exit code that says it could not be had.
fn current_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("onair: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        })
}

/// Finds the socket, runs one exchange with the daemon and prints its result: the answer on
/// stdout, or one line on stderr and an exit code a script can act on.
/// `refused` is the exit code when the daemon answers with a refusal.
fn ask_daemon<F, Fut>(daemon: &DaemonSocket, refused: u8, exchange: F) -> ExitCode
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, ClientError>>,
{
    let path = match daemon.path() {
        Ok(path) => path,
        Err(code) => return code,
    };
    let runtime = match current_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(exchange(path)) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&out).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // A closed pipe (`onair status | head -1`) is not worth a message.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("onair: cannot write the answer: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Err(e) => {
            eprintln!("onair: {e}");
            if e.is_not_running() {
                ExitCode::from(EXIT_NOT_RUNNING)
            } else if e.is_refused() {
                ExitCode::from(refused)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}
