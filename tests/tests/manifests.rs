//! The Kubernetes manifests in `examples/kubernetes/`, checked without a cluster:
//!
//! - against the official OpenAPI schema, offline, with `.ci/kubernetes-validate`
//!   (the PyPI package `kubernetes-validate`, strict mode);
//! - against terminus-rs's own budget, computed by the library from the manifest's
//!   `TERMINUS_*` values and the example's real hooks: `terminationGracePeriodSeconds`
//!   covers the worst-case shutdown (`build()` with that grace period fails otherwise,
//!   naming `grace_period` and the excess), and the drain delay covers the readiness
//!   probe's `periodSeconds × failureThreshold`;
//! - every `TERMINUS_*` value parses, and names a variable the library reads;
//! - probes name a declared port, and the Service and PodDisruptionBudget select the
//!   Deployment's pods.
//!
//! Deliberately broken copies, built in memory and written to a temporary directory,
//! prove that each check fails with the field named.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum_terminus::{Builder, Terminus};
use serde::Deserialize;
use serde_json::Value;

/// The builder an example's `main` starts from: the budget counts its hooks.
type ExampleBuilder = fn() -> Builder;

/// Every manifest, and its example's builder.
const EXAMPLES: [(&str, ExampleBuilder); 3] = [
    ("quickstart.yaml", quickstart::builder),
    // examples/grpc's main passes a plain builder: no hooks of its own.
    ("grpc.yaml", Terminus::builder),
    ("admin-port.yaml", Terminus::builder),
];

/// The variables the library reads; any other `TERMINUS_*` name is a typo.
const KNOWN_VARIABLES: &[&str] = terminus_core::env::VARIABLES;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .to_owned()
}

fn manifest(file: &str) -> (PathBuf, String) {
    let path = repository().join("examples/kubernetes").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (path, text)
}

/// A check that failed: where (a field path as kubectl prints them) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    resource: String,
    field: String,
    message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.resource, self.field, self.message)
    }
}

/// What a manifest's check found out, for the test's log.
#[derive(Debug, Default)]
struct Findings {
    problems: Vec<Problem>,
    notes: Vec<String>,
}

fn documents(yaml: &str) -> Result<Vec<Value>, String> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).map_err(|error| error.to_string()))
        .filter(|document| !matches!(document, Ok(Value::Null)))
        .collect()
}

/// Checks one manifest (all its documents) against the library's budget, with the
/// hooks of `builder`.
fn check_budget(yaml: &str, builder: ExampleBuilder) -> Findings {
    let mut findings = Findings::default();
    let documents = match documents(yaml) {
        Ok(documents) => documents,
        Err(error) => {
            findings.problems.push(Problem {
                resource: "(file)".into(),
                field: "(yaml)".into(),
                message: error,
            });
            return findings;
        }
    };
    let mut pod_labels = None;
    let mut deployments = 0;
    for document in &documents {
        if kind(document) == "Deployment" {
            deployments += 1;
            pod_labels = document.pointer("/spec/template/metadata/labels").cloned();
            check_deployment(document, builder, &mut findings);
        }
    }
    if deployments != 1 {
        findings.problems.push(Problem {
            resource: "(file)".into(),
            field: "kind".into(),
            message: format!("expected one Deployment, found {deployments}"),
        });
    }
    for document in &documents {
        let selector = match kind(document).as_str() {
            "Service" => document.pointer("/spec/selector"),
            "PodDisruptionBudget" => document.pointer("/spec/selector/matchLabels"),
            _ => continue,
        };
        let field = match kind(document).as_str() {
            "Service" => "spec.selector",
            _ => "spec.selector.matchLabels",
        };
        if !selects(selector, pod_labels.as_ref()) {
            findings.problems.push(Problem {
                resource: resource(document),
                field: field.into(),
                message: "does not select the Deployment's pods (spec.template.metadata.labels)".into(),
            });
        }
    }
    findings
}

fn kind(document: &Value) -> String {
    document["kind"].as_str().unwrap_or_default().to_owned()
}

