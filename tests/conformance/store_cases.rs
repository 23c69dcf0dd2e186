//! Behaviour every store adapter must show, run against each of them.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use sluice::domain::ids::{Actor, RolloutId, TargetName, Weight};
use sluice::domain::rollout::{decide, Event, Phase, Rollout};
use sluice::ports::store::{ListFilter, Store, StoreError};

fn actor(name: &str) -> Actor {
    Actor::parse(name).expect("actor")
}

fn rollout(id: &str, target: &str) -> (Rollout, sluice::domain::rollout::HistoryEntry) {
    rollout_of(id, target, json!([]))
}

fn rollout_of(id: &str, target: &str, resource_ids: serde_json::Value) -> (Rollout, sluice::domain::rollout::HistoryEntry) {
    let doc = json!({
        "target": {"name": target, "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                   "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"},
                   "resourceIds": resource_ids},
        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}
    });
    let (spec, plan) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).expect("valid");
    Rollout::new(RolloutId::parse(id).expect("id"), spec, plan, actor("ci"), Utc::now())
}

/// Applies an event in memory, returning the next state and its history.
fn step(r: &Rollout, e: Event) -> (Rollout, Vec<sluice::domain::rollout::HistoryEntry>) {
    let d = decide(r, e, r.updated_at + TimeDelta::seconds(1));
    assert!(!d.is_ignored());
    (d.next, d.history)
}

pub async fn round_trip_and_etags(store: Arc<dyn Store>) {
    let (r, first) = rollout("rt-1", "svc-rt");
    let etag = store.create(&r, &first).await.expect("create");
    let (loaded, etag2) = store.load("rt-1").await.expect("load").expect("exists");
    assert_eq!(loaded, r);
    assert_eq!(etag, etag2);
    let (next, history) = step(&loaded, Event::Start);
    let etag3 = store.save(&next, &etag2, &history).await.expect("save");
    assert_ne!(etag3, etag2, "a save changes the ETag");
    let (again, _) = store.load("rt-1").await.expect("load").expect("exists");
    assert_eq!(again, next);
    let h = store.history("rt-1").await.expect("history");
    assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(matches!(store.create(&r, &first).await, Err(StoreError::AlreadyExists(_))));
    assert!(store.load("nope").await.expect("load").is_none());
}

/// A 500 KB alert summary and a 300 KB provider error, as a failing service
/// sends them: every store keeps the rollback and the error, each text cut.
pub async fn an_oversized_alert_and_provider_error_are_kept_cut(store: Arc<dyn Store>) {
    use sluice::domain::rollout::{AlertInfo, CommandKind, CommandRef};
    let (r, first) = rollout("big-1", "svc-big");
    let mut etag = store.create(&r, &first).await.expect("create");
    let mut state = r;
    let huge = |n: usize| "ö".repeat(n);
    let alert = AlertInfo {
        id: "a-1".into(),
        rule: "r".into(),
        severity: "Sev1".into(),
        summary: huge(500_000),
        source: "Azure Monitor".into(),
        fired_at: None,
        link: None,
    };
    let events = [
        Event::Start,
        Event::TrafficConfirmed { weight: Weight::new(10).expect("weight") },
        Event::AlertFired { alert },
        Event::CommandFailed { command: CommandRef { kind: CommandKind::RevertTraffic, id: 1 }, error: huge(300_000) },
    ];
    for event in events {
        let d = decide(&state, event, state.updated_at + TimeDelta::seconds(1));
        if d.is_ignored() {
            continue;
        }
        etag = store.save(&d.next, &etag, &d.history).await.expect("every event is kept");
        state = d.next;
    }
    let (loaded, _) = store.load("big-1").await.expect("load").expect("exists");
    assert_eq!(loaded.phase, Phase::RollingBack);
    let history = store.history("big-1").await.expect("history");
    let text = serde_json::to_string(&history).expect("json");
    assert!(text.contains("[cut: 498000 more characters]"), "the alert's summary is kept, cut");
    assert!(text.len() < 100_000, "history is {} bytes", text.len());
}

pub async fn etag_conflict_one_writer_wins_and_the_other_redecides(store: Arc<dyn Store>) {
    let (r, first) = rollout("cf-1", "svc-cf");
    store.create(&r, &first).await.expect("create");
    let (a, etag_a) = store.load("cf-1").await.expect("load").expect("exists");
    let (b, etag_b) = store.load("cf-1").await.expect("load").expect("exists");
    let (next_a, hist_a) = step(&a, Event::Start);
    let (next_b, hist_b) = step(&b, Event::AbortRequested { by: actor("bob"), reason: String::new(), request: None });
    let (ra, rb) = tokio::join!(store.save(&next_a, &etag_a, &hist_a), store.save(&next_b, &etag_b, &hist_b));
    let wins = [ra.is_ok(), rb.is_ok()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "exactly one writer wins: {ra:?} {rb:?}");
    let b_won = rb.is_ok();
    let loser_err = if ra.is_ok() { rb.expect_err("lost") } else { ra.expect_err("lost") };
    assert!(matches!(loser_err, StoreError::Conflict), "{loser_err:?}");
    // The loser reloads and decides again on the winner's state.
    let (fresh, etag) = store.load("cf-1").await.expect("load").expect("exists");
    let event = if b_won { Event::Start } else { Event::AbortRequested { by: actor("bob"), reason: String::new(), request: None } };
    let d = decide(&fresh, event, fresh.updated_at + TimeDelta::seconds(1));
    if !d.is_ignored() {
        store.save(&d.next, &etag, &d.history).await.expect("the re-decided save succeeds");
    }
    let h = store.history("cf-1").await.expect("history");
    let seqs: Vec<u64> = h.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "history stays gap-free");
}

