//! Custom domains at a configured DNS provider: which provider an org has (for the
//! domain hooks and for DNS-01 certificate challenges), the records berth creates itself
//! when a domain is attached (`dns` mode: its CNAME or A/AAAA and ownership TXT, in the
//! zone the domain lies in; `custom_hostnames` mode: a Cloudflare for SaaS custom
//! hostname) and their removal with the domain. What was created is stored per domain, so
//! removal deletes exactly that; a record someone else made is never changed. A failure
//! at the provider undoes the attachment: nothing half-created stays.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dns::cloudflare::{Cloudflare, CloudflareConfig, DnsMode, PROVIDER};
use crate::dns::{DnsError, DnsProvider, RecordSpec, Zone};
use crate::error::{ServiceError, ServiceResult};
use crate::store::domain_dns::DomainDnsRow;
use crate::store::domains::DomainRow;
use crate::util::now_ms;

use super::{DnsRecord, DomainInfo, Platform, Service};

/// TTL of the records berth creates (1: Cloudflare's automatic TTL).
const RECORD_TTL: u32 = 1;

/// An org's DNS provider and how berth uses it.
#[derive(Clone, Debug)]
pub struct DnsSetup {
    /// The provider's client.
    pub provider: Arc<dyn DnsProvider>,
    /// Records in the account's zones, or custom hostnames of one zone.
    pub mode: DnsMode,
}

/// One object berth created at the provider for a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ManagedObject {
    /// A DNS record.
    Record {
        id: String,
        #[serde(rename = "type")]
        record_type: String,
        name: String,
        content: String,
    },
    /// A custom hostname (Cloudflare for SaaS).
    CustomHostname { id: String, hostname: String },
}

/// What an attachment has created so far (undone when a later step fails).
#[derive(Default)]
struct Created {
    zone: Option<Zone>,
    objects: Vec<ManagedObject>,
}

impl Platform {
    /// An org's DNS provider and mode, when one is configured.
    pub async fn dns_setup(&self, org_id: &str) -> ServiceResult<Option<DnsSetup>> {
        let config = self.provider_config(org_id, PROVIDER).await?;
        let Some(config) = CloudflareConfig::from_map(&config)? else {
            return Ok(None);
        };
        let mode = config.mode;
        Ok(Some(DnsSetup {
            provider: Arc::new(Cloudflare::new(config)?),
            mode,
        }))
    }

    /// An org's DNS provider, when one is configured (DNS-01 challenges use its
    /// `set_txt` / `remove_txt`).
    pub async fn dns_provider(&self, org_id: &str) -> ServiceResult<Option<Arc<dyn DnsProvider>>> {
        Ok(self.dns_setup(org_id).await?.map(|setup| setup.provider))
    }
}

impl Service {
    /// An org's DNS provider, when one is configured.
    pub async fn dns_provider(&self, org_id: &str) -> ServiceResult<Option<Arc<dyn DnsProvider>>> {
        self.platform.dns_provider(org_id).await
    }

    /// After a domain is attached: with a provider configured, creates what the domain
    /// needs there, stores it, and says so in `info` (`managed` records, the next step).
    /// On failure everything created is deleted and the attachment undone.
    pub(super) async fn provision_domain_dns(&self, row: &DomainRow, info: &mut DomainInfo) -> ServiceResult<()> {
        let Some(setup) = self.platform.dns_setup(&row.org_id).await? else {
            return Ok(());
        };
        let provider = setup.provider.as_ref();
        let mut created = Created::default();
        let outcome = match setup.mode {
            DnsMode::Dns => create_records(provider, row, info, &mut created).await,
            DnsMode::CustomHostnames => create_custom_hostnames(provider, row, info, &mut created).await,
        };
        let outcome = match (outcome, &created.zone) {
            (Ok(()), Some(zone)) if !created.objects.is_empty() => {
                let stored = DomainDnsRow {
                    domain_id: row.id.clone(),
                    provider: provider.name().to_string(),
                    zone_id: zone.id.clone(),
                    zone_name: zone.name.clone(),
                    records: serde_json::to_string(&created.objects).map_err(anyhow::Error::from)?,
                };
                self.platform
                    .store
                    .insert_domain_dns(&stored, now_ms())
                    .await
                    .map_err(ServiceError::from)
            }
            (outcome, _) => outcome,
        };
        if let Err(err) = outcome {
            self.undo_domain_add(provider, row, created).await;
            return Err(match err {
                ServiceError::Conflict { message } => ServiceError::conflict(format!(
                    "{message}; {} was not attached and nothing was left at {}",
                    row.name,
                    provider.name()
                )),
                other => other,
            });
        }
        Ok(())
    }

