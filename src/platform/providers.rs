//! What a provider with settings (a target, GitHub, a DNS provider) contributes to the
//! settings service: its name, its keys, a check of a whole config and a connection test.
//! The settings service (`service::config`) stores, masks and seals the values.

use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};

use super::Platform;

pub use crate::runtime::target::ConfigKey;

/// A provider's settings: key → JSON value.
pub type ConfigMap = crate::runtime::target::Settings;

/// What a provider contributes to the settings service.
#[async_trait::async_trait]
pub trait ProviderSettings: Send + Sync + 'static {
    /// Registered name (a target's, `github`, `cloudflare`).
    fn name(&self) -> &'static str;
    /// One line on what the provider is.
    fn summary(&self) -> &'static str;
    /// The keys it accepts; anything else is refused.
    fn keys(&self) -> &'static [ConfigKey];
    /// Checks a whole config (after an update is merged in); errors name the key.
    fn validate(&self, config: &ConfigMap) -> ServiceResult<()>;
    /// Tries the connection the config describes; `Ok` carries what was found.
    async fn test_connection(&self, platform: &Platform, config: &ConfigMap) -> ServiceResult<String>;
}

/// Reads a string setting, with a clear error when it has another type.
pub fn config_str<'a>(config: &'a ConfigMap, key: &str) -> ServiceResult<Option<&'a str>> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ServiceError::invalid(
            "config",
            format!("'{key}' must be a string, not {other}"),
        )),
    }
}