pub async fn state_and_history_are_written_together(store: Arc<dyn Store>) {
    let (r, first) = rollout("at-1", "svc-at");
    let etag = store.create(&r, &first).await.expect("create");
    let (next, mut history) = step(&r, Event::Start);
    // A history row that already exists makes the whole save fail, state included.
    history.push(first.clone());
    assert!(store.save(&next, &etag, &history).await.is_err());
    let (loaded, etag_after) = store.load("at-1").await.expect("load").expect("exists");
    assert_eq!(loaded, r, "state unchanged");
    assert_eq!(etag_after, etag, "ETag unchanged");
    assert_eq!(store.history("at-1").await.expect("history").len(), 1, "no partial history");
}

pub async fn one_active_rollout_per_target_even_in_a_race(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let (r, first) = rollout(&format!("race-{i}"), "svc-race");
            store.create(&r, &first).await
        });
    }
    let mut created = Vec::new();
    let mut busy = 0;
    while let Some(res) = tasks.join_next().await {
        match res.expect("task") {
            Ok(_) => created.push(()),
            Err(StoreError::TargetBusy { target, .. }) => {
                assert_eq!(target, "svc-race");
                busy += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((created.len(), busy), (1, 19));
    let active = store.active_for_target("svc-race").await.expect("query").expect("one active");
    // Finishing it frees the target.
    let (r, etag) = store.load(&active).await.expect("load").expect("exists");
    let (aborting, h1) = step(&r, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let (aborted, h2) = step(&aborting, Event::TrafficConfirmed { weight: Weight::ZERO });
    assert_eq!(aborted.phase, Phase::Aborted);
    let h: Vec<_> = h1.into_iter().chain(h2).collect();
    store.save(&aborted, &etag, &h).await.expect("save");
    assert_eq!(store.active_for_target("svc-race").await.expect("query"), None);
    let (r, first) = rollout("race-next", "svc-race");
    store.create(&r, &first).await.expect("the target is free again");
}

pub async fn lists_filter_and_alerts_are_kept(store: Arc<dyn Store>) {
    let (a, fa) = rollout("ls-a", "svc-ls-a");
    let (b, fb) = rollout("ls-b", "svc-ls-b");
    store.create(&a, &fa).await.expect("a");
    let etag = store.create(&b, &fb).await.expect("b");
    let (b1, h1) = step(&b, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let (b2, h2) = step(&b1, Event::TrafficConfirmed { weight: Weight::ZERO });
    store.save(&b2, &etag, &[h1, h2].concat()).await.expect("save");
    let ids = |v: Vec<Rollout>| v.into_iter().map(|r| r.id.to_string()).filter(|id| id.starts_with("ls-")).collect::<Vec<_>>();
    assert_eq!(ids(store.list(&ListFilter { active_only: true, ..Default::default() }).await.expect("list")), ["ls-a"]);
    assert_eq!(ids(store.list(&ListFilter { phase: Some(Phase::Aborted), ..Default::default() }).await.expect("list")), ["ls-b"]);
    assert_eq!(ids(store.list(&ListFilter { target: Some("svc-ls-b".into()), ..Default::default() }).await.expect("list")), ["ls-b"]);
    let mut all = ids(store.list(&ListFilter::default()).await.expect("list"));
    all.sort();
    assert_eq!(all, ["ls-a", "ls-b"]);
    // What metrics and the release report read: one set of facts per stored rollout, as its state says.
    let mut facts: Vec<_> = store.facts().await.expect("facts").into_iter().filter(|f| f.id.starts_with("ls-")).collect();
    facts.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(facts, [&a, &b2].map(sluice::domain::health::Facts::of));
    assert_eq!(facts[1].phase, Phase::Aborted);
    let record = sluice::ports::store::AlertRecord {
        received_at: Utc::now(),
        source: "Azure Monitor".into(),
        alert_id: "al-1".into(),
        rule: "r".into(),
        condition: "Fired".into(),
        matched: vec!["ls-a".into()],
        summary: "s".into(),
    };
    store.record_alert(&record).await.expect("record");
    let kept = store.alerts(10).await.expect("alerts");
    assert!(kept.contains(&record));
    assert!(store.transactions() >= 4, "writes are counted");
}

pub async fn odd_ids_and_targets_survive_the_trip(store: Arc<dyn Store>) {
    let (mut r, mut first) = rollout("placeholder", "placeholder");
    // Ids and targets are plain names by type; the longest, with every allowed
    // character, must survive the keys each store derives from them.
    let id = RolloutId::parse(&format!("A.b_c-{}", "9".repeat(57))).expect("63 characters");
    r.id = id.clone();
    r.spec.target.name = TargetName::parse("tgt.with_odd-chars.").expect("target");
    first.summary = "odd".into();
    let etag = store.create(&r, &first).await.expect("create");
    let (loaded, _) = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(loaded, r);
    assert_eq!(store.active_for_target("tgt.with_odd-chars.").await.expect("query"), Some(id.to_string()));
    let (next, h) = step(&loaded, Event::Start);
    store.save(&next, &etag, &h).await.expect("save");
    assert_eq!(store.history(&id).await.expect("history").len(), 2);
    let listed = store.list(&ListFilter { active_only: true, ..Default::default() }).await.expect("list");
    assert!(listed.iter().any(|x| x.id == id));
    // Text that is no id finds nothing, and breaks nothing.
    for odd in ["weird/id#1?x\\y'z ü", "../../escape", "", "a\u{0}b"] {
        assert!(store.load(odd).await.expect("load").is_none(), "{odd}");
    }
}

pub async fn a_long_rollout_outgrows_the_property_and_entity_limits(store: Arc<dyn Store>) {
    // A spec with 60 analysis steps and long queries: the state is far over 64 KiB.
    let long_query = format!("sum(rate(http_requests_total{{status=~\"5..\",app=\"{}\"}}[1m]))", "x".repeat(1500));
    let steps: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"analysis": {"metrics": [{"name": format!("m{i}"), "provider": "local", "query": long_query, "successCondition": "< 1", "interval": "1s"}]}}))
        .collect();
    let doc = json!({
        "target": {"name": "big-svc", "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                   "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
        "strategy": {"canary": {"steps": steps}}
    });
    let (spec, plan) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).expect("valid");
    let (r, first) = Rollout::new(RolloutId::parse("big-1").expect("id"), spec, plan, actor("ci"), Utc::now());
    let size = serde_json::to_string(&r).expect("json").len();
    assert!(size > 150_000, "the state is {size} bytes");
    let mut etag = store.create(&r, &first).await.expect("create");
    // And a history of about 400 rows of 3 KB each: well over 1 MiB in the partition.
    let mut state = r.clone();
    let mut written = 1;
    for batch in 0..4 {
        let rows: Vec<_> = (0..99)
            .map(|i| {
                let mut entry = first.clone();
                entry.seq = state.history_len + 1 + i as u64;
                entry.summary = format!("batch {batch} row {i}: {}", "y".repeat(3000));
                entry
            })
            .collect();
        state.history_len += rows.len() as u64;
        state.version += 1;
        written += rows.len();
        etag = store.save(&state, &etag, &rows).await.expect("a save of 99 history rows");
    }
    let (loaded, _) = store.load("big-1").await.expect("load").expect("exists");
    assert_eq!(loaded, state, "the oversized state comes back whole");
    let history = store.history("big-1").await.expect("history");
    assert_eq!(history.len(), written);
    assert!(history.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "in order, gap-free");
    let total: usize = history.iter().map(|h| h.summary.len()).sum();
    assert!(total > 1_100_000, "the partition holds {total} bytes of history");
}

fn ids_of(v: &[Rollout]) -> Vec<String> {
    v.iter().map(|r| r.id.to_string()).collect()
}

pub async fn the_timer_reads_exactly_what_is_due(store: Arc<dyn Store>) {
    // Nothing due: a new rollout waits for its start message, not for the timer.
    let (x0, first) = rollout("due-x", "svc-due-x");
    let etag = store.create(&x0, &first).await.expect("create");
    assert_eq!(x0.sweep_at(), None);
    let far = x0.created_at + TimeDelta::days(400);
    assert!(store.due(far, 100).await.expect("due").is_empty());
    // Started: the weight change is unconfirmed, so the timer looks again 30 s on (the sweep time moves earlier).
    let (x1, h) = step(&x0, Event::Start);
    let at = x1.sweep_at().expect("a lost command is retried");
    let etag = store.save(&x1, &etag, &h).await.expect("save");
    assert!(store.due(at - TimeDelta::milliseconds(1), 100).await.expect("due").is_empty(), "not before its time");
    assert_eq!(store.due(at, 100).await.expect("due"), vec![x1.id.clone()]);
    // Confirmed and paused with no timer: nothing due ever (the sweep time goes away).
    let (x2, h) = step(&x1, Event::TrafficConfirmed { weight: Weight::new(10).expect("weight") });
    assert_eq!(x2.sweep_at(), None);
    let etag = store.save(&x2, &etag, &h).await.expect("save");
    assert!(store.due(at, 100).await.expect("due").is_empty());
    assert!(store.due(far, 100).await.expect("due").is_empty());
    // An abort: the revert is unconfirmed, due again 30 s after it was asked for.
    let (x3, h) = step(&x2, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let later = x3.sweep_at().expect("the revert is retried");
    store.save(&x3, &etag, &h).await.expect("save");
    assert!(store.due(later - TimeDelta::milliseconds(1), 100).await.expect("due").is_empty());
    assert_eq!(store.due(later + TimeDelta::minutes(5), 100).await.expect("due"), vec![x3.id.clone()]);
    // The limit holds, earliest first.
    let mut expected = Vec::new();
    for i in 0..5 {
        let (r, first) = rollout(&format!("due-many-{i}"), &format!("svc-due-many-{i}"));
        let etag = store.create(&r, &first).await.expect("create");
        let (started, h) = step(&r, Event::Start);
        store.save(&started, &etag, &h).await.expect("save");
        expected.push((started.sweep_at().expect("due"), started.id.clone()));
    }
    expected.sort();
    let now = later + TimeDelta::minutes(5);
    let two = store.due(now, 2).await.expect("due");
    assert_eq!(two.len(), 2);
    let all = store.due(now, 100).await.expect("due");
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(two.iter().all(|id| all.contains(id)));
}

pub async fn alerts_find_active_rollouts_by_their_keys(store: Arc<dyn Store>) {
    let app = "/subscriptions/0000/resourceGroups/Orders/providers/Microsoft.Web/sites/orders-app";
    let (r, first) = rollout_of("keys-a", "svc-keys-a", json!([app]));
    let etag = store.create(&r, &first).await.expect("create");
    let (other, first_other) =
        rollout_of("keys-b", "svc-keys-b", json!(["/subscriptions/0000/resourceGroups/Orders/providers/Microsoft.Web/sites/orders-app-2"]));
    store.create(&other, &first_other).await.expect("create");
    let slot = vec![format!("{}/slots/canary", app.to_ascii_lowercase())];
    let keys = sluice::domain::alert_keys::alert_lookup_keys(&slot, &[]);
    assert_eq!(
        ids_of(&store.active_by_alert_keys(&keys).await.expect("lookup")),
        ["keys-a"],
        "a slot alert finds its app, not the sibling"
    );
    let by_name = sluice::domain::alert_keys::alert_lookup_keys(&[], &["SVC-KEYS-B".to_string()]);
    assert_eq!(ids_of(&store.active_by_alert_keys(&by_name).await.expect("lookup")), ["keys-b"]);
    let nothing = sluice::domain::alert_keys::alert_lookup_keys(&["/subscriptions/0000/resourcegroups/other".to_string()], &[]);
    assert!(store.active_by_alert_keys(&nothing).await.expect("lookup").is_empty());
    // Finished rollouts are no longer found.
    let (a1, h1) = step(&r, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let (a2, h2) = step(&a1, Event::TrafficConfirmed { weight: Weight::ZERO });
    store.save(&a2, &etag, &[h1, h2].concat()).await.expect("save");
    assert!(store.active_by_alert_keys(&keys).await.expect("lookup").is_empty());
}

pub async fn lists_are_newest_first_and_stop_at_their_limit(store: Arc<dyn Store>) {
    let base = Utc::now();
    for i in 0..5 {
        let (mut r, first) = rollout(&format!("page-{i}"), &format!("svc-page-{}", i % 2));
        r.created_at = base + TimeDelta::seconds(i);
        if i < 4 {
            // Only one active per target: finish the older ones.
            let etag = store.create(&r, &first).await.expect("create");
            let (a1, h1) = step(&r, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
            let (a2, h2) = step(&a1, Event::TrafficConfirmed { weight: Weight::ZERO });
            store.save(&a2, &etag, &[h1, h2].concat()).await.expect("save");
        } else {
            store.create(&r, &first).await.expect("create");
        }
    }
    let page = store.list(&ListFilter { limit: 3, ..Default::default() }).await.expect("list");
    assert_eq!(ids_of(&page), ["page-4", "page-3", "page-2"]);
    let target = store.list(&ListFilter { target: Some("svc-page-1".into()), limit: 1, ..Default::default() }).await.expect("list");
    assert_eq!(ids_of(&target), ["page-3"]);
    let aborted = store.list(&ListFilter { phase: Some(Phase::Aborted), limit: 2, ..Default::default() }).await.expect("list");
    assert_eq!(ids_of(&aborted), ["page-3", "page-2"]);
    let active = store.list(&ListFilter { active_only: true, limit: 10, ..Default::default() }).await.expect("list");
    assert_eq!(ids_of(&active), ["page-4"]);
}

pub async fn alert_records_are_kept_for_their_retention(store: Arc<dyn Store>) {
    let record = |id: &str, age_days: i64| sluice::ports::store::AlertRecord {
        received_at: Utc::now() - TimeDelta::days(age_days),
        source: "Alertmanager".into(),
        alert_id: id.into(),
        rule: "r".into(),
        condition: "Fired".into(),
        matched: vec!["gh-900".into()],
        summary: "s".into(),
    };
    store.record_alert(&record("old", 40)).await.expect("record");
    assert!(store.alert_delivered("old", "Fired", "gh-900").await.expect("asked"));
    store.record_alert(&record("new", 0)).await.expect("record");
    let kept: Vec<String> = store.alerts(10).await.expect("alerts").into_iter().map(|a| a.alert_id).collect();
    assert_eq!(kept, ["new"], "past the default 30 days an alert record goes");
    assert!(!store.alert_delivered("old", "Fired", "gh-900").await.expect("asked"), "and what it delivered goes with it");
    assert!(store.alert_delivered("new", "Fired", "gh-900").await.expect("asked"));
}

pub fn release(id: &str, created: chrono::DateTime<Utc>) -> (sluice::domain::release::Release, sluice::domain::release::ReleaseEntry) {
    let target = |name: &str| {
        json!({"name": name, "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
               "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}})
    };
    let doc = json!({
        "name": "shop", "version": "v2",
        "waves": [{"name": "one", "targets": [target("shop-a")], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
                  {"name": "two", "targets": [target("shop-b")], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}]
    });
    let (spec, _) = sluice::domain::release::spec::validate(&doc, &sluice::ports::registry::names()).expect("valid");
    sluice::domain::release::Release::new(RolloutId::parse(id).expect("id"), spec, actor("ci"), created)
}

/// Releases: created once, saved only on a current ETag with their history
/// in the same write, listed newest first, and handed to the timer exactly
/// when their wake-up has come (and not once they have nothing left to do).
pub async fn releases_keep_state_history_and_wake_ups(store: Arc<dyn Store>) {
    use sluice::domain::release::{decide, ReleaseEvent};
    let t0 = Utc::now();
    let (r, first) = release("rel-1", t0);
    let etag = store.create_release(&r, &first).await.expect("create");
    assert!(matches!(store.create_release(&r, &first).await, Err(StoreError::AlreadyExists(_))));
    let (loaded, etag2) = store.load_release("rel-1").await.expect("load").expect("exists");
    assert_eq!((&loaded, &etag2), (&r, &etag));
    assert!(store.load_release("rel-none").await.expect("load").is_none());
    // Due at once (its first wave must start), not before it was created.
    assert_eq!(store.due_releases(t0, 10).await.expect("due"), vec![RolloutId::parse("rel-1").expect("id")]);
    assert!(store.due_releases(t0 - TimeDelta::seconds(1), 10).await.expect("due").is_empty());
    let d = decide(&loaded, &ReleaseEvent::Observed(vec![]), t0);
    let etag3 = store.save_release(&d.release, &etag2, &d.history).await.expect("save");
    assert_ne!(etag3, etag2);
    assert!(matches!(store.save_release(&d.release, &etag2, &d.history).await, Err(StoreError::Conflict)), "a stale ETag is refused");
    // Its next look is later: not due now, due then.
    let wake = d.release.wake_at.expect("running releases are watched");
    assert!(store.due_releases(t0, 10).await.expect("due").is_empty());
    assert_eq!(store.due_releases(wake, 10).await.expect("due").len(), 1);
    // Aborted with nothing running: settled, never due again.
    let aborted = decide(&d.release, &ReleaseEvent::AbortRequested { by: actor("alice"), reason: "stop".into() }, wake);
    assert!(aborted.release.settled());
    store.save_release(&aborted.release, &etag3, &aborted.history).await.expect("save");
    assert!(store.due_releases(wake + TimeDelta::days(365), 10).await.expect("due").is_empty());
    let history = store.release_history("rel-1").await.expect("history");
    assert_eq!(history.iter().map(|h| h.seq).collect::<Vec<_>>(), (1..=aborted.release.seq).collect::<Vec<_>>());
    assert!(history.last().map(|h| h.message.contains("aborted by alice")).unwrap_or(false), "{history:?}");
    // Newest first, bounded.
    let (newer, first) = release("rel-2", t0 + TimeDelta::seconds(5));
    store.create_release(&newer, &first).await.expect("create");
    let ids: Vec<String> = store.list_releases(0).await.expect("list").iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, vec!["rel-2", "rel-1"]);
    assert_eq!(store.list_releases(1).await.expect("list").len(), 1);
}

/// What makes an alert message on the queue believable: the webhook's
/// record of delivering exactly that alert, in that condition, to that
/// rollout — no prefix, no other condition, no other rollout.
pub async fn alert_deliveries_are_found_exactly(store: Arc<dyn Store>) {
    let record = |id: &str, condition: &str, matched: &[&str]| sluice::ports::store::AlertRecord {
        received_at: Utc::now(),
        source: "Azure Monitor".into(),
        alert_id: id.into(),
        rule: "5xx".into(),
        condition: condition.into(),
        matched: matched.iter().map(|m| m.to_string()).collect(),
        summary: String::new(),
    };
    let id = "/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a|b'c";
    store.record_alert(&record(id, "Fired", &["gh-424", "gh-425"])).await.expect("recorded");
    store.record_alert(&record("unmatched", "Fired", &[])).await.expect("recorded");
    for (alert, condition, rollout, delivered) in [
        (id, "Fired", "gh-424", true),
        (id, "Fired", "gh-425", true),
        (id, "Resolved", "gh-424", false),
        (id, "Fired", "gh-4242", false),
        (id, "Fired", "gh-42", false),
        ("/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a", "Fired", "gh-424", false),
        ("unmatched", "Fired", "gh-424", false),
    ] {
        assert_eq!(store.alert_delivered(alert, condition, rollout).await.expect("asked"), delivered, "{alert} {condition} {rollout}");
    }
}

/// A pipeline task waiting on `rollout`, as Azure Pipelines' headers announce it.
fn pipeline_wait(rollout: &str, task: &str, token: &str) -> sluice::domain::pipeline_wait::PipelineWait {
    let headers = [
        ("planurl", "https://dev.azure.com/contoso/"),
        ("projectid", "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"),
        ("hubname", "build"),
        ("planid", "0f4e5b0c-1c3e-4a6a-9d43-4c9e2b8f3a11"),
        ("jobid", "3a7e60dc-c5b0-5009-86eb-0f217c12e2ea"),
        ("taskinstanceid", task),
        ("authtoken", token),
    ];
    let find = |name: &str| headers.iter().find(|(k, _)| *k == name.to_ascii_lowercase()).map(|(_, v)| *v);
    sluice::domain::pipeline_wait::PipelineWait::from_headers(RolloutId::parse(rollout).expect("id"), find, Utc::now()).expect("valid")
}

/// Pipeline tasks waiting on rollouts: kept with their token, found by
/// rollout (never a neighbour whose id shares a prefix), replaced when the
/// same task registers again, and dropped — dropping one already gone is fine.
pub async fn pipeline_waits_are_kept_found_and_dropped(store: Arc<dyn Store>) {
    let wait = pipeline_wait;
    let (t1, t2) = ("61153303-347e-5f06-a6a1-ce2102bd68eb", "71153303-347e-5f06-a6a1-ce2102bd68eb");
    store.save_pipeline_wait(&wait("ado-7", t1, "first-token")).await.expect("kept");
    store.save_pipeline_wait(&wait("ado-7", t1, "second-token")).await.expect("replaced");
    store.save_pipeline_wait(&wait("ado-7", t2, "other")).await.expect("kept");
    store.save_pipeline_wait(&wait("ado-77", t1, "neighbour")).await.expect("kept");
    let mine = store.pipeline_waits(Some("ado-7"), 0).await.expect("listed");
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine.iter().find(|w| w.task_instance_id.to_string() == t1).map(|w| w.auth_token.expose()), Some("second-token"));
    assert_eq!(store.pipeline_waits(None, 0).await.expect("all").len(), 3);
    assert_eq!(store.pipeline_waits(None, 2).await.expect("limited").len(), 2);
    let task = uuid::Uuid::parse_str(t1).expect("guid");
    store.drop_pipeline_wait("ado-7", &task).await.expect("dropped");
    store.drop_pipeline_wait("ado-7", &task).await.expect("dropping again is fine");
    let left: Vec<String> =
        store.pipeline_waits(None, 0).await.expect("all").iter().map(|w| format!("{}|{}", w.rollout, w.task_instance_id)).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&format!("ado-77|{t1}")) && left.contains(&format!("ado-7|{t2}")), "{left:?}");
}

/// Overwrites a stored rollout state with one this Sluice cannot read.
pub type Corrupt = Box<dyn Fn(String, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// A state Sluice cannot read — one a newer Sluice wrote in a later format,
/// or a corrupt one — hides no other rollout (lists, facts and alert
/// look-ups leave it out) and is kept as stored: loading it still fails,
/// saying why, so nothing overwrites it. `corrupt(id, text)` writes `text`
/// as the stored state of `id`, in the adapter's own layout.
pub async fn an_unreadable_state_hides_no_other_and_is_kept(store: Arc<dyn Store>, corrupt: Corrupt) {
    let keys = json!(["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"]);
    let mut newer = serde_json::Value::Null;
    for (id, target) in [("gh-good", "svc-good"), ("gh-newer", "svc-newer"), ("gh-junk", "svc-junk")] {
        let (r, first) = rollout_of(id, target, keys.clone());
        store.create(&r, &first).await.expect("created");
        if id == "gh-newer" {
            newer = serde_json::to_value(&r).expect("json");
        }
    }
    newer["format"] = json!(sluice::domain::format::CURRENT + 1);
    corrupt("gh-newer".to_string(), newer.to_string()).await;
    corrupt("gh-junk".to_string(), r#"{"id": "gh-junk", "phase": "Hibernating"}"#.to_string()).await;
    let ids = |list: Vec<Rollout>| list.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.list(&ListFilter::default()).await.expect("list")), ["gh-good"]);
    assert_eq!(ids(store.list(&ListFilter { active_only: true, ..ListFilter::default() }).await.expect("list")), ["gh-good"]);
    assert_eq!(store.facts().await.expect("facts").len(), 1);
    let alert_keys: Vec<String> = rollout_of("gh-x", "svc-x", keys).0.alert_keys().into_iter().collect();
    assert_eq!(ids(store.active_by_alert_keys(&alert_keys).await.expect("by keys")), ["gh-good"]);
    let why = |r: Result<Option<(Rollout, sluice::ports::store::Etag)>, StoreError>| match r {
        Err(StoreError::Corrupt(why)) => why,
        other => panic!("expected an unreadable state, got {other:?}"),
    };
    let newer_format = format!("state format {}", sluice::domain::format::CURRENT + 1);
    assert!(why(store.load("gh-newer").await).contains(&newer_format), "the load says which format it met");
    assert!(why(store.load("gh-newer").await).contains(&newer_format), "and it is still there, as it was");
    why(store.load("gh-junk").await);
}

/// The oversized-event case through the engine and a real router, on each
/// store: a 500 KB alert summary during an approval gate rolls back — the
/// router at 0 %, the state saying so, the alert in the history, cut — and
/// a later approval cannot put traffic back. Before, on Table Storage, the
/// save failed after the router moved and a later approval promoted v2.
pub async fn an_oversized_alert_rolls_back_with_router_and_state_agreeing(store: Arc<dyn Store>) {
    use sluice::devtools::router::{Router, Upstream};
    use sluice::domain::rollout::AlertInfo;
    let router = Router::new(
        Upstream { name: "stable".into(), version: "v1".into(), url: "http://127.0.0.1:9".into() },
        Upstream { name: "canary".into(), version: "v2".into(), url: "http://127.0.0.1:9".into() },
    );
    let any = "127.0.0.1:0".parse().expect("addr");
    let addr = router.serve(any, any).await.expect("router").admin;
    let dir = tempfile::tempdir().expect("dir");
    let clock: Arc<dyn sluice::ports::clock::Clock> = Arc::new(sluice::ports::clock::SystemClock);
    let queue = Arc::new(sluice::ports::queue::embedded::EmbeddedQueue::open(&dir.path().join("q.db"), clock.clone()).expect("queue"));
    let env = sluice::ports::env::AdapterEnv::new(dir.path().to_path_buf(), "http://127.0.0.1:7071".into());
    let engine = sluice::shell::engine::Engine::new(store.clone(), queue, env.clone(), clock);
    let doc = json!({
        "target": {"name": "svc-huge", "router": {"provider": "local", "settings": {"url": format!("http://{addr}")}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"approval": {}}]}}
    });
    let (spec, plan) = sluice::ports::registry::validate(&doc, &env).expect("valid");
    let created = engine.create(spec, plan, &actor("ci"), None, None).await.expect("created");
    let id = created.id.clone();
    let gate = engine.apply(&id, Event::Start).await.expect("started").rollout;
    assert_eq!((gate.phase, router.route().weight.percent()), (Phase::AwaitingApproval, 20));
    let alert = AlertInfo {
        id: "huge-1".into(),
        rule: "5xx".into(),
        severity: "Sev1".into(),
        summary: "ö".repeat(500_000),
        source: "Alertmanager".into(),
        fired_at: None,
        link: None,
    };
    engine.apply(&id, Event::AlertFired { alert }).await.expect("applied");
    let (state, _) = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(router.route().weight.percent(), 0, "traffic is back on stable");
    assert_eq!((state.phase, state.traffic.weight.percent()), (Phase::RolledBack, 0), "and the state says so");
    let history = serde_json::to_string(&store.history(&id).await.expect("history")).expect("json");
    assert!(history.contains("AlertFired") && history.contains("[cut: "), "the alert is kept, cut");
    // An approval after the rollback changes nothing at the router.
    let late = engine.apply(&id, Event::Approved { by: actor("alice"), stage: None, request: None }).await.expect("answered");
    assert_eq!((late.rollout.phase, router.route().weight.percent()), (Phase::RolledBack, 0));
}

/// Retention: finished rollouts and settled releases created before the
/// cutoff go — state, history, list rows, waiting tasks — at most `limit`
/// of each per pass, until none is left; active ones, one with something
/// still to do (a backlog issue being opened) and newer ones stay, and
/// lists, facts and histories of what remains are unchanged.
pub async fn finished_records_past_retention_are_pruned_in_bounded_batches(store: Arc<dyn Store>) {
    use sluice::domain::release::{decide, ReleaseEvent};
    use sluice::domain::rollout::{Attempt, BacklogState};
    let now = Utc::now();
    let (old, cutoff) = (now - TimeDelta::days(500), now - TimeDelta::days(400));
    let put = |id: &'static str, created: chrono::DateTime<Utc>, finish: bool| {
        let store = store.clone();
        async move {
            let (mut r, mut first) = rollout(id, &format!("svc-{id}"));
            r.created_at = created;
            first.at = created;
            let etag = store.create(&r, &first).await.expect("created");
            if finish {
                let (aborting, h1) = step(&r, Event::AbortRequested { by: actor("alice"), reason: String::new(), request: None });
                let (done, h2) = step(&aborting, Event::TrafficConfirmed { weight: Weight::ZERO });
                assert_eq!(done.phase, Phase::Aborted);
                store.save(&done, &etag, &[h1, h2].concat()).await.expect("finished");
                done
            } else {
                r
            }
        }
    };
    for (i, id) in ["old-done-1", "old-done-2", "old-done-3"].into_iter().enumerate() {
        put(id, old + TimeDelta::seconds(i as i64), true).await;
    }
    put("old-active", old + TimeDelta::seconds(10), false).await;
    put("new-done", now, true).await;
    // Finished, but its backlog issue is still being opened: the timer has work on it.
    let mut busy = put("old-busy", old + TimeDelta::seconds(20), true).await;
    let (_, etag) = store.load("old-busy").await.expect("load").expect("there");
    busy.backlog = BacklogState::Opening { attempt: Attempt { id: 1, attempts: 1, issued_at: now, failed_at: None, last_error: None } };
    store.save(&busy, &etag, &[]).await.expect("saved");
    assert!(busy.sweep_at().is_some());
    let wait = pipeline_wait("old-done-1", "61153303-347e-5f06-a6a1-ce2102bd68eb", "token");
    store.save_pipeline_wait(&wait).await.expect("kept");
    let settle = |id: &'static str, created: chrono::DateTime<Utc>, settled: bool| {
        let store = store.clone();
        async move {
            let (r, first) = release(id, created);
            let etag = store.create_release(&r, &first).await.expect("created");
            if settled {
                let d = decide(&r, &ReleaseEvent::AbortRequested { by: actor("alice"), reason: "stop".into() }, created);
                assert!(d.release.settled());
                store.save_release(&d.release, &etag, &d.history).await.expect("settled");
            }
        }
    };
    settle("rel-old-done", old, true).await;
    settle("rel-old-running", old, false).await;
    settle("rel-new-done", now, true).await;

    let mut passes = Vec::new();
    loop {
        let pruned = store.prune_finished(cutoff, 2).await.expect("pruned");
        assert!(pruned.rollouts <= 2 && pruned.releases <= 2, "{pruned:?}");
        passes.push((pruned.rollouts, pruned.releases));
        if pruned.rollouts + pruned.releases == 0 || passes.len() > 5 {
            break;
        }
    }
    assert_eq!(passes.iter().map(|p| p.0).sum::<usize>(), 3, "the three old finished rollouts, two per pass: {passes:?}");
    assert_eq!(passes.iter().map(|p| p.1).sum::<usize>(), 1, "{passes:?}");
    for id in ["old-done-1", "old-done-2", "old-done-3"] {
        assert!(store.load(id).await.expect("load").is_none(), "{id} is gone");
        assert!(store.history(id).await.expect("history").is_empty(), "{id}'s history is gone");
    }
    assert!(store.pipeline_waits(Some("old-done-1"), 0).await.expect("waits").is_empty(), "its waiting task is gone");
    let ids = |list: Vec<Rollout>| list.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.list(&ListFilter::default()).await.expect("list")), ["new-done", "old-busy", "old-active"]);
    assert_eq!(
        ids(store.list(&ListFilter { phase: Some(Phase::Aborted), ..ListFilter::default() }).await.expect("list")),
        ["new-done", "old-busy"]
    );
    assert_eq!(store.facts().await.expect("facts").len(), 3);
    for id in ["new-done", "old-busy", "old-active"] {
        assert!(!store.history(id).await.expect("history").is_empty(), "{id} keeps its history");
    }
    let releases: Vec<String> = store.list_releases(0).await.expect("list").iter().map(|r| r.id.to_string()).collect();
    assert_eq!(releases, ["rel-new-done", "rel-old-running"]);
    assert!(store.load_release("rel-old-done").await.expect("load").is_none());
    assert!(store.release_history("rel-old-done").await.expect("history").is_empty());
}

