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
    let doc = json!({
        "target": {"name": target, "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                   "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
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
    assert_eq!(ids(store.list(&ListFilter { needs_sweep: true, ..Default::default() }).await.expect("list")), ["ls-a"]);
    assert_eq!(ids(store.list(&ListFilter { phase: Some(Phase::Aborted), ..Default::default() }).await.expect("list")), ["ls-b"]);
    assert_eq!(ids(store.list(&ListFilter { target: Some("svc-ls-b".into()), ..Default::default() }).await.expect("list")), ["ls-b"]);
    let mut all = ids(store.list(&ListFilter::default()).await.expect("list"));
    all.sort();
    assert_eq!(all, ["ls-a", "ls-b"]);
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
