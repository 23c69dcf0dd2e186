//! Behaviour every queue adapter must show, run against each of them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use sluice::ports::queue::{OutMessage, Queue, QueueError, SendOutcome, MAX_DELIVERY_COUNT};

fn msg(id: &str, body: &str) -> OutMessage {
    OutMessage { id: id.to_string(), body: body.to_string(), visible_at: None, slot: None }
}

const LOCK: Duration = Duration::from_secs(30);

pub async fn send_receive_complete(q: Arc<dyn Queue>, _short_lock: Duration) {
    assert_eq!(q.send(msg("m-1", "{\"a\":1}")).await.expect("send"), SendOutcome::Sent);
    let d = q.receive(LOCK).await.expect("receive").expect("a message");
    assert_eq!((d.id.as_str(), d.body.as_str(), d.delivery_count), ("m-1", "{\"a\":1}", 1));
    assert!(d.locked_until > Utc::now());
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "a locked message is not delivered twice");
    q.complete(&d).await.expect("complete");
    assert!(matches!(q.complete(&d).await, Err(QueueError::LockLost)), "completing twice is refused");
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "still within the window after completion: dropped");
}

pub async fn scheduled_messages_wait_until_their_time(q: Arc<dyn Queue>, _short_lock: Duration) {
    let at = Utc::now() + TimeDelta::milliseconds(1500);
    q.send(OutMessage { id: "later".into(), body: "{}".into(), visible_at: Some(at), slot: None }).await.expect("send");
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "not visible yet");
    // Visible at its time, never before (a broker may round up to its clock's grain).
    let d = loop {
        if let Some(d) = q.receive(LOCK).await.expect("receive") {
            break d;
        }
        assert!(Utc::now() < at + TimeDelta::milliseconds(1500), "not visible 1.5s after its time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(d.id, "later");
    assert!(Utc::now() >= at, "delivered before its time");
    q.complete(&d).await.expect("complete");
}

pub async fn abandon_redelivers_with_a_higher_count(q: Arc<dyn Queue>, _short_lock: Duration) {
    q.send(msg("again", "{}")).await.expect("send");
    let d1 = q.receive(LOCK).await.expect("receive").expect("first");
    q.abandon(&d1).await.expect("abandon");
    let d2 = q.receive(LOCK).await.expect("receive").expect("second");
    assert_eq!((d2.id.as_str(), d2.delivery_count), ("again", 2));
    q.complete(&d2).await.expect("complete");
}

pub async fn dead_letter_after_ten_deliveries(q: Arc<dyn Queue>, _short_lock: Duration) {
    q.send(msg("poison", "{\"bad\":true}")).await.expect("send");
    for n in 1..=MAX_DELIVERY_COUNT {
        let d = q.receive(LOCK).await.expect("receive").expect("delivered");
        assert_eq!(d.delivery_count, n);
        q.abandon(&d).await.expect("abandon");
    }
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "gone from the queue after ten deliveries");
    let dead = q.dead_letters().await.expect("dead letters");
    let poison = dead.iter().find(|d| d.id == "poison").expect("dead-lettered");
    assert_eq!(poison.delivery_count, MAX_DELIVERY_COUNT);
    assert_eq!(poison.body, "{\"bad\":true}");
}

pub async fn an_expired_lock_redelivers_and_the_old_lock_is_void(q: Arc<dyn Queue>, short_lock: Duration) {
    q.send(msg("slow", "{}")).await.expect("send");
    let d1 = q.receive(short_lock).await.expect("receive").expect("first");
    tokio::time::sleep(short_lock + Duration::from_millis(300)).await;
    let d2 = q.receive(LOCK).await.expect("receive").expect("redelivered after the lock expired");
    assert_eq!((d2.id.as_str(), d2.delivery_count), ("slow", 2));
    assert!(matches!(q.complete(&d1).await, Err(QueueError::LockLost)));
    q.complete(&d2).await.expect("the new lock completes");
}

pub async fn renew_keeps_the_lock(q: Arc<dyn Queue>, short_lock: Duration) {
    q.send(msg("long", "{}")).await.expect("send");
    let d = q.receive(short_lock).await.expect("receive").expect("message");
    tokio::time::sleep(short_lock * 6 / 10).await;
    let until = q.renew(&d, short_lock).await.expect("renew");
    assert!(until > d.locked_until);
    tokio::time::sleep(short_lock * 7 / 10).await;
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "still locked after the original lock ran out");
    q.complete(&d).await.expect("complete");
}

pub async fn duplicate_ids_are_dropped(q: Arc<dyn Queue>, _short_lock: Duration) {
    assert_eq!(q.send(msg("dup", "{\"n\":1}")).await.expect("send"), SendOutcome::Sent);
    // A broker may not say it dropped the repeat; what counts is that it is never delivered.
    q.send(msg("dup", "{\"n\":2}")).await.expect("a repeated send is not an error");
    let d = q.receive(LOCK).await.expect("receive").expect("one");
    assert_eq!(d.body, "{\"n\":1}");
    q.complete(&d).await.expect("complete");
    q.send(msg("dup", "{\"n\":3}")).await.expect("send");
    assert!(q.receive(LOCK).await.expect("receive").is_none(), "still within the window after completion: dropped");
}
