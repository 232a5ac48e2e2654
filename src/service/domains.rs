//! Custom domains: attaching a name to a site's environment, the DNS records it needs,
//! checking them for real against DNS (CNAME, A/AAAA, TXT ownership, CAA per RFC 8659)
//! with a diagnosis per record, and the status that decides whether the edge serves it.
//! Once DNS checks out, its certificate is ordered (`certificates.rs`); with
//! `--acme-directory none` it is served over plain HTTP instead.

use crate::service::access::{Action, Target};
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::model::{Actor, DomainStatus};
use crate::store::domains::{self as domain_store, DomainRow};
use crate::util::{new_id, now_ms, random_hex, rfc3339};

use super::Service;

/// Default and largest page of `HOSTING_LIST_DOMAINS`.
const DEFAULT_DOMAINS_PAGE: u32 = 50;
const MAX_DOMAINS_PAGE: u32 = 200;
/// The label of the ownership TXT record, under the domain.
pub const CHALLENGE_LABEL: &str = "_berth-challenge";
/// Names a CAA walk looks at, at most (a name has at most 127 labels; real ones a few).
const MAX_CAA_STEPS: usize = 16;
/// How many addresses of a zone's name servers a check asks directly.
const MAX_NAME_SERVERS: usize = 3;

/// `HOSTING_ADD_DOMAIN` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomainInput {
    /// Site name.
    pub site: String,
    /// The domain, such as `app.example.com` or `example.com` (IDNs accepted).
    pub domain: String,
    /// Environment it serves (default `production`).
    #[serde(default)]
    pub environment: Option<String>,
    /// Also answer for the www/apex partner (`www.example.com` ↔ `example.com`) with a 308
    /// redirect to `domain` (default false).
    #[serde(default)]
    pub redirect_www: Option<bool>,
    /// Send `Strict-Transport-Security` (2 years) on its HTTPS responses (default false:
    /// once browsers have seen it, the name cannot go back to plain HTTP for that long).
    #[serde(default)]
    pub hsts: Option<bool>,
    /// Return only once the domain is served with its certificate (checking DNS every few
    /// seconds meanwhile), or when `timeout_seconds` is up, with the diagnosis.
    #[serde(default)]
    pub wait: Option<bool>,
    /// How long `wait` waits (default 120, at most 600).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// `HOSTING_VALIDATE_DOMAIN` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateDomainInput {
    /// Site name.
    pub site: String,
    /// The domain.
    pub domain: String,
    /// Return only once the domain is served with its certificate, or when
    /// `timeout_seconds` is up, with the diagnosis.
    #[serde(default)]
    pub wait: Option<bool>,
    /// How long `wait` waits (default 120, at most 600).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// Names a domain of a site.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainRef {
    /// Site name.
    pub site: String,
    /// The domain.
    pub domain: String,
}

/// `HOSTING_LIST_DOMAINS` arguments.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDomainsInput {
    /// Only this site's domains (default: every site of the org).
    #[serde(default)]
    pub site: Option<String>,
    /// Domains per page (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A DNS record to create at the domain's DNS host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsRecord {
    /// Record type: `CNAME`, `A`, `AAAA` or `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The full name it is created at.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What it is for.
    pub why: String,
    /// Whether berth created it itself at the configured DNS provider (and removes it with
    /// the domain).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub managed: bool,
}

/// What DNS answered for one record, against what it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordCheck {
    /// Record type checked (`CNAME`, `A`, `AAAA`, `TXT`, `CAA`).
    #[serde(rename = "type")]
    pub record_type: String,
    /// The name asked about.
    pub name: String,
    /// What it should be.
    pub expected: String,
    /// What the resolver answered (empty: no such record).
    pub observed: Vec<String>,
    /// The resolver that answered.
    pub resolver: String,
    /// Whether it is right.
    pub ok: bool,
    /// What to do, in words (empty when ok).
    pub next: String,
    /// What the zone's own name servers answered, asked directly, when they could be
    /// found and reached. When present it decides `ok`: a CA looks the records up at
    /// them, while a resolver may hold an older answer until its TTL runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authoritative: Option<AuthoritativeAnswer>,
}

/// One record as the zone's authoritative name servers answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthoritativeAnswer {
    /// The name servers asked, as `name (address)`.
    pub server: String,
    /// What they answered (empty: no such record).
    pub observed: Vec<String>,
    /// Whether that is right.
    pub ok: bool,
}

/// A custom domain.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DomainInfo {
    /// The name (lowercase; IDNs as punycode).
    pub name: String,
    /// Site it serves.
    pub site: String,
    /// Environment it serves.
    pub environment: String,
    /// Where it is in its lifecycle.
    pub status: DomainStatus,
    /// The www/apex partner that redirects (308) to `name`, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_from: Option<String>,
    /// The URL it is served at once active (https once it has a certificate).
    pub url: String,
    /// Whether HTTPS responses carry Strict-Transport-Security.
    pub hsts: bool,
    /// The certificate served for it, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<super::certificates::CertificateInfo>,
    /// The last failed certificate order (or renewal) and when it is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_problem: Option<super::certificates::CertificateProblem>,
    /// Things to act on soon, such as a certificate expiring within 7 days.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The DNS records to create.
    pub records: Vec<DnsRecord>,
    /// The last DNS check, one entry per record (absent before the first check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Vec<RecordCheck>>,
    /// When DNS was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    /// What to do next, in words.
    pub next: String,
    /// Attached at.
    pub created_at: String,
}

/// `HOSTING_LIST_DOMAINS` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DomainList {
    /// Domains, by name.
    pub domains: Vec<DomainInfo>,
    /// Domains matching the query, on all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `HOSTING_REMOVE_DOMAIN` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RemovedDomain {
    /// The domain no longer served.
    pub removed: String,
    /// The site it served.
    pub site: String,
}

impl Service {
    /// `HOSTING_ADD_DOMAIN`: attaches a domain (not served until its DNS checks out) and
    /// answers the records to create.
    pub async fn add_domain(&self, actor: &Actor, input: &AddDomainInput) -> ServiceResult<DomainInfo> {
        self.authorize(
            actor,
            Action::ManageDomains,
            Target::Environment(&input.site, Some(input.environment.as_deref().unwrap_or("production"))),
        )
        .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = self.add_domain_inner(actor, input).await;
        self.audit(actor, "HOSTING_ADD_DOMAIN", args, &result).await;
        result
    }

