//! Certificates of custom domains: when to order, renew and retry, and what the edge
//! serves. A domain whose DNS checks out goes `validating` → `issuing` → `active`; a
//! served certificate is renewed (`renewing`) once a third of its lifetime is left; a
//! failed order is retried after 1 min, 10 min, 100 min, then daily, and DNS is checked
//! again before every order, so a wrong record never spends the CA's failed-validation
//! budget. When the CA offers renewal information (ARI, RFC 9773), its suggested window
//! decides when a certificate is renewed instead. Orders run in one background loop ([`run`]); the ACME protocol itself is the
//! adapter in `crate::acme`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_edge::CertTable;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::acme::{self, AcmeClient, AcmeSettings, Challenge, ChallengeKind, Responder};
use crate::dns::DnsProvider;
use crate::error::{ServiceError, ServiceResult};
use crate::jobs::Singleton;
use crate::model::DomainStatus;
use crate::store::certificates::CertificateRow;
use crate::store::domains::DomainRow;
use crate::util::{new_id, now_ms, rfc3339};

use super::Service;

/// Waits before the next order after 1, 2, 3 and more failures in a row.
const RETRY_AFTER: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(6000),
    Duration::from_secs(86_400),
];
/// Orders in flight at once.
const PARALLEL_ORDERS: usize = 4;
/// Longest the loop sleeps between looks at what is due (certificates expire, and other
/// processes may change the table).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// The certificate loop's lease among replicas on one database (see [`run`]).
pub const LEASE: &str = "certificates";
/// How long the lease holds without renewal: longer than the loop's longest wait
/// ([`MAX_IDLE`]), so a live holder keeps it; a dead one's passes to another after it.
pub const LEASE_TIME: Duration = Duration::from_secs(180);
/// How often a replica that does not hold the lease tries to take it.
const FOLLOWER_WAIT: Duration = Duration::from_secs(30);
/// The base domain's wildcard, as the loop names its work.
const BASE_JOB: &str = "*base";
/// The pass asking the CA for renewal windows, as the loop names its work.
const ARI_JOB: &str = "*ari";
/// Bounds on how soon the CA is asked about a certificate again (its Retry-After within).
const ARI_MIN_WAIT: Duration = Duration::from_secs(10);
const ARI_MAX_WAIT: Duration = Duration::from_secs(86_400);
/// After a failed request for a renewal window, the next try.
const ARI_RETRY: Duration = Duration::from_secs(3600);
/// Longest berth waits for a DNS-01 TXT record to show at its resolvers.
const DNS_PROPAGATION: Duration = Duration::from_secs(120);
/// A certificate expiring sooner than this is warned about wherever its domain is listed.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// When to renew within a CA's suggested window: the time already planned if it lies in
/// the window, else a uniformly random moment in it (RFC 9773 section 4.2), so many
/// servers do not renew at once.
pub fn renewal_in_window(window: &acme::RenewalWindow, planned: i64) -> i64 {
    if (window.start_ms..=window.end_ms).contains(&planned) {
        return planned;
    }
    let span = window.end_ms.saturating_sub(window.start_ms);
    if span <= 0 {
        return window.start_ms;
    }
    window.start_ms + (rand::random::<u64>() % span as u64) as i64
}

/// A domain's certificate, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CertificateInfo {
    /// When it was issued.
    pub issued_at: String,
    /// When it stops being valid.
    pub expires_at: String,
    /// When berth starts renewing it.
    pub renews_at: String,
}

/// The last certificate problem of a domain.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CertificateProblem {
    /// What happened, in words.
    pub message: String,
    /// The CA's problem document (RFC 8555 §6.7), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<serde_json::Value>,
    /// When it happened.
    pub at: String,
    /// Orders failed in a row.
    pub attempts: i64,
    /// When berth tries again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// When a failed order is tried again, after `attempts` failures in a row.
pub fn retry_delay(attempts: i64) -> Duration {
    let index = usize::try_from(attempts.max(1) - 1)
        .unwrap_or(0)
        .min(RETRY_AFTER.len() - 1);
    RETRY_AFTER[index]
}