fn resource(document: &Value) -> String {
    format!(
        "{}/{}",
        kind(document),
        document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

/// Whether every label of `selector` is on the pods.
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    match (
        selector.and_then(Value::as_object),
        labels.and_then(Value::as_object),
    ) {
        (Some(selector), Some(labels)) => {
            !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
        }
        _ => false,
    }
}

/// An integer field with its Kubernetes default when absent; a value of another type
/// is a problem naming the field.
fn integer(
    object: &Value,
    key: &str,
    default: u64,
    field: &str,
    resource: &str,
    problems: &mut Vec<Problem>,
) -> Option<u64> {
    match object.get(key) {
        None | Some(Value::Null) => Some(default),
        Some(value) => value.as_u64().or_else(|| {
            problems.push(Problem {
                resource: resource.into(),
                field: format!("{field}.{key}"),
                message: format!("`{value}` is not a whole number"),
            });
            None
        }),
    }
}

fn check_deployment(deployment: &Value, builder: ExampleBuilder, findings: &mut Findings) {
    let resource = resource(deployment);
    let problems = &mut findings.problems;
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_field = "spec.template.spec";
    // Kubernetes' default grace period is 30 s.
    let Some(grace) = integer(
        pod,
        "terminationGracePeriodSeconds",
        30,
        pod_field,
        &resource,
        problems,
    ) else {
        return;
    };
    let grace_field = format!("{pod_field}.terminationGracePeriodSeconds");
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    for (index, container) in containers.iter().enumerate() {
        let field = format!("{pod_field}.containers[{index}]");
        let Some(env) = terminus_env(container, &field, &resource, problems) else {
            continue; // not a terminus-rs container
        };
        check_ports(container, &field, &resource, problems);
        let lookup = |name: &str| env.get(name).map(|(_, value)| value.clone());
        let env_field = |name: &str| match env.get(name) {
            Some((at, _)) => format!("{field}.env[{at}] ({name})"),
            None => format!("{field}.env ({name})"),
        };
        if !env.contains_key(terminus_core::ENV_DRAIN_DELAY) {
            problems.push(Problem {
                resource: resource.clone(),
                field: env_field(terminus_core::ENV_DRAIN_DELAY),
                message: "not set: its default depends on KUBERNETES_SERVICE_HOST, so the budget here \
                          could not be the one in the pod"
                    .into(),
            });
            continue;
        }
        match lookup(terminus_core::ENV_GRACE_PERIOD) {
            None => problems.push(Problem {
                resource: resource.clone(),
                field: env_field(terminus_core::ENV_GRACE_PERIOD),
                message: format!(
                    "not set: give it {grace}s (terminationGracePeriodSeconds), so that the process \
                     refuses at start a budget that does not fit"
                ),
            }),
            Some(value)
                if humantime::parse_duration(value.trim()).ok() != Some(Duration::from_secs(grace)) =>
            {
                problems.push(Problem {
                    resource: resource.clone(),
                    field: env_field(terminus_core::ENV_GRACE_PERIOD),
                    message: format!("`{value}` is not terminationGracePeriodSeconds ({grace}s)"),
                })
            }
            Some(_) => {}
        }

        // The library parses the values and computes the worst case, with the example's
        // hooks, against the pod's grace period.
        let configured = builder().from_lookup(lookup).map_err(|error| Problem {
            resource: resource.clone(),
            field: env_field(error.field()),
            message: error.to_string(),
        });
        let terminus = configured.and_then(|builder| {
            builder
                .grace_period(Duration::from_secs(grace))
                .build()
                .map_err(|error| {
                    let field = match error.field() {
                        "grace_period" => grace_field.clone(),
                        "drain_timeout" => env_field(terminus_core::ENV_DRAIN_TIMEOUT),
                        "cleanup_timeout" => env_field(terminus_core::ENV_CLEANUP_TIMEOUT),
                        other => format!("{field} ({other})"),
                    };
                    Problem {
                        resource: resource.clone(),
                        field,
                        message: error.to_string(),
                    }
                })
        });
        let terminus = match terminus {
            Ok(terminus) => terminus,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        // The listener must stay open until the kubelet has seen the failing readiness
        // probe: that is when the endpoint stops being `serving`.
        let drain_delay = terminus.config().drain_delay();
        let probe_field = format!("{field}.readinessProbe");
        match container.get("readinessProbe") {
            None => problems.push(Problem {
                resource: resource.clone(),
                field: probe_field,
                message: "missing: without it the pod is ready while draining, as far as the kubelet knows"
                    .into(),
            }),
            Some(probe) => {
                // Kubernetes' defaults: every 10 s, 3 failures.
                let period = integer(probe, "periodSeconds", 10, &probe_field, &resource, problems);
                let threshold = integer(probe, "failureThreshold", 3, &probe_field, &resource, problems);
                if let (Some(period), Some(threshold)) = (period, threshold) {
                    let reaction = Duration::from_secs(period * threshold);
                    if reaction > drain_delay {
                        problems.push(Problem {
                            resource: resource.clone(),
                            field: format!("{probe_field}.failureThreshold"),
                            message: format!(
                                "periodSeconds {period} x failureThreshold {threshold} = {reaction:?} is longer \
                                 than {} {drain_delay:?}: the listener would close before the kubelet marks \
                                 the pod not ready",
                                terminus_core::ENV_DRAIN_DELAY
                            ),
                        });
                    } else {
                        findings.notes.push(format!(
                            "{resource}: drain delay {drain_delay:?} covers readiness {period}s x {threshold} \
                             = {reaction:?}; the worst-case shutdown fits {grace}s"
                        ));
                    }
                }
            }
        }
    }
}

/// The container's literal `TERMINUS_*` variables, by name, with their index in `env`;
/// `None` when it has none. A `TERMINUS_*` name the library does not read, or one set
/// from elsewhere (`valueFrom`), is a problem.
fn terminus_env(
    container: &Value,
    field: &str,
    resource: &str,
    problems: &mut Vec<Problem>,
) -> Option<BTreeMap<String, (usize, String)>> {
    let mut env = BTreeMap::new();
    for (index, variable) in container["env"].as_array().into_iter().flatten().enumerate() {
        let name = variable["name"].as_str().unwrap_or_default();
        if !name.starts_with("TERMINUS_") {
            continue;
        }
        let at = format!("{field}.env[{index}]");
        if !KNOWN_VARIABLES.contains(&name) {
            problems.push(Problem {
                resource: resource.into(),
                field: format!("{at}.name"),
                message: format!(
                    "`{name}` is not a variable terminus-rs reads ({})",
                    KNOWN_VARIABLES.join(", ")
                ),
            });
            continue;
        }
        match variable["value"].as_str() {
            Some(value) => {
                env.insert(name.to_owned(), (index, value.to_owned()));
            }
            None => problems.push(Problem {
                resource: resource.into(),
                field: format!("{at}.value"),
                message: format!("{name} must be a literal string here, so that its budget can be checked"),
            }),
        }
    }
    (!env.is_empty()).then_some(env)
}

/// Every probe and the preStop hook name a port the container declares.
fn check_ports(container: &Value, field: &str, resource: &str, problems: &mut Vec<Problem>) {
    let ports: Vec<&Value> = container["ports"].as_array().into_iter().flatten().collect();
    let declared = |port: &Value| {
        ports
            .iter()
            .any(|declared| Some(port) == declared.get("name") || Some(port) == declared.get("containerPort"))
    };
    let handlers = [
        ("startupProbe", "/startupProbe"),
        ("readinessProbe", "/readinessProbe"),
        ("livenessProbe", "/livenessProbe"),
        ("lifecycle.preStop", "/lifecycle/preStop"),
    ];
    for (name, pointer) in handlers {
        let Some(handler) = container.pointer(pointer) else {
            continue;
        };
        for action in ["httpGet", "grpc", "tcpSocket"] {
            if let Some(port) = handler.pointer(&format!("/{action}/port")) {
                if !declared(port) {
                    problems.push(Problem {
                        resource: resource.into(),
                        field: format!("{field}.{name}.{action}.port"),
                        message: format!("port {port} is not one of the container's ports"),
                    });
                }
            }
        }
    }
}

/// Runs `.ci/kubernetes-validate` on `files`: whether they are valid, and what it said.
fn schema_check(files: &[&Path]) -> (bool, String) {
    let output = Command::new(repository().join(".ci/kubernetes-validate"))
        .args(files)
        .output()
        .expect("run .ci/kubernetes-validate (bash, python3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A directory for broken copies, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("terminus-manifests-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).expect("write a broken copy");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` with `from` replaced by `to` exactly once (so that a change to the manifest
/// that makes the edit miss fails here, not silently).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in the manifest"
    );
    text.replacen(from, to, 1)
}

#[test]
fn every_manifest_is_in_the_budget_table() {
    let mut files: Vec<String> = std::fs::read_dir(repository().join("examples/kubernetes"))
        .expect("examples/kubernetes")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.ends_with(".yaml").then_some(name)
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(file, _)| file.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every manifest has its example's builder in EXAMPLES"
    );
}

#[test]
fn every_manifest_fits_the_librarys_budget() {
    for (file, builder) in EXAMPLES {
        let (_, text) = manifest(file);
        let findings = check_budget(&text, builder);
        let report: Vec<String> = findings.problems.iter().map(Problem::to_string).collect();
        assert!(report.is_empty(), "{file}:\n{}", report.join("\n"));
        assert!(
            !findings.notes.is_empty(),
            "{file}: no terminus-rs container was checked"
        );
        for note in findings.notes {
            println!("{file}: {note}");
        }
    }
}

#[test]
fn every_manifest_matches_the_kubernetes_schema_offline() {
    let paths: Vec<PathBuf> = EXAMPLES.iter().map(|(file, _)| manifest(file).0).collect();
    let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let (valid, output) = schema_check(&files);
    assert!(valid, "{output}");
    assert!(output.contains("valid against Kubernetes 1.34.0"), "{output}");
    assert!(output.contains("valid against Kubernetes 1.37.0"), "{output}");
}

/// The problems of a broken copy of the quickstart manifest, as text.
fn budget_problems(text: &str) -> Vec<Problem> {
    check_budget(text, quickstart::builder).problems
}

fn one_problem(text: &str) -> Problem {
    let problems = budget_problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems.into_iter().next().unwrap_or_else(|| unreachable!())
}

#[test]
fn a_grace_period_shorter_than_the_shutdown_fails_naming_the_field_and_the_excess() {
    let (_, text) = manifest("quickstart.yaml");
    let broken = edit(
        &text,
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSeconds: 25",
    );
    let broken = edit(&broken, r#"value: "30s""#, r#"value: "25s""#);
    let problem = one_problem(&broken);
    assert_eq!(problem.field, "spec.template.spec.terminationGracePeriodSeconds");
    assert_eq!(problem.resource, "Deployment/quickstart");
    // 5s drain delay + 20s drain timeout + 1 cleanup hook x 3s = 28s, with the
    // quickstart's real hooks.
    assert!(
        problem
            .message
            .contains("= 28s, 3s more than the grace period of 25s"),
        "{problem}"
    );
    // The schema has nothing against it: only the budget catches this.
    let scratch = Scratch::new("grace");
    let (valid, output) = schema_check(&[&scratch.write("quickstart.yaml", &broken)]);
    assert!(valid, "{output}");
}

#[test]
fn a_readiness_probe_slower_than_the_drain_delay_fails_naming_the_field() {
    let (_, text) = manifest("quickstart.yaml");
    let broken = edit(
        &text,
        "periodSeconds: 2\n            failureThreshold: 2",
        "periodSeconds: 2\n            failureThreshold: 3",
    );
    let problem = one_problem(&broken);
    assert_eq!(
        problem.field,
        "spec.template.spec.containers[0].readinessProbe.failureThreshold"
    );
    assert!(
        problem
            .message
            .contains("= 6s is longer than TERMINUS_DRAIN_DELAY 5s"),
        "{problem}"
    );

    // Kubernetes' defaults (10 s x 3) count when the fields are left out.
    let defaults = edit(
        &text,
        "            periodSeconds: 2\n            failureThreshold: 2\n",
        "",
    );
    let problem = one_problem(&defaults);
    assert!(problem.message.contains("= 30s is longer"), "{problem}");
}

#[test]
fn terminus_values_that_do_not_parse_or_do_not_exist_fail_naming_the_variable() {
    let (_, text) = manifest("quickstart.yaml");
    let broken = edit(&text, r#"value: "20s""#, r#"value: "20""#);
    let problem = one_problem(&broken);
    assert_eq!(
        problem.field,
        "spec.template.spec.containers[0].env[3] (TERMINUS_DRAIN_TIMEOUT)"
    );
    assert!(problem.message.contains("invalid duration `20`"), "{problem}");

    let broken = edit(&text, r#"value: "10s""#, r#"value: "soon""#);
    let problem = one_problem(&broken);
    assert!(
        problem.field.ends_with("(TERMINUS_HEADER_READ_TIMEOUT)"),
        "{problem}"
    );

    let broken = edit(
        &text,
        "name: TERMINUS_CLEANUP_TIMEOUT",
        "name: TERMINUS_CLEANUP_TIMEOUTS",
    );
    let problems = budget_problems(&broken);
    assert!(
        problems
            .iter()
            .any(|p| p.field == "spec.template.spec.containers[0].env[4].name"
                && p.message.contains("TERMINUS_CLEANUP_TIMEOUTS")),
        "{problems:#?}"
    );

    let broken = edit(&text, r#"value: "30s""#, r#"value: "31s""#);
    let problem = one_problem(&broken);
    assert!(problem.field.ends_with("(TERMINUS_GRACE_PERIOD)"), "{problem}");
    assert!(
        problem
            .message
            .contains("is not terminationGracePeriodSeconds (30s)"),
        "{problem}"
    );
}

#[test]
fn selectors_and_probe_ports_are_checked_by_name() {
    let (_, text) = manifest("quickstart.yaml");
    let broken = edit(
        &text,
        "httpGet: { path: /livez, port: http }",
        "httpGet: { path: /livez, port: admin }",
    );
    let problem = one_problem(&broken);
    assert_eq!(
        problem.field,
        "spec.template.spec.containers[0].livenessProbe.httpGet.port"
    );

    let broken = edit(
        &text,
        "  maxUnavailable: 1\n  selector:\n    matchLabels: { app.kubernetes.io/name: quickstart }",
        "  maxUnavailable: 1\n  selector:\n    matchLabels: { app.kubernetes.io/name: quickstrat }",
    );
    let problem = one_problem(&broken);
    assert_eq!(problem.resource, "PodDisruptionBudget/quickstart");
    assert_eq!(problem.field, "spec.selector.matchLabels");
}

#[test]
fn a_manifest_that_breaks_the_schema_fails_naming_the_field() {
    let (_, text) = manifest("quickstart.yaml");
    let scratch = Scratch::new("schema");

    // A misspelt field is ignored by a lenient reader; the strict schema check names it.
    let misspelt = edit(
        &text,
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSecond: 30",
    );
    let (valid, output) = schema_check(&[&scratch.write("misspelt.yaml", &misspelt)]);
    assert!(!valid, "{output}");
    assert!(
        output.contains("spec.template.spec: Additional properties are not allowed ('terminationGracePeriodSecond' was unexpected)"),
        "{output}"
    );

    // A number written as a string fails both checks, each naming the field.
    let quoted = edit(
        &text,
        "periodSeconds: 2\n            failureThreshold: 2",
        "periodSeconds: 2\n            failureThreshold: \"2\"",
    );
    let (valid, output) = schema_check(&[&scratch.write("quoted.yaml", &quoted)]);
    assert!(!valid, "{output}");
    assert!(
        output.contains(
            "spec.template.spec.containers.0.readinessProbe.failureThreshold: '2' is not of type 'integer'"
        ),
        "{output}"
    );
    let problem = one_problem(&quoted);
    assert_eq!(
        problem.field,
        "spec.template.spec.containers[0].readinessProbe.failureThreshold"
    );
    assert!(problem.message.contains("is not a whole number"), "{problem}");
}