    async fn add_domain_inner(&self, actor: &Actor, input: &AddDomainInput) -> ServiceResult<DomainInfo> {
        let site = self.find_site(actor, &input.site).await?;
        let env = self
            .find_environment(&site, input.environment.as_deref().unwrap_or("production"))
            .await?;
        let name = normalize_domain(&input.domain, &self.platform.config.base_domain)?;
        if is_wildcard(&name) {
            self.wildcard_allowed(&actor.org_id, &name, input.redirect_www.unwrap_or(false))
                .await?;
        }
        let redirect_name = input.redirect_www.unwrap_or(false).then(|| www_partner(&name));
        if let Some(partner) = &redirect_name {
            // The partner must be a name we could attach on its own, too.
            normalize_domain(partner, &self.platform.config.base_domain)
                .map_err(|e| ServiceError::invalid("redirect_www", format!("{partner}: {e}")))?;
        }
        // Fails here, before anything is stored, when an apex has no address to point at.
        self.records_for(&name, redirect_name.as_deref(), &site.name, &env.name, "")?;
        let now = now_ms();
        let row = DomainRow {
            id: new_id("dom"),
            org_id: actor.org_id.clone(),
            site_id: site.id.clone(),
            environment_id: env.id.clone(),
            name: name.clone(),
            redirect_name: redirect_name.clone(),
            status: DomainStatus::PendingDns.as_str().into(),
            token: random_hex(16),
            diagnosis: None,
            checked_at: None,
            created_at: now,
            updated_at: now,
            site_name: site.name.clone(),
            environment_name: env.name.clone(),
            hsts: input.hsts.unwrap_or(false),
            attempts: 0,
            next_attempt_at: None,
            problem: None,
            cert_not_after: None,
            cert_renew_at: None,
            cert_issued_at: None,
        };
        if self.platform.store.add_domain(&row).await? == domain_store::DomainAdded::NameTaken {
            let names: Vec<&str> = std::iter::once(name.as_str()).chain(redirect_name.as_deref()).collect();
            // Says nothing of where: the other attachment may be another org's.
            return Err(ServiceError::conflict(format!(
                "{} is already attached to a site on this server; remove it there first (HOSTING_REMOVE_DOMAIN), or ask the server's operator if it is not yours",
                names.join(" or ")
            )));
        }
        let mut info = self.domain_info(&row)?;
        // DNS provider hook: creates the records there itself (the attachment is undone
        // when that fails).
        self.provision_domain_dns(&row, &mut info).await?;
        // Publishes the "not verified yet" page for the name.
        crate::loops::reconciler::reconcile(&self.platform).await?;
        if input.wait.unwrap_or(false) {
            return self
                .wait_for_domain(actor, &site.name, &name, input.timeout_seconds)
                .await;
        }
        Ok(info)
    }

    /// A wildcard is attached only where its certificate can be proven: through DNS-01,
    /// with a DNS provider that manages records (not custom hostnames).
    async fn wildcard_allowed(&self, org_id: &str, name: &str, redirect_www: bool) -> ServiceResult<()> {
        if redirect_www {
            return Err(ServiceError::invalid(
                "redirect_www",
                format!(
                    "{name} is a wildcard: it has no www partner; attach www.{} on its own if it needs one",
                    base_name(name)
                ),
            ));
        }
        match self.platform.dns_setup(org_id).await? {
            Some(setup) if setup.mode == crate::dns::cloudflare::DnsMode::Dns => Ok(()),
            Some(_) => Err(ServiceError::invalid(
                "domain",
                format!(
                    "{name} is a wildcard, and the DNS provider is in custom_hostnames mode, which attaches one hostname at a time; switch it to mode \"dns\" (HOSTING_SET_CONFIG) or attach the names one by one"
                ),
            )),
            None => Err(ServiceError::invalid(
                "domain",
                format!(
                    "{name} is a wildcard: a CA issues its certificate only through DNS (DNS-01), and this org has no DNS provider; configure one with HOSTING_SET_CONFIG {{\"provider\": \"cloudflare\", \"config\": {{\"api_token\": …}}}}, or attach the names one by one (such as app.{})",
                    base_name(name)
                ),
            )),
        }
    }