/// The sums behind `/api/metrics` are those of what is stored, however it
/// got there: created, moved through phases, finished, re-saved unchanged,
/// a stale save refused, and deleted by retention.
pub async fn kept_sums_are_those_of_the_stored_rollouts(store: Arc<dyn Store>) {
    use sluice::domain::health::{Series, Tallies};
    let agree = |store: Arc<dyn Store>, when: &'static str| async move {
        let kept = store.tallies().await.expect("tallies");
        assert_eq!(kept, Tallies::sum(&store.facts().await.expect("facts")), "{when}");
        kept
    };
    let empty = agree(store.clone(), "empty").await;
    assert_eq!(empty, Tallies::default());
    let old = Utc::now() - TimeDelta::days(500);
    let mut etags = Vec::new();
    for (i, id) in ["ks-1", "ks-2", "ks-3"].into_iter().enumerate() {
        let (mut r, mut first) = rollout(id, &format!("svc-ks-{i}"));
        (r.created_at, r.updated_at, first.at) = (old, old, old);
        etags.push((store.create(&r, &first).await.expect("created"), r));
    }
    agree(store.clone(), "created").await;
    let (etag, r) = etags.remove(0);
    let (started, h) = step(&r, Event::Start);
    let etag = store.save(&started, &etag, &h).await.expect("started");
    agree(store.clone(), "started").await;
    let (aborting, h1) = step(&started, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let (aborted, h2) = step(&aborting, Event::TrafficConfirmed { weight: Weight::ZERO });
    let after = store.save(&aborted, &etag, &[h1, h2].concat()).await.expect("aborted");
    assert!(matches!(store.save(&aborted, &etag, &[]).await, Err(StoreError::Conflict)));
    store.save(&aborted, &after, &[]).await.expect("saved again, unchanged");
    let kept = agree(store.clone(), "aborted, re-saved, a stale save refused").await;
    // A timer pass that deletes nothing (stores that seal finished rollouts into their sums do it here).
    assert_eq!(store.prune_finished(old - TimeDelta::days(1), 10).await.expect("pass"), Default::default());
    assert_eq!(agree(store.clone(), "after a timer pass").await, kept);
    // Finished since, on another service: counted beside the sealed sums.
    let (etag, r) = etags.remove(0);
    let (a1, h1) = step(&r, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    store.save(&a1, &etag, &h1).await.expect("aborting");
    agree(store.clone(), "another aborting").await;
    assert_eq!(kept.get(&Series::Finished { service: "svc-ks-0".into(), outcome: "aborted".into() }), 1, "{kept:?}");
    assert_eq!(kept.get(&Series::Active { service: "svc-ks-1".into(), phase: "Pending".into() }), 1, "{kept:?}");
    // Finished long ago but still busy (its backlog issue being opened): passes leave it aside, then seal it once it settles.
    use sluice::domain::rollout::{Attempt, BacklogState};
    // (It finishes after the sealed one, as time goes: a row filed by when it finished lands past the mark.)
    let (etag, mut r) = etags.remove(0);
    r.updated_at = old + TimeDelta::hours(1);
    let (b1, h1) = step(&r, Event::AbortRequested { by: actor("x"), reason: String::new(), request: None });
    let (mut busy, h2) = step(&b1, Event::TrafficConfirmed { weight: Weight::ZERO });
    busy.backlog =
        BacklogState::Opening { attempt: Attempt { id: 9, attempts: 3, issued_at: Utc::now(), failed_at: None, last_error: None } };
    busy.tally.backlog_failures = 2;
    let etag = store.save(&busy, &etag, &[h1, h2].concat()).await.expect("busy");
    store.prune_finished(old - TimeDelta::days(1), 10).await.expect("pass");
    agree(store.clone(), "a busy one passed by").await;
    busy.tally.backlog_failures = 3;
    let etag = store.save(&busy, &etag, &[]).await.expect("failed again");
    store.prune_finished(old - TimeDelta::days(1), 10).await.expect("pass");
    let kept = agree(store.clone(), "a busy one failed again").await;
    assert_eq!(kept.get(&Series::BacklogFailures { service: "svc-ks-2".into() }), 3, "{kept:?}");
    busy.backlog = BacklogState::None;
    store.save(&busy, &etag, &[]).await.expect("settled");
    store.prune_finished(old - TimeDelta::days(1), 10).await.expect("pass");
    agree(store.clone(), "settled, then sealed").await;
    store.prune_finished(Utc::now() - TimeDelta::days(400), 10).await.expect("pruned");
    let kept = agree(store.clone(), "pruned").await;
    assert_eq!(kept.get(&Series::Finished { service: "svc-ks-0".into(), outcome: "aborted".into() }), 0, "{kept:?}");
    assert_eq!(kept.get(&Series::BacklogFailures { service: "svc-ks-2".into() }), 0, "{kept:?}");
}
