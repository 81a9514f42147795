//! Load generators: `wrk` for HTTP/1.1 keep-alive, `h2load` for HTTP/2 (h2c, prior knowledge).

use std::process::Command;
use std::time::Duration;

use serde::Serialize;

/// One load run's figures.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LoadResult {
    /// Successful requests per second.
    pub rps: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency, in microseconds.
    pub p99_us: f64,
    /// Socket errors, timeouts and non-2xx answers: should be 0.
    pub errors: u64,
    /// Requests completed in the measured time.
    pub requests: u64,
    /// Server CPU time (user + system, all threads) per completed request, in
    /// microseconds: the cost of a request, and far less sensitive than req/s to other
    /// processes sharing the machine.
    pub server_cpu_us_per_request: f64,
}

/// The shape of a load run.
#[derive(Clone, Debug)]
pub struct Load {
    /// Concurrent connections.
    pub connections: u32,
    /// HTTP/2 streams per connection (`h2load -m`); `None` runs HTTP/1.1 with wrk.
    pub h2_streams: Option<u32>,
    /// Measured time.
    pub duration: Duration,
    /// Load before measuring, not counted.
    pub warmup: Duration,
    /// CPUs for the load generator (`taskset -c`).
    pub cpus: Option<String>,
}

impl Load {
    /// Runs the warm-up load against `url` (not measured).
    pub fn warm_up(&self, url: &str) -> Result<(), String> {
        if self.warmup.is_zero() {
            return Ok(());
        }
        let warmup = self.warmup.as_secs().max(1).to_string();
        let connections = self.connections.to_string();
        match self.h2_streams {
            None => {
                run(self
                    .command("wrk")
                    .args(["-t1", "-c", &connections, "-d", &format!("{warmup}s"), url]))
            }
            Some(streams) => run(self.command("h2load").args([
                "-t1",
                "-c",
                &connections,
                "-m",
                &streams.to_string(),
                "-D",
                &warmup,
                url,
            ])),
        }
        .map(drop)
    }

    /// Runs the measured load against `url` and returns its figures.
    pub fn measure(&self, url: &str) -> Result<LoadResult, String> {
        match self.h2_streams {
            None => self.wrk(url),
            Some(streams) => self.h2load(url, streams),
        }
    }

    fn command(&self, program: &str) -> Command {
        match &self.cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus, program]);
                command
            }
            None => Command::new(program),
        }
    }

    fn wrk(&self, url: &str) -> Result<LoadResult, String> {
        let connections = self.connections.to_string();
        let duration = format!("{}s", self.duration.as_secs().max(1));
        let output = run(self.command("wrk").args([
            "-t1",
            "-c",
            &connections,
            "-d",
            &duration,
            "--timeout",
            "5s",
            "--latency",
            url,
        ]))?;
        parse_wrk(&output).ok_or_else(|| format!("cannot parse wrk output:\n{output}"))
    }

    fn h2load(&self, url: &str, streams: u32) -> Result<LoadResult, String> {
        let log = std::env::temp_dir().join(format!("terminus-bench-h2load-{}.log", std::process::id()));
        let log_arg = format!("--log-file={}", log.display());
        let output = run(self.command("h2load").args([
            "-t1",
            "-c",
            &self.connections.to_string(),
            "-m",
            &streams.to_string(),
            "-D",
            &self.duration.as_secs().max(1).to_string(),
            &log_arg,
            url,
        ]))?;
        let log_text = std::fs::read_to_string(&log).map_err(|error| format!("h2load log: {error}"));
        let _ = std::fs::remove_file(&log);
        let mut result =
            parse_h2load(&output).ok_or_else(|| format!("cannot parse h2load output:\n{output}"))?;
        let mut latencies: Vec<f64> = log_text?
            .lines()
            .filter_map(|line| line.split('\t').nth(2)?.trim().parse::<f64>().ok())
            .collect();
        latencies.sort_by(f64::total_cmp);
        result.p50_us = crate::stats::percentile_sorted(&latencies, 50.0);
        result.p99_us = crate::stats::percentile_sorted(&latencies, 99.0);
        Ok(result)
    }
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

/// Reads `Requests/sec`, the `50%` and `99%` lines of `--latency`, and the error lines.
fn parse_wrk(output: &str) -> Option<LoadResult> {
    let mut result = LoadResult::default();
    let mut seen = (false, false, false);
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Requests/sec:") => {
                result.rps = words.next()?.parse().ok()?;
                seen.0 = true;
            }
            Some("50%") => {
                result.p50_us = parse_wrk_duration(words.next()?)?;
                seen.1 = true;
            }
            Some("99%") => {
                result.p99_us = parse_wrk_duration(words.next()?)?;
                seen.2 = true;
            }
            // "310000 requests in 5.00s, 30.00MB read"
            Some(count) if line.contains(" requests in ") => {
                result.requests = count.parse().ok()?;
            }
            // "Socket errors: connect 0, read 0, write 0, timeout 0"
            Some("Socket") => {
                result.errors += line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>();
            }
            // "Non-2xx or 3xx responses: 12"
            Some("Non-2xx") => {
                result.errors += line.rsplit(' ').next()?.parse::<u64>().ok()?;
            }
            _ => {}
        }
    }
    (seen == (true, true, true)).then_some(result)
}

/// `512.00us`, `1.23ms`, `2.00s` as microseconds.
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000_000.0)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// Reads `finished in 5.00s, 61234.00 req/s, ...` and `requests: N total, N started,
/// N done, N succeeded, N failed, N errored, N timeout`.
fn parse_h2load(output: &str) -> Option<LoadResult> {
    let mut result = LoadResult::default();
    let mut seen = false;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let rps = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            result.rps = rps.parse().ok()?;
            seen = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                let mut words = part.split_whitespace();
                let count: u64 = words.next()?.parse().ok()?;
                match words.next() {
                    Some("failed" | "errored" | "timeout") => result.errors += count,
                    Some("succeeded") => result.requests = count,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"
            for part in rest.split(", ") {
                let mut words = part.split_whitespace();
                let count: u64 = words.next()?.parse().ok()?;
                if matches!(words.next(), Some("4xx" | "5xx")) {
                    result.errors += count;
                }
            }
        }
    }
    seen.then_some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_distribution_and_errors() {
        let output = "Running 5s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  438.00us\n     75%  1.00ms\n     90%    2.00ms\n     99%   18.53ms\n  310000 requests in 5.00s, 30 MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  61981.23\n";
        let result = parse_wrk(output).unwrap();
        assert_eq!(result.rps, 61981.23);
        assert_eq!(result.p50_us, 438.0);
        assert_eq!(result.p99_us, 18530.0);
        assert_eq!(result.errors, 7);
        assert_eq!(result.requests, 310000);
    }

    #[test]
    fn reads_h2load_summary() {
        let output = "finished in 5.00s, 61234.50 req/s, 2.00MB/s\nrequests: 306172 total, 306172 started, 306172 done, 306170 succeeded, 2 failed, 0 errored, 0 timeout\nstatus codes: 306170 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let result = parse_h2load(output).unwrap();
        assert_eq!(result.rps, 61234.5);
        assert_eq!(result.errors, 2);
        assert_eq!(result.requests, 306170);
    }
}