    /// Checks DNS every few seconds until the domain is served (with its certificate when
    /// certificates are on), its order failed, or the time is up; answers its state then.
    async fn wait_for_domain(
        &self,
        actor: &Actor,
        site: &str,
        domain: &str,
        timeout_seconds: Option<u64>,
    ) -> ServiceResult<DomainInfo> {
        let timeout = timeout_seconds.unwrap_or(120);
        if !(1..=600).contains(&timeout) {
            return Err(ServiceError::invalid("timeout_seconds", "must be 1 to 600"));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        let mut next_dns_check = tokio::time::Instant::now();
        // The domain's events (by cursor, whichever process wrote them) wake this early.
        let mut cursor = self.platform.events.cursor().await?;
        loop {
            let row = self.find_domain(actor, site, domain).await?;
            let status = DomainStatus::parse(&row.status).unwrap_or(DomainStatus::PendingDns);
            let served =
                status.is_served() && (row.cert_not_after.is_some() || !self.platform.config.domains.acme_enabled());
            let now = tokio::time::Instant::now();
            if served || status == DomainStatus::Failed || now >= deadline {
                if served {
                    // The task that issued the certificate (maybe on another replica)
                    // commits the status before it publishes the certificate and routes:
                    // this edge serves the domain before the answer says it is served.
                    super::certificates::publish(&self.platform).await?;
                    crate::loops::reconciler::reconcile(&self.platform).await?;
                }
                let mut info = self.domain_info(&row)?;
                if !served && now >= deadline {
                    info.warnings
                        .push(format!("still {} after {timeout} s: {}", status.as_str(), info.next));
                }
                return Ok(info);
            }
            if status == DomainStatus::PendingDns && now >= next_dns_check {
                self.validate_domain_inner(actor, site, domain).await?;
                next_dns_check = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
                continue;
            }
            let nap = std::time::Duration::from_secs(1).min(deadline - now);
            if let Some(last) = self.platform.events.next(&row.id, cursor, nap).await?.last() {
                cursor = last.id;
            }
        }
    }

    /// `HOSTING_LIST_DOMAINS`: one page, by name.
    pub async fn list_domains(&self, actor: &Actor, input: &ListDomainsInput) -> ServiceResult<DomainList> {
        self.authorize(actor, Action::ReadSites, Target::AnySite(input.site.as_deref()))
            .await?;
        let (limit, after) = super::name_page(
            input.limit,
            input.cursor.as_deref(),
            DEFAULT_DOMAINS_PAGE,
            MAX_DOMAINS_PAGE,
        )?;
        let site = self.find_optional_site(actor, input.site.as_deref()).await?;
        let site_id = site.as_ref().map(|s| s.id.as_str());
        let store = &self.platform.store;
        let mut rows = store
            .list_domains_page(&actor.org_id, site_id, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = super::cut_page(&mut rows, limit as usize, |r| r.name.clone());
        let total = store.count_domains(&actor.org_id, site_id).await? as u64;
        let domains = rows.iter().map(|r| self.domain_info(r)).collect::<ServiceResult<_>>()?;
        Ok(DomainList {
            domains,
            total,
            next_cursor,
        })
    }

    /// `HOSTING_VALIDATE_DOMAIN`: checks every record against DNS now, stores the
    /// diagnosis and moves the status: `active` (served) when all are right, else
    /// `pending_dns` (not served).
    pub async fn validate_domain(&self, actor: &Actor, input: &ValidateDomainInput) -> ServiceResult<DomainInfo> {
        self.authorize(actor, Action::ManageDomains, Target::Site(&input.site))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let before = self
            .find_domain(actor, &input.site, &input.domain)
            .await
            .ok()
            .map(|row| row.status);
        let result = async {
            let info = self.validate_domain_inner(actor, &input.site, &input.domain).await?;
            if input.wait.unwrap_or(false) {
                return self
                    .wait_for_domain(actor, &input.site, &input.domain, input.timeout_seconds)
                    .await;
            }
            Ok(info)
        }
        .await;
        // A check that changed nothing is a read: repeated checks (the dashboard's live
        // re-check every few seconds, an agent polling) do not fill the audit log.
        let changed = match &result {
            Ok(info) => before.as_deref() != Some(info.status.as_str()),
            Err(_) => true,
        };
        if changed {
            self.audit(actor, "HOSTING_VALIDATE_DOMAIN", args, &result).await;
        }
        result
    }

    async fn validate_domain_inner(&self, actor: &Actor, site: &str, domain: &str) -> ServiceResult<DomainInfo> {
        let mut row = self.find_domain(actor, site, domain).await?;
        let records = self.records_for(
            &row.name,
            row.redirect_name.as_deref(),
            &row.site_name,
            &row.environment_name,
            &row.token,
        )?;
        let checks = self.check_dns(&row.name, &records).await?;
        let all_ok = checks.iter().all(|c| c.ok);
        let from = DomainStatus::parse(&row.status).unwrap_or(DomainStatus::PendingDns);
        let acme = self.platform.config.domains.acme_enabled();
        let to = match (all_ok, acme) {
            (false, _) => DomainStatus::PendingDns,
            (true, false) => DomainStatus::Active,
            // DNS is right: the certificate is ordered (or keeps its course).
            (true, true) => match from {
                DomainStatus::PendingDns | DomainStatus::Failed => DomainStatus::Validating,
                other => other,
            },
        };
        let to = if from.can_become(to) { to } else { from };
        let diagnosis = serde_json::to_string(&checks).map_err(anyhow::Error::from)?;
        let now = now_ms();
        self.platform
            .store
            .record_domain_check(&row, to.as_str(), &diagnosis, now)
            .await?;
        if from != to {
            tracing::info!(domain = %row.name, from = from.as_str(), to = to.as_str(), "domain status changed");
            crate::loops::reconciler::reconcile(&self.platform).await?;
            routes_changed(&self.platform, &row.environment_id).await;
        }
        if to == DomainStatus::Validating {
            self.queue_certificate(&row).await?;
        }
        row.status = to.as_str().into();
        row.diagnosis = Some(diagnosis);
        row.checked_at = Some(now);
        self.domain_info(&row)
    }

    /// `HOSTING_REMOVE_DOMAIN`: detaches a domain; the edge stops serving it before this
    /// returns.
    pub async fn remove_domain(&self, actor: &Actor, input: &DomainRef) -> ServiceResult<RemovedDomain> {
        self.authorize(actor, Action::ManageDomains, Target::Domain(&input.site, &input.domain))
            .await?;
        let args = serde_json::to_value(input).unwrap_or_default();
        let result = async {
            let row = self.find_domain(actor, &input.site, &input.domain).await?;
            // DNS provider hook: the records berth created there go first; a failure keeps
            // the domain.
            self.release_domain_dns(&row).await?;
            self.platform.store.remove_domain(&row, None).await?;
            // Its certificate went with it (ON DELETE CASCADE): no longer offered by SNI.
            super::certificates::publish(&self.platform).await?;
            crate::loops::reconciler::reconcile(&self.platform).await?;
            routes_changed(&self.platform, &row.environment_id).await;
            Ok(RemovedDomain {
                removed: row.name,
                site: row.site_name,
            })
        }
        .await;
        self.audit(actor, "HOSTING_REMOVE_DOMAIN", args, &result).await;
        result
    }

    async fn find_domain(&self, actor: &Actor, site: &str, domain: &str) -> ServiceResult<DomainRow> {
        let site = self.find_site(actor, site).await?;
        // Looked up as it would be stored; a name that cannot be a domain is simply absent.
        let name = normalize_domain(domain, &self.platform.config.base_domain).unwrap_or_else(|_| domain.to_string());
        if let Some(row) = self.platform.store.get_domain(&site.id, &name).await? {
            return Ok(row);
        }
        let store = &self.platform.store;
        let names: Vec<String> = store
            .list_domains_page(&actor.org_id, Some(&site.id), "", 10)
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        let shown = domain.chars().take(100).collect::<String>();
        Err(ServiceError::not_found(if names.is_empty() {
            format!(
                "site '{}' has no domain '{shown}'; it has none yet: attach one with HOSTING_ADD_DOMAIN",
                site.name
            )
        } else {
            format!(
                "site '{}' has no domain '{shown}'; its domains: {}",
                site.name,
                names.join(", ")
            )
        }))
    }

    fn domain_info(&self, row: &DomainRow) -> ServiceResult<DomainInfo> {
        let status = DomainStatus::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("domain {} has an unknown status '{}'", row.id, row.status))?;
        let records = self.records_for(
            &row.name,
            row.redirect_name.as_deref(),
            &row.site_name,
            &row.environment_name,
            &row.token,
        )?;
        let diagnosis: Option<Vec<RecordCheck>> = row.diagnosis.as_deref().and_then(|d| serde_json::from_str(d).ok());
        let (certificate, certificate_problem, expiry_warning) = super::certificates::certificate_view(row);
        let url = self.domain_url(&row.name, certificate.is_some());
        let next = match status {
            DomainStatus::Active | DomainStatus::Renewing => format!("served at {url}"),
            DomainStatus::Validating | DomainStatus::Issuing => format!(
                "DNS is right; its certificate is being issued (usually seconds); see it with HOSTING_LIST_DOMAINS {{\"site\": \"{}\"}}",
                row.site_name
            ),
            DomainStatus::Failed => match &certificate_problem {
                Some(p) => format!(
                    "the certificate order failed: {}; berth tries again at {} (after fixing the cause, HOSTING_VALIDATE_DOMAIN tries again within a minute)",
                    p.message,
                    p.next_attempt_at.as_deref().unwrap_or("the next check")
                ),
                None => "the certificate order failed; check again with HOSTING_VALIDATE_DOMAIN".to_string(),
            },
            _ => match diagnosis
                .as_ref()
                .map(|d| d.iter().filter(|c| !c.ok).collect::<Vec<_>>())
            {
                None => format!(
                    "create the records listed, then check them with HOSTING_VALIDATE_DOMAIN {{\"site\": \"{}\", \"domain\": \"{}\"}}",
                    row.site_name, row.name
                ),
                Some(wrong) => format!(
                    "{}; then check again with HOSTING_VALIDATE_DOMAIN (DNS changes can take the records' TTL to show)",
                    wrong.iter().map(|c| c.next.as_str()).collect::<Vec<_>>().join("; ")
                ),
            },
        };
        Ok(DomainInfo {
            name: row.name.clone(),
            site: row.site_name.clone(),
            environment: row.environment_name.clone(),
            status,
            redirect_from: row.redirect_name.clone(),
            url,
            hsts: row.hsts,
            certificate,
            certificate_problem,
            warnings: expiry_warning.into_iter().collect(),
            records,
            diagnosis,
            checked_at: row.checked_at.map(rfc3339),
            next,
            created_at: rfc3339(row.created_at),
        })
    }

    fn domain_url(&self, name: &str, https: bool) -> String {
        match (https, self.platform.edge_port, self.platform.edge_tls_port) {
            (true, _, 443) => format!("https://{name}"),
            (true, _, port) => format!("https://{name}:{port}"),
            (false, 80, _) => format!("http://{name}"),
            (false, port, _) => format!("http://{name}:{port}"),
        }
    }

    /// The records a domain needs: how `name` (and its redirecting partner) reach this
    /// server, and the ownership TXT record.
    pub(crate) fn records_for(
        &self,
        name: &str,
        partner: Option<&str>,
        site: &str,
        environment: &str,
        token: &str,
    ) -> ServiceResult<Vec<DnsRecord>> {
        let target = self.platform.host_for(site, environment);
        let config = &self.platform.config.domains;
        let mut records = Vec::new();
        for host in std::iter::once(name).chain(partner) {
            let why_suffix = if host == name {
                String::new()
            } else {
                format!(" (it redirects to {name})")
            };
            if is_apex(host) {
                if config.public_ipv4.is_none() && config.public_ipv6.is_none() {
                    return Err(ServiceError::invalid(
                        "domain",
                        format!(
                            "{host} is an apex domain: it needs A/AAAA records with this server's public addresses, and none are configured; the operator sets them with --public-ipv4 / --public-ipv6 (BERTH_PUBLIC_IPV4 / BERTH_PUBLIC_IPV6), or attach a subdomain such as www.{host} (a CNAME)"
                        ),
                    ));
                }
                if let Some(ip) = config.public_ipv4 {
                    records.push(DnsRecord {
                        record_type: "A".into(),
                        name: host.into(),
                        value: ip.to_string(),
                        why: format!("points {host} at this server over IPv4{why_suffix}"),
                        managed: false,
                    });
                }
                if let Some(ip) = config.public_ipv6 {
                    records.push(DnsRecord {
                        record_type: "AAAA".into(),
                        name: host.into(),
                        value: ip.to_string(),
                        why: format!("points {host} at this server over IPv6{why_suffix}"),
                        managed: false,
                    });
                }
            } else {
                records.push(DnsRecord {
                    record_type: "CNAME".into(),
                    name: host.into(),
                    value: target.clone(),
                    why: format!("points {host} at the site's host on this server{why_suffix}"),
                    managed: false,
                });
            }
        }
        records.push(DnsRecord {
            record_type: "TXT".into(),
            name: format!("{CHALLENGE_LABEL}.{}", base_name(name)),
            value: token.into(),
            why: format!("proves the owner of {name} asked for it to be served here"),
            managed: false,
        });
        Ok(records)
    }

    /// Asks DNS about every record (and CAA above the names) and says what is wrong.
    pub(crate) async fn check_dns(&self, name: &str, records: &[DnsRecord]) -> ServiceResult<Vec<RecordCheck>> {
        let config = &self.platform.config.domains;
        let dns = Dns::new(&config.dns_resolvers)?;
        // Private name servers are asked only in a private DNS set-up.
        let private_ok =
            !config.dns_resolvers.is_empty() && config.dns_resolvers.iter().all(|r| !crate::util::is_public_ip(r.ip()));
        let mut checks = Vec::new();
        let mut hosts: Vec<&str> = Vec::new();
        for record in records {
            if !hosts.contains(&record.name.as_str()) && record.record_type != "TXT" {
                hosts.push(&record.name);
            }
        }
        for host in hosts {
            let mut cname_target = None;
            let authority = dns.authority(host, private_ok).await;
            if is_apex(host) {
                for (record_type, ours) in [
                    (RecordType::A, config.public_ipv4.map(IpAddr::V4)),
                    (RecordType::AAAA, config.public_ipv6.map(IpAddr::V6)),
                ] {
                    let type_text = record_type.to_string();
                    let recheck = |observed: &Result<Vec<String>, String>, resolver: &str| {
                        check_addresses(host, &type_text, ours, observed, resolver)
                    };
                    let observed = dns.query(host, record_type).await;
                    let check = recheck(&observed, &dns.label);
                    checks.push(confirm(check, authority.as_ref(), host, record_type, recheck).await);
                }
            } else {
                let expected = records
                    .iter()
                    .find(|r| r.name == host && r.record_type == "CNAME")
                    .map(|r| r.value.clone())
                    .unwrap_or_default();
                let recheck = |observed: &Result<Vec<String>, String>, resolver: &str| {
                    check_cname(host, &expected, observed, resolver)
                };
                let observed = dns.query(host, RecordType::CNAME).await;
                let check = recheck(&observed, &dns.label);
                if let Ok(values) = &observed {
                    cname_target = values.first().cloned();
                }
                checks.push(confirm(check, authority.as_ref(), host, RecordType::CNAME, recheck).await);
            }
            // CAA: the first non-empty set walking up from the name (RFC 8659); at the
            // name itself, the CNAME target's set counts when the name's own is empty.
            let mut found: Option<(String, Result<Vec<String>, String>)> = None;
            let mut steps = 0;
            // A wildcard's CAA set is its parent's (RFC 8659 section 3).
            let mut at: Option<String> = Some(base_name(host).to_string());
            while let Some(current) = at {
                steps += 1;
                if steps > MAX_CAA_STEPS || !current.contains('.') {
                    break;
                }
                // Following a CNAME, the set found is the target's: named where it is.
                let answer = dns.query_owned(&current, RecordType::CAA).await;
                match answer {
                    Ok(records) if records.is_empty() => {}
                    Ok(records) => {
                        let at = records[0].0.clone();
                        found = Some((at, Ok(records.into_iter().map(|(_, v)| v).collect())));
                        break;
                    }
                    Err(e) => {
                        found = Some((current.clone(), Err(e)));
                        break;
                    }
                }
                if current == host
                    && let Some(target) = &cname_target
                {
                    let answer = dns.query(target, RecordType::CAA).await;
                    if !matches!(&answer, Ok(v) if v.is_empty()) {
                        found = Some((target.clone(), answer));
                        break;
                    }
                }
                at = current.split_once('.').map(|(_, parent)| parent.to_string());
            }
            checks.push(check_caa(host, found, &config.acme_ca_domain, &dns.label));
        }
        if let Some(txt) = records.iter().find(|r| r.record_type == "TXT") {
            let authority = dns.authority(&txt.name, private_ok).await;
            let recheck = |observed: &Result<Vec<String>, String>, resolver: &str| {
                check_txt(&txt.name, &txt.value, observed, resolver, name)
            };
            let observed = dns.query(&txt.name, RecordType::TXT).await;
            let check = recheck(&observed, &dns.label);
            checks.push(confirm(check, authority.as_ref(), &txt.name, RecordType::TXT, recheck).await);
        }
        Ok(checks)
    }
}

/// A check as the resolver answered it, completed with what the zone's authoritative
/// servers answer (`recheck` judges their answer the same way), which then decides: a
/// resolver's cached answer may be older than the zone. Unreachable authoritative
/// servers leave the resolver's check as it is.
async fn confirm(
    check: RecordCheck,
    authority: Option<&Dns>,
    name: &str,
    record_type: RecordType,
    recheck: impl Fn(&Result<Vec<String>, String>, &str) -> RecordCheck,
) -> RecordCheck {
    let Some(authority) = authority else {
        return check;
    };
    let answer = authority.query(name, record_type).await;
    if answer.is_err() {
        return check;
    }
    let at_source = recheck(&answer, &authority.label);
    let shown = |values: &[String]| {
        if values.is_empty() {
            "no record".to_string()
        } else {
            values.join(", ")
        }
    };
    let next = match (at_source.ok, check.ok) {
        (true, true) => String::new(),
        (true, false) => format!(
            "nothing to change: the zone's name servers {} answer it right; the resolver {} still answers an older {} ({}) from its cache until its TTL runs out, so some visitors may see that until then",
            authority.label,
            check.resolver,
            check.record_type,
            shown(&check.observed)
        ),
        (false, true) => format!(
            "{} (the resolver {} still answers the right value from its cache, but the zone's name servers {} no longer do)",
            at_source.next, check.resolver, authority.label
        ),
        (false, false) => at_source.next.clone(),
    };
    RecordCheck {
        ok: at_source.ok,
        next,
        authoritative: Some(AuthoritativeAnswer {
            server: authority.label.clone(),
            observed: at_source.observed,
            ok: at_source.ok,
        }),
        ..check
    }
}

/// A resolver for one check: no cache, so a fixed record shows at once.
pub(crate) struct Dns {
    resolver: TokioResolver,
    /// How the resolver is named in a diagnosis.
    label: String,
}

impl Dns {
    pub(crate) fn new(resolvers: &[SocketAddr]) -> ServiceResult<Self> {
        if resolvers.is_empty() {
            let (config, options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))?;
            let label = config
                .name_servers()
                .iter()
                .map(|n| n.ip.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let builder =
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(options);
            return Self::build(builder, format!("system resolver {label}"), true);
        }
        let label = resolvers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        Self::build(Self::servers(resolvers), label, true)
    }

