//! Behaviour every traffic router must show, run against each Azure
//! router's wire-level fake (`tests/router_fakes/mod.rs`). That a
//! rollout stays `RollingBack` until a revert is confirmed is the core's
//! part, proved through the local host in `tests/boundaries.rs`; here each
//! router shows it never reports a revert it did not make.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::router_fakes::FakeRouter;
use sluice::domain::ids::Weight;
use sluice::ports::traffic::{Traffic, TrafficError};

fn w(p: u64) -> Weight {
    Weight::new(p).expect("weight")
}

/// Each weight asked for is applied, read back and confirmed.
pub async fn set_and_confirm(router: Arc<dyn Traffic>, fake: FakeRouter) {
    for p in [5, 20, 50] {
        assert_eq!(router.set_weight(w(p)).await.unwrap_or_else(|e| panic!("{p}%: {e}")), w(p));
        assert_eq!(u64::from(fake.share()), p, "the service routes {p}%");
        assert_eq!(router.current().await.expect("current").weight, w(p), "read back");
    }
    assert!(fake.seen().iter().all(|r| r.header("authorization").is_some()), "every call is authenticated");
}

/// A service that acknowledges a write but does not apply it is caught by
/// the read-back: no confirmation is emitted.
pub async fn read_back_mismatch_is_not_confirmed(router: Arc<dyn Traffic>, fake: FakeRouter) {
    router.set_weight(w(10)).await.expect("10%");
    fake.faults(|f| f.ignore_writes = true);
    match router.set_weight(w(30)).await {
        Err(TrafficError::NotApplied { wanted, actual }) => assert_eq!((wanted, actual), (w(30), w(10))),
        other => panic!("a write the service ignored was reported as {other:?}"),
    }
    assert_eq!(fake.share(), 10);
}

/// Promotion puts everyone on the new version, a repeated promotion (the
/// same command redelivered) changes nothing, and a rollback after it puts
/// everyone back on the old one.
pub async fn promote_then_revert(router: Arc<dyn Traffic>, fake: FakeRouter) {
    router.set_weight(w(50)).await.expect("50%");
    let since = Utc::now();
    router.promote(since).await.expect("promote");
    assert_eq!(fake.share(), 100, "everyone on the new version");
    router.promote(since).await.expect("a redelivered promotion");
    assert_eq!(fake.share(), 100, "still everyone on the new version");
    let posts: Vec<String> = fake.seen().iter().filter(|r| r.method == "POST").map(|r| r.path.clone()).collect();
    assert!(posts.len() <= 1, "a non-idempotent promotion (a slot swap) is not made twice: {posts:?}");
    assert_eq!(router.revert(true, Utc::now()).await.expect("revert"), w(0));
    assert_eq!(fake.share(), 0, "everyone back on the old version");
}

/// 429 and 503 answers are retried after the `Retry-After` the service asked for.
pub async fn throttling_is_retried_after_the_wait_asked_for(router: Arc<dyn Traffic>, fake: FakeRouter) {
    fake.faults(|f| f.throttle_writes = 1);
    let started = Instant::now();
    assert_eq!(router.set_weight(w(20)).await.expect("20% after the wait"), w(20));
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", started.elapsed());
    assert_eq!(fake.share(), 20);
    let throttled = fake.seen().iter().filter(|r| r.method != "GET").count();
    assert!(throttled >= 2, "the throttled write was sent again");
    // A read answered 503 with Retry-After is retried after the wait too.
    fake.faults(|f| f.unavailable_reads = 1);
    let started = Instant::now();
    assert_eq!(router.current().await.expect("read after the wait").weight, w(20));
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", started.elapsed());
}

/// A write that failed after it may have been applied is never sent again
/// blindly: a non-idempotent call (POST, PATCH) is not repeated without a
/// read in between; the rollout's own retry decides.
pub async fn writes_that_may_have_happened_are_not_repeated_blindly(router: Arc<dyn Traffic>, fake: FakeRouter) {
    router.set_weight(w(10)).await.expect("10%");
    fake.faults(|f| f.fail_after_write = true);
    let before = fake.seen().len();
    assert!(router.set_weight(w(40)).await.is_err(), "a 500 is reported, not confirmed");
    let _ = router.promote(Utc::now()).await;
    let calls = fake.seen()[before..].to_vec();
    for pair in calls.windows(2) {
        let same = pair[0].method == pair[1].method && pair[0].path == pair[1].path && pair[0].body == pair[1].body;
        assert!(!(same && matches!(pair[0].method.as_str(), "POST" | "PATCH")), "{} {} sent twice in a row", pair[0].method, pair[0].path);
    }
    fake.faults(|f| f.fail_after_write = false);
    assert_eq!(router.set_weight(w(40)).await.expect("the rollout's retry"), w(40));
}

/// A rollback issued while a weight change is still in flight ends with
/// everyone on stable, and the weight change is not confirmed.
pub async fn revert_wins_over_a_weight_change_in_flight(router: Arc<dyn Traffic>, fake: FakeRouter) {
    router.set_weight(w(5)).await.expect("5%");
    fake.faults(|f| {
        f.hold_next_write = true;
        f.keep_operations_running = true;
    });
    let change = tokio::spawn({
        let router = router.clone();
        async move { router.set_weight(w(50)).await }
    });
    // Wait until the held write reached the service (the fake consumed the hold).
    let reached = async {
        while fake.faults(|f| f.hold_next_write) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reached).await.expect("the held write reached the service");
    assert_eq!(router.revert(false, Utc::now()).await.expect("revert"), w(0));
    // Only now does a held long-running operation finish (a clock would race a busy machine).
    fake.faults(|f| f.keep_operations_running = false);
    let change = change.await.expect("join");
    assert!(change.is_err(), "the overtaken weight change is not confirmed: {change:?}");
    assert_eq!(fake.share(), 0, "the revert won");
}

/// While the service is down a revert reports failure — never a revert it
/// did not make — and succeeds once the service is back.
pub async fn revert_fails_loudly_until_the_service_answers(router: Arc<dyn Traffic>, fake: FakeRouter) {
    router.set_weight(w(20)).await.expect("20%");
    fake.faults(|f| f.unavailable = true);
    assert!(router.revert(false, Utc::now()).await.is_err(), "an outage is a failed revert");
    assert_eq!(fake.share(), 20, "nothing changed");
    fake.faults(|f| f.unavailable = false);
    assert_eq!(router.revert(false, Utc::now()).await.expect("revert"), w(0));
    assert_eq!(fake.share(), 0);
}
