//! A grant's consent receipt as it stands (SPEC.md, "Consent receipts"): given while the
//! grant is in force, withdrawn from the day it was revoked, expired from the day it ended.
//!
//! Nothing of a receipt is stored. It is made again from the grant record and the request
//! it answers, and Ed25519 signatures are deterministic, so every copy of one state is the
//! same bytes: the receipt in a bundle printed again, in `grant.created`, and the one
//! `optin receipt` prints.

use optin_protocol::receipt::{ConsentState, Receipt};
use time::OffsetDateTime;

use super::{Core, CoreError};
use crate::store::GrantRecord;

impl Core {
    /// The receipt of `grant` at `now`, signed with the grant's key: its JWS and what it
    /// says. Ended when the grant was revoked (on that day) or reached its end (on the day
    /// it expired), given otherwise.
    pub(super) fn receipt(&self, grant: &GrantRecord, now: OffsetDateTime) -> Result<(String, Receipt), CoreError> {
        let mut receipt = self.given_receipt(grant)?;
        if let Some(at) = grant.revoked_at {
            receipt = receipt.ended(ConsentState::Withdrawn, at);
        } else if now >= grant.terms.expires_at {
            receipt = receipt.ended(ConsentState::Expired, grant.terms.expires_at);
        }
        let keys = self.keys.grant(&grant.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok((receipt.sign(&keys.signing), receipt))
    }

    /// The receipt of `grant` as given, unsigned: of the request it was approved from, or
    /// of the person's own grant.
    pub(super) fn given_receipt(&self, grant: &GrantRecord) -> Result<Receipt, CoreError> {
        let request = match &grant.request_id {
            None => None,
            // Not a passing failure: asking again will not bring the request back.
            Some(id) => Some(self.request_of(grant)?.ok_or_else(|| {
                CoreError::Invalid(format!("{} was approved from request {id}, which is no longer stored intact: its receipt cannot be made", grant.id))
            })?),
        };
        let keys = self.keys.grant(&grant.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(super::push::given(grant, request.as_ref(), &keys))
    }
}