    fn servers(addresses: &[SocketAddr]) -> hickory_resolver::ResolverBuilder<TokioRuntimeProvider> {
        let servers = addresses
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    }

    fn build(
        mut builder: hickory_resolver::ResolverBuilder<TokioRuntimeProvider>,
        label: String,
        recursion: bool,
    ) -> ServiceResult<Self> {
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = std::time::Duration::from_secs(3);
        options.attempts = 1;
        options.ndots = 0;
        options.recursion_desired = recursion;
        let resolver = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the DNS resolver: {e}"))?;
        Ok(Self { resolver, label })
    }

    /// The authoritative name servers of the zone `name` is in, asked directly (no
    /// recursion, port 53), or `None` when they cannot be found: the closest NS set at
    /// or above the name (never a top-level domain's), at most [`MAX_NAME_SERVERS`]
    /// addresses of its servers. Addresses that are not public are used only when
    /// `private_ok` (the configured resolvers are private themselves, as in a private
    /// DNS set-up), so a name's owner cannot point berth's queries into the network it
    /// runs in.
    pub(crate) async fn authority(&self, name: &str, private_ok: bool) -> Option<Dns> {
        let mut current = base_name(name).to_string();
        for _ in 0..MAX_CAA_STEPS {
            if current.matches('.').count() < 1 {
                return None;
            }
            let hosts: Vec<String> = match self.query_owned(&current, RecordType::NS).await {
                Ok(records) => records
                    .into_iter()
                    .filter(|(owner, _)| *owner == current)
                    .map(|(_, host)| host)
                    .collect(),
                Err(_) => return None,
            };
            if hosts.is_empty() {
                current = current.split_once('.')?.1.to_string();
                continue;
            }
            let mut addresses: Vec<(String, SocketAddr)> = Vec::new();
            for host in hosts.iter().take(MAX_NAME_SERVERS) {
                for record_type in [RecordType::A, RecordType::AAAA] {
                    for value in self.query(host, record_type).await.unwrap_or_default() {
                        let Ok(ip) = value.parse::<IpAddr>() else { continue };
                        if (private_ok || crate::util::is_public_ip(ip)) && addresses.len() < MAX_NAME_SERVERS {
                            addresses.push((host.clone(), SocketAddr::new(ip, 53)));
                        }
                    }
                }
            }
            if addresses.is_empty() {
                return None;
            }
            let label = addresses
                .iter()
                .map(|(host, addr)| format!("{host} ({})", addr.ip()))
                .collect::<Vec<_>>()
                .join(", ");
            let sockets: Vec<SocketAddr> = addresses.iter().map(|(_, a)| *a).collect();
            return Self::build(Self::servers(&sockets), label, false).ok();
        }
        None
    }