/// When renewal of a certificate valid from `not_before` to `not_after` starts: when a
/// third of its lifetime is left (whatever that lifetime is; nothing assumes 90 days).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

/// The certificate and problem of a domain row, for its listing; and a warning when its
/// certificate expires within [`EXPIRY_WARNING`].
pub fn certificate_view(row: &DomainRow) -> (Option<CertificateInfo>, Option<CertificateProblem>, Option<String>) {
    let certificate = match (row.cert_issued_at, row.cert_not_after, row.cert_renew_at) {
        (Some(issued), Some(not_after), Some(renew)) => Some(CertificateInfo {
            issued_at: rfc3339(issued),
            expires_at: rfc3339(not_after),
            renews_at: rfc3339(renew),
        }),
        _ => None,
    };
    let problem = row.problem.as_deref().and_then(|text| {
        let stored: StoredProblem = serde_json::from_str(text).ok()?;
        Some(CertificateProblem {
            message: stored.message,
            problem: stored.problem,
            at: rfc3339(stored.at),
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at.map(rfc3339),
        })
    });
    let warning = row.cert_not_after.and_then(|not_after| {
        let left = not_after - now_ms();
        (left < EXPIRY_WARNING.as_millis() as i64).then(|| {
            if left <= 0 {
                format!(
                    "the certificate of {} has expired; it is no longer served over HTTPS",
                    row.name
                )
            } else {
                format!(
                    "the certificate of {} expires in {} h ({}){}",
                    row.name,
                    left / 3_600_000,
                    rfc3339(not_after),
                    problem_suffix(row)
                )
            }
        })
    });
    (certificate, problem, warning)
}

fn problem_suffix(row: &DomainRow) -> String {
    row.problem
        .as_deref()
        .and_then(|p| serde_json::from_str::<StoredProblem>(p).ok())
        .map(|p| format!("; renewal failed: {}", p.message))
        .unwrap_or_default()
}

/// A problem as stored on the domain.
#[derive(Debug, Serialize, Deserialize)]
struct StoredProblem {
    message: String,
    #[serde(default)]
    problem: Option<serde_json::Value>,
    at: i64,
}

/// Loads every valid certificate into the edge (at start, and after any change).
pub async fn publish(platform: &super::Platform) -> anyhow::Result<()> {
    let now = now_ms();
    let store = &platform.store;
    let rows = store.valid_certificates(now).await?;
    let hsts: HashMap<String, bool> = store
        .list_all_domains()
        .await?
        .into_iter()
        .map(|d| (d.id, d.hsts))
        .collect();
    let mut table = CertTable::new();
    for row in rows {
        let opened = open_certificate(platform, &row);
        let (chain, key) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(subject = %row.subject, error = %format!("{e:#}"), "a stored certificate cannot be opened; not served");
                continue;
            }
        };
        let certified = match berth_edge::certified_key_from_pem(&chain, &key) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(subject = %row.subject, error = %e, "a stored certificate cannot be loaded; not served");
                continue;
            }
        };
        let hsts = row
            .domain_id
            .as_ref()
            .and_then(|id| hsts.get(id))
            .copied()
            .unwrap_or(false);
        let names: Vec<String> = serde_json::from_str(&row.names).unwrap_or_else(|_| vec![row.subject.clone()]);
        for name in names {
            table.insert(&name, certified.clone(), hsts);
        }
    }
    tracing::debug!(names = table.len(), "certificates published to the edge");
    let base = base_subject(&platform.config.base_domain);
    platform.certificates.base_https.store(
        base.is_some_and(|b| table.contains(&format!("x{}", &b[1..]))),
        std::sync::atomic::Ordering::Relaxed,
    );
    platform.edge.replace_certificates(table);
    Ok(())
}

/// `*.<base domain>` when the base domain is a public name a CA can issue for (not
/// `localhost`, not an address, at least two labels).
pub fn base_subject(base_domain: &str) -> Option<String> {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    let local = base == "localhost" || base.ends_with(".localhost") || base.ends_with(".local");
    let address = base
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    (!local && !address && base.contains('.')).then(|| format!("*.{base}"))
}

fn open_certificate(platform: &super::Platform, row: &CertificateRow) -> anyhow::Result<(String, String)> {
    crate::platform::certificates::open(platform, row)
}

