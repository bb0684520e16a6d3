//! Pausing stops every slice of every grant until sharing resumes, across restarts.

use super::{week, World, T};
use crate::core::command::{Request, Response};
use crate::core::marketer::GrantInfoState;
use crate::core::{CoreError, Refusal};

async fn status_paused(world: &World) -> bool {
    let Response::Status(status) = world.run(Request::Status).await else { panic!("not a status") };
    status.paused
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_sharing_serves_nothing_until_resumed() {
    let world = World::new();
    world.ingest(&week()).await;
    let acme = world.grant("search,cart", "raw", "7d").await;
    let globex = world.grant_to("globex.example", "search", "category", "30d").await;
    world.run(Request::Sharing { paused: true }).await;
    let world = world.reopen();
    assert!(status_paused(&world).await, "a pause survives a restart");
    for bundle in [&acme, &globex] {
        let refusal = world.slice(&bundle.token, "", T).await.map(|_| ()).expect_err("paused");
        assert_eq!((refusal.status(), &refusal), (403, &Refusal::Paused), "{}", bundle.marketer);
        let info = world.core.grant_info(Some(&bundle.token), "/v1/grant", T).await.expect("the grant still answers");
        assert_eq!(info.state, GrantInfoState::Paused);
        let preview = world.try_run(Request::Preview { grant_id: bundle.grant_id.clone(), limit: None, cursor: None }, T).await;
        assert!(matches!(preview, Err(CoreError::Invalid(ref m)) if m.contains("paused")), "{preview:?}");
    }
    world.run(Request::Sharing { paused: false }).await;
    assert!(!status_paused(&world).await);
    for bundle in [&acme, &globex] {
        world.fetch(bundle, &bundle.token, "").await.expect("served again");
        let info = world.core.grant_info(Some(&bundle.token), "/v1/grant", T).await.expect("grant info");
        assert_eq!(info.state, GrantInfoState::Active);
    }
}