    /// The values of `name`'s records of one type, as text; empty when there are none;
    /// an error in words when the resolver failed.
    pub(crate) async fn query(&self, name: &str, record_type: RecordType) -> Result<Vec<String>, String> {
        self.query_owned(name, record_type)
            .await
            .map(|records| records.into_iter().map(|(_, value)| value).collect())
    }

    /// Like [`Dns::query`], with the name each record is at (another than `name` when
    /// the answer followed a CNAME).
    async fn query_owned(&self, name: &str, record_type: RecordType) -> Result<Vec<(String, String)>, String> {
        let fqdn = format!("{name}.");
        match self.resolver.lookup(fqdn.as_str(), record_type).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == record_type)
                .filter_map(|r| {
                    let owner = r.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    rdata_text(&r.data).map(|value| (owner, value))
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("the resolver did not answer: {e}")),
        }
    }
}

/// A record's value as shown in a diagnosis (names without the final dot, CAA as
/// `flags tag "value"`).
fn rdata_text(data: &RData) -> Option<String> {
    Some(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
        RData::NS(n) => n.0.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<String>(),
        RData::CAA(c) => format!(
            "{} {} \"{}\"",
            if c.issuer_critical { 128 } else { 0 },
            c.tag,
            String::from_utf8_lossy(&c.value)
        ),
        _ => return None,
    })
}