fn seal_context(subject: &str) -> String {
    crate::platform::certificates::seal_context(subject)
}

/// The certificate loop: orders, renews and retries whatever is due, a few at a time,
/// until `stop`.
///
/// Of the replicas on one database, only the holder of `singleton`'s lease ([`LEASE`])
/// orders and renews (two would order the same certificate twice); the others load what
/// it issues into their edges, woken by its events, and take over once its lease expires.
pub async fn run(service: Service, singleton: Singleton, stop: CancellationToken) {
    let platform = service.platform.clone();
    if let Err(e) = publish(&platform).await {
        tracing::warn!(error = %format!("{e:#}"), "loading certificates into the edge failed");
    }
    if !platform.config.domains.acme_enabled() {
        return;
    }
    let mut in_flight: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let busy: Arc<Mutex<Vec<String>>> = Arc::default();
    loop {
        if !singleton.hold().await {
            if let Err(e) = publish(&platform).await {
                tracing::warn!(error = %format!("{e:#}"), "reloading certificates failed");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = platform.certificates.wake.notified() => {}
                () = tokio::time::sleep(FOLLOWER_WAIT) => {}
            }
            continue;
        }
        let now = now_ms();
        match platform.store.domains_due(now, 50).await {
            Ok(due) => {
                for id in due {
                    if in_flight.len() >= PARALLEL_ORDERS {
                        break;
                    }
                    {
                        let mut busy = busy.lock().unwrap_or_else(PoisonError::into_inner);
                        if busy.contains(&id) {
                            continue;
                        }
                        busy.push(id.clone());
                    }
                    let (service, busy) = (service.clone(), busy.clone());
                    in_flight.spawn(async move {
                        if let Err(e) = service.advance_certificate(&id).await {
                            tracing::warn!(domain = %id, error = %format!("{e:#}"), "certificate work failed");
                        }
                        busy.lock().unwrap_or_else(PoisonError::into_inner).retain(|b| b != &id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for certificate work failed"),
        }
        if !busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|b| b == BASE_JOB)
            && in_flight.len() < PARALLEL_ORDERS
            && service.base_certificate_due().await
        {
            busy.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(BASE_JOB.to_string());
            let (service, busy) = (service.clone(), busy.clone());
            in_flight.spawn(async move {
                if let Err(e) = service.advance_base_certificate().await {
                    tracing::warn!(error = %format!("{e:#}"), "the base domain's certificate work failed");
                }
                busy.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|b| b != BASE_JOB);
            });
        }
        if now >= platform.certificates.ari_next_pass()
            && in_flight.len() < PARALLEL_ORDERS
            && !busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|b| b == ARI_JOB)
        {
            busy.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ARI_JOB.to_string());
            let (service, busy) = (service.clone(), busy.clone());
            in_flight.spawn(async move {
                service.check_renewal_windows().await;
                busy.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|b| b != ARI_JOB);
            });
        }
        let next = platform
            .store
            .next_due()
            .await
            .ok()
            .flatten()
            .map_or(platform.certificates.ari_next_pass(), |t| {
                t.min(platform.certificates.ari_next_pass())
            });
        let next = Some(next);
        let wait = next
            .map(|t| Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)))
            .unwrap_or(MAX_IDLE)
            .clamp(Duration::from_millis(200), MAX_IDLE);
        tokio::select! {
            () = stop.cancelled() => break,
            () = platform.certificates.wake.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = tokio::time::sleep(wait) => {
                // Expired certificates drop out of the edge's table.
                if let Err(e) = publish(&platform).await {
                    tracing::warn!(error = %format!("{e:#}"), "reloading certificates failed");
                }
            }
        }
    }
    in_flight.abort_all();
    singleton.release().await;
}

