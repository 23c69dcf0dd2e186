//! One behavioural suite each for the store, queue and traffic ports, run
//! against every adapter (the routers against wire-level fakes of their services): the embedded ones, Table Storage on a real Azurite
//! emulator, and Service Bus against a wire-level fake that checks every
//! request. Each case gets a fresh adapter.

use crate::common;
use crate::router_fakes;
pub mod queue_cases;
pub mod router_cases;
pub mod store_cases;

use std::sync::Arc;
use std::time::Duration;

use common::azurite::Azurite;
use common::servicebus_fake::FakeServiceBus;
use sluice::ports::queue::embedded::EmbeddedQueue;
use sluice::ports::queue::servicebus::{ServiceBusConnection, ServiceBusQueue};
use sluice::ports::queue::Queue;
use sluice::ports::store::sqlite::SqliteStore;
use sluice::ports::store::table::{TableConnection, TableStore};
use sluice::ports::store::Store;

/// Keeps whatever backs an adapter alive for the length of a case.
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Azurite(Azurite),
    Fake(FakeServiceBus),
}

async fn sqlite_store() -> (Keep, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.db")).expect("store");
    (Keep::Dir(dir), Arc::new(store))
}

async fn table_store() -> (Keep, Arc<dyn Store>) {
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let connection = TableConnection::parse(&azurite.connection_string()).expect("connection string");
    let store = TableStore::connect(&connection, "sluice").await.expect("Azurite answers");
    (Keep::Azurite(azurite), Arc::new(store))
}

async fn embedded_queue() -> (Keep, Arc<dyn Queue>, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = EmbeddedQueue::open(&dir.path().join("q.db"), Arc::new(sluice::ports::clock::SystemClock)).expect("queue");
    (Keep::Dir(dir), Arc::new(queue), Duration::from_millis(1000))
}

const SB_LOCK: Duration = Duration::from_secs(2);

async fn servicebus_queue() -> (Keep, Arc<dyn Queue>, Duration) {
    let fake = FakeServiceBus::start(SB_LOCK).await;
    let connection = ServiceBusConnection::parse(&fake.connection_string()).expect("connection string");
    let queue = ServiceBusQueue::new(&connection, "rollout-steps", fake.http_client(), SB_LOCK).expect("client");
    (Keep::Fake(fake), Arc::new(queue), SB_LOCK)
}

macro_rules! store_suite {
    ($module:ident, $make:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_keep, store) = $make().await;
                    store_cases::$case(store).await;
                }
            )*
        }
    };
}

macro_rules! queue_suite {
    ($module:ident, $make:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_keep, queue, short_lock) = $make().await;
                    queue_cases::$case(queue, short_lock).await;
                }
            )*
        }
    };
}

macro_rules! every_store {
    ($($module:ident => $make:ident),*) => {
        $(store_suite!($module, $make, [
            round_trip_and_etags,
            finished_records_past_retention_are_pruned_in_bounded_batches,
            kept_sums_are_those_of_the_stored_rollouts,
            an_oversized_alert_and_provider_error_are_kept_cut,
            etag_conflict_one_writer_wins_and_the_other_redecides,
            state_and_history_are_written_together,
            one_active_rollout_per_target_even_in_a_race,
            lists_filter_and_alerts_are_kept,
            odd_ids_and_targets_survive_the_trip,
            a_long_rollout_outgrows_the_property_and_entity_limits,
            the_timer_reads_exactly_what_is_due,
            alerts_find_active_rollouts_by_their_keys,
            lists_are_newest_first_and_stop_at_their_limit,
            alert_records_are_kept_for_their_retention,
            alert_deliveries_are_found_exactly,
            pipeline_waits_are_kept_found_and_dropped,
            an_oversized_alert_rolls_back_with_router_and_state_agreeing,
            releases_keep_state_history_and_wake_ups,
        ]);)*
    };
}

macro_rules! every_queue {
    ($($module:ident => $make:ident),*) => {
        $(queue_suite!($module, $make, [
            send_receive_complete,
            scheduled_messages_wait_until_their_time,
            abandon_redelivers_with_a_higher_count,
            dead_letter_after_ten_deliveries,
            an_expired_lock_redelivers_and_the_old_lock_is_void,
            renew_keeps_the_lock,
            duplicate_ids_are_dropped,
        ]);)*
    };
}

