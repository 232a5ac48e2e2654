//! The store's conformance suite: what every backend must do the same way. The suite
//! runs once on SQLite and once on Postgres (`BERTH_TEST_DATABASE=postgres`, see
//! `scripts/test.sh`); each test opens the store of a fresh data dir the way a server
//! would, and several handles on one database play several replicas.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth::store::{self, SiteRow, Store};
use common::*;
use tokio::sync::Mutex;

async fn fresh() -> (tempfile::TempDir, Store) {
    let data = data_dir();
    let store = open_store(data.path()).await;
    (data, store)
}

fn site(id: &str, org: &str, name: &str) -> SiteRow {
    SiteRow {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        source_kind: "path".into(),
        source: None,
        branch: None,
        build_settings: "{}".into(),
        provider: "local".into(),
        status: "active".into(),
        created_at: 0,
        previews_enabled: Default::default(),
        drain_seconds: None,
    }
}

async fn enqueue(store: &Store, n: usize, key: Option<&str>) -> i64 {
    let job = store::NewJob {
        kind: "deploy",
        payload: serde_json::json!({ "n": n }),
        max_attempts: 3,
        idempotency_key: key.map(str::to_string),
        fair_key: Some(format!("site-{}", n % 7)),
    };
    store.enqueue_job("org", &job).await.unwrap()
}

/// Four replicas (each its own pool on the database), each with eight workers, claim 300
/// jobs as fast as they can: every job is claimed once, none twice, none left.
#[tokio::test]
async fn store_conformance_concurrent_claims_take_each_job_exactly_once() {
    let (data, store) = fresh().await;
    let mut ids = BTreeSet::new();
    for n in 0..300 {
        ids.insert(enqueue(&store, n, None).await);
    }
    let claims: Arc<Mutex<BTreeMap<i64, Vec<String>>>> = Arc::default();
    let mut workers = Vec::new();
    for replica in 0..4 {
        let handle = open_store(data.path()).await;
        for worker in 0..8 {
            let (handle, claims) = (handle.clone(), claims.clone());
            let owner = format!("replica-{replica}");
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(job) = handle.claim_job(&["deploy"], 60_000, &owner).await.unwrap() else {
                        break;
                    };
                    claims
                        .lock()
                        .await
                        .entry(job.id)
                        .or_default()
                        .push(format!("{owner}/{worker}"));
                }
            }));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let claims = claims.lock().await;
    let twice: Vec<_> = claims.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    let claimed: BTreeSet<i64> = claims.keys().copied().collect();
    assert_eq!(claimed, ids, "every job is claimed");
}

/// A live lease is never taken; an expired one is, by one claimer only.
#[tokio::test]
async fn store_conformance_an_expired_lease_is_taken_over_once_and_a_live_one_never() {
    let (_data, store) = fresh().await;
    let id = enqueue(&store, 1, None).await;
    let job = store.claim_job(&["deploy"], 60_000, "a").await.unwrap().unwrap();
    assert_eq!(job.id, id);
    assert!(store.claim_job(&["deploy"], 60_000, "b").await.unwrap().is_none());
    // A's lease runs out (a lease of 1 ms, renewed by a heartbeat that is already late).
    assert!(store.heartbeat_job(id, -1, "a").await.unwrap());
    let (first, second) = tokio::join!(
        store.claim_job(&["deploy"], 60_000, "b"),
        store.claim_job(&["deploy"], 60_000, "c"),
    );
    let taken: Vec<_> = [first.unwrap(), second.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken.len(), 1, "one claimer takes the expired lease: {taken:?}");
    assert_eq!(taken[0].attempts, 2);
    // The old holder lost it: its heartbeat and completion change nothing.
    assert!(!store.heartbeat_job(id, 60_000, "a").await.unwrap());
}

