//! Revocation gates: once revoke returns, nothing of the grant is handed out; revoke waits
//! for a slice already admitted, but only so long.

use std::time::Duration;

use super::{week, World, T};
use crate::core::command::{Request, Response};
use crate::core::gate::{DRAIN, MAX_IN_FLIGHT};
use crate::core::marketer::CutOff;
use crate::core::Refusal;
use crate::store::AuditEvent;

/// Waits (bounded) until the revocation of `bundle` is stored: revoke closes the gate right
/// after, in the same step of its task.
async fn until_stored(world: &World, bundle: &optin_protocol::bundle::GrantBundle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.core.store().grant(&bundle.grant_id).expect("read").expect("the grant").revoked_at.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the revocation was never stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn events(records: &[crate::core::command::AuditEntry]) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r.record.event {
            AuditEvent::Served { .. } => "served".to_owned(),
            AuditEvent::Refused { status, reason, .. } => format!("refused {status} {reason}"),
            AuditEvent::Granted { .. } => "granted".to_owned(),
            AuditEvent::Revoked { .. } => "revoked".to_owned(),
            AuditEvent::PartnerRevoked { audience, .. } => format!("partner-revoked {audience}"),
            AuditEvent::Forgot { .. } => "forgot".to_owned(),
            AuditEvent::Sharing { paused } => format!("sharing paused={paused}"),
            AuditEvent::Sealed { .. } => "sealed".to_owned(),
            AuditEvent::Denied { .. } => "denied".to_owned(),
            AuditEvent::Pushed { kind, outcome, .. } => format!("pushed {kind} {outcome}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_cut_before_revoke_is_cut_off_after_it() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let served = world.slice(&bundle.token, "", T).await.expect("cut before the revoke");

    let core = world.core.clone();
    let grant_id = bundle.grant_id.clone();
    let revoke = tokio::spawn(async move { core.handle(crate::core::command::Request::Revoke { grant_id }, T).await });
    until_stored(&world, &bundle).await;
    assert!(!revoke.is_finished(), "revoke waits for the slice in flight");

    assert!(served.deliver().is_none(), "a slice of a revoked grant is never handed over");
    let answer = tokio::time::timeout(Duration::from_secs(5), revoke).await.expect("revoke returns once the slice is gone").expect("task");
    assert!(matches!(answer, Ok(Response::Revoked { already: false, .. })), "{answer:?}");

    let refusal = world.slice(&bundle.token, "", T).await.map(|_| ()).expect_err("a revoked grant");
    assert_eq!(refusal, Refusal::Token("grant revoked"));
    let (records, chain) = world.audit().await;
    assert_eq!(
        events(&records),
        ["granted", "served", "revoked", "refused 401 grant revoked while the slice was in flight"],
        "the slice is on record from its signing (it carries its record's number); the cut-off is audited after the revocation; \
         a later request with the revoked token is counted, not recorded"
    );
    assert_eq!(chain, Ok(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_not_yet_written_out_is_cut_off_by_revoke() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let (jws, mut delivery) = world.slice(&bundle.token, "", T).await.expect("served").deliver().expect("handed over before the revoke");
    bundle.verify_slice(&super::text(jws)).expect("verifies");
    delivery.take().expect("a first part is taken before the revoke");

    let core = world.core.clone();
    let grant_id = bundle.grant_id.clone();
    let revoke = tokio::spawn(async move { core.handle(crate::core::command::Request::Revoke { grant_id }, T).await });
    until_stored(&world, &bundle).await;
    assert!(!revoke.is_finished(), "revoke waits while the connection still takes the slice");
    assert_eq!(delivery.take(), Err(CutOff), "the rest is not handed over");
    let answer = tokio::time::timeout(Duration::from_secs(5), revoke).await.expect("revoke returns once the slice is cut off").expect("task");
    assert!(matches!(answer, Ok(Response::Revoked { already: false, .. })), "{answer:?}");
    drop(delivery);

    let (records, _) = world.audit().await;
    assert_eq!(
        events(&records),
        ["granted", "served", "revoked", "refused 401 grant revoked while the slice was in flight"],
        "on record from its signing, then as cut off"
    );
    let cut_off = records.iter().find_map(|r| match &r.record.event {
        AuditEvent::Refused { slice_id, .. } => slice_id.clone(),
        _ => None,
    });
    let signed = records.iter().find_map(|r| match &r.record.event {
        AuditEvent::Served { slice_id, .. } => Some(slice_id.clone()),
        _ => None,
    });
    assert_eq!(cut_off, signed, "the cut-off names the slice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_written_out_before_revoke_is_served() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let (_, mut delivery) = world.slice(&bundle.token, "", T).await.expect("served").deliver().expect("handed over before the revoke");
    delivery.take().expect("taken whole");
    delivery.written();
    // The gate is let go of once the slice is written out: revoke has nothing to wait for.
    let answer = tokio::time::timeout(Duration::from_secs(1), world.revoke(&bundle.grant_id)).await.expect("revoke returns at once");
    assert!(matches!(answer, Response::Revoked { already: false, .. }), "{answer:?}");

    let again = world.revoke(&bundle.grant_id).await;
    assert!(matches!(again, Response::Revoked { already: true, .. }), "{again:?}");
    let (records, _) = world.audit().await;
    assert_eq!(events(&records), ["granted", "served", "revoked"], "served once; revoking twice is recorded once");
}

// On a current-thread runtime with paused time, the drain passes at once.
#[tokio::test(start_paused = true)]
async fn revoke_waits_for_a_stuck_slice_only_so_long() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let stuck = world.slice(&bundle.token, "", T).await.expect("cut before the revoke");
    let started = tokio::time::Instant::now();
    let answer = world.revoke(&bundle.grant_id).await;
    assert!(matches!(answer, Response::Revoked { already: false, .. }), "{answer:?}");
    let waited = started.elapsed();
    assert!((DRAIN..DRAIN + Duration::from_secs(1)).contains(&waited), "revoke waited {waited:?}, not the {DRAIN:?} drain");
    assert!(stuck.deliver().is_none(), "the slice it gave up on is cut off, never handed over");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_lets_out_only_so_many_slices_at_once() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let mut held = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        held.push(world.slice(&bundle.token, "", T).await.expect("room for it"));
    }
    assert_eq!(world.slice(&bundle.token, "", T).await.map(|_| ()).expect_err("no room"), Refusal::Busy);
    let other = world.grant_to("globex.example", "search", "raw", "7d").await;
    world.slice(&other.token, "", T).await.expect("another grant has its own room");
    drop(held.pop());
    world.slice(&bundle.token, "", T).await.expect("room again once a slice is done");
    // Counted rather than recorded: a busy grant says nothing new each time.
    let Response::Audit { counted, .. } = world.run(Request::Audit { since_seq: 0, limit: None }).await else { panic!("not an audit") };
    let busy: Vec<(u16, &str, u64)> = counted.iter().map(|c| (c.count.status, c.count.reason.as_str(), c.count.count)).collect();
    assert_eq!(busy, [(429, "too many slices of the grant in flight", 1)], "the refusal is counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_stops_only_that_grant() {
    let world = World::new();
    world.ingest(&week()).await;
    let revoked = world.grant("search,cart", "raw", "7d").await;
    let kept = world.grant_to("globex.example", "search,cart", "raw", "7d").await;
    world.revoke(&revoked.grant_id).await;
    assert_eq!(world.slice(&revoked.token, "", T).await.map(|_| ()).expect_err("revoked"), Refusal::Token("grant revoked"));
    let claims = world.fetch(&kept, &kept.token, "").await.expect("the other grant still serves");
    assert_eq!(claims.items.len(), 4);
    let bundle = world.try_run(crate::core::command::Request::Bundle { grant_id: revoked.grant_id.clone() }, T).await;
    assert!(matches!(bundle, Err(crate::core::CoreError::Invalid(ref m)) if m.contains("revoked")), "{bundle:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_of_a_revoked_or_expired_grant_says_it_serves_nothing() {
    use crate::core::command::Request;
    use crate::core::CoreError;

    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let preview = || Request::Preview { grant_id: bundle.grant_id.clone(), limit: None, cursor: None };
    assert!(world.try_run(preview(), T).await.is_ok(), "a live grant previews");
    let after_expiry = bundle.terms.expires_at + time::Duration::days(1);
    let expired = world.try_run(preview(), after_expiry).await.map(|_| ()).expect_err("an expired grant serves nothing");
    assert!(matches!(&expired, CoreError::Invalid(m) if m.contains("serves nothing") && m.contains("expired")), "{expired:?}");
    world.run(Request::Revoke { grant_id: bundle.grant_id.clone() }).await;
    let revoked = world.try_run(preview(), T).await.map(|_| ()).expect_err("a revoked grant serves nothing");
    assert!(matches!(&revoked, CoreError::Invalid(m) if m.ends_with("is revoked: it serves nothing")), "{revoked:?}");
}
