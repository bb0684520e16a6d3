//! Revocation gates: how `revoke` knows that nothing more of a grant can leave the agent, and
//! how many slices of one grant may be on their way at once.
//!
//! Each grant with traffic has a [`Gate`]: a revoked flag, the number of [`Pass`]es out, and
//! the [`Carrier`]s (connections) they were taken on. Serving a slice holds a pass from the
//! moment the grant's state is checked until the connection has taken the slice's last byte,
//! and the connection checks the flag before taking each part. Revoking stores the
//! revocation, raises the flag, and waits until no pass is out, but only for [`DRAIN`]: a
//! client that stops reading would otherwise hold it forever. Then it cuts every carrier that
//! took a pass of the grant and waits until each is closed: a cut connection is dropped and
//! reset, so what its HTTP layer and the operating system still held of a slice is discarded,
//! not sent. So once revoke returns, no byte of the grant's slices leaves the agent, and any
//! request that starts afterwards sees the stored revocation.
//!
//! A gate lets at most [`MAX_IN_FLIGHT`] passes out at once: whatever clients do, the agent
//! holds no more slices of a grant than that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use optin_protocol::scope::GrantId;
use tokio::sync::{watch, Notify};

/// How long revoke waits for slices in flight to be taken by their connections before it cuts
/// the connections off.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How long revoke then waits for the connections it cut to close. Closing is dropping a
/// connection's state, which takes no I/O; the bound only keeps a stuck task from holding
/// revoke forever.
pub const CUT: Duration = Duration::from_secs(2);

/// Most passes of one grant out at once: requests being answered and slices being handed over.
pub const MAX_IN_FLIGHT: usize = 16;

/// What carries slices out: in the agent, one connection. Revoke [`cut`](Carrier::cut)s it;
/// whoever runs it waits for that with [`Carrier::cut_off`], stops sending at once and says so
/// with [`Carrier::closed`] (dropping every clone says so too).
#[derive(Clone, Debug)]
pub struct Carrier(Arc<watch::Sender<Line>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Open,
    Cut,
    Closed,
}

impl Default for Carrier {
    fn default() -> Carrier {
        Carrier(Arc::new(watch::channel(Line::Open).0))
    }
}

impl Carrier {
    /// A carrier that is open.
    pub fn new() -> Carrier {
        Carrier::default()
    }

    /// Asks the carrier to stop sending, at once.
    pub fn cut(&self) {
        self.0.send_if_modified(|line| {
            let open = *line == Line::Open;
            if open {
                *line = Line::Cut;
            }
            open
        });
    }

    /// Completes once the carrier is asked to stop.
    pub async fn cut_off(&self) {
        let mut line = self.0.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = line.wait_for(|l| *l != Line::Open).await;
    }

    /// Whether the carrier was asked to stop.
    pub fn is_cut(&self) -> bool {
        *self.0.borrow() != Line::Open
    }

    /// Says the carrier has stopped: nothing more leaves through it.
    pub fn closed(&self) {
        self.0.send_replace(Line::Closed);
    }
}

/// Waits until the carrier behind `line` is closed, or every clone of it is gone.
async fn until_closed(mut line: watch::Receiver<Line>) {
    let _ = line.wait_for(|l| *l == Line::Closed).await;
}

/// The gate of one grant.
#[derive(Default)]
pub struct Gate {
    revoked: AtomicBool,
    flight: Mutex<Flight>,
    landed: Notify,
}

/// What a gate keeps under its lock.
#[derive(Default)]
struct Flight {
    revoked: bool,
    out: usize,
    /// The carriers passes were taken on, weakly: a closed connection is forgotten.
    carriers: Vec<Weak<watch::Sender<Line>>>,
}

impl Gate {
    fn flight(&self) -> MutexGuard<'_, Flight> {
        // Every update under the lock is a single assignment or push; a poisoned lock still
        // holds a consistent state.
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no pass is out.
    async fn landed(&self) {
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if self.flight().out == 0 {
                return;
            }
            landed.await;
        }
    }
}

/// A request or slice in flight: holds its grant's gate open until dropped.
pub struct Pass {
    gate: Arc<Gate>,
}

impl Pass {
    /// Whether the grant was revoked since the pass was taken.
    pub fn revoked(&self) -> bool {
        self.gate.revoked.load(Ordering::SeqCst)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut flight = self.gate.flight();
        flight.out -= 1;
        if flight.out == 0 {
            self.gate.landed.notify_waiters();
        }
    }
}

/// Why a gate let no pass out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The grant was revoked while this process ran.
    Revoked,
    /// [`MAX_IN_FLIGHT`] passes of the grant are out.
    Full,
}

/// All gates, made on first use. Only grants that exist in the store get one, so the map is
/// bounded by the number of grants, not by what clients send.
#[derive(Default)]
pub struct Gates {
    map: Mutex<HashMap<GrantId, Arc<Gate>>>,
}

