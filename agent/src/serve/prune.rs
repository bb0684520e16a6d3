//! The audit pruner `optin serve` runs beside its listeners: it keeps the audit log within
//! the bound the person set (`--audit-keep-records`, `--audit-keep-age`), a batch at a time
//! ([`Core::prune_audit`], `store::audit`), so no slice waits on more than one batch.
//!
//! A round prunes batches while there are records beyond the bound, yielding between them,
//! then waits [`ROUND`]: the log never outgrows its bound by more than what a round's wait
//! lets in. A log that fails its check is not pruned past the break, which is logged once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::audit::Pruned;
use crate::core::{self, blocking, Core};

/// How often the log is looked at.
pub const ROUND: Duration = Duration::from_secs(1);

/// Runs rounds until `stop` turns true.
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut reported = None;
    loop {
        loop {
            if *stop.borrow() {
                return;
            }
            match blocking(|| core.prune_audit(core::now())) {
                Ok(Pruned::Records(0)) => break,
                Ok(Pruned::Records(_)) => tokio::task::yield_now().await,
                Ok(Pruned::Broken(seq)) => {
                    if reported != Some(seq) {
                        tracing::warn!(seq, "the audit log is not pruned past a record or checkpoint that fails its check: `optin audit --verify` names it");
                        reported = Some(seq);
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot prune the audit log");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(ROUND) => {}
        }
    }
}
