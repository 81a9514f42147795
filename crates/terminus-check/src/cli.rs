//! The command line: `terminus-check roll [options] -- <command> [args…]` and
//! `terminus-check probe [options] -- <command> [args…]`.
//!
//! Exit codes: 0 when nothing was lost (or no more than `--max-lost`) or every rule held;
//! 1 when requests were lost or a rule failed; 2 when the check could not run (a bad
//! option, no balancer, a server that never became ready).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::balancer::Kind;
use crate::instance::Readiness;
use crate::{probe, report, roll};

/// Proves that a service restarts without losing a request.
#[derive(Debug, Parser)]
#[command(name = "terminus-check", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rolling restarts of the command behind a real balancer under load: every request
    /// counted, every loss classified and placed on the restart's timeline.
    Roll(RollArgs),
    /// The shutdown contract checked from outside on one instance, with no balancer.
    Probe(ProbeArgs),
}

/// Which balancer.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Lb {
    /// HAProxy, checking the readiness path every second, down after one failure.
    Haproxy,
    /// nginx, passive health, its upstream rewritten from readiness as an ingress
    /// controller does.
    Nginx,
}

#[derive(Debug, Args)]
struct RollArgs {
    /// Instances behind the balancer (each gets `HOST=127.0.0.1` and its own `PORT`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    replicas: u16,
    /// The readiness path the balancer checks and restarts wait for; `none` waits for the port.
    #[arg(long, default_value = "/readyz")]
    ready_path: String,
    /// The balancer in front.
    #[arg(long, value_enum, default_value = "haproxy")]
    lb: Lb,
    /// Requests per second (GETs and POSTs with a 4 KiB body; slow requests on top).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rps: u32,
    /// The path of the GETs and POSTs.
    #[arg(long, default_value = "/")]
    path: String,
    /// A slow path, kept in flight by two workers (`{ms}` is replaced by 1000 to 3000).
    #[arg(long)]
    slow_path: Option<String>,
    /// Rolling restarts per replica.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    restarts: u16,
    /// The stop signal (TERM, INT, QUIT, ...).
    #[arg(long, default_value = "TERM")]
    stop_signal: String,
    /// How long a stopping instance may take before it is killed (SIGKILL), like the
    /// kubelet's terminationGracePeriodSeconds.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// A request without a complete answer after this is a timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the whole report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG timeline of requests per outcome, with the signals marked.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Lost requests tolerated before the exit code says failure.
    #[arg(long, default_value_t = 0)]
    max_lost: u64,
    /// The server command and its arguments (`{port}` is replaced by the instance's port).
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The readiness path; `none` skips the readiness rules.
    #[arg(long, default_value = "/readyz")]
    ready_path: String,
    /// The liveness path; `none` skips the liveness rule.
    #[arg(long, default_value = "/livez")]
    live_path: String,
    /// The path of ordinary requests.
    #[arg(long, default_value = "/")]
    path: String,
    /// A slow path, in flight when the signal is sent (`{ms}` is replaced by 2000).
    #[arg(long)]
    slow_path: Option<String>,
    /// How soon after the signal readiness must fail.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    react: Duration,
    /// How long the instance may take to exit before it is killed (SIGKILL).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// The stop signal (TERM, INT, QUIT, ...).
    #[arg(long, default_value = "TERM")]
    stop_signal: String,
    /// Write the verdict as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The server command and its arguments (`{port}` is replaced by its port).
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// Runs the tool with the process's arguments.
pub fn main() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// Runs the tool with `args` (the first is the program's name).
pub fn main_with_args(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("terminus-check: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Roll(args) => roll_options(args).map(|options| runtime.block_on(run_roll(options))),
        Command::Probe(args) => probe_options(args).map(|options| runtime.block_on(run_probe(options))),
    };
    match outcome {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(error)) | Err(error) => {
            eprintln!("terminus-check: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run_roll(options: roll::Options) -> Result<bool, String> {
    let report = roll::run(&options).await?;
    print!("{}", report::render(&report));
    Ok(report.passed)
}

async fn run_probe(options: probe::Options) -> Result<bool, String> {
    let report = probe::run(&options).await?;
    print!("{}", report.render());
    Ok(report.passed)
}

fn request_path(option: &str, value: &str) -> Result<String, String> {
    let checked = value.replace("{ms}", "1000");
    if checked.starts_with('/') && checked.parse::<http::Uri>().is_ok() {
        Ok(value.to_owned())
    } else {
        Err(format!("--{option} `{value}` is not a path starting with `/`"))
    }
}

fn optional_path(option: &str, value: &str) -> Result<Option<String>, String> {
    match value {
        "none" => Ok(None),
        path => request_path(option, path).map(Some),
    }
}

fn roll_options(args: RollArgs) -> Result<roll::Options, String> {
    Ok(roll::Options {
        command: args.command,
        replicas: usize::from(args.replicas),
        readiness: Readiness::parse(&args.ready_path).map_err(|error| format!("--ready-path {error}"))?,
        lb: match args.lb {
            Lb::Haproxy => Kind::Haproxy,
            Lb::Nginx => Kind::Nginx,
        },
        rps: args.rps,
        path: request_path("path", &args.path)?,
        slow_path: args
            .slow_path
            .map(|path| request_path("slow-path", &path))
            .transpose()?,
        restarts: usize::from(args.restarts),
        stop_signal: args.stop_signal,
        grace: args.grace,
        timeout: args.timeout,
        max_lost: args.max_lost,
        json: args.json,
        svg: args.svg,
    })
}

fn probe_options(args: ProbeArgs) -> Result<probe::Options, String> {
    Ok(probe::Options {
        command: args.command,
        readiness: Readiness::parse(&args.ready_path).map_err(|error| format!("--ready-path {error}"))?,
        live_path: optional_path("live-path", &args.live_path)?,
        path: request_path("path", &args.path)?,
        slow_path: args
            .slow_path
            .map(|path| request_path("slow-path", &path).map(|path| path.replace("{ms}", "2000")))
            .transpose()?,
        react: args.react,
        grace: args.grace,
        stop_signal: args.stop_signal,
        json: args.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_comes_after_two_dashes_and_options_have_the_issues_defaults() {
        let cli = Cli::try_parse_from(["terminus-check", "roll", "--", "server", "--port", "{port}"])
            .expect("parses");
        let Command::Roll(args) = cli.command else {
            panic!("roll")
        };
        let options = roll_options(args).expect("valid");
        assert_eq!(options.command, ["server", "--port", "{port}"]);
        assert_eq!((options.replicas, options.restarts, options.rps), (3, 3, 100));
        assert_eq!(options.readiness, Readiness::Path("/readyz".into()));
        assert_eq!(options.lb, Kind::Haproxy);
        assert_eq!(options.grace, Duration::from_secs(30));
        assert_eq!(options.stop_signal, "TERM");
    }

    #[test]
    fn a_path_that_is_not_a_path_is_refused() {
        assert!(request_path("path", "no-slash").is_err());
        assert!(request_path("path", "/a b").is_err());
        assert_eq!(
            request_path("slow-path", "/slow?ms={ms}").as_deref(),
            Ok("/slow?ms={ms}")
        );
        assert_eq!(Readiness::parse("none"), Ok(Readiness::Port));
    }
}