impl Service {
    /// One step of a domain's certificate work: checks DNS, then orders (or renews) and
    /// records the outcome.
    pub(crate) async fn advance_certificate(&self, domain_id: &str) -> anyhow::Result<()> {
        let store = &self.platform.store;
        let Some(row) = store.domain_by_id(domain_id).await? else {
            return Ok(());
        };
        let from = DomainStatus::parse(&row.status).unwrap_or(DomainStatus::PendingDns);
        let now = now_ms();
        let renewal = matches!(from, DomainStatus::Active | DomainStatus::Renewing)
            && row.cert_not_after.is_some_and(|t| t > now);
        // DNS first: an order for a name whose records are wrong would only spend the
        // CA's failed-validation budget.
        let records = self.records_for(
            &row.name,
            row.redirect_name.as_deref(),
            &row.site_name,
            &row.environment_name,
            &row.token,
        )?;
        let checks = self.check_dns(&row.name, &records).await?;
        if let Some(wrong) = checks.iter().find(|c| !c.ok) {
            if renewal {
                let message = format!(
                    "renewal waits for DNS: {} {} is wrong ({})",
                    wrong.record_type, wrong.name, wrong.next
                );
                return self.record_failure(&row, DomainStatus::Renewing, message, None).await;
            }
            let diagnosis = serde_json::to_string(&checks)?;
            self.platform.store.return_domain_to_dns(&row, &diagnosis, now).await?;
            crate::loops::reconciler::reconcile(&self.platform).await?;
            return Ok(());
        }
        let working = if renewal {
            DomainStatus::Renewing
        } else {
            DomainStatus::Issuing
        };
        if from != working {
            store
                .set_issuance(
                    &row.id,
                    working.as_str(),
                    row.attempts,
                    row.next_attempt_at,
                    row.problem.as_deref(),
                    now,
                )
                .await?;
        }
        let names: Vec<String> = std::iter::once(row.name.clone())
            .chain(row.redirect_name.clone())
            .collect();
        tracing::info!(domain = %row.name, renewal, "ordering a certificate");
        let dns = self.dns_provider(&row.org_id).await.ok().flatten();
        // A wildcard is proven through DNS only.
        let kinds = if super::domains::is_wildcard(&row.name) {
            vec![ChallengeKind::Dns01]
        } else {
            self.challenge_kinds(dns.is_some())
        };
        let replaces = if renewal {
            self.replaced_identifier(&row.name).await
        } else {
            None
        };
        let outcome = self.order_certificate(&names, kinds, dns, replaces.as_deref()).await;
        match outcome {
            Ok((chain, key)) => self.store_certificate(&row, &names, &chain, &key, renewal).await,
            Err(failure) => {
                let status = if renewal {
                    DomainStatus::Renewing
                } else {
                    DomainStatus::Failed
                };
                self.record_failure(&row, status, failure.message, failure.problem)
                    .await
            }
        }
    }

    async fn order_certificate(
        &self,
        names: &[String],
        kinds: Vec<ChallengeKind>,
        dns: Option<Arc<dyn DnsProvider>>,
        replaces: Option<&str>,
    ) -> Result<(String, String), acme::AcmeFailure> {
        let client = self.acme_client().await?;
        let (key, csr) = acme::key_and_csr(names).map_err(|m| acme::AcmeFailure {
            message: m,
            problem: None,
        })?;
        let responder = EdgeResponder {
            platform: self.platform.clone(),
            dns,
            resolvers: self.platform.config.domains.dns_resolvers.clone(),
            txt_ids: Mutex::default(),
        };
        let chain = client.order(names, &kinds, &responder, &csr, replaces).await?;
        Ok((chain, key))
    }

