//! The health service's semantics, called as tonic calls it (the `Health` trait), on a
//! paused clock. The end-to-end tests (`tests/tests/grpc.rs`) do the same over the
//! network, with real processes and signals.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use terminus_core::health::{Check, CheckError, CheckKind};
use terminus_core::server::ServerExt;
use terminus_core::Terminus;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::HealthCheckRequest;

use crate::HealthService;

/// A readiness check named `dep` that passes while `up` is true, counting its runs.
fn dependency(up: &Arc<AtomicBool>, runs: &Arc<AtomicUsize>) -> Check {
    let state = (Arc::clone(up), Arc::clone(runs));
    Check::with_state("dep", state, |(up, runs), _| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        if up.load(Ordering::SeqCst) {
            Ok(None)
        } else {
            Err(CheckError::new("down"))
        }
    })
    .readiness()
}

struct Fixture {
    terminus: Terminus,
    health: HealthService,
    up: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
}

fn fixture() -> Fixture {
    let up = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    let terminus = Terminus::builder()
        .readiness(dependency(&up, &runs))
        .liveness(Check::new("alive", |_| async { Ok(None) }))
        .build()
        .unwrap();
    let health = HealthService::builder(&terminus)
        .service("app.Orders", ["dep"])
        .service("app.Static", Vec::<String>::new())
        .probe_service("liveness", CheckKind::Liveness)
        .build()
        .unwrap();
    Fixture {
        terminus,
        health,
        up,
        runs,
    }
}

async fn check(health: &HealthService, service: &str) -> Result<ServingStatus, Code> {
    let request = Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    match Health::check(health, request).await {
        Ok(response) => Ok(response.into_inner().status()),
        Err(status) => Err(status.code()),
    }
}

#[tokio::test(start_paused = true)]
async fn the_empty_name_is_readiness_serving_while_serving_and_not_serving_from_draining() {
    let f = fixture();
    assert_eq!(
        check(&f.health, "").await,
        Ok(ServingStatus::NotServing),
        "starting"
    );
    f.terminus.mark_listeners_bound();
    assert_eq!(check(&f.health, "").await, Ok(ServingStatus::Serving));
    f.terminus.shutdown("test");
    for service in ["", "app.Orders", "app.Static", "liveness"] {
        assert_eq!(
            check(&f.health, service).await,
            Ok(ServingStatus::NotServing),
            "{service:?} from Draining on"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn named_services_wait_for_the_server_but_liveness_does_not() {
    let f = fixture();
    assert_eq!(
        check(&f.health, "app.Orders").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(
        check(&f.health, "app.Static").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(check(&f.health, "liveness").await, Ok(ServingStatus::Serving));
    f.terminus.mark_listeners_bound();
    assert_eq!(check(&f.health, "app.Orders").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&f.health, "app.Static").await, Ok(ServingStatus::Serving));
}

#[tokio::test(start_paused = true)]
async fn a_named_service_follows_its_check_within_the_cache_period() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    assert_eq!(check(&f.health, "app.Orders").await, Ok(ServingStatus::Serving));
    f.up.store(false, Ordering::SeqCst);
    // Cached for the check's TTL (1 s), then run again.
    assert_eq!(check(&f.health, "app.Orders").await, Ok(ServingStatus::Serving));
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(
        check(&f.health, "app.Orders").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(check(&f.health, "").await, Ok(ServingStatus::NotServing));
    // Neither the lifecycle-only service nor liveness depends on it.
    assert_eq!(check(&f.health, "app.Static").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&f.health, "liveness").await, Ok(ServingStatus::Serving));
    f.up.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(check(&f.health, "app.Orders").await, Ok(ServingStatus::Serving));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_name_is_not_found() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    assert_eq!(check(&f.health, "app.Nope").await, Err(Code::NotFound));
    f.terminus.shutdown("test");
    assert_eq!(check(&f.health, "app.Nope").await, Err(Code::NotFound));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_checks_run_the_check_once() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    let health = Arc::new(f.health);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let health = Arc::clone(&health);
        let service = if i % 2 == 0 { "" } else { "app.Orders" };
        calls.spawn(async move { check(&health, service).await });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), Ok(ServingStatus::Serving));
    }
    assert_eq!(f.runs.load(Ordering::SeqCst), 1);
}