impl Gates {
    fn gate(&self, id: &GrantId) -> Arc<Gate> {
        // The map is only ever inserted into; a poisoned lock still holds valid gates.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    /// Enters the gate of a grant, on `carrier` if the pass is for a slice that a connection
    /// will carry (revoke then cuts that connection).
    pub fn enter(&self, id: &GrantId, carrier: Option<&Carrier>) -> Result<Pass, Closed> {
        let gate = self.gate(id);
        let mut flight = gate.flight();
        if flight.revoked {
            return Err(Closed::Revoked);
        }
        if flight.out >= MAX_IN_FLIGHT {
            return Err(Closed::Full);
        }
        flight.out += 1;
        if let Some(carrier) = carrier {
            // At most one entry per live connection: dead ones are dropped here, so the list
            // stays as short as the number of connections open.
            flight.carriers.retain(|c| c.strong_count() > 0);
            if !flight.carriers.iter().any(|c| c.as_ptr() == Arc::as_ptr(&carrier.0)) {
                flight.carriers.push(Arc::downgrade(&carrier.0));
            }
        }
        drop(flight);
        Ok(Pass { gate })
    }

    /// Closes the gate of a grant: no pass is let out any more, slices in flight get [`DRAIN`]
    /// to be taken, then every connection that carried one is cut off and waited for (up to
    /// [`CUT`]).
    pub async fn close(&self, id: &GrantId) {
        let gate = self.gate(id);
        {
            let mut flight = gate.flight();
            flight.revoked = true;
            gate.revoked.store(true, Ordering::SeqCst);
        }
        if tokio::time::timeout(DRAIN, gate.landed()).await.is_err() {
            tracing::info!(grant = %id, "slices still in flight after the drain; cutting their connections");
        }
        let carriers: Vec<Carrier> = gate.flight().carriers.iter().filter_map(Weak::upgrade).map(Carrier).collect();
        let mut closing = Vec::with_capacity(carriers.len());
        for carrier in carriers {
            carrier.cut();
            // Only the receiver is kept: a connection that drops every clone of its carrier
            // counts as closed.
            closing.push(carrier.0.subscribe());
        }
        let waited = tokio::time::timeout(CUT, async {
            for line in closing {
                until_closed(line).await;
            }
        });
        if waited.await.is_err() {
            tracing::error!(grant = %id, "a connection cut off by a revocation did not close in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> GrantId {
        GrantId::from_bytes([7; 12])
    }

    #[test]
    fn lets_out_at_most_the_limit() {
        let gates = Gates::default();
        let passes: Vec<Pass> = (0..MAX_IN_FLIGHT).map(|_| gates.enter(&grant(), None).expect("room")).collect();
        assert_eq!(gates.enter(&grant(), None).err(), Some(Closed::Full));
        drop(passes);
        assert!(gates.enter(&grant(), None).is_ok(), "room again once the passes are back");
    }

    #[tokio::test(start_paused = true)]
    async fn close_cuts_the_carriers_of_passes_still_out() {
        let gates = Arc::new(Gates::default());
        let carrier = Carrier::new();
        let idle = Carrier::new();
        let pass = gates.enter(&grant(), Some(&carrier)).expect("a pass");
        // A connection that carried a slice of the grant earlier and is still open.
        drop(gates.enter(&grant(), Some(&idle)).expect("a pass"));
        // The connection: stops when cut off, then drops the pass it held and closes.
        let connection = tokio::spawn({
            let carrier = carrier.clone();
            async move {
                carrier.cut_off().await;
                drop(pass);
                carrier.closed();
            }
        });
        let started = tokio::time::Instant::now();
        let closing = tokio::spawn({
            let gates = gates.clone();
            async move { gates.close(&grant()).await }
        });
        idle.cut_off().await;
        assert!(carrier.is_cut() && idle.is_cut(), "every carrier of the grant is cut");
        assert!(started.elapsed() >= DRAIN, "cut only after the drain");
        assert!(!closing.is_finished(), "close waits for the connections it cut");
        idle.closed();
        closing.await.expect("close");
        connection.await.expect("the connection stopped");
        assert_eq!(gates.enter(&grant(), None).err(), Some(Closed::Revoked));
    }

    #[tokio::test(start_paused = true)]
    async fn close_waits_for_a_carrier_only_so_long() {
        let gates = Gates::default();
        let carrier = Carrier::new();
        let _held = gates.enter(&grant(), Some(&carrier)).expect("a pass");
        let started = tokio::time::Instant::now();
        gates.close(&grant()).await;
        let waited = started.elapsed();
        assert!((DRAIN + CUT..DRAIN + CUT + Duration::from_secs(1)).contains(&waited), "close waited {waited:?}");
    }

    #[tokio::test]
    async fn a_carrier_whose_clones_are_gone_counts_as_closed() {
        let gates = Gates::default();
        let carrier = Carrier::new();
        drop(gates.enter(&grant(), Some(&carrier)).expect("a pass"));
        let line = carrier.0.subscribe();
        drop(carrier);
        tokio::time::timeout(Duration::from_secs(5), until_closed(line)).await.expect("closed");
        tokio::time::timeout(Duration::from_secs(5), gates.close(&grant())).await.expect("nothing to cut");
    }
}