/// Enqueueing with one idempotency key, from two replicas at once, makes one job.
#[tokio::test]
async fn store_conformance_an_idempotency_key_makes_one_job() {
    let (data, store) = fresh().await;
    let other = open_store(data.path()).await;
    let (a, b) = tokio::join!(
        enqueue(&store, 1, Some("deploy:dpl_same")),
        enqueue(&other, 2, Some("deploy:dpl_same")),
    );
    assert_eq!(a, b);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE idempotency_key = 'deploy:dpl_same'")
        .fetch_one(&open_db(data.path()).await)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Writers on several replicas commit events while a reader follows the cursor: the
/// reader sees every event, in id order, none skipped (ids commit in order).
#[tokio::test]
async fn store_conformance_a_cursor_reader_sees_every_event_of_concurrent_writers() {
    let (data, store) = fresh().await;
    let mut writers = Vec::new();
    for replica in 0..3 {
        let handle = open_store(data.path()).await;
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..60 {
                let id = handle
                    .record_event(
                        "org",
                        "test.event",
                        "subject",
                        &serde_json::json!({ "replica": replica, "n": n }),
                    )
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut finished = false;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        for event in store.events_after("subject", cursor, 50).await.unwrap() {
            cursor = event.id;
            seen.push(event.id);
        }
        if finished {
            break;
        }
        // One more read after every writer is done.
        finished = done;
        tokio::task::yield_now().await;
    }
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort();
    assert_eq!(seen, written, "the reader saw every event once, in order");
}

/// Site search is a substring match, the same on every engine: case does not matter and
/// LIKE's own characters match only themselves.
#[tokio::test]
async fn store_conformance_site_search_matches_substrings_literally() {
    let (_data, store) = fresh().await;
    store.insert_org("org_a", "a").await.unwrap();
    for (id, name) in [("s1", "shop"), ("s2", "shopfront"), ("s3", "blog"), ("s4", "my-shop-2")] {
        store.insert_site(&site(id, "org_a", name)).await.unwrap();
    }
    let names = async |search: &str| -> Vec<String> {
        store
            .list_sites_page("org_a", search, "", 50)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names("shop").await, ["my-shop-2", "shop", "shopfront"]);
    assert_eq!(names("SHOP").await, ["my-shop-2", "shop", "shopfront"]);
    assert!(names("%").await.is_empty(), "% is not a wildcard");
    assert!(names("_").await.is_empty(), "_ is not a wildcard");
    assert_eq!(names("").await.len(), 4);
    assert_eq!(store.count_sites("org_a", "shop").await.unwrap(), 3);
    // The per-org count kept by the database follows inserts and deletes.
    assert_eq!(store.count_sites("org_a", "").await.unwrap(), 4);
    store.delete_site_rows("s3").await.unwrap();
    assert_eq!(store.count_sites("org_a", "").await.unwrap(), 3);
    // A yes/no column reads back as written.
    let previews = |site: Option<SiteRow>| bool::from(site.expect("site s1").previews_enabled);
    assert!(!previews(store.get_site_by_id("s1").await.unwrap()));
    store.set_site_previews("s1", true).await.unwrap();
    assert!(previews(store.get_site_by_id("s1").await.unwrap()));
}

/// Replica heartbeats: a beat records (or renews) a replica, `live_replicas` counts only
/// recent ones, a sweep forgets the long silent and a stopping replica removes itself; the local
/// target's refusal names the fix only while another replica is live.
#[tokio::test]
async fn store_conformance_replica_heartbeats_count_only_live_replicas() {
    let (data, store) = fresh().await;
    store.beat_replica("a").await.unwrap();
    store.beat_replica("b").await.unwrap();
    store.beat_replica("a").await.unwrap();
    assert_eq!(store.live_replicas(0).await.unwrap(), ["a", "b"]);
    let refusal = berth::replicas::local_target_refusal(&store, "a").await.unwrap();
    assert!(refusal.is_some_and(|m| m.contains("docker") && m.contains("kubernetes")));
    // "b" went silent long ago (killed): no longer live, and cleared by "a"'s stop.
    sqlx::query("UPDATE replicas SET heartbeat_at = 1 WHERE id = 'b'")
        .execute(&open_db(data.path()).await)
        .await
        .unwrap();
    assert_eq!(store.live_replicas(1_000).await.unwrap(), ["a"]);
    assert!(
        berth::replicas::local_target_refusal(&store, "a")
            .await
            .unwrap()
            .is_none()
    );
    // The silent one's row goes by the sweep, the live one's stays until it stops.
    assert_eq!(store.forget_silent_replicas(1_000).await.unwrap(), 1);
    assert_eq!(store.live_replicas(0).await.unwrap(), ["a"]);
    store.remove_replica("a").await.unwrap();
    assert!(store.live_replicas(0).await.unwrap().is_empty());
}

/// The all-subjects read follows the cursor across subjects, oldest first, a page at a time.
#[tokio::test]
async fn store_conformance_all_events_after_reads_every_subject_by_cursor() {
    let (_data, store) = fresh().await;
    let data = serde_json::json!({});
    let mut ids = Vec::new();
    for subject in ["s1", "s2", "s1", "s3"] {
        ids.push(store.record_event("org", "site.created", subject, &data).await.unwrap());
    }
    let first: Vec<i64> = store
        .all_events_after(0, 3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(first, ids[..3]);
    let rest: Vec<String> = store
        .all_events_after(ids[2], 3)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.subject)
        .collect();
    assert_eq!(rest, ["s3"]);
}

/// ACME challenges shared by the replicas' edges: publishing and withdrawing each write
/// their event (under the challenges' subject) with the change, a withdrawn or expired
/// challenge is no longer live, an expired one is swept, and a replica's confirmation
/// counts only once it applied the publishing event.
#[tokio::test]
async fn store_conformance_acme_challenges_are_published_withdrawn_and_swept_with_their_events() {
    use berth::store::acme_challenges::{AcmeChallengeRow, CHALLENGES_SUBJECT, ChallengePublished, ChallengeWithdrawn};
    let (_data, store) = fresh().await;
    let now = berth::util::now_ms();
    let row = |name: &str, token: &str, expires_at: i64| AcmeChallengeRow {
        kind: "http-01".into(),
        name: name.into(),
        token: token.into(),
        key_authorization: format!("{token}.thumbprint"),
        created_at: now,
        expires_at,
    };
    let start = store.latest_event_id().await.unwrap();
    let live = row("shop.example.test", "tok-live", now + 60_000);
    let ChallengePublished::Published { event: published } = store.publish_acme_challenge(&live).await.unwrap();
    let stale = row("old.example.test", "tok-stale", now - 1);
    store.publish_acme_challenge(&stale).await.unwrap();
    let events = store.events_after(CHALLENGES_SUBJECT, start, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.id, e.kind.as_str())).collect::<Vec<_>>(),
        [
            (published, "acme.challenge.published"),
            (published + 1, "acme.challenge.published")
        ]
    );
    assert!(events[0].data.contains("tok-live"), "{}", events[0].data);
    // Only the unexpired one is live; the expired one is swept (once).
    assert_eq!(
        store.live_acme_challenges("http-01", now, 100).await.unwrap(),
        std::slice::from_ref(&live)
    );
    assert!(
        store
            .live_acme_challenges("tls-alpn-01", now, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.sweep_acme_challenges(now).await.unwrap(), 1);
    assert_eq!(store.sweep_acme_challenges(now).await.unwrap(), 0);
    assert_eq!(
        store.live_acme_challenges("http-01", 0, 100).await.unwrap(),
        std::slice::from_ref(&live)
    );

    // Confirmations: a live replica is behind until it records the event.
    store.beat_replica("orderer").await.unwrap();
    store.beat_replica("other").await.unwrap();
    let behind = store
        .replicas_behind_on_challenges("orderer", 0, published)
        .await
        .unwrap();
    assert_eq!(behind, ["other"]);
    store.record_challenges_applied("other", published).await.unwrap();
    store.record_challenges_applied("other", 1).await.unwrap();
    assert!(
        store
            .replicas_behind_on_challenges("orderer", 0, published)
            .await
            .unwrap()
            .is_empty()
    );

    // Withdrawing deletes it with its event; a second withdrawal writes nothing.
    let withdrawn = store
        .withdraw_acme_challenge("http-01", "shop.example.test", "tok-live")
        .await
        .unwrap();
    let ChallengeWithdrawn::Withdrawn { event } = withdrawn else {
        panic!("{withdrawn:?}")
    };
    assert_eq!(
        store
            .withdraw_acme_challenge("http-01", "shop.example.test", "tok-live")
            .await
            .unwrap(),
        ChallengeWithdrawn::Absent
    );
    let events = store.events_after(CHALLENGES_SUBJECT, published + 1, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.id, e.kind.as_str())).collect::<Vec<_>>(),
        [(event, "acme.challenge.withdrawn")]
    );
    assert!(store.live_acme_challenges("http-01", 0, 100).await.unwrap().is_empty());
}

