//! `terminus-check`, run end to end as a user runs it: the built tool, real server
//! processes, a real HAProxy or nginx, real signals.
//!
//! - `roll` against the quickstart with a 3 s drain delay loses nothing and says so
//!   (exit 0, a JSON report with zero lost), behind HAProxy and behind nginx;
//! - `roll` against a bare `axum::serve(..).with_graceful_shutdown(..)` (no drain delay)
//!   loses requests, exits non-zero and diagnoses the missing delay;
//! - `probe` passes every rule on the quickstart and fails the readiness rule on a server
//!   without `/readyz`.
//!
//! Each run is short (2 replicas, 1 restart each, a few seconds of load) and bounded;
//! each prints its figures on stderr (`terminus-check scenario=... requests=N ok=N
//! lost=N by_outcome=...`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use terminus_tests::{haproxy, nginx, temp_path, test_server};

const TOOL: &str = env!("CARGO_BIN_EXE_terminus-check-tool");
const BARE_AXUM: &str = env!("CARGO_BIN_EXE_bare-axum-server");
/// A run of 2 replicas × 1 restart takes about 15 s; anything near this is a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// The runs share the machine's two cores (and their timing is the measure): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    json: Value,
}

/// Runs the tool with `args`, `envs` on top of a clean environment for the servers,
/// writing its JSON report to a file named after `name`; kills it (by pid) after
/// [`RUN_DEADLINE`].
fn run_tool(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let json_path: PathBuf = temp_path(&format!("{name}.json"));
    let _ = std::fs::remove_file(&json_path);
    let (subcommand, rest) = args.split_first().expect("a subcommand");
    let mut command = Command::new(TOOL);
    command
        .arg(subcommand)
        .arg("--json")
        .arg(&json_path)
        .args(rest)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start terminus-check");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for terminus-check") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "{name}: terminus-check ran for over {RUN_DEADLINE:?}\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("{name}: no JSON report ({status})\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&json_path);
    Run {
        status,
        stdout,
        stderr,
        json,
    }
}

/// The figures of a `roll` run, printed past the test harness's capture.
fn print_figures(scenario: &str, run: &Run) {
    let json = &run.json;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "terminus-check scenario={scenario} exit={:?} requests={} ok={} lost={} by_outcome={} h2_retried={}",
        run.status.code(),
        json["requests"],
        json["ok"],
        json["lost"],
        json["by_outcome"],
        json["h2_retried"]
    );
    for restart in json["restarts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            stderr,
            "  restart={} stop_seconds={:.2} drain_delay_seconds={:.2} exit_code={} lost_by_phase={}",
            restart["restart"],
            restart["stop_seconds"].as_f64().unwrap_or(f64::NAN),
            restart["drain_delay_seconds"].as_f64().unwrap_or(f64::NAN),
            restart["exit_code"],
            restart["lost_by_phase"]
        );
    }
    for line in json["diagnosis"].as_array().into_iter().flatten() {
        let _ = writeln!(stderr, "  diagnosis: {}", line.as_str().unwrap_or_default());
    }
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