    /// The challenges berth answers for a name, best first: HTTP-01 on the plain listener,
    /// unless only the TLS listener is on the CA's port (443); DNS-01 last, when a DNS
    /// provider is configured.
    fn challenge_kinds(&self, dns: bool) -> Vec<ChallengeKind> {
        let config = &self.platform.config;
        let mut kinds = if config.edge_listen.port() != 80 && config.edge_tls_listen.port() == 443 {
            vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01]
        } else {
            vec![ChallengeKind::Http01, ChallengeKind::TlsAlpn01]
        };
        if dns {
            kinds.push(ChallengeKind::Dns01);
        }
        kinds
    }

    /// The DNS provider that proves the base domain: the one of the server's first org
    /// (the operator's, made at first start).
    async fn base_dns_provider(&self) -> anyhow::Result<Option<Arc<dyn DnsProvider>>> {
        let Some(org_id) = self.platform.store.first_org().await? else {
            return Ok(None);
        };
        Ok(self.dns_provider(&org_id).await?)
    }

    /// Whether the base domain's wildcard certificate should be ordered now: the base
    /// domain is a public name, ACME is on, the operator's org has a DNS provider, the
    /// certificate is missing or due for renewal, and no retry is pending.
    async fn base_certificate_due(&self) -> bool {
        let Some(subject) = base_subject(&self.platform.config.base_domain) else {
            return false;
        };
        let now = now_ms();
        match self.platform.store.order_retry(&subject).await {
            Ok(Some((_, next))) if next > now => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
        match self.platform.store.get_certificate(&subject).await {
            Ok(Some(cert)) if cert.renew_at > now => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
        matches!(self.base_dns_provider().await, Ok(Some(_)))
    }

    /// Forgets the base domain's failed orders and wakes the certificate loop: something
    /// changed (a DNS provider was configured) that may make the next order succeed.
    pub(crate) async fn retry_base_certificate_now(&self) -> ServiceResult<()> {
        if let Some(subject) = base_subject(&self.platform.config.base_domain) {
            self.platform.store.clear_order_retry(&subject).await?;
        }
        self.platform.certificates.wake.notify_one();
        Ok(())
    }

    /// Orders (or renews) `*.<base domain>` through DNS-01 with the operator's DNS
    /// provider, so every site and preview is served over HTTPS.
    async fn advance_base_certificate(&self) -> anyhow::Result<()> {
        let Some(subject) = base_subject(&self.platform.config.base_domain) else {
            return Ok(());
        };
        let Some(dns) = self.base_dns_provider().await? else {
            return Ok(());
        };
        let names = vec![subject.clone()];
        tracing::info!(subject = %subject, "ordering the base domain's wildcard certificate");
        match self
            .order_certificate(
                &names,
                vec![ChallengeKind::Dns01],
                Some(dns),
                self.replaced_identifier(&subject).await.as_deref(),
            )
            .await
        {
            Ok((chain, key)) => {
                let (not_before, not_after) = acme::validity_ms(&chain).map_err(anyhow::Error::msg)?;
                berth_edge::certified_key_from_pem(&chain, &key).map_err(anyhow::Error::msg)?;
                let context = seal_context(&subject);
                let cert = CertificateRow {
                    id: new_id("crt"),
                    subject: subject.clone(),
                    domain_id: None,
                    names: serde_json::to_string(&names)?,
                    chain: self.platform.secrets.seal(&chain, &format!("{context}:chain"))?,
                    key: self.platform.secrets.seal(&key, &format!("{context}:key"))?,
                    not_before,
                    not_after,
                    renew_at: renew_at(not_before, not_after),
                    issued_at: now_ms(),
                };
                self.platform.store.put_certificate(&cert).await?;
                self.platform.certificates.ari_forget(&subject);
                self.platform.store.clear_order_retry(&subject).await?;
                tracing::info!(subject = %subject, expires = %rfc3339(not_after), "base domain certificate issued");
                publish(&self.platform).await?;
            }
            Err(failure) => {
                let store = &self.platform.store;
                let attempts = store.order_retry(&subject).await?.map_or(0, |r| r.0) + 1;
                let next = now_ms() + retry_delay(attempts).as_millis() as i64;
                store
                    .set_order_retry(&subject, attempts, next, &failure.message)
                    .await?;
                tracing::warn!(subject = %subject, attempts, next = %rfc3339(next), error = %failure.message, "the base domain's certificate order failed");
            }
        }
        Ok(())
    }

    /// The ARI identifier of the certificate a renewal of `subject` replaces, when the CA
    /// offers renewal information (a CA without it refuses an order naming one).
    async fn replaced_identifier(&self, subject: &str) -> Option<String> {
        if !self.platform.certificates.ari_supported() {
            return None;
        }
        let cert = self.platform.store.get_certificate(subject).await.ok()??;
        let (chain, _) = open_certificate(&self.platform, &cert).ok()?;
        acme::certificate_identifier(&chain).ok().map(|id| id.to_string())
    }

    /// Asks the CA for the renewal window of every served certificate that is due to be
    /// asked about, and moves its renewal time into the window. A CA without renewal
    /// information is asked again (whether it has it now) a day later.
    async fn check_renewal_windows(&self) {
        let state = &self.platform.certificates;
        let now = now_ms();
        let ms = |d: Duration| d.as_millis() as i64;
        let set_next_pass = |t: i64| state.ari.lock().unwrap_or_else(PoisonError::into_inner).next_pass = t;
        // Not due again while this pass runs, unless a certificate is stored meanwhile.
        set_next_pass(now + ms(ARI_MAX_WAIT));
        let store = &self.platform.store;
        let certs = match store.valid_certificates(now).await {
            Ok(certs) => certs,
            Err(e) => {
                tracing::warn!(error = %e, "listing certificates for renewal windows failed");
                return set_next_pass(now + ms(ARI_RETRY));
            }
        };
        if certs.is_empty() {
            // Nothing to ask about (and no reason to contact the CA at all).
            return;
        }
        let client = match self.acme_client().await {
            Ok(client) => client,
            Err(failure) => {
                tracing::debug!(error = %failure.message, "no ACME client for renewal windows yet");
                return set_next_pass(now + ms(ARI_RETRY));
            }
        };
        let mut next_pass = now + ms(ARI_MAX_WAIT);
        let mut moved = false;
        for cert in &certs {
            let due = state
                .ari
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_check
                .get(&cert.subject)
                .copied()
                .unwrap_or(0);
            if due > now {
                next_pass = next_pass.min(due);
                continue;
            }
            let Ok((chain, _)) = open_certificate(&self.platform, cert) else {
                continue;
            };
            let next = match client.renewal_window(&chain).await {
                Ok(None) => {
                    let mut ari = state.ari.lock().unwrap_or_else(PoisonError::into_inner);
                    ari.supported = Some(false);
                    ari.next_check.clear();
                    ari.next_pass = now + ms(ARI_MAX_WAIT);
                    return;
                }
                Ok(Some(window)) => {
                    state.ari.lock().unwrap_or_else(PoisonError::into_inner).supported = Some(true);
                    let renew = renewal_in_window(&window, cert.renew_at);
                    if renew != cert.renew_at {
                        if let Err(e) = store.set_renew_at(&cert.id, renew).await {
                            tracing::warn!(subject = %cert.subject, error = %e, "storing a renewal time failed");
                        } else {
                            tracing::info!(subject = %cert.subject, renew_at = %rfc3339(renew), window_start = %rfc3339(window.start_ms), window_end = %rfc3339(window.end_ms), "the CA's renewal window moves the renewal");
                            moved = true;
                        }
                    }
                    now + ms(window.ask_again.clamp(ARI_MIN_WAIT, ARI_MAX_WAIT))
                }
                Err(failure) => {
                    tracing::warn!(subject = %cert.subject, error = %failure.message, "asking the CA for a renewal window failed");
                    now + ms(ARI_RETRY)
                }
            };
            state
                .ari
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_check
                .insert(cert.subject.clone(), next);
            next_pass = next_pass.min(next);
        }
        {
            let mut ari = state.ari.lock().unwrap_or_else(PoisonError::into_inner);
            ari.next_check
                .retain(|subject, _| certs.iter().any(|c| &c.subject == subject));
            // A certificate stored during the pass asked for a pass at once: kept.
            ari.next_pass = ari.next_pass.min(next_pass);
        }
        if moved {
            state.wake.notify_one();
        }
    }

    /// berth's ACME client, its account restored from the database or created (once per
    /// directory) and stored sealed.
    async fn acme_client(&self) -> Result<Arc<AcmeClient>, acme::AcmeFailure> {
        let fail = |message: String| acme::AcmeFailure { message, problem: None };
        let mut slot = self.platform.certificates.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let config = &self.platform.config.domains;
        let ca_roots_pem = match &config.acme_ca_roots {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                fail(format!(
                    "reading --acme-ca-roots {}: {e}; point it at a PEM file of the CA's roots",
                    path.display()
                ))
            })?),
            None => None,
        };
        let settings = AcmeSettings {
            directory: config.acme_directory.clone(),
            email: config.acme_email.clone(),
            ca_roots_pem,
            eab: config.acme_eab_kid.clone().zip(config.acme_eab_hmac_key.clone()),
        };
        let store = &self.platform.store;
        let context = format!("acme-account:{}", settings.directory);
        let stored = store
            .acme_account(&settings.directory)
            .await
            .map_err(|e| fail(format!("reading the ACME account: {e}")))?;
        let stored = match stored {
            Some(sealed) => Some(
                self.platform
                    .secrets
                    .open(&sealed, &context)
                    .map_err(|e| fail(format!("the stored ACME account cannot be opened: {e}")))?,
            ),
            None => None,
        };
        let (client, created) = AcmeClient::connect(&settings, stored.as_deref()).await?;
        if let Some(credentials) = created {
            let sealed = self
                .platform
                .secrets
                .seal(&credentials, &context)
                .map_err(|e| fail(format!("sealing the ACME account: {e}")))?;
            store
                .insert_acme_account(&settings.directory, &sealed, now_ms())
                .await
                .map_err(|e| fail(format!("storing the ACME account: {e}")))?;
            tracing::info!(directory = %settings.directory, "created berth's ACME account");
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn store_certificate(
        &self,
        row: &DomainRow,
        names: &[String],
        chain: &str,
        key: &str,
        renewal: bool,
    ) -> anyhow::Result<()> {
        let (not_before, not_after) = acme::validity_ms(chain).map_err(anyhow::Error::msg)?;
        // Loaded once before it is stored, so a chain the edge cannot use is a failure
        // of this order rather than a certificate that silently is not served.
        berth_edge::certified_key_from_pem(chain, key).map_err(anyhow::Error::msg)?;
        let context = seal_context(&row.name);
        let now = now_ms();
        let cert = CertificateRow {
            id: new_id("crt"),
            subject: row.name.clone(),
            domain_id: Some(row.id.clone()),
            names: serde_json::to_string(names)?,
            chain: self.platform.secrets.seal(chain, &format!("{context}:chain"))?,
            key: self.platform.secrets.seal(key, &format!("{context}:key"))?,
            not_before,
            not_after,
            renew_at: renew_at(not_before, not_after),
            issued_at: now,
        };
        // The domain may have been removed while the order ran.
        if !self
            .platform
            .store
            .store_issued_certificate(row, &cert, renewal, &rfc3339(not_after), now)
            .await?
        {
            return Ok(());
        }
        self.platform.certificates.ari_forget(&row.name);
        tracing::info!(domain = %row.name, expires = %rfc3339(not_after), renewal, "certificate issued");
        publish(&self.platform).await?;
        crate::loops::reconciler::reconcile(&self.platform).await?;
        super::domains::routes_changed(&self.platform, &row.environment_id).await;
        Ok(())
    }

    async fn record_failure(
        &self,
        row: &DomainRow,
        status: DomainStatus,
        message: String,
        problem: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let attempts = row.attempts + 1;
        let next = now + retry_delay(attempts).as_millis() as i64;
        let stored = serde_json::to_string(&StoredProblem {
            message: message.clone(),
            problem,
            at: now,
        })?;
        self.platform
            .store
            .record_certificate_failure(
                row,
                status.as_str(),
                attempts,
                next,
                &stored,
                &message,
                &rfc3339(next),
                now,
            )
            .await?;
        tracing::warn!(domain = %row.name, attempts, next = %rfc3339(next), error = %message, "certificate order failed");
        if status != DomainStatus::Renewing {
            crate::loops::reconciler::reconcile(&self.platform).await?;
        }
        Ok(())
    }

    /// Marks a domain whose DNS just checked out as due for its certificate now (or, after
    /// failures, no sooner than a minute after the last one) and wakes the loop.
    pub(crate) async fn queue_certificate(&self, row: &DomainRow) -> ServiceResult<()> {
        let now = now_ms();
        let soonest = row
            .next_attempt_at
            .map_or(now, |t| t.min(now + RETRY_AFTER[0].as_millis() as i64));
        self.platform
            .store
            .set_issuance(
                &row.id,
                DomainStatus::Validating.as_str(),
                row.attempts,
                Some(soonest),
                row.problem.as_deref(),
                now,
            )
            .await
            .map_err(ServiceError::from)?;
        self.platform.certificates.wake.notify_one();
        Ok(())
    }
}