/// Edge activity: the newest request of each replica wins and its in-flight count is
/// replaced; a replica reads only the others', with in-flight counts summed over fresh
/// reports; batches larger than one statement are written whole; old rows are pruned.
#[tokio::test]
async fn store_conformance_edge_activity_keeps_each_replicas_newest_request_for_the_others() {
    use berth::store::shared::EdgeActivity;
    let seen = |env: &str, at: i64, in_flight: i64| EdgeActivity {
        environment_id: env.into(),
        last_request_at: at,
        in_flight,
    };
    let (_data, store) = fresh().await;
    store
        .record_edge_activity("a", &[seen("env1", 1_000, 4), seen("env2", 5_000, 1)], 5_000)
        .await
        .unwrap();
    // An older request does not move the time back; a newer one moves it on; the count
    // is the latest.
    store
        .record_edge_activity("a", &[seen("env1", 500, 2), seen("env2", 6_000, 0)], 6_000)
        .await
        .unwrap();
    store
        .record_edge_activity("b", &[seen("env1", 3_000, 3)], 3_000)
        .await
        .unwrap();
    let for_b = store.edge_activity_elsewhere("b", 0).await.unwrap();
    assert_eq!(for_b["env1"], seen("env1", 1_000, 2));
    assert_eq!(for_b["env2"], seen("env2", 6_000, 0));
    // The newest request of every other replica; the counts of the fresh reports only.
    let for_c = store.edge_activity_elsewhere("c", 0).await.unwrap();
    assert_eq!(for_c["env1"], seen("env1", 3_000, 5));
    let for_c = store.edge_activity_elsewhere("c", 4_000).await.unwrap();
    assert_eq!(
        for_c["env1"],
        seen("env1", 3_000, 2),
        "b's report of 3,000 is stale at 4,000"
    );
    assert!(
        !store
            .edge_activity_elsewhere("a", 0)
            .await
            .unwrap()
            .contains_key("env2")
    );
    // More environments than one statement carries.
    let many: Vec<EdgeActivity> = (0..450).map(|i| seen(&format!("many{i}"), 10_000 + i, 1)).collect();
    store.record_edge_activity("a", &many, 10_000).await.unwrap();
    let for_b = store.edge_activity_elsewhere("b", 0).await.unwrap();
    assert_eq!(for_b.len(), 452);
    assert_eq!(for_b["many449"], seen("many449", 10_449, 1));
    // Pruning takes what is older than the cut only.
    assert_eq!(store.prune_edge_activity(5_500).await.unwrap(), 2);
    let left = store.edge_activity_elsewhere("c", 0).await.unwrap();
    assert_eq!(left.len(), 451);
    assert!(!left.contains_key("env1"));
}