fn roll_quickstart_loses_nothing(lb: &str) {
    let run = run_tool(
        &format!("roll-quickstart-{lb}"),
        &[
            "roll",
            "--lb",
            lb,
            "--replicas",
            "2",
            "--restarts",
            "1",
            "--rps",
            "100",
            "--slow-path",
            "/slow?ms={ms}",
            "--",
            test_server!(),
        ],
        &[("TERMINUS_DRAIN_DELAY", "3s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")],
    );
    print_figures(&format!("quickstart-{lb}"), &run);
    let json = &run.json;
    assert!(
        run.status.success(),
        "exit {:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(count(&json["lost"]), 0, "{}", run.stdout);
    assert_eq!(json["lb"], lb);
    assert_eq!(json["replicas"], 2);
    // 100 requests a second for at least 2 s of warm-up and 2 restarts of over 3 s each.
    assert!(count(&json["requests"]) > 500, "{json}");
    assert_eq!(json["requests"], json["ok"]);
    assert_eq!(json["by_outcome"]["ok"], json["ok"]);
    let restarts = json["restarts"].as_array().expect("restarts");
    assert_eq!(restarts.len(), 2);
    for restart in restarts {
        assert_eq!(restart["exit_code"], 0, "{restart}");
        assert_eq!(restart["lost"], 0, "{restart}");
        // The drain delay is seen from outside: the process still listened for 3 s.
        let drain = restart["drain_delay_seconds"].as_f64().expect("drain delay");
        assert!((2.9..10.0).contains(&drain), "{restart}");
        let signal_at = restart["signal_at"].as_f64().expect("signal_at");
        let exited_at = restart["exited_at"].as_f64().expect("exited_at");
        assert!(exited_at > signal_at, "{restart}");
    }
    assert!(run.stdout.contains("PASS: 0 lost"), "{}", run.stdout);
}

#[test]
fn roll_behind_haproxy_loses_nothing_from_the_quickstart_with_a_3s_drain_delay() {
    assert!(haproxy::available(), "{}", haproxy::INSTALL_HINT);
    roll_quickstart_loses_nothing("haproxy");
}

#[test]
fn roll_behind_nginx_loses_nothing_from_the_quickstart_with_a_3s_drain_delay() {
    assert!(nginx::available(), "{}", nginx::INSTALL_HINT);
    roll_quickstart_loses_nothing("nginx");
}

#[test]
fn roll_finds_the_losses_of_a_bare_axum_serve_and_diagnoses_the_missing_drain_delay() {
    assert!(haproxy::available(), "{}", haproxy::INSTALL_HINT);
    // No /readyz on a bare server: HAProxy checks `GET /`, as it would be configured.
    let run = run_tool(
        "roll-bare-axum",
        &[
            "roll",
            "--replicas",
            "2",
            "--restarts",
            "1",
            "--rps",
            "100",
            "--ready-path",
            "/",
            "--slow-path",
            "/slow?ms={ms}",
            "--",
            BARE_AXUM,
        ],
        &[],
    );
    print_figures("bare-axum-serve", &run);
    let json = &run.json;
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let lost = count(&json["lost"]);
    assert!(lost > 0, "{json}");
    assert_eq!(count(&json["requests"]), count(&json["ok"]) + lost);
    let by_outcome: u64 = json["by_outcome"]
        .as_object()
        .expect("by_outcome")
        .values()
        .map(count)
        .sum();
    assert_eq!(
        by_outcome,
        count(&json["requests"]),
        "every request has one outcome"
    );
    let after_signal: u64 = json["restarts"]
        .as_array()
        .expect("restarts")
        .iter()
        .map(|restart| {
            let phases = &restart["lost_by_phase"];
            count(&phases["drain_delay"]) + count(&phases["listener_closed"]) + count(&phases["after_exit"])
        })
        .sum();
    assert!(after_signal > 0, "the losses follow the signals: {json}");
    let diagnosis = json["diagnosis"].to_string();
    assert!(diagnosis.contains("drain delay is missing"), "{diagnosis}");
    assert!(run.stdout.contains("FAIL:"), "{}", run.stdout);
}

fn rules(run: &Run) -> Vec<(String, String)> {
    run.json["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|rule| {
            (
                rule["rule"].as_str().unwrap_or_default().to_owned(),
                rule["verdict"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn probe_passes_every_rule_on_the_quickstart() {
    let run = run_tool(
        "probe-quickstart",
        &["probe", "--slow-path", "/slow?ms={ms}", "--", test_server!()],
        &[("TERMINUS_DRAIN_DELAY", "2s")],
    );
    eprintln!("terminus-check scenario=probe-quickstart\n{}", run.stdout);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    let rules = rules(&run);
    assert_eq!(rules.len(), 10, "{rules:?}");
    for (rule, verdict) in &rules {
        assert_eq!(verdict, "pass", "{rule}\n{}", run.stdout);
    }
}

#[test]
fn probe_fails_the_readiness_rule_on_a_server_without_readyz() {
    let run = run_tool(
        "probe-bare-axum",
        &["probe", "--slow-path", "/slow?ms={ms}", "--", BARE_AXUM],
        &[],
    );
    eprintln!("terminus-check scenario=probe-bare-axum\n{}", run.stdout);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    let rules = rules(&run);
    let verdict = |name: &str| {
        rules
            .iter()
            .find(|(rule, _)| rule == name)
            .map(|(_, verdict)| verdict.as_str())
            .unwrap_or_else(|| panic!("no rule {name:?} in {rules:?}"))
    };
    assert_eq!(verdict("readiness passes while serving"), "fail");
    assert_eq!(
        verdict("requests are still served during the drain delay"),
        "fail"
    );
    // What it does do right is recognised: the slow request completes, it exits 0.
    assert_eq!(verdict("a slow request in flight completes"), "pass");
    assert_eq!(verdict("exits 0 within the grace (30000 ms)"), "pass");
    assert_eq!(run.json["passed"], false);
}
