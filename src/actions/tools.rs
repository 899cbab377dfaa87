//! Data tool actions that answer with a query: `table.sample`. The caller
//! runs the query like any other, so its grants, limits and audit apply.

use super::{Action, ActionError, Actions, parse};
use crate::principal::Principal;
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