/// Resources: a name is unique in its org, pages come by name after the cursor, a site's
/// resources come oldest first, detaching and deleting change one row, and a deleted
/// site leaves its resources detached (their data is the user's until deleted).
#[tokio::test]
async fn store_conformance_resources_are_named_paged_attached_and_detached() {
    use berth::store::resources::{ResourceCreated, ResourceRow};
    let (_data, store) = fresh().await;
    store.insert_org("org_a", "a").await.unwrap();
    store.insert_org("org_b", "b").await.unwrap();
    store.insert_site(&site("s1", "org_a", "shop")).await.unwrap();
    let row = |id: &str, org: &str, name: &str, site: Option<&str>, at: i64| ResourceRow {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        kind: "sqlite".into(),
        size_mb: 16,
        site_id: site.map(str::to_string),
        site_name: None,
        created_at: at,
    };
    for (id, name, site, at) in [
        ("r1", "zeta", Some("s1"), 2),
        ("r2", "alpha", Some("s1"), 1),
        ("r3", "mid", None, 3),
    ] {
        let created = store
            .insert_resource(&row(id, "org_a", name, site, at), 1_000)
            .await
            .unwrap();
        assert_eq!(created, ResourceCreated::Created);
    }
    // The same name in the same org is taken; in another org it is free.
    assert_eq!(
        store
            .insert_resource(&row("r4", "org_a", "mid", None, 4), 1_000)
            .await
            .unwrap(),
        ResourceCreated::NameTaken
    );
    assert_eq!(
        store
            .insert_resource(&row("r5", "org_b", "mid", None, 5), 1_000)
            .await
            .unwrap(),
        ResourceCreated::Created
    );
    // An org's total size is bounded where the row is written: org_a holds 3 × 16 MiB.
    assert_eq!(store.total_resource_mb("org_a").await.unwrap(), 48);
    assert_eq!(
        store
            .insert_resource(&row("r6", "org_a", "more", None, 6), 63)
            .await
            .unwrap(),
        ResourceCreated::OverTotal(48)
    );
    assert!(store.get_resource("org_a", "more").await.unwrap().is_none());
    assert_eq!(
        store
            .insert_resource(&row("r6", "org_a", "more", None, 6), 64)
            .await
            .unwrap(),
        ResourceCreated::Created
    );
    assert!(store.delete_resource("r6").await.unwrap());
    // Which disk ids name a resource (of any org); none asked, none answered.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut found = store
        .existing_resource_ids(&ids(&["r5", "r6", "r4", "r3", "res_stray"]))
        .await
        .unwrap();
    found.sort();
    assert_eq!(found, ["r3", "r5"]);
    assert!(store.existing_resource_ids(&[]).await.unwrap().is_empty());
    let names = |rows: Vec<ResourceRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_resources_page("org_a", None, "", 2).await.unwrap()),
        ["alpha", "mid"]
    );
    assert_eq!(
        names(store.list_resources_page("org_a", None, "mid", 2).await.unwrap()),
        ["zeta"]
    );
    assert_eq!(
        names(store.list_resources_page("org_a", Some("s1"), "", 10).await.unwrap()),
        ["alpha", "zeta"]
    );
    assert_eq!(store.count_resources("org_a", None).await.unwrap(), 3);
    assert_eq!(store.count_resources("org_a", Some("s1")).await.unwrap(), 2);
    // Oldest first: the order their env vars are named in.
    assert_eq!(names(store.site_resources("s1").await.unwrap()), ["alpha", "zeta"]);
    let got = store.get_resource("org_a", "zeta").await.unwrap().unwrap();
    assert_eq!(got.site_name.as_deref(), Some("shop"));
    assert_eq!(got.size_mb, 16);
    assert!(store.get_resource("org_b", "zeta").await.unwrap().is_none());

    store.detach_resource("r2").await.unwrap();
    assert_eq!(names(store.site_resources("s1").await.unwrap()), ["zeta"]);
    assert!(store.delete_resource("r3").await.unwrap());
    assert!(!store.delete_resource("r3").await.unwrap());
    assert!(store.get_resource("org_a", "mid").await.unwrap().is_none());
    // Deleting the site detaches what was still attached.
    store.delete_site_rows("s1").await.unwrap();
    let zeta = store.get_resource("org_a", "zeta").await.unwrap().unwrap();
    assert_eq!((zeta.site_id, zeta.site_name), (None, None));
}
