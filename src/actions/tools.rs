//! Data tool actions: `table.sample` answers with a query the caller runs
//! like any other; `table.profile` with column statistics computed through
//! the caller's own policy. Grants, limits and audit apply to both.

use super::{Action, ActionError, Actions, parse};
use crate::principal::Principal;
use crate::query::{ProfileRequest, TableProfile};
use crate::tools::sample::{SamplePlan, SampleRequest, plan_sample};

impl Actions {
    pub(super) fn table_sample(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<(String, SamplePlan), ActionError> {
        let request: SampleRequest = parse(Action::TableSample, body)?;
        let plan = plan_sample(&self.query, principal, request)?;
        Ok((plan.sql.clone(), plan))
    }
}

impl Actions {
    pub(super) async fn table_profile(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TableProfile, ActionError> {
        let request: ProfileRequest = parse(Action::TableProfile, body)?;
        Ok(self.query.profile(principal, &request).await?)
    }
}
