//! A real PostgreSQL server for one test: `initdb` into a fresh temporary directory,
//! `pg_ctl start` on a free loopback port (TCP only, no Unix socket), stopped and
//! started again on demand, and stopped and removed when dropped, also when the test
//! fails.
//!
//! PostgreSQL refuses to run as root. As root (CI), every PostgreSQL program runs as
//! the unprivileged user `postgres` (the one Debian's package creates; `.ci/run` makes
//! sure it exists), through `setpriv`, which changes the user and nothing else; the
//! directory is handed to that user first. As any other user, the programs run as that
//! user. `TERMINUS_TEST_PG_USER` names another user, `TERMINUS_TEST_PG_BIN` another
//! directory of PostgreSQL programs.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::haproxy::free_port;

/// The superuser `initdb` creates, whoever runs it. Authentication is `trust`: only
/// loopback clients of this machine can connect, to a cluster that lives for one test.
pub const SUPERUSER: &str = "terminus";

/// The bound on `initdb`, and on each `pg_ctl` start or stop (its `-t`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or stopped) PostgreSQL cluster.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    run_as: Option<String>,
    port: u16,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a free
    /// loopback port. Panics, with PostgreSQL's own output, when that fails.
    pub fn start() -> Postgres {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bin = bin_dir();
        let run_as = run_as();
        let dir = std::env::temp_dir().join(format!(
            "terminus-postgres-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        let postgres = Postgres {
            bin,
            dir,
            run_as,
            port: free_port(),
        };
        if let Some(user) = &postgres.run_as {
            let (uid, gid) = (id(&["-u", user]), id(&["-g", user]));
            std::os::unix::fs::chown(&postgres.dir, Some(uid), Some(gid))
                .unwrap_or_else(|error| panic!("chown {} to {user}: {error}", postgres.dir.display()));
        }
        let data = postgres.data_arg();
        postgres.pg(
            "initdb",
            [
                data.as_str(),
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        postgres.configure();
        postgres.start_again();
        postgres
    }

    /// Settings appended to `postgresql.conf`: this loopback port only, no Unix socket
    /// (its default directory may not exist or be writable), and no waiting for the
    /// disk, which a throwaway cluster does not need.
    fn configure(&self) {
        let mut config = OpenOptions::new()
            .append(true)
            .open(self.dir.join("data/postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(
            config,
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off",
            self.port
        )
        .expect("write postgresql.conf");
    }

    fn data_arg(&self) -> String {
        format!("--pgdata={}", self.dir.join("data").display())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser, with `application_name`.
    pub fn url(&self, database: &str, application_name: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{database}?application_name={application_name}",
            self.port
        )
    }

    /// Stops the server the way an operator or a failover does: `pg_ctl stop -m fast`
    /// (sessions are terminated, then a clean shutdown). Returns once it has stopped.
    pub fn stop(&self) {
        let timeout = COMMAND_TIMEOUT.as_secs().to_string();
        let data = self.data_arg();
        self.pg(
            "pg_ctl",
            ["stop", &data, "--mode=fast", "--wait", "--timeout", &timeout],
        );
    }

    /// Starts the (stopped) server; returns once it accepts connections.
    pub fn start_again(&self) {
        let timeout = COMMAND_TIMEOUT.as_secs().to_string();
        let (data, log) = (
            self.data_arg(),
            format!("--log={}", self.dir.join("postgres.log").display()),
        );
        self.pg("pg_ctl", ["start", &data, &log, "--wait", "--timeout", &timeout]);
    }

    /// The server's log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Runs the PostgreSQL program `name` in the cluster's directory (as the
    /// unprivileged user when we are root); panics with its output when it fails or
    /// outlives [`COMMAND_TIMEOUT`].
    fn pg<I, S>(&self, name: &str, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        if let Err(message) = self.try_pg(name, args) {
            panic!("{message}\nserver log:\n{}", self.log());
        }
    }

    fn try_pg<I, S>(&self, name: &str, args: I) -> Result<(), String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = self.bin.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .args(["--reuid", user, "--regid", user, "--clear-groups"])
                    .arg(&program);
                command
            }
            None => Command::new(&program),
        };
        // Output to a file, not a pipe: nothing to drain while waiting, and the server
        // pg_ctl starts holds no pipe of ours open.
        let output_path = self.dir.join(format!("{name}.out"));
        let output = File::create(&output_path).map_err(|error| format!("create {name}.out: {error}"))?;
        let mut child = command
            .args(args)
            // The unprivileged user may not be allowed into the test's directory.
            .current_dir(&self.dir)
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(|error| error.to_string())?)
            .stderr(output)
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not finish within {COMMAND_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if status.success() {
            Ok(())
        } else {
            let printed = std::fs::read_to_string(&output_path).unwrap_or_default();
            Err(format!("{name} failed ({status}):\n{printed}"))
        }
    }

    /// The postmaster's pid, from `postmaster.pid`, while it runs.
    fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing of a throwaway cluster needs saving. If pg_ctl cannot stop
        // it, SIGKILL the postmaster by its pid; its children exit when it does.
        let data = self.data_arg();
        let stopped = self.try_pg("pg_ctl", ["stop", &data, "--mode=immediate", "--wait"]);
        if stopped.is_err() {
            if let Some(pid) = self.postmaster_pid() {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the PostgreSQL programs: `TERMINUS_TEST_PG_BIN`, else where `PATH`
/// has `pg_ctl`, else the newest of Debian's `/usr/lib/postgresql/<version>/bin`
/// (Debian puts only the client programs on `PATH`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TERMINUS_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let debian = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is required: apt-get install postgresql (.ci/run does), \
             or set TERMINUS_TEST_PG_BIN to the directory of initdb and pg_ctl"
        ),
    }
}

/// `Some(user)` when this process runs as root, which PostgreSQL refuses.
fn run_as() -> Option<String> {
    // /proc/self belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0);
    root.then(|| std::env::var("TERMINUS_TEST_PG_USER").unwrap_or_else(|_| "postgres".to_owned()))
}

/// A number printed by `id` (a user's uid or gid).
fn id(args: &[&str]) -> u32 {
    let output = Command::new("id")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run id {args:?}: {error}"));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "id {args:?}: no such user? As root the test runs PostgreSQL as an unprivileged \
                 user (.ci/run creates `postgres`): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}
