//! The `onair` command: parse, call the library, print one clear line, exit with a code a
//! script can act on (0 ok, 1 runtime failure, 2 bad config, 3 daemon not running).

use clap::{Parser, Subcommand};
use onair::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;

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
    },
    /// Validate a config file without running anything.
    CheckConfig { config: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,onair=info,rtc_dtls=error"),
    )
    .format_timestamp_millis()
    .init();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("onair: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("onair: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
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
            match runtime.block_on(onair::daemon::run(path, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("onair: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}
