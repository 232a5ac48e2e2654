//! DNS providers: the records berth creates and removes itself at a DNS host (a domain's
//! CNAME/A/AAAA and ownership TXT, DNS-01 challenge TXT records) and the hostnames a
//! provider serves for berth (Cloudflare for SaaS). Each provider is an adapter behind
//! [`DnsProvider`]: it translates calls into the provider's API and its errors into
//! [`DnsError`]s that say what to fix; which records a domain needs, and when, is decided
//! in the service layer (`service::dns`).

pub mod cloudflare;

use serde::{Deserialize, Serialize};

/// The comment every record berth creates carries; berth modifies or deletes only
/// records that have it.
pub const MANAGED_COMMENT: &str = "managed by berth";

/// What went wrong talking to a DNS provider, phrased with the fix. Never carries a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The provider refused the credentials (or they lack a permission).
    #[error("{0}")]
    Unauthorized(String),
    /// The zone, record or hostname does not exist (or is not berth's).
    #[error("{0}")]
    NotFound(String),
    /// The provider refused the request as given (a conflicting record, a bad value).
    #[error("{0}")]
    Rejected(String),
    /// The provider's rate limit held after the bounded retries.
    #[error("{0}")]
    RateLimited(String),
    /// The provider did not answer, or answered something that is not its API.
    #[error("{0}")]
    Unavailable(String),
}

impl DnsError {
    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthorized(m)
            | Self::NotFound(m)
            | Self::Rejected(m)
            | Self::RateLimited(m)
            | Self::Unavailable(m) => m,
        }
    }
}

impl From<DnsError> for crate::error::ServiceError {
    fn from(err: DnsError) -> Self {
        // The provider is outside berth: its refusal is a conflict the caller resolves
        // there (the message says how), never an internal error.
        crate::error::ServiceError::conflict(err.to_string())
    }
}

/// A DNS zone at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The provider's id of the zone.
    pub id: String,
    /// Its name (`example.com`).
    pub name: String,
}

impl Zone {
    /// Whether `name` is the zone's apex or under it.
    pub fn contains(&self, name: &str) -> bool {
        let (name, zone) = (name.trim_end_matches('.'), self.name.trim_end_matches('.'));
        name.eq_ignore_ascii_case(zone)
            || (name.len() > zone.len()
                && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
                && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
    }
}

/// A record to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSpec {
    /// `CNAME`, `A`, `AAAA` or `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Full name.
    pub name: String,
    /// Value.
    pub content: String,
    /// Time to live in seconds (1: the provider's automatic TTL).
    pub ttl: u32,
}

/// A record as the provider holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// The provider's id.
    pub id: String,
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Full name.
    pub name: String,
    /// Value.
    pub content: String,
    /// Comment, when it has one ([`MANAGED_COMMENT`] on berth's).
    #[serde(default)]
    pub comment: Option<String>,
}

impl ProviderRecord {
    /// Whether berth created it.
    pub fn is_managed(&self) -> bool {
        self.comment.as_deref() == Some(MANAGED_COMMENT)
    }
}

/// A DNS record a person must create for a provider (ownership or certificate
/// validation of a custom hostname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// Record type (`TXT`).
    #[serde(rename = "type")]
    pub record_type: String,
    /// Full name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A hostname a provider serves on berth's behalf (Cloudflare for SaaS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomHostname {
    /// The provider's id.
    pub id: String,
    /// The hostname.
    pub hostname: String,
    /// Ownership status (`pending`, `active`, `moved`, `blocked`, …).
    pub status: String,
    /// Certificate status (`initializing`, `pending_validation`, `active`, …).
    pub ssl_status: String,
    /// The record that proves ownership, while it is pending.
    pub ownership_verification: Option<VerificationRecord>,
    /// Records that let the provider's CA validate the certificate, while it is pending.
    pub ssl_validation: Vec<VerificationRecord>,
    /// What the provider found wrong so far.
    pub verification_errors: Vec<String>,
}

impl CustomHostname {
    /// Whether the hostname is verified and its certificate issued.
    pub fn is_active(&self) -> bool {
        self.status == "active" && self.ssl_status == "active"
    }
}

/// A DNS host berth can change records at. Object-safe: held as `Arc<dyn DnsProvider>`.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync + std::fmt::Debug {
    /// Registered provider name (`cloudflare`).
    fn name(&self) -> &'static str;
    /// Checks the credentials; `Ok` is a line for the connection test.
    async fn verify(&self) -> Result<String, DnsError>;
    /// The zone `name` lies in: the configured one, else the one whose name is the longest
    /// suffix of `name`. [`DnsError::NotFound`] when the provider has none.
    async fn zone_for(&self, name: &str) -> Result<Zone, DnsError>;
    /// Creates a record marked with [`MANAGED_COMMENT`]; answers its id.
    async fn create_record(&self, zone: &Zone, record: &RecordSpec) -> Result<String, DnsError>;
    /// Deletes one of berth's records; refuses a record without [`MANAGED_COMMENT`].
    /// A record already gone counts as deleted.
    async fn delete_record(&self, zone: &Zone, id: &str) -> Result<(), DnsError>;
    /// The zone's records, of one type and at one name when given (every page).
    async fn list_records(
        &self,
        zone: &Zone,
        record_type: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<ProviderRecord>, DnsError>;
    /// Creates a TXT record (a DNS-01 challenge) in the zone of `name`; answers its id.
    async fn set_txt(&self, name: &str, value: &str) -> Result<String, DnsError>;
    /// Removes a TXT record [`DnsProvider::set_txt`] created.
    async fn remove_txt(&self, name: &str, id: &str) -> Result<(), DnsError>;
    /// Asks the provider to serve `hostname` (and issue its certificate).
    async fn create_custom_hostname(&self, zone: &Zone, hostname: &str) -> Result<CustomHostname, DnsError>;
    /// A custom hostname's current state.
    async fn get_custom_hostname(&self, zone: &Zone, id: &str) -> Result<CustomHostname, DnsError>;
    /// Stops serving a custom hostname. One already gone counts as deleted.
    async fn delete_custom_hostname(&self, zone: &Zone, id: &str) -> Result<(), DnsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_membership_is_by_whole_labels() {
        let zone = Zone {
            id: "z".into(),
            name: "example.com".into(),
        };
        assert!(zone.contains("example.com"));
        assert!(zone.contains("App.Example.com."));
        assert!(zone.contains("a.b.example.com"));
        assert!(!zone.contains("badexample.com"));
        assert!(!zone.contains("example.org"));
        assert!(!zone.contains("com"));
    }
}