async fn watch(health: &HealthService, service: &str) -> crate::WatchStream {
    let request = Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    Health::watch(health, request).await.unwrap().into_inner()
}

async fn next(stream: &mut crate::WatchStream) -> Option<ServingStatus> {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an answer within 30 s")
        .map(|item| item.unwrap().status())
}

#[tokio::test(start_paused = true)]
async fn watch_sends_each_change_then_not_serving_at_draining_and_ends() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    let mut stream = watch(&f.health, "app.Orders").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    f.up.store(false, Ordering::SeqCst);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    f.up.store(true, Ordering::SeqCst);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    let runs = f.runs.load(Ordering::SeqCst);
    f.terminus.shutdown("test");
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut stream).await, None, "the stream ends");
    assert_eq!(f.runs.load(Ordering::SeqCst), runs, "no check runs once draining");
}

#[tokio::test(start_paused = true)]
async fn watch_sees_draining_at_once_not_at_the_next_interval() {
    let up = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    let terminus = Terminus::builder()
        .readiness(dependency(&up, &runs))
        .build()
        .unwrap();
    let health = HealthService::builder(&terminus)
        .watch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    terminus.mark_listeners_bound();
    let mut stream = watch(&health, "").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    let started = tokio::time::Instant::now();
    terminus.shutdown("test");
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut stream).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn watch_of_an_unknown_name_says_service_unknown_stays_open_and_ends_at_draining() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    let mut stream = watch(&f.health, "app.Nope").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::ServiceUnknown));
    let pending = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(pending.is_err(), "open, and silent, while nothing changes");
    f.terminus.shutdown("test");
    assert_eq!(next(&mut stream).await, None);
}

#[tokio::test(start_paused = true)]
async fn watch_started_while_draining_says_not_serving_and_ends() {
    let f = fixture();
    f.terminus.mark_listeners_bound();
    f.terminus.shutdown("test");
    let mut stream = watch(&f.health, "").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut stream).await, None);
}

#[test]
fn invalid_mappings_are_errors_naming_the_field() {
    let runs = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(true));
    let terminus = Terminus::builder()
        .readiness(dependency(&up, &runs))
        .build()
        .unwrap();
    let error = |builder: crate::HealthServiceBuilder| builder.build().unwrap_err();

    let unknown = error(HealthService::builder(&terminus).service("a.A", ["dep", "nope"]));
    assert_eq!(unknown.field(), "service.checks");
    assert!(unknown.to_string().contains("`nope`"), "{unknown}");
    let twice = error(
        HealthService::builder(&terminus)
            .service("a.A", ["dep"])
            .probe_service("a.A", CheckKind::Liveness),
    );
    assert_eq!(twice.field(), "service");
    let empty = error(HealthService::builder(&terminus).service("", ["dep"]));
    assert_eq!(empty.field(), "service");
    let zero = error(HealthService::builder(&terminus).watch_interval(Duration::ZERO));
    assert_eq!(zero.field(), "watch_interval");
}

#[tokio::test(start_paused = true)]
async fn maintenance_makes_every_service_but_liveness_not_serving_at_once_and_back() {
    let up = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    let terminus = Terminus::builder()
        .readiness(dependency(&up, &runs))
        .build()
        .unwrap();
    let health = HealthService::builder(&terminus)
        .service("app.Orders", ["dep"])
        .probe_service("liveness", CheckKind::Liveness)
        .watch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    terminus.mark_listeners_bound();
    let mut stream = watch(&health, "").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));

    let started = tokio::time::Instant::now();
    terminus.set_maintenance(true);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "at once, not at the next interval"
    );
    for service in ["", "app.Orders"] {
        assert_eq!(
            check(&health, service).await,
            Ok(ServingStatus::NotServing),
            "{service}"
        );
    }
    assert_eq!(check(&health, "liveness").await, Ok(ServingStatus::Serving));

    terminus.set_maintenance(false);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    for service in ["", "app.Orders", "liveness"] {
        assert_eq!(
            check(&health, service).await,
            Ok(ServingStatus::Serving),
            "{service}"
        );
    }
}