/// A domain name as berth stores it: trimmed, no final dot, IDNs as punycode, lowercase;
/// refused with the reason for anything that cannot be attached.
pub fn normalize_domain(raw: &str, base_domain: &str) -> ServiceResult<String> {
    let invalid = |message: String| ServiceError::invalid("domain", message);
    let trimmed = raw.trim();
    let shown: String = trimmed.chars().take(100).collect();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(invalid("a domain is required, such as app.example.com".into()));
    }
    // A wildcard is one leading `*` label over a name that could be attached itself.
    if let Some(rest) = trimmed.strip_prefix("*.") {
        if rest.contains('*') {
            return Err(invalid(format!(
                "'{shown}' has more than one wildcard label; a wildcard is one leading '*.' such as *.example.com"
            )));
        }
        let parent = normalize_domain(rest, base_domain)?;
        return Ok(format!("*.{parent}"));
    }
    if trimmed.contains('*') {
        return Err(invalid(format!(
            "'{shown}' has a '*' that is not a leading label; a wildcard is written *.example.com"
        )));
    }
    if trimmed
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Err(invalid(format!(
            "'{shown}' is an IP address; a domain is a name such as app.example.com whose DNS points at this server"
        )));
    }
    if trimmed.len() > 253 || trimmed.contains(['/', ':', '@', ' ', '?', '#']) {
        return Err(invalid(format!(
            "'{shown}' is not a domain name; give the bare name such as app.example.com (no scheme, port or path)"
        )));
    }
    let ascii = idna::domain_to_ascii_strict(trimmed).map_err(|_| {
        invalid(format!(
            "'{shown}' is not a valid domain name (letters, digits and hyphens in dot-separated labels)"
        ))
    })?;
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if ascii == base || ascii.ends_with(&format!(".{base}")) {
        return Err(invalid(format!(
            "'{shown}' is berth's base domain or under it: sites are already served at <site>.{base} without attaching anything; attach a domain of your own"
        )));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if labels.len() < 2 || ascii.len() > 253 || !labels.iter().all(label_ok) {
        return Err(invalid(format!(
            "'{shown}' is not a valid public domain name: it needs at least two dot-separated labels of letters, digits and hyphens (such as app.example.com)"
        )));
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(invalid(format!(
            "'{shown}' is not a domain name (its last label is a number)"
        )));
    }
    Ok(ascii)
}

/// Whether a name is treated as a zone apex (needs A/AAAA, cannot have a CNAME): a name of
/// two labels, such as `example.com`. Names under multi-label public suffixes
/// (`example.co.uk`) are taken for subdomains.
pub fn is_apex(name: &str) -> bool {
    name.split('.').count() == 2
}

/// Whether a (normalised) name is a wildcard such as `*.example.com`: one level of names
/// under its parent, proven to a CA through DNS only.
pub fn is_wildcard(name: &str) -> bool {
    name.starts_with("*.")
}

/// The name a DNS check, an ownership record or a DNS-01 challenge is about: a wildcard's
/// parent (`*.example.com` → `example.com`), else the name itself.
pub fn base_name(name: &str) -> &str {
    name.strip_prefix("*.").unwrap_or(name)
}

/// The www/apex partner of a name: `www.example.com` ↔ `example.com`.
pub fn www_partner(name: &str) -> String {
    match name.strip_prefix("www.") {
        Some(rest) if rest.contains('.') => rest.to_string(),
        _ => format!("www.{name}"),
    }
}

fn dns_failure(record_type: &str, name: &str, expected: String, resolver: &str, error: &str) -> RecordCheck {
    RecordCheck {
        record_type: record_type.into(),
        name: name.into(),
        expected,
        observed: Vec::new(),
        resolver: resolver.into(),
        ok: false,
        next: format!("{error}; check that {name}'s DNS servers answer, then try again"),
        authoritative: None,
    }
}

