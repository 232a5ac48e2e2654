//! Provider settings (`HOSTING_GET_CONFIG`, `HOSTING_SET_CONFIG`, `HOSTING_TEST_CONNECTION`).
//! Each provider declares its keys (which are secret) and how to check a config and try
//! its connection; this module stores the settings sealed per org, masks secrets in every
//! output and validates before anything is written. A target's settings come with its
//! registration (`runtime::target::TARGETS`); any other provider is one entry in
//! [`registry`].

use crate::service::access::{Action, Target};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};
use crate::model::Actor;

use super::*;

/// Largest accepted value of one key (a PEM private key fits easily).
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Largest accepted settings object of one provider.
const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// What secret values show as.
const MASK: &str = "***";

pub use crate::platform::providers::{ConfigKey, ConfigMap, ProviderSettings, config_str};

/// Every provider with settings: the registered targets (`runtime::target::TARGETS`),
/// then one line per other provider.
pub fn registry() -> Vec<Box<dyn ProviderSettings>> {
    let mut all: Vec<Box<dyn ProviderSettings>> = crate::runtime::target::TARGETS
        .iter()
        .map(|t| Box::new(TargetSettings(t)) as Box<dyn ProviderSettings>)
        .collect();
    all.push(Box::new(crate::github::GitHubSettings));
    all.push(Box::new(crate::dns::cloudflare::CloudflareSettings));
    all.push(Box::new(crate::smtp::SmtpSettings));
    all
}

fn find_provider(name: &str) -> ServiceResult<Box<dyn ProviderSettings>> {
    let all = registry();
    let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
    let known = names.join(", ");
    all.into_iter().find(|p| p.name() == name).ok_or_else(|| {
        ServiceError::invalid(
            "provider",
            format!("unknown provider '{name}'; known providers: {known}"),
        )
    })
}

/// `HOSTING_GET_CONFIG` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct GetConfigInput {
    /// One provider; all of them when absent.
    #[serde(default)]
    pub provider: Option<String>,
}

/// `HOSTING_SET_CONFIG` input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SetConfigInput {
    /// Provider name (see HOSTING_GET_CONFIG).
    pub provider: String,
    /// Keys to set; a null value removes the key. Other keys keep their values.
    pub config: ConfigMap,
    /// Repeat-safe key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `HOSTING_TEST_CONNECTION` input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TestConnectionInput {
    /// Provider name.
    pub provider: String,
}

/// A key a provider accepts, as shown to callers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigKeyInfo {
    /// Key name.
    pub name: String,
    /// Whether its value is a secret (masked).
    pub secret: bool,
    /// What it means.
    pub description: String,
}

/// One provider's settings, secrets masked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProviderConfig {
    /// Provider name.
    pub provider: String,
    /// What it is.
    pub summary: String,
    /// Whether any setting is stored.
    pub configured: bool,
    /// The settings; secret values show as `***`.
    pub config: ConfigMap,
    /// The keys it accepts.
    pub keys: Vec<ConfigKeyInfo>,
    /// What the target can do, for providers where apps run (absent for the others,
    /// e.g. github, cloudflare). Operations a target cannot do are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::runtime::Capabilities>,
    /// Last change (RFC 3339), if any.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `HOSTING_GET_CONFIG` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigOutput {
    /// Providers, by name.
    pub providers: Vec<ProviderConfig>,
}

/// `HOSTING_TEST_CONNECTION` output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TestConnectionOutput {
    /// Provider name.
    pub provider: String,
    /// Whether the connection works.
    pub ok: bool,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

impl Platform {
    /// A provider's settings for an org, opened (empty when none are stored).
    pub async fn provider_config(&self, org_id: &str, provider: &str) -> anyhow::Result<ConfigMap> {
        match self.store.get_provider_config(org_id, provider).await? {
            Some(row) => {
                let json = self.secrets.open(&row.sealed, &config_context(org_id, provider))?;
                Ok(serde_json::from_str(&json)?)
            }
            None => Ok(ConfigMap::new()),
        }
    }
}

fn config_context(org_id: &str, provider: &str) -> String {
    format!("provider-config:{org_id}:{provider}")
}

impl Service {
    /// `HOSTING_GET_CONFIG`.
    pub async fn get_config(&self, actor: &Actor, input: &GetConfigInput) -> ServiceResult<ConfigOutput> {
        self.authorize(actor, Action::ManageProviders, Target::Org).await?;
        let providers = match &input.provider {
            Some(name) => vec![find_provider(name)?],
            None => registry(),
        };
        let mut out = Vec::new();
        for p in providers {
            out.push(self.provider_config_output(actor, p.as_ref()).await?);
        }
        Ok(ConfigOutput { providers: out })
    }

    async fn provider_config_output(&self, actor: &Actor, p: &dyn ProviderSettings) -> ServiceResult<ProviderConfig> {
        let row = self.platform.store.get_provider_config(&actor.org_id, p.name()).await?;
        let mut config = self.platform.provider_config(&actor.org_id, p.name()).await?;
        for key in p.keys().iter().filter(|k| k.secret) {
            if let Some(v) = config.get_mut(key.name) {
                *v = Value::String(MASK.into());
            }
        }
        Ok(ProviderConfig {
            provider: p.name().to_string(),
            summary: p.summary().to_string(),
            configured: row.is_some(),
            config,
            keys: p
                .keys()
                .iter()
                .map(|k| ConfigKeyInfo {
                    name: k.name.to_string(),
                    secret: k.secret,
                    description: k.description.to_string(),
                })
                .collect(),
            updated_at: row.map(|r| crate::util::rfc3339(r.updated_at)),
            capabilities: crate::runtime::target::find(p.name()).map(|t| t.capabilities),
        })
    }