/// Answers HTTP-01 and TLS-ALPN-01 challenges through every replica's edge (see
/// `super::challenges`), DNS-01 through a DNS provider (waiting until berth's resolvers
/// see the record).
struct EdgeResponder {
    platform: Arc<super::Platform>,
    dns: Option<Arc<dyn DnsProvider>>,
    resolvers: Vec<std::net::SocketAddr>,
    /// TXT records created for DNS-01, by challenge name and token.
    txt_ids: Mutex<HashMap<(String, String), String>>,
}

/// The TXT name of a DNS-01 challenge for `name`.
fn dns01_name(name: &str) -> String {
    format!("_acme-challenge.{name}")
}

impl EdgeResponder {
    async fn publish_txt(&self, challenge: &Challenge) -> Result<(), String> {
        let Some(dns) = &self.dns else {
            return Err(format!(
                "{} needs a DNS-01 challenge and no DNS provider is configured (HOSTING_SET_CONFIG {{\"provider\": \"cloudflare\", …}})",
                challenge.name
            ));
        };
        let name = dns01_name(&challenge.name);
        let id = dns
            .set_txt(&name, &challenge.dns_value)
            .await
            .map_err(|e| format!("creating the DNS-01 record {name}: {e}"))?;
        self.txt_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((challenge.name.clone(), challenge.token.clone()), id);
        // The CA looks the record up as soon as it is told: wait until it shows here.
        let resolver = super::domains::Dns::new(&self.resolvers).map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + DNS_PROPAGATION;
        loop {
            let seen = resolver
                .query(&name, hickory_resolver::proto::rr::RecordType::TXT)
                .await
                .unwrap_or_default();
            if seen.iter().any(|v| v == &challenge.dns_value) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the DNS-01 record {name} did not show at the resolvers within {} s",
                    DNS_PROPAGATION.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Responder for EdgeResponder {
    fn publish<'a>(
        &'a self,
        challenge: &'a Challenge,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match challenge.kind {
                ChallengeKind::Http01 | ChallengeKind::TlsAlpn01 => {
                    super::challenges::publish(&self.platform, challenge).await
                }
                ChallengeKind::Dns01 => self.publish_txt(challenge).await,
            }
        })
    }

    fn withdraw<'a>(&'a self, challenge: &'a Challenge) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            match challenge.kind {
                ChallengeKind::Http01 | ChallengeKind::TlsAlpn01 => {
                    super::challenges::withdraw(&self.platform, challenge).await
                }
                ChallengeKind::Dns01 => {
                    let id = self
                        .txt_ids
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&(challenge.name.clone(), challenge.token.clone()));
                    if let (Some(dns), Some(id)) = (&self.dns, id)
                        && let Err(e) = dns.remove_txt(&dns01_name(&challenge.name), &id).await
                    {
                        tracing::warn!(name = %challenge.name, error = %e, "removing a DNS-01 record failed");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_with_a_third_left_whatever_the_lifetime() {
        let day = 86_400_000;
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        assert_eq!(renew_at(0, 45 * day), 30 * day);
        assert_eq!(renew_at(10 * day, 16 * day), 14 * day);
    }

    #[test]
    fn only_a_public_base_domain_gets_a_wildcard() {
        assert_eq!(base_subject("apps.example.com").as_deref(), Some("*.apps.example.com"));
        assert_eq!(base_subject("Example.COM.").as_deref(), Some("*.example.com"));
        for local in [
            "localhost",
            "apps.localhost",
            "box.local",
            "127.0.0.1",
            "[::1]",
            "intranet",
        ] {
            assert_eq!(base_subject(local), None, "{local}");
        }
    }

    #[test]
    fn retries_back_off_to_daily() {
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(600));
        assert_eq!(retry_delay(3), Duration::from_secs(6000));
        assert_eq!(retry_delay(4), Duration::from_secs(86_400));
        assert_eq!(retry_delay(40), Duration::from_secs(86_400));
    }
}