/// An A or AAAA set of an apex: exactly our address when one is configured, none when not
/// (a stray address sends visitors, and a CA's validation, to another server).
pub fn check_addresses(
    name: &str,
    record_type: &str,
    ours: Option<IpAddr>,
    observed: &Result<Vec<String>, String>,
    resolver: &str,
) -> RecordCheck {
    let expected = match ours {
        Some(ip) => ip.to_string(),
        None => format!("no {record_type} record (this server has no public address of that family)"),
    };
    let values = match observed {
        Ok(v) => v,
        Err(e) => return dns_failure(record_type, name, expected, resolver, e),
    };
    let ours_text = ours.map(|ip| ip.to_string());
    let stray: Vec<&String> = values.iter().filter(|v| Some(*v) != ours_text.as_ref()).collect();
    let has_ours = ours_text.as_ref().is_none_or(|o| values.contains(o));
    let next = match (has_ours, stray.is_empty(), &ours_text) {
        (true, true, _) => String::new(),
        (false, true, Some(o)) => format!("create an {record_type} record {name} → {o}"),
        (_, false, Some(o)) => format!(
            "remove the {record_type} record(s) {name} → {} (not this server), and keep only {name} → {o}",
            stray.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
        (_, false, None) => format!(
            "remove the stray {record_type} record(s) {name} → {}: they send visitors and certificate validation to another server",
            stray.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
        (false, true, None) => String::new(),
    };
    RecordCheck {
        record_type: record_type.into(),
        name: name.into(),
        expected,
        observed: values.clone(),
        resolver: resolver.into(),
        ok: next.is_empty(),
        next,
        authoritative: None,
    }
}

/// A subdomain's CNAME: it must point at the site's host.
pub fn check_cname(name: &str, expected: &str, observed: &Result<Vec<String>, String>, resolver: &str) -> RecordCheck {
    let values = match observed {
        Ok(v) => v,
        Err(e) => return dns_failure("CNAME", name, expected.into(), resolver, e),
    };
    let ok = values.len() == 1 && values[0].eq_ignore_ascii_case(expected);
    let next = if ok {
        String::new()
    } else if values.is_empty() {
        format!("create a CNAME record {name} → {expected} (and no A/AAAA records at {name})")
    } else {
        format!(
            "change the CNAME record of {name} from {} to {expected}",
            values.join(", ")
        )
    };
    RecordCheck {
        record_type: "CNAME".into(),
        name: name.into(),
        expected: expected.into(),
        observed: values.clone(),
        resolver: resolver.into(),
        ok,
        next,
        authoritative: None,
    }
}

/// The ownership TXT record: one of its values must be the domain's token.
pub fn check_txt(
    name: &str,
    token: &str,
    observed: &Result<Vec<String>, String>,
    resolver: &str,
    domain: &str,
) -> RecordCheck {
    let values = match observed {
        Ok(v) => v,
        Err(e) => return dns_failure("TXT", name, token.into(), resolver, e),
    };
    let ok = values.iter().any(|v| v.trim() == token);
    let next = if ok {
        String::new()
    } else if values.is_empty() {
        format!("create a TXT record {name} with the value {token} (it proves you own {domain})")
    } else {
        format!("set the TXT record {name} to {token} (it has other values only)")
    };
    RecordCheck {
        record_type: "TXT".into(),
        name: name.into(),
        expected: token.into(),
        observed: values.clone(),
        resolver: resolver.into(),
        ok,
        next,
        authoritative: None,
    }
}

/// The CAA check of a name: `found` is the first non-empty CAA set met walking up the
/// tree (where, and what), `None` when there is none (any CA may issue).
pub fn check_caa(
    name: &str,
    found: Option<(String, Result<Vec<String>, String>)>,
    ca_domain: &str,
    resolver: &str,
) -> RecordCheck {
    let tag = if is_wildcard(name) { "issuewild" } else { "issue" };
    let expected = format!("no CAA record, or one that allows {ca_domain} (0 {tag} \"{ca_domain}\")");
    let Some((at, answer)) = found else {
        return RecordCheck {
            record_type: "CAA".into(),
            name: name.into(),
            expected,
            observed: Vec::new(),
            resolver: resolver.into(),
            ok: true,
            next: String::new(),
            authoritative: None,
        };
    };
    let values = match answer {
        Ok(v) => v,
        Err(e) => return dns_failure("CAA", &at, expected, resolver, &e),
    };
    let ok = caa_allows(&values, ca_domain, is_wildcard(name));
    let next = if ok {
        String::new()
    } else {
        format!(
            "the CAA records at {at} do not allow {ca_domain} to issue a certificate for {name}: add a CAA record {at} 0 {tag} \"{ca_domain}\""
        )
    };
    RecordCheck {
        record_type: "CAA".into(),
        name: at,
        expected,
        observed: values,
        resolver: resolver.into(),
        ok,
        next,
        authoritative: None,
    }
}

/// Whether a relevant CAA set (as `flags tag "value"` texts) lets `ca_domain` issue a
/// certificate (RFC 8659 section 4): for a name, the `issue` properties decide; for a
/// wildcard, the `issuewild` ones when there are any, else the `issue` ones. No deciding
/// property allows anyone; otherwise one must name the CA. An unknown tag marked
/// critical forbids issuance.
pub fn caa_allows(values: &[String], ca_domain: &str, wildcard: bool) -> bool {
    let mut issue = (false, false);
    let mut issuewild = (false, false);
    for value in values {
        let mut parts = value.splitn(3, ' ');
        let flags: u8 = parts.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let tag = parts.next().unwrap_or("").to_ascii_lowercase();
        let property = parts.next().unwrap_or("").trim().trim_matches('"');
        let names_ca = property
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(ca_domain);
        match tag.as_str() {
            "issue" => issue = (true, issue.1 || names_ca),
            "issuewild" => issuewild = (true, issuewild.1 || names_ca),
            "iodef" | "contactemail" | "contactphone" | "issuemail" | "issuevmc" => {}
            _ if flags & 128 != 0 => return false,
            _ => {}
        }
    }
    let (seen, allowed) = if wildcard && issuewild.0 { issuewild } else { issue };
    !seen || allowed
}

/// Tells the environment's target that its hosts changed (a domain became served or was
/// removed, a certificate was issued or renewed), so a target routing in its own cluster
/// applies them at once. The change itself is done already: when the target cannot apply
/// it now, that is logged and the environment's next release applies it.
pub(super) async fn routes_changed(platform: &super::Platform, environment_id: &str) {
    let result: anyhow::Result<()> = async {
        let Some(env) = platform.store.get_environment_by_id(environment_id).await? else {
            return Ok(());
        };
        let Some(deployment_id) = env.deployment_id.clone() else {
            return Ok(());
        };
        let Some(site) = platform.store.get_site_by_id(&env.site_id).await? else {
            return Ok(());
        };
        let target = platform.target(&site.provider)?;
        let Some(mut spec) = platform.dry_run_spec(&site, &env).await? else {
            return Ok(());
        };
        spec.deployment_id = deployment_id;
        target.routes_changed(spec).await.map_err(anyhow::Error::msg)
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(environment.id = %environment_id, error = %format!("{e:#}"), "applying an environment's changed hosts on its target failed; its next release applies them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_or_refused() {
        assert_eq!(
            normalize_domain(" App.Example.COM. ", "localhost").unwrap(),
            "app.example.com"
        );
        assert_eq!(
            normalize_domain("bücher.example", "localhost").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("*.Shop.Example.com", "localhost").unwrap(),
            "*.shop.example.com"
        );
        for bad in [
            "",
            "*.com",
            "*.*.example.com",
            "a.*.example.com",
            "*example.com",
            "192.0.2.1",
            "[2001:db8::1]",
            "example",
            "a..b.com",
            "-a.example.com",
            "http://example.com",
            "example.com:8080",
            "under_score.example.com",
            "example.123",
            "berth.localhost",
            "localhost",
        ] {
            assert!(normalize_domain(bad, "localhost").is_err(), "{bad} was accepted");
        }
        let err = normalize_domain("a.*.example.com", "localhost")
            .unwrap_err()
            .to_string();
        assert!(err.contains("*.example.com"), "{err}");
        assert!(normalize_domain("*.apps.example.com", "apps.example.com").is_err());
        let err = normalize_domain("a.apps.example.com", "apps.example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("base domain"), "{err}");
    }

    #[test]
    fn apex_and_partner() {
        assert!(is_apex("example.com"));
        assert!(!is_apex("www.example.com"));
        assert_eq!(www_partner("example.com"), "www.example.com");
        assert_eq!(www_partner("www.example.com"), "example.com");
        assert_eq!(www_partner("app.example.com"), "www.app.example.com");
    }

    #[test]
    fn caa_sets() {
        let le = "letsencrypt.org";
        let name = |values: &[&str]| caa_allows(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>(), le, false);
        let wild = |values: &[&str]| caa_allows(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>(), le, true);
        assert!(name(&[]));
        assert!(name(&["0 issue \"letsencrypt.org\""]));
        assert!(name(&["0 issue \"letsencrypt.org; validationmethods=dns-01\""]));
        assert!(name(&["0 iodef \"mailto:a@example.com\""]));
        assert!(name(&["0 issuewild \"other.example\""]));
        assert!(!name(&["0 issue \"other.example\""]));
        assert!(!name(&["0 issue \";\""]));
        assert!(!name(&["128 future \"x\""]));
        // A wildcard: issuewild decides when present, else issue does.
        assert!(wild(&[]));
        assert!(!wild(&["0 issuewild \"other.example\""]));
        assert!(wild(&["0 issue \"other.example\"", "0 issuewild \"letsencrypt.org\""]));
        assert!(!wild(&["0 issue \"letsencrypt.org\"", "0 issuewild \";\""]));
        assert!(wild(&["0 issue \"letsencrypt.org\""]));
        assert!(!wild(&["0 issue \"other.example\""]));
    }

    #[test]
    fn address_checks_name_stray_and_missing_records() {
        let ours: IpAddr = "192.0.2.10".parse().unwrap();
        let good = check_addresses("example.com", "A", Some(ours), &Ok(vec!["192.0.2.10".into()]), "r");
        assert!(good.ok);
        let missing = check_addresses("example.com", "A", Some(ours), &Ok(vec![]), "r");
        assert!(!missing.ok && missing.next.contains("create an A record example.com → 192.0.2.10"));
        let wrong = check_addresses("example.com", "A", Some(ours), &Ok(vec!["198.51.100.1".into()]), "r");
        assert!(!wrong.ok && wrong.next.contains("198.51.100.1"), "{}", wrong.next);
        let stray = check_addresses("example.com", "AAAA", None, &Ok(vec!["2001:db8::1".into()]), "r");
        assert!(!stray.ok && stray.next.contains("stray AAAA"), "{}", stray.next);
        let none = check_addresses("example.com", "AAAA", None, &Ok(vec![]), "r");
        assert!(none.ok);
        let failed = check_addresses("example.com", "A", Some(ours), &Err("timed out".into()), "r");
        assert!(!failed.ok && failed.next.contains("timed out"));
    }

    #[test]
    fn cname_and_txt_checks() {
        let ok = check_cname(
            "app.example.com",
            "web.localhost",
            &Ok(vec!["WEB.localhost".into()]),
            "r",
        );
        assert!(ok.ok);
        let wrong = check_cname(
            "app.example.com",
            "web.localhost",
            &Ok(vec!["elsewhere.example".into()]),
            "r",
        );
        assert!(!wrong.ok && wrong.next.contains("from elsewhere.example to web.localhost"));
        let txt = check_txt(
            "_berth-challenge.a.example",
            "tok",
            &Ok(vec!["other".into()]),
            "r",
            "a.example",
        );
        assert!(!txt.ok);
        assert!(
            check_txt(
                "_berth-challenge.a.example",
                "tok",
                &Ok(vec!["tok".into()]),
                "r",
                "a.example"
            )
            .ok
        );
    }

    #[test]
    fn domain_states() {
        use DomainStatus::*;
        assert!(PendingDns.can_become(Active));
        assert!(Active.can_become(PendingDns));
        assert!(!PendingDns.can_become(Renewing));
        assert!(!PendingDns.can_become(Issuing));
        assert!(Active.is_served() && !PendingDns.is_served());
        for s in [PendingDns, Validating, Issuing, Active, Renewing, Failed] {
            assert_eq!(DomainStatus::parse(s.as_str()), Some(s));
        }
    }
}
