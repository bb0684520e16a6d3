//! Revocation gates: how `revoke` knows no slice of a grant is still on its way out.
//!
//! Each grant with traffic has a [`Gate`]: a revoked flag and a read/write lock. Serving a
//! slice holds a read guard from the moment the grant's state is checked until the slice's
//! bytes are handed to the connection, and the body re-checks the flag before handing them
//! over. Revoking stores the revocation, raises the flag, then takes the write lock, which
//! waits for every guard still held. So once revoke returns, no slice of the grant can be
//! handed out, and any request that starts afterwards sees the stored revocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use optin_protocol::scope::GrantId;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// The gate of one grant.
#[derive(Default)]
pub struct Gate {
    revoked: AtomicBool,
    inflight: Arc<RwLock<()>>,
}

/// A slice in flight: holds its grant's gate open until dropped.
pub struct Pass {
    gate: Arc<Gate>,
    _guard: OwnedRwLockReadGuard<()>,
}

impl Pass {
    /// Whether the grant was revoked since the pass was taken.
    pub fn revoked(&self) -> bool {
        self.gate.revoked.load(Ordering::SeqCst)
    }
}

/// All gates, made on first use. Only grants that exist in the store get one, so the map is
/// bounded by the number of grants, not by what clients send.
#[derive(Default)]
pub struct Gates {
    map: Mutex<HashMap<GrantId, Arc<Gate>>>,
}

/// How long revoke waits for slices in flight before it returns anyway; they are cut off by
/// the raised flag, never delivered.
const DRAIN: Duration = Duration::from_secs(10);

impl Gates {
    fn gate(&self, id: &GrantId) -> Arc<Gate> {
        // The map is only ever inserted into; a poisoned lock still holds valid gates.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    /// Enters the gate of a grant; `None` if it was revoked while this process ran.
    pub async fn enter(&self, id: &GrantId) -> Option<Pass> {
        let gate = self.gate(id);
        let guard = gate.inflight.clone().read_owned().await;
        let pass = Pass { gate, _guard: guard };
        (!pass.revoked()).then_some(pass)
    }

    /// Closes the gate of a grant and waits until no slice of it is in flight.
    pub async fn close(&self, id: &GrantId) {
        let gate = self.gate(id);
        gate.revoked.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(DRAIN, gate.inflight.write()).await;
    }
}
