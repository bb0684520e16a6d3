//! Forgetting by id, kind, time and all: a forgotten signal is gone from listings and
//! slices, and an id that names nothing is an error, not "forgot 0".

use std::collections::BTreeSet;

use time::Duration;

use super::{week, World, T};
use crate::core::command::{ErrorKind, Request, Response};
use crate::core::CoreError;
use crate::store::Forget;

async fn listed(world: &World) -> BTreeSet<String> {
    let Response::Signals { signals } = world.run(Request::Signals { kind: None }).await else { panic!("no listing") };
    signals.iter().map(|s| s.signal.id.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forgotten_signals_are_gone_everywhere() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart,purchase", "raw", "30d").await;
    let steps: Vec<(Forget, usize, Vec<&str>)> = vec![
        (Forget::Id("s-1h".into()), 1, vec!["s-old", "s-3d", "s-later", "c-2d", "c-5d", "p-1d"]),
        (Forget::Kind("cart".parse().expect("kind")), 2, vec!["s-old", "s-3d", "s-later", "p-1d"]),
        // Strictly before: the search of exactly three days ago stays.
        (Forget::Before(T - Duration::days(3)), 1, vec!["s-3d", "s-later", "p-1d"]),
        (Forget::Kind("cart".parse().expect("kind")), 0, vec!["s-3d", "s-later", "p-1d"]),
        (Forget::All, 3, vec![]),
        (Forget::All, 0, vec![]),
    ];
    for (what, count, remaining) in steps {
        let step = format!("{what:?}");
        let Response::Forgot { count: forgot } = world.run(Request::Forget { what }).await else { panic!("not a forget answer") };
        assert_eq!(forgot, count, "{step}");
        let remaining: BTreeSet<String> = remaining.iter().map(|id| id.to_string()).collect();
        assert_eq!(listed(&world).await, remaining, "listing after {step}");
        let claims = world.fetch(&bundle, &bundle.token, "").await.expect("served");
        let served: BTreeSet<String> = world.seen(&claims, &week()).into_iter().collect();
        let expected: BTreeSet<String> = remaining.into_iter().filter(|id| id != "s-later").collect();
        assert_eq!(served, expected, "slice after {step}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_forgetting_an_id_that_names_nothing() {
    let world = World::new();
    world.ingest(&week()).await;
    let (before, _) = world.audit().await;
    let err = world.try_run(Request::Forget { what: Forget::Id("s-typo".into()) }, T).await.map(|_| ()).expect_err("no such signal");
    assert!(matches!(&err, CoreError::NoSignal(id) if id == "s-typo"), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(listed(&world).await.len(), week().len(), "nothing was forgotten");
    assert_eq!(world.audit().await.0.len(), before.len(), "nothing was recorded");
}
