//! One behavioural suite for the store port and one for the queue port, run
//! against every adapter (each adapter gets a fresh instance per case).

mod conformance {
    pub mod queue_cases;
    pub mod store_cases;
}

use std::sync::Arc;

use conformance::{queue_cases, store_cases};
use sluice::queue::embedded::EmbeddedQueue;
use sluice::store::sqlite::SqliteStore;

macro_rules! suite {
    ($module:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_keep, adapter) = $make().await;
                    cases!($module, $case)(adapter).await;
                }
            )*
        }
    };
}

macro_rules! cases {
    (sqlite_store, $case:ident) => { store_cases::$case };
    (embedded_queue, $case:ident) => { queue_cases::$case };
}

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn sluice::store::Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.db")).expect("store");
    (dir, Arc::new(store))
}

async fn embedded_queue() -> (tempfile::TempDir, Arc<dyn sluice::queue::Queue>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = EmbeddedQueue::open(&dir.path().join("q.db")).expect("queue");
    (dir, Arc::new(queue))
}

suite!(sqlite_store, sqlite_store, [
    round_trip_and_etags,
    etag_conflict_one_writer_wins_and_the_other_redecides,
    state_and_history_are_written_together,
    one_active_rollout_per_target_even_in_a_race,
    lists_filter_and_alerts_are_kept,
]);

suite!(embedded_queue, embedded_queue, [
    send_receive_complete,
    scheduled_messages_wait_until_their_time,
    abandon_redelivers_with_a_higher_count,
    dead_letter_after_ten_deliveries,
    an_expired_lock_redelivers_and_the_old_lock_is_void,
    renew_keeps_the_lock,
    duplicate_ids_are_dropped,
]);