macro_rules! router_suite {
    ($module:ident, $kind:literal) => {
        mod $module {
            use super::*;
            router_suite!(@cases $kind, [
                set_and_confirm,
                read_back_mismatch_is_not_confirmed,
                promote_then_revert,
                throttling_is_retried_after_the_wait_asked_for,
                writes_that_may_have_happened_are_not_repeated_blindly,
                revert_wins_over_a_weight_change_in_flight,
                revert_fails_loudly_until_the_service_answers,
            ]);
        }
    };
    (@cases $kind:literal, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (router, fake) = router_fakes::router_and_fake($kind).await;
                crate::conformance::router_cases::$case(router, fake).await;
            }
        )*
    };
}

router_suite!(router_app_service_slots, "appServiceSlots");
router_suite!(router_container_apps, "containerApps");
router_suite!(router_front_door, "frontDoor");
router_suite!(router_api_management, "apiManagement");
router_suite!(router_app_config_flag, "appConfigFlag");
router_suite!(router_gateway_api, "gatewayApi");

every_store!(sqlite => sqlite_store, table_azurite => table_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_unreadable_state_hides_no_other_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let store = Arc::new(SqliteStore::open(&db).expect("store"));
    let corrupt: store_cases::Corrupt = Box::new(move |id, state| {
        let db = db.clone();
        Box::pin(async move {
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.execute("UPDATE rollouts SET state = ?1 WHERE id = ?2", [&state, &id]).expect("written");
        })
    });
    store_cases::an_unreadable_state_hides_no_other_and_is_kept(store, corrupt).await;
}

/// `/api/metrics` reads the embedded store's kept sums, never the states:
/// with every state made unreadable behind its back, the sums still count
/// every rollout as it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_metrics_read_kept_sums_not_the_states() {
    use sluice::domain::health::{Series, Tallies};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).expect("store");
    let spec = |target: &str| {
        serde_json::json!({
            "target": {"name": target, "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                       "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}}
        })
    };
    for i in 0..5 {
        let (spec, plan) = sluice::domain::spec::validate(&spec(&format!("svc-{i}")), &sluice::ports::registry::names()).expect("valid");
        let id = sluice::domain::ids::RolloutId::parse(&format!("m-{i}")).expect("id");
        let (r, first) = sluice::domain::rollout::Rollout::new(
            id,
            spec,
            plan,
            sluice::domain::ids::Actor::parse("ci").expect("actor"),
            chrono::Utc::now(),
        );
        store.create(&r, &first).await.expect("created");
    }
    let before: Tallies = store.tallies().await.expect("tallies");
    rusqlite::Connection::open(&db).expect("open").execute("UPDATE rollouts SET state = '{}'", []).expect("states spoiled");
    assert!(store.facts().await.expect("facts").is_empty(), "no state can be read any more");
    assert_eq!(store.tallies().await.expect("tallies"), before);
    assert_eq!(before.get(&Series::Active { service: "svc-3".into(), phase: "Pending".into() }), 1);
}