    /// `HOSTING_SET_CONFIG`: merges the keys given into the stored settings, checks the
    /// result as a whole, then stores it sealed. Admin keys only (it holds credentials).
    pub async fn set_config(&self, actor: &Actor, input: &SetConfigInput) -> ServiceResult<ProviderConfig> {
        self.authorize(actor, Action::ManageProviders, Target::Org).await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self
            .idempotent(actor, "HOSTING_SET_CONFIG", input.idempotency_key.as_deref(), async {
                let p = find_provider(&input.provider)?;
                if input.config.is_empty() {
                    return Err(ServiceError::invalid(
                        "config",
                        "config is empty; give {\"key\": value} to set or {\"key\": null} to remove",
                    ));
                }
                let allowed: Vec<&str> = p.keys().iter().map(|k| k.name).collect();
                for (key, value) in &input.config {
                    if !allowed.contains(&key.as_str()) {
                        let hint = if allowed.is_empty() {
                            format!("provider '{}' takes no settings", p.name())
                        } else {
                            format!("known keys: {}", allowed.join(", "))
                        };
                        return Err(ServiceError::invalid(
                            "config",
                            format!("unknown key '{key}' for provider '{}'; {hint}", p.name()),
                        ));
                    }
                    if value.to_string().len() > MAX_VALUE_BYTES {
                        return Err(ServiceError::invalid(
                            "config",
                            format!("the value of '{key}' is over {} KiB", MAX_VALUE_BYTES / 1024),
                        ));
                    }
                }
                let mut merged = self.platform.provider_config(&actor.org_id, p.name()).await?;
                for (key, value) in &input.config {
                    if value.is_null() {
                        merged.remove(key);
                    } else {
                        merged.insert(key.clone(), value.clone());
                    }
                }
                p.validate(&merged)?;
                let json = serde_json::to_string(&merged).map_err(anyhow::Error::from)?;
                if json.len() > MAX_CONFIG_BYTES {
                    return Err(ServiceError::invalid(
                        "config",
                        format!(
                            "settings of one provider are limited to {} KiB",
                            MAX_CONFIG_BYTES / 1024
                        ),
                    ));
                }
                let sealed = self
                    .platform
                    .secrets
                    .seal(&json, &config_context(&actor.org_id, p.name()))?;
                let keys: Vec<&String> = input.config.keys().collect();
                self.platform
                    .store
                    .configure_provider(&actor.org_id, p.name(), &sealed, &keys)
                    .await?;
                // A DNS provider may have just made the base domain's wildcard orderable,
                // and a failed retry may now succeed: let the certificate loop look again.
                if p.name() == crate::dns::cloudflare::PROVIDER {
                    self.retry_base_certificate_now().await?;
                }
                self.provider_config_output(actor, p.as_ref()).await
            })
            .await;
        self.audit(actor, "HOSTING_SET_CONFIG", args, &result).await;
        result
    }

    /// `HOSTING_TEST_CONNECTION`: a failed connection is a result (`ok: false` with what
    /// to fix), not an error; an unknown provider is an error.
    pub async fn test_connection(
        &self,
        actor: &Actor,
        input: &TestConnectionInput,
    ) -> ServiceResult<TestConnectionOutput> {
        self.authorize(actor, Action::ManageProviders, Target::Org).await?;
        let p = find_provider(&input.provider)?;
        let config = self.platform.provider_config(&actor.org_id, p.name()).await?;
        let (ok, detail) = match p.test_connection(&self.platform, &config).await {
            Ok(detail) => (true, detail),
            Err(ServiceError::Internal(err)) => {
                tracing::warn!(provider = p.name(), error = %format!("{err:#}"), "connection test failed");
                (false, "the test failed on the server; see its log".to_string())
            }
            Err(err) => (false, err.to_string()),
        };
        Ok(TestConnectionOutput {
            provider: p.name().to_string(),
            ok,
            detail,
        })
    }
}

/// A registered target's settings: its schema, check and connection test come from the
/// target's registration and the target itself (`runtime::target`).
struct TargetSettings(&'static crate::runtime::Registration);

#[async_trait::async_trait]
impl ProviderSettings for TargetSettings {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn summary(&self) -> &'static str {
        self.0.summary
    }
    fn keys(&self) -> &'static [ConfigKey] {
        self.0.settings
    }
    fn validate(&self, config: &ConfigMap) -> ServiceResult<()> {
        (self.0.check_settings)(config).map_err(|m| ServiceError::invalid("config", m))
    }
    async fn test_connection(&self, platform: &Platform, config: &ConfigMap) -> ServiceResult<String> {
        use crate::runtime::target::CheckError;
        platform
            .target(self.0.name)?
            .test_connection(config)
            .await
            .map_err(|e| match e {
                CheckError::Invalid(m) => ServiceError::invalid("config", m),
                CheckError::Unavailable(m) => ServiceError::conflict(m),
            })
    }
}
