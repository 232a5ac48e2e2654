//! `GET /metrics` as a service operation: who may scrape which series. The counters and
//! the exposition format are in [`crate::prometheus`].

use crate::error::ServiceResult;
use crate::model::Actor;
use crate::prometheus::{Audience, render, time_store};

use super::Service;
use super::access::{Action, Target};

impl Service {
    /// `GET /metrics` for an API key: needs the right to manage the org's providers (an
    /// admin with `org:admin`); edge series of the key's org's sites only.
    pub async fn prometheus_metrics(&self, actor: &Actor) -> ServiceResult<String> {
        self.authorize(actor, Action::ManageProviders, Target::AnySite(None))
            .await?;
        self.prometheus_metrics_for(&Audience::Org(actor.org_id.clone())).await
    }

    /// `GET /metrics` for `audience` (the adapter has checked the scrape token or key).
    pub async fn prometheus_metrics_for(&self, audience: &Audience) -> ServiceResult<String> {
        let org = match audience {
            Audience::Operator => None,
            Audience::Org(id) => Some(id.as_str()),
        };
        let store = &self.platform.store;
        let jobs = time_store("metrics_scrape", store.job_counts(org, crate::util::now_ms())).await?;
        let environments = time_store("metrics_scrape", store.environment_names()).await?;
        Ok(render(audience, &jobs, &environments))
    }
}