/// A Table client of Azurite's own, to write rows as a store (of any
/// version) lays them out, without going through this one.
fn raw_tables(azurite: &Azurite) -> azure_data_tables::clients::TableServiceClient {
    let port: u16 = azurite
        .connection_string()
        .split("TableEndpoint=http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("Azurite's table port");
    let location = azure_storage::CloudLocation::Emulator { address: "127.0.0.1".into(), port };
    azure_data_tables::clients::TableServiceClientBuilder::with_location(location, azure_storage::StorageCredentials::emulator()).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_an_unreadable_state_hides_no_other_and_is_kept() {
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let connection = TableConnection::parse(&azurite.connection_string()).expect("connection string");
    let store = Arc::new(TableStore::connect(&connection, "sluice").await.expect("Azurite answers"));
    // The state row as the store lays it out (`{prefix}rollouts`, partition = id, row `state`, chunks `S…`).
    let client = raw_tables(&azurite);
    let corrupt: store_cases::Corrupt = Box::new(move |id, state| {
        let client = client.clone();
        Box::pin(async move {
            let row = serde_json::json!({"PartitionKey": id, "RowKey": "state", "SChunks": 1, "S0": state});
            let entity = client.table_client("sluicerollouts").partition_key_client(id.clone()).entity_client("state");
            entity.insert_or_replace(row).expect("request").await.expect("written");
        })
    });
    store_cases::an_unreadable_state_hides_no_other_and_is_kept(store, corrupt).await;
    drop(azurite);
}
every_queue!(embedded => embedded_queue, servicebus_fake => servicebus_queue);

/// The embedded queue keeps one wake-up per rollout: a wake-up supersedes
/// the queued ones of its slot, earlier or later (Service Bus cannot cancel
/// by id and ignores slots; there the extra wake-ups are harmless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_wakeups_supersede_later_ones_of_their_rollout() {
    use chrono::{TimeDelta, Utc};
    use sluice::ports::queue::OutMessage;
    let (_keep, q, _) = embedded_queue().await;
    let wake = |id: &str, slot: &str, ms: i64| OutMessage {
        id: id.into(),
        body: "{}".into(),
        visible_at: Some(Utc::now() + TimeDelta::milliseconds(ms)),
        slot: Some(slot.into()),
    };
    // Pauses and resumes each schedule a wake-up: only the last of a slot is left, and other slots are untouched.
    q.send(wake("r1:wake:late", "wake:r1", 900)).await.expect("send");
    q.send(wake("r2:wake", "wake:r2", 700)).await.expect("send");
    q.send(wake("r1:wake:early", "wake:r1", 300)).await.expect("send");
    q.send(wake("r1:wake:later-again", "wake:r1", 1200)).await.expect("send");
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        match q.receive(Duration::from_secs(5)).await.expect("receive") {
            Some(d) => {
                seen.push(d.id.clone());
                q.complete(&d).await.expect("complete");
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(seen, ["r2:wake", "r1:wake:later-again"]);
}

/// A wake-up superseded before it was delivered may be sent again: a wait
/// that moves away and back (analysis due at T, a retry due sooner, then T
/// again) keeps its wake-up. Before, the resend was taken for a duplicate of
/// the superseded one and nothing was queued; one soak rollout in 16 000 sat
/// in its analysis until the timer's sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_superseded_wakeup_sent_again_is_queued_again() {
    use chrono::{TimeDelta, Utc};
    use sluice::ports::queue::{OutMessage, SendOutcome};
    let (_keep, q, _) = embedded_queue().await;
    let at = Utc::now() + TimeDelta::milliseconds(400);
    let wake = |id: &str, at: chrono::DateTime<Utc>| OutMessage {
        id: id.into(),
        body: "{}".into(),
        visible_at: Some(at),
        slot: Some("wake:r1".into()),
    };
    assert_eq!(q.send(wake("r1:wake:T", at)).await.expect("send"), SendOutcome::Sent);
    assert_eq!(q.send(wake("r1:wake:T2", at + TimeDelta::seconds(60))).await.expect("send"), SendOutcome::Sent);
    assert_eq!(q.send(wake("r1:wake:T", at)).await.expect("send"), SendOutcome::Sent, "superseded, so not a duplicate");
    // A message still queued is a duplicate as before.
    assert_eq!(q.send(wake("r1:wake:T", at)).await.expect("send"), SendOutcome::Duplicate);
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        match q.receive(Duration::from_secs(5)).await.expect("receive") {
            Some(d) => {
                seen.push(d.id.clone());
                q.complete(&d).await.expect("complete");
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(seen, ["r1:wake:T"], "the wake-up for T is delivered, once");
}

/// Stores written by earlier formats load in this one. One fixture per
/// format change (`tests/fixtures/states/format-N/`, see
/// `sluice::domain::format`), for both stores: `sluice.db`, the embedded
/// store as `sluice demo --waves` then `--alert --keep` left it (a
/// release's two waves, one promoted and one rolled back, and an alert's
/// rollback from an approval gate, with their histories), and `table.json`,
/// every entity the Table store of that version wrote for the same
/// rollouts and release (from format 2, after a timer pass: filed by when
/// they finished and sealed into the kept sums). A change to the stored state or a layout that
/// breaks one fails here: migrate on read, and add the new format's
/// fixture with the change.
const FORMATS: [&str; 2] = ["format-1", "format-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_stores_written_by_earlier_formats_load() {
    for format in FORMATS {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("sluice.db");
        std::fs::copy(common::repo_root().join("tests/fixtures/states").join(format).join("sluice.db"), &db).expect("fixture");
        let store = SqliteStore::open(&db).expect("the old file opens");
        an_earlier_format_loads(&store, format).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_stores_written_by_earlier_formats_load() {
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let connection = TableConnection::parse(&azurite.connection_string()).expect("connection string");
    let raw = raw_tables(&azurite);
    for (n, format) in FORMATS.iter().enumerate() {
        let prefix = format!("old{n}");
        let path = common::repo_root().join("tests/fixtures/states").join(format).join("table.json");
        let tables: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("the fixture is JSON");
        for (table, rows) in tables {
            let client = raw.table_client(format!("{prefix}{table}"));
            let _ = client.create().await;
            for row in rows.as_array().expect("rows") {
                let key = |k: &str| row[k].as_str().expect("keys").to_string();
                let entity = client.partition_key_client(key("PartitionKey")).entity_client(key("RowKey"));
                entity.insert_or_replace(row.clone()).expect("request").await.expect("written as it was");
            }
        }
        let store = TableStore::connect(&connection, &prefix).await.expect("Azurite answers");
        an_earlier_format_loads(&store, format).await;
        // The timer files the finished rollouts by time and seals them into the kept sums; the
        // report of a period and the sums then read the index, and agree with the states.
        store.prune_finished(chrono::Utc::now() - chrono::TimeDelta::days(3650), 50).await.expect("a timer pass");
        let index = raw.table_client(format!("{prefix}index"));
        let done = rows_of(&index, "index").await.into_iter().filter(|k| k.starts_with("done|")).count();
        assert_eq!(done, 3, "{format}: each finished rollout filed under when it finished");
        assert!(rows_of(&index, "index").await.contains(&"meta|sealed".to_string()), "{format}: sealed");
        let facts = store.facts().await.expect("facts");
        assert_eq!(store.tallies().await.expect("sums"), sluice::domain::health::Tallies::sum(&facts), "{format}");
        let (from, to) = (chrono::Utc::now() - chrono::TimeDelta::days(3650), chrono::Utc::now());
        assert_eq!(store.facts_for_period(from, to).await.expect("period").len(), 3, "{format}");
        assert!(store.facts_for_period(to - chrono::TimeDelta::seconds(1), to).await.expect("period").is_empty(), "{format}");
    }
    drop(azurite);
}

/// What every fixture holds, read back, listed, summed and written again.
async fn an_earlier_format_loads(store: &dyn Store, format: &str) {
    use sluice::domain::rollout::Phase;
    use sluice::ports::store::ListFilter;
    let all = store.list(&ListFilter::default()).await.expect("listed");
    let phases: Vec<Phase> = all.iter().map(|r| r.phase).collect();
    assert_eq!(phases.len(), 3, "{format}: {phases:?}");
    assert_eq!(phases.iter().filter(|p| **p == Phase::RolledBack).count(), 2, "{format}: {phases:?}");
    assert!(phases.contains(&Phase::Succeeded), "{format}: {phases:?}");
    let facts = store.facts().await.expect("facts");
    assert_eq!(facts.len(), 3, "{format}");
    assert_eq!(store.tallies().await.expect("tallies"), sluice::domain::health::Tallies::sum(&facts), "{format}: the kept sums are built");
    for r in &all {
        let (loaded, etag) = store.load(&r.id).await.expect("loads").expect("there");
        let history = store.history(&r.id).await.expect("history");
        assert!(history.len() >= 5, "{format} {}: {} history entries", r.id, history.len());
        // And it can be written again in this format.
        store.save(&loaded, &etag, &[]).await.expect("saved again");
    }
    let releases = store.list_releases(0).await.expect("releases");
    assert_eq!(releases.len(), 1, "{format}");
    let (release, etag) = store.load_release(&releases[0].id).await.expect("loads").expect("there");
    assert_eq!(release.id, releases[0].id);
    assert!(!store.release_history(&release.id).await.expect("history").is_empty(), "{format}");
    store.save_release(&release, &etag, &[]).await.expect("saved again");
}

/// The Table store files releases the timer must visit under when, so a
/// sweep reads only what is due: a row that no longer matches its release
/// is a hint the sweep checks against the state and drops, and the rows
/// format 1 kept (one per release, its time in a property) are refiled by
/// the first sweep, so a release waiting at upgrade is still visited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_release_wake_rows_are_checked_hints_and_format_1_rows_are_refiled() {
    use chrono::{TimeDelta, Utc};
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let connection = TableConnection::parse(&azurite.connection_string()).expect("connection string");
    let store = TableStore::connect(&connection, "sluice").await.expect("Azurite answers");
    let raw = raw_tables(&azurite).table_client("sluicereleases");
    let t0 = Utc::now() - TimeDelta::hours(1);
    // rel-old waits since t0; format 1 filed it in partition `due`, and nothing in `wake` yet.
    let (old, first) = store_cases::release("rel-old", t0);
    let wake = old.wake_at.expect("a new release is due at once");
    store.create_release(&old, &first).await.expect("created");
    for row in rows_of(&raw, "wake").await {
        raw.partition_key_client("wake").entity_client(row).delete().await.expect("deleted");
    }
    let v1 = serde_json::json!({"PartitionKey": "due", "RowKey": "rel-old", "At": wake.timestamp_millis().to_string(), "At@odata.type": "Edm.Int64"});
    raw.partition_key_client("due").entity_client("rel-old").insert_or_replace(v1).expect("request").await.expect("written");
    // A stale hint: rel-new's row says an hour ago, its state says in a day.
    let (mut new, first) = store_cases::release("rel-new", t0);
    new.wake_at = Some(Utc::now() + TimeDelta::days(1));
    store.create_release(&new, &first).await.expect("created");
    let stale = format!("{:015}|rel-new", t0.timestamp_millis());
    raw.partition_key_client("wake")
        .entity_client(stale.clone())
        .insert_or_replace(serde_json::json!({}))
        .expect("request")
        .await
        .expect("written");

    let due: Vec<String> = store.due_releases(Utc::now(), 10).await.expect("due").iter().map(|id| id.to_string()).collect();
    assert_eq!(due, ["rel-old"], "the format-1 row was refiled and found; the stale hint was not believed");
    assert!(rows_of(&raw, "due").await.is_empty(), "format 1's partition is emptied");
    let wake_rows = rows_of(&raw, "wake").await;
    assert!(!wake_rows.contains(&stale), "the stale hint past its grace is gone: {wake_rows:?}");
    assert_eq!(wake_rows.len(), 2, "each release filed under its own time: {wake_rows:?}");
    assert!(store.due_releases(Utc::now() + TimeDelta::days(2), 10).await.expect("due").len() == 2);
    drop(azurite);
}

/// The row keys of one partition, read raw.
async fn rows_of(table: &azure_data_tables::clients::TableClient, partition: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut stream = table
        .query()
        .filter(azure_data_tables::prelude::Filter::new(format!("PartitionKey eq '{partition}'")))
        .into_stream::<serde_json::Value>();
    let mut keys = Vec::new();
    while let Some(page) = stream.next().await {
        keys.extend(page.expect("page").entities.iter().filter_map(|e| e["RowKey"].as_str().map(str::to_string)));
    }
    keys
}

/// Two timer passes sealing at once (two instances, or a bench's pass
/// beside the host's tick): afterwards every finished rollout is in the
/// kept sums exactly once and the mark is at the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_concurrent_sealing_passes_both_finish_the_job() {
    use chrono::{TimeDelta, Utc};
    use sluice::domain::ids::{Actor, RolloutId, Weight};
    use sluice::domain::rollout::{decide, Event, Rollout};
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let connection = TableConnection::parse(&azurite.connection_string()).expect("connection string");
    let one = Arc::new(TableStore::connect(&connection, "sluice").await.expect("Azurite answers"));
    let two = Arc::new(TableStore::connect(&connection, "sluice").await.expect("Azurite answers"));
    let then = Utc::now() - TimeDelta::hours(2);
    let actor = Actor::parse("x").expect("actor");
    for k in 0..400 {
        let doc = serde_json::json!({"target": {"name": format!("t{}", k % 4), "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
            "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}}, "strategy": {"canary": {"steps": [{"setWeight": 10}]}}});
        let (spec, plan) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).expect("valid");
        let id = RolloutId::parse(&format!("r-{k:04}")).expect("id");
        let (r, first) = Rollout::new(id, spec, plan, actor.clone(), then + TimeDelta::seconds(k));
        let etag = one.create(&r, &first).await.expect("created");
        let a = decide(&r, Event::AbortRequested { by: actor.clone(), reason: String::new(), request: None }, r.updated_at);
        let d = decide(&a.next, Event::TrafficConfirmed { weight: Weight::ZERO }, r.updated_at);
        one.save(&d.next, &etag, &[a.history, d.history].concat()).await.expect("finished");
    }
    let cutoff = then - TimeDelta::days(400);
    let (a, b) = tokio::join!(one.prune_finished(cutoff, 50), two.prune_finished(cutoff, 50));
    a.expect("a pass");
    b.expect("another pass");
    let raw = raw_tables(&azurite).table_client("sluiceindex");
    let mark = raw.partition_key_client("index").entity_client("meta|sealed").get::<serde_json::Value>().await.expect("sealed").entity;
    assert_eq!(mark["After"], "done|".to_string() + &format!("{:015}|r-0399", (then + TimeDelta::seconds(399)).timestamp_millis()));
    let facts = one.facts().await.expect("facts");
    assert_eq!(two.tallies().await.expect("sums"), sluice::domain::health::Tallies::sum(&facts));
    drop(azurite);
}
