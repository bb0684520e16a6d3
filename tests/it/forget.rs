//! Forgetting: by id, by kind, by time, everything; forgotten signals never appear in a
//! later slice or listing.

use std::collections::BTreeSet;

use serde_json::Value;

use optin_tests::fixture::{self, ago, cart, purchase, search};
use optin_tests::{fetch_raw, now, ts, Agent};

fn ids(listing: &Value) -> BTreeSet<String> {
    listing.as_array().expect("an array").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_signals_never_appear_again() {
    let agent = Agent::start().await;
    let t = now();
    let signals = vec![
        search("s-old", ago(t, 100), "old query", "duckduckgo.com", "Home & Garden"),
        search("s-mid", ago(t, 50), "middle query", "duckduckgo.com", "Home & Garden"),
        search("s-new", ago(t, 5), "new query", "bing.com", "Home & Garden"),
        cart("c-old", ago(t, 90), "garden.example", "rake", "12.00"),
        cart("c-new", ago(t, 4), "garden.example", "hose", "25.00"),
        purchase("p-one", ago(t, 40), "tools.example", "spade", "30.00"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search,cart,purchase", "raw", "30d").await;
    let cutoff = ts(ago(t, 60));

    // `None`: the command fails (an id that names nothing is a typo to report, like
    // revoking an unknown grant) and changes nothing.
    let steps: Vec<(Vec<&str>, Option<usize>, Vec<&str>)> = vec![
        (vec!["--id", "s-mid"], Some(1), vec!["s-old", "s-new", "c-old", "c-new", "p-one"]),
        (vec!["--id", "s-mid"], None, vec!["s-old", "s-new", "c-old", "c-new", "p-one"]),
        (vec!["--kind", "cart"], Some(2), vec!["s-old", "s-new", "p-one"]),
        (vec!["--before", &cutoff], Some(1), vec!["s-new", "p-one"]),
        (vec!["--all", "--yes"], Some(2), vec![]),
    ];
    for (args, count, remaining) in steps {
        let mut all = vec!["forget"];
        all.extend(args.iter());
        let out = agent.cli(&all).await;
        match count {
            Some(count) => {
                let noun = if count == 1 { "signal" } else { "signals" };
                assert_eq!(out.ok().trim(), format!("forgot {count} {noun}"), "forget {args:?}");
            }
            None => {
                out.fails(1, "no signal with id \"s-mid\"");
            }
        }

        let listed = ids(&agent.cli(&["signals", "--json"]).await.json());
        let remaining_ids: BTreeSet<String> = remaining.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, remaining_ids, "after forget {args:?}");

        let mut expected: Vec<String> = remaining.iter().map(|id| fixture::key(fixture::by_id(&signals, id))).collect();
        expected.sort();
        let served: Vec<String> = fetch_raw(&agent, &bundle).await.into_iter().map(|(k, _)| k).collect();
        assert_eq!(served, expected, "slice after forget {args:?}");

        let preview = agent.cli(&["preview", bundle.grant_id.as_str(), "--json"]).await.json();
        assert_eq!(preview[0]["items"].as_array().expect("items").len(), remaining.len(), "preview after forget {args:?}");
    }
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let forgot: u64 = audit["records"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["event"]["type"] == "forgot")
        .map(|r| r["event"]["count"].as_u64().expect("a count"))
        .sum();
    assert_eq!(forgot, 6, "forgetting is audited, by count: {audit:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_forget_without_a_selection() {
    let agent = Agent::start().await;
    let t = now();
    agent.ingest(&fixture::ndjson(&[search("s1", ago(t, 1), "q", "bing.com", "Home")])).await;
    // Usage errors, each naming what is missing or wrong.
    for (args, needle) in [(vec!["forget"], "--all"), (vec!["forget", "--kind", "walks"], "walks"), (vec!["forget", "--before", "yesterday"], "yesterday")] {
        agent.cli(&args).await.fails(2, needle);
    }
    assert_eq!(ids(&agent.cli(&["signals", "--json"]).await.json()).len(), 1, "nothing was forgotten");
}
