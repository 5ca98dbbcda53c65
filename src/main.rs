//! The `onair` command: parse, call the library, print one clear line, exit with a code a
//! script can act on (0 ok, 1 runtime failure, 2 bad config, 3 daemon not running).

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
    /// Ask the running daemon to leave `failed` (or stop waiting) and connect now.
    Retry {
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
        Command::Status {
            json,
            history,
            daemon,
        } => ask_daemon(&daemon, |path| async move {
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
        Command::Retry { daemon } => ask_daemon(&daemon, |path| async move {
            Ok(render::retry(&client::retry(&path).await?).into_bytes())
        }),
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

/// Finds the socket, runs one exchange with the daemon and prints its result: the answer on
/// stdout, or one line on stderr and an exit code a script can act on.
fn ask_daemon<F, Fut>(daemon: &DaemonSocket, exchange: F) -> ExitCode
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, ClientError>>,
{
    let path = match daemon.path() {
        Ok(path) => path,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onair: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
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
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}
