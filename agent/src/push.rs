//! The push sender: posts the events of push grants to their inboxes (SPEC.md, "Push
//! events"). `optin serve` runs it beside its listeners; the agent only connects out, so the
//! person never opens a port.
//!
//! Each round runs the schedule ([`Core::push_schedule`]), then takes the events that are
//! due, one at a time: the core makes each ready inside its grant's gate and signs it
//! ([`Core::push_admit`]), the [`Client`] posts it, and the core settles the queue with the
//! answer ([`Core::push_settle`]). A revocation cuts the attempt's carrier, and the post is
//! dropped at once. On shutdown an attempt under way is dropped too and its event stays
//! queued, to go under the same `webhook-id` when the agent runs again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::gate::Carrier;
use crate::core::push::{PushOutcome, PushSend};
use crate::core::{self, blocking, Core};
use crate::outbound::{Client, OutboundError, Retry};
use crate::store::PendingPush;

/// How often the queue and the schedule are looked at.
pub const ROUND: Duration = Duration::from_secs(1);

/// Most events taken from the queue in one round.
const BATCH: usize = 16;

/// Most bytes of an inbox's answer read: its body means nothing to the agent.
const ANSWER_BYTES: usize = 16 * 1024;

/// Runs rounds until `stop` turns true.
pub async fn run(core: Arc<Core>, client: Client, mut stop: watch::Receiver<bool>) {
    // The first round also takes the events waiting for a retry: the agent was not running,
    // and what failed then may well pass now that it is.
    let mut ahead = core::push::LONGEST_RETRY;
    loop {
        if *stop.borrow() {
            return;
        }
        round(&core, &client, ahead, &mut stop).await;
        ahead = time::Duration::ZERO;
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(ROUND) => {}
        }
    }
}

async fn round(core: &Arc<Core>, client: &Client, ahead: time::Duration, stop: &mut watch::Receiver<bool>) {
    let now = core::now();
    if let Err(e) = blocking(|| core.push_schedule(now)) {
        tracing::error!(error = %e, "cannot run the push schedule");
    }
    let due = match blocking(|| core.push_due(now + ahead, BATCH)) {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the push queue");
            return;
        }
    };
    for item in due {
        if *stop.borrow() {
            return;
        }
        attempt(core, client, &item, stop).await;
    }
}

/// One attempt of one event.
async fn attempt(core: &Arc<Core>, client: &Client, item: &PendingPush, stop: &mut watch::Receiver<bool>) {
    let carrier = Carrier::new();
    let send = match core.push_admit(item, &carrier, core::now()).await {
        Ok(Some(send)) => send,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(grant = %item.grant_id, error = %e, "cannot make a push ready");
            return;
        }
    };
    let outcome = tokio::select! {
        answer = post(client, &send) => answer,
        // Revoked: the revocation dropped the event; what was under way is abandoned.
        () = carrier.cut_off() => None,
        // Stopping: the event stays queued for the next run.
        _ = stop.changed() => None,
    };
    carrier.closed();
    let Some(outcome) = outcome else { return };
    if let Err(e) = blocking(|| core.push_settle(item, outcome, core::now())) {
        tracing::error!(grant = %item.grant_id, error = %e, "cannot settle a push");
    }
    // The pass is held until the attempt is settled.
    drop(send);
}

async fn post(client: &Client, send: &PushSend) -> Option<PushOutcome> {
    if send.revoked() {
        return None;
    }
    let headers = [
        ("content-type", "application/json"),
        ("webhook-id", send.headers.id.as_str()),
        ("webhook-timestamp", send.headers.timestamp.as_str()),
        ("webhook-signature", send.headers.signature.as_str()),
    ];
    let outcome = match client.post(&send.inbox, &headers, send.body.clone(), ANSWER_BYTES).await {
        Ok(answer) => PushOutcome::Delivered { status: answer.status },
        Err(e) => outcome_of(&e),
    };
    Some(outcome)
}

fn outcome_of(e: &OutboundError) -> PushOutcome {
    let (status, retry_after) = match e {
        OutboundError::Status { status, retry_after, .. } => (Some(*status), *retry_after),
        _ => (None, None),
    };
    // The error names the host and what failed, never the event.
    tracing::info!(error = %e, "a push failed");
    match e.retry() {
        Retry::Later => PushOutcome::Later { status, retry_after },
        Retry::Never => PushOutcome::Never { status },
        Retry::Gone => PushOutcome::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_what_the_queue_does() {
        let status = |status, retry_after| OutboundError::Status { host: "inbox.test".into(), status, retry_after };
        let cases = [
            (status(503, Some(Duration::from_secs(7))), PushOutcome::Later { status: Some(503), retry_after: Some(Duration::from_secs(7)) }),
            (status(429, None), PushOutcome::Later { status: Some(429), retry_after: None }),
            (status(404, None), PushOutcome::Never { status: Some(404) }),
            (status(302, None), PushOutcome::Never { status: Some(302) }),
            (OutboundError::Gone { host: "inbox.test".into() }, PushOutcome::Gone),
            (OutboundError::Refused("not https".into()), PushOutcome::Never { status: None }),
        ];
        for (error, expected) in cases {
            assert_eq!(outcome_of(&error), expected, "{error}");
        }
    }
}
