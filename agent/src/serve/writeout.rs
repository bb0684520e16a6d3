//! The audit writer `optin serve` runs beside its listeners: it writes the records appended
//! to disk soon after they are appended, one flush for however many came meanwhile.
//!
//! An audit record is in the store before the slice it records leaves (`core::marketer`),
//! but the store writes its log out on its own only every half second, and a SIGKILL loses
//! what it had not. A slice carries its record's sequence number, so a record lost that way
//! would leave a marketer holding a number the person's log gives to another record. So the
//! records follow the slices to disk within a flush: under load, one flush takes every record
//! appended while the one before ran, so its cost is shared.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::{blocking, Core};

/// Writes records out as they are appended, until `stop` turns true.
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            () = core.audit_appended() => {
                if let Err(e) = blocking(|| core.flush()) {
                    tracing::error!(error = %e, "cannot write the audit log to disk");
                }
            }
        }
    }
}