    /// Deletes what an attachment created at the provider, then the attachment itself.
    async fn undo_domain_add(&self, provider: &dyn DnsProvider, row: &DomainRow, created: Created) {
        if let Some(zone) = &created.zone {
            for object in created.objects.iter().rev() {
                if let Err(e) = delete_object(provider, zone, object).await {
                    tracing::warn!(domain = %row.name, object = ?object, error = %e, "could not undo a DNS object berth created");
                }
            }
        }
        let undone: anyhow::Result<()> = async {
            self.platform
                .store
                .remove_domain(row, Some("the DNS provider failed"))
                .await?;
            crate::loops::reconciler::reconcile(&self.platform).await
        }
        .await;
        if let Err(e) = undone {
            tracing::error!(domain = %row.name, error = %format!("{e:#}"), "could not undo a domain attachment");
        }
    }

    /// Before a domain is removed: deletes what berth created for it at the provider.
    /// A failure keeps the domain (and the objects still left) for another try.
    pub(super) async fn release_domain_dns(&self, row: &DomainRow) -> ServiceResult<()> {
        let store = &self.platform.store;
        let Some(stored) = store.domain_dns(&row.id).await? else {
            return Ok(());
        };
        let objects: Vec<ManagedObject> = serde_json::from_str(&stored.records).map_err(anyhow::Error::from)?;
        if objects.is_empty() {
            return Ok(());
        }
        let Some(setup) = self.platform.dns_setup(&row.org_id).await? else {
            tracing::warn!(
                domain = %row.name,
                provider = %stored.provider,
                "the DNS provider is no longer configured; the records berth created for the domain stay at the provider"
            );
            return Ok(());
        };
        let zone = Zone {
            id: stored.zone_id,
            name: stored.zone_name,
        };
        for (done, object) in objects.iter().enumerate() {
            match delete_object(setup.provider.as_ref(), &zone, object).await {
                Ok(()) => {}
                // No longer berth's (its comment was changed): left alone, as promised.
                Err(DnsError::Rejected(message)) => {
                    tracing::warn!(domain = %row.name, %message, "left a DNS record that is no longer berth's");
                }
                Err(e) => {
                    let left = serde_json::to_string(&objects[done..]).map_err(anyhow::Error::from)?;
                    store.set_domain_dns_records(&row.id, &left, now_ms()).await?;
                    return Err(ServiceError::conflict(format!(
                        "{e}; {} is still attached (the records berth created for it that are left stay listed for the next try): fix that, then remove it again",
                        row.name
                    )));
                }
            }
        }
        Ok(())
    }
}

async fn delete_object(provider: &dyn DnsProvider, zone: &Zone, object: &ManagedObject) -> Result<(), DnsError> {
    match object {
        ManagedObject::Record { id, .. } => provider.delete_record(zone, id).await,
        ManagedObject::CustomHostname { id, .. } => provider.delete_custom_hostname(zone, id).await,
    }
}

