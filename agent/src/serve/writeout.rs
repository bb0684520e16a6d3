//! The audit writer `optin serve` runs beside its listeners: it writes the records appended
//! to disk soon after they are appended, one flush for however many came meanwhile.
//!
//! An audit record is in the store before the slice it records leaves (`core::marketer`),
//! but the store writes its log out on its own only every half second, and a SIGKILL loses
//! what it had not. A slice carries its record's sequence number, so a record lost that way
//! would leave a marketer holding a number the person's log gives to another record. So the
//! records follow the slices to disk within a few milliseconds: the writer waits [`GATHER`]
//! after an append, then one flush takes every record appended by then, so that under load
//! its cost is shared by many slices. Idle, it does nothing.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::{blocking, Core};

/// How long the writer waits after an append before flushing, so that under load one flush
/// takes the records of many slices.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// Writes records out as they are appended, until `stop` turns true.
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            () = core.audit_appended() => {
                tokio::time::sleep(GATHER).await;
                if let Err(e) = blocking(|| core.flush()) {
                    tracing::error!(error = %e, "cannot write the audit log to disk");
                }
            }
        }
    }
}