/// `dns` mode: each record of the domain that lies in the provider's zone is created,
/// unless it is already there; one that a different record blocks is refused.
async fn create_records(
    provider: &dyn DnsProvider,
    row: &DomainRow,
    info: &mut DomainInfo,
    created: &mut Created,
) -> ServiceResult<()> {
    let zone = match provider.zone_for(super::domains::base_name(&row.name)).await {
        Ok(zone) if zone.contains(&row.name) => zone,
        Ok(zone) => {
            note(
                info,
                format!(
                    "{} is not in the Cloudflare zone {} (zone_id), so berth created no records for it",
                    row.name, zone.name
                ),
            );
            return Ok(());
        }
        Err(DnsError::NotFound(message)) => {
            note(info, format!("berth created no records at Cloudflare: {message}"));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    created.zone = Some(zone.clone());
    let mut made = Vec::new();
    for index in 0..info.records.len() {
        let wanted = info.records[index].clone();
        if !zone.contains(&wanted.name) {
            continue;
        }
        let existing = provider.list_records(&zone, None, Some(&wanted.name)).await?;
        let same = |r: &&crate::dns::ProviderRecord| {
            r.record_type == wanted.record_type
                && r.content
                    .trim_end_matches('.')
                    .trim_matches('"')
                    .eq_ignore_ascii_case(&wanted.value)
        };
        if existing.iter().any(|r| same(&r)) {
            continue;
        }
        if let Some(blocking) = existing.iter().find(|r| blocks(&wanted, &r.record_type)) {
            return Err(ServiceError::conflict(format!(
                "{} already has the {} record → {} in the Cloudflare zone {}, which berth did not create and leaves alone; delete it or change it to {} → {} in Cloudflare, then add the domain again",
                wanted.name, blocking.record_type, blocking.content, zone.name, wanted.record_type, wanted.value
            )));
        }
        let spec = RecordSpec {
            record_type: wanted.record_type.clone(),
            name: wanted.name.clone(),
            content: wanted.value.clone(),
            ttl: RECORD_TTL,
        };
        let id = provider.create_record(&zone, &spec).await?;
        created.objects.push(ManagedObject::Record {
            id,
            record_type: spec.record_type,
            name: spec.name,
            content: spec.content,
        });
        info.records[index].managed = true;
        made.push(format!("{} {}", wanted.record_type, wanted.name));
    }
    if !made.is_empty() {
        note(
            info,
            format!(
                "berth created {} in the Cloudflare zone {} (marked '{}'; removed with the domain)",
                made.join(", "),
                zone.name,
                crate::dns::MANAGED_COMMENT
            ),
        );
    }
    Ok(())
}

/// Whether an existing record of `existing_type` keeps `wanted` from being created: a
/// CNAME cannot share its name, and an address set other than ours would split traffic.
fn blocks(wanted: &DnsRecord, existing_type: &str) -> bool {
    match wanted.record_type.as_str() {
        "CNAME" => matches!(existing_type, "CNAME" | "A" | "AAAA"),
        "A" | "AAAA" => existing_type == "CNAME" || existing_type == wanted.record_type,
        _ => false,
    }
}

/// `custom_hostnames` mode: the domain (and its redirecting partner) become custom
/// hostnames of the configured zone; the records that prove ownership are reported.
async fn create_custom_hostnames(
    provider: &dyn DnsProvider,
    row: &DomainRow,
    info: &mut DomainInfo,
    created: &mut Created,
) -> ServiceResult<()> {
    let zone = provider.zone_for(&row.name).await?;
    created.zone = Some(zone.clone());
    for host in std::iter::once(row.name.as_str()).chain(row.redirect_name.as_deref()) {
        let hostname = provider.create_custom_hostname(&zone, host).await?;
        created.objects.push(ManagedObject::CustomHostname {
            id: hostname.id.clone(),
            hostname: host.to_string(),
        });
        if let Some(ownership) = &hostname.ownership_verification {
            info.records.push(DnsRecord {
                record_type: ownership.record_type.clone(),
                name: ownership.name.clone(),
                value: ownership.value.clone(),
                why: format!("proves to Cloudflare for SaaS that you own {host}"),
                managed: false,
            });
        }
        for validation in &hostname.ssl_validation {
            info.records.push(DnsRecord {
                record_type: validation.record_type.clone(),
                name: validation.name.clone(),
                value: validation.value.clone(),
                why: format!("lets Cloudflare's certificate authority validate {host}"),
                managed: false,
            });
        }
        let errors = if hostname.verification_errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", hostname.verification_errors.join("; "))
        };
        note(
            info,
            format!(
                "{host} is a custom hostname of the Cloudflare zone {}: status {}, certificate {}{errors}",
                zone.name, hostname.status, hostname.ssl_status
            ),
        );
    }
    Ok(())
}

/// Puts a sentence before the domain's next step.
fn note(info: &mut DomainInfo, sentence: String) {
    info.next = format!("{sentence}; {}", info.next);
}
