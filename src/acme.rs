//! The ACME (RFC 8555) adapter: berth's one account at a certificate authority, orders
//! for a set of names, and their challenges answered through a [`Responder`]. It speaks
//! the protocol (through instant-acme, over berth's own bounded HTTP client so private CA
//! roots and timeouts apply) and translates its failures into words and problem
//! documents; when to order, renew or retry is decided by the service layer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

/// Longest an ACME request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest ACME response read (a certificate chain is a few KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest one order may take from creation to certificate.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// Where and as whom berth asks for certificates.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// Contact email (optional).
    pub email: Option<String>,
    /// PEM of extra roots to trust when talking to the ACME server.
    pub ca_roots_pem: Option<Vec<u8>>,
    /// External account binding: key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
}

/// The kind of proof of control a challenge asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A file at `http://<name>/.well-known/acme-challenge/<token>` (port 80).
    Http01,
    /// A self-signed certificate for `acme-tls/1` at `<name>:443`.
    TlsAlpn01,
    /// A TXT record at `_acme-challenge.<name>`.
    Dns01,
}

impl ChallengeKind {
    /// The ACME name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }

    fn acme(self) -> ChallengeType {
        match self {
            Self::Http01 => ChallengeType::Http01,
            Self::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Self::Dns01 => ChallengeType::Dns01,
        }
    }
}

/// One challenge to answer.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// Its kind.
    pub kind: ChallengeKind,
    /// The name it proves (without `*.` for a wildcard's).
    pub name: String,
    /// The token (HTTP-01's file name).
    pub token: String,
    /// The key authorization (HTTP-01's file content).
    pub key_authorization: String,
    /// SHA-256 of the key authorization (TLS-ALPN-01's extension value).
    pub digest: [u8; 32],
    /// The TXT record's value (DNS-01).
    pub dns_value: String,
}

/// Answers challenges: the edge for HTTP-01 and TLS-ALPN-01, a DNS provider for DNS-01.
pub trait Responder: Send + Sync {
    /// Makes the answer visible to the CA.
    fn publish<'a>(&'a self, challenge: &'a Challenge)
    -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Takes it away again (after the order, whatever its outcome).
    fn withdraw<'a>(&'a self, challenge: &'a Challenge) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A CA's suggested renewal window for a certificate (ACME Renewal Information, RFC 9773).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Start of the window (ms since the epoch).
    pub start_ms: i64,
    /// End of the window (ms since the epoch).
    pub end_ms: i64,
    /// When the CA wants to be asked again (its Retry-After).
    pub ask_again: Duration,
}

/// Why an order did not end in a certificate.
#[derive(Clone, Debug)]
pub struct AcmeFailure {
    /// What happened, in words, with what to do.
    pub message: String,
    /// The CA's problem document, when it sent one.
    pub problem: Option<serde_json::Value>,
}

impl AcmeFailure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            problem: None,
        }
    }

    fn from_acme(context: &str, e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(problem) => {
                let doc = Some(problem_document(&problem));
                let kind = problem.r#type.as_deref().unwrap_or("problem");
                let detail = problem.detail.as_deref().unwrap_or("no detail");
                Self {
                    message: format!("{context}: the certificate authority answered {kind}: {detail}"),
                    problem: doc,
                }
            }
            other => Self::new(format!("{context}: {other}")),
        }
    }
}

/// The client of one ACME directory, with berth's account there.
pub struct AcmeClient {
    account: Account,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeClient")
            .field("account", &self.account.id())
            .finish()
    }
}

impl AcmeClient {
    /// Restores the account from its stored credentials (JSON), or creates one and returns
    /// the credentials to store (they hold the account's private key: seal them).
    pub async fn connect(settings: &AcmeSettings, stored: Option<&str>) -> Result<(Self, Option<String>), AcmeFailure> {
        let http = ReqwestAcmeHttp::new(settings.ca_roots_pem.as_deref())?;
        let builder = Account::builder_with_http(Box::new(http));
        if let Some(stored) = stored {
            let credentials: AccountCredentials = serde_json::from_str(stored)
                .map_err(|e| AcmeFailure::new(format!("the stored ACME account cannot be read: {e}")))?;
            let account = builder
                .from_credentials(credentials)
                .await
                .map_err(|e| AcmeFailure::from_acme("restoring the ACME account", e))?;
            return Ok((Self { account }, None));
        }
        let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &settings.eab {
            Some((kid, hmac)) => {
                use base64::Engine as _;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(hmac.trim_end_matches('='))
                    .map_err(|_| {
                        AcmeFailure::new("the ACME EAB HMAC key is not base64url; copy it as the CA gave it")
                    })?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| AcmeFailure::from_acme(&format!("creating an ACME account at {}", settings.directory), e))?;
        let stored = serde_json::to_string(&credentials)
            .map_err(|e| AcmeFailure::new(format!("serialising the ACME account: {e}")))?;
        Ok((Self { account }, Some(stored)))
    }

    /// The CA's suggested renewal window for the certificate of `chain_pem` (its leaf);
    /// `None` when the CA's directory offers no renewal information.
    pub async fn renewal_window(&self, chain_pem: &str) -> Result<Option<RenewalWindow>, AcmeFailure> {
        let id = certificate_identifier(chain_pem).map_err(AcmeFailure::new)?;
        match self.account.renewal_info(&id).await {
            Ok((info, ask_again)) => {
                let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
                Ok(Some(RenewalWindow {
                    start_ms: ms(info.suggested_window.start),
                    end_ms: ms(info.suggested_window.end),
                    ask_again,
                }))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(AcmeFailure::from_acme(
                "asking the CA for the certificate's renewal window",
                e,
            )),
        }
    }

    /// Orders a certificate for `names` (the first is the subject), answering one
    /// challenge of the first offered kind in `kinds` per name through `responder`, and
    /// returns the PEM chain for the key in `csr_der`'s request. `replaces` names the
    /// certificate a renewal replaces (RFC 9773; only for a CA that offers renewal
    /// information). Challenges are withdrawn whatever the outcome.
    pub async fn order(
        &self,
        names: &[String],
        kinds: &[ChallengeKind],
        responder: &dyn Responder,
        csr_der: &[u8],
        replaces: Option<&str>,
    ) -> Result<String, AcmeFailure> {
        let mut published = Vec::new();
        let result = tokio::time::timeout(
            ORDER_TIMEOUT,
            self.order_inner(names, kinds, responder, csr_der, replaces, &mut published),
        )
        .await
        .unwrap_or_else(|_| {
            Err(AcmeFailure::new(format!(
                "the order took longer than {} s; the CA may be slow or unreachable",
                ORDER_TIMEOUT.as_secs()
            )))
        });
        for challenge in &published {
            responder.withdraw(challenge).await;
        }
        result
    }

    async fn order_inner(
        &self,
        names: &[String],
        kinds: &[ChallengeKind],
        responder: &dyn Responder,
        csr_der: &[u8],
        replaces: Option<&str>,
        published: &mut Vec<Challenge>,
    ) -> Result<String, AcmeFailure> {
        let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let plain = NewOrder::new(&identifiers);
        let placed = match replaces.and_then(|r| r.split_once('.')) {
            Some((aki, serial)) => {
                let replacing = NewOrder::new(&identifiers).replaces(CertificateIdentifier {
                    authority_key_identifier: aki.into(),
                    serial: serial.into(),
                });
                match self.account.new_order(&replacing).await {
                    // A CA that offers renewal information but does not take `replaces`
                    // (it does not reflect it) still issues a plain order.
                    Err(instant_acme::Error::Other(e)) if e.to_string().starts_with("replaces field mismatch") => {
                        tracing::info!("the CA ignored which certificate the order replaces; ordering without it");
                        self.account.new_order(&plain).await
                    }
                    other => other,
                }
            }
            None => self.account.new_order(&plain).await,
        };
        let mut order = placed.map_err(|e| AcmeFailure::from_acme("placing the order", e))?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| AcmeFailure::from_acme("reading an authorization", e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeFailure::new(format!(
                        "an authorization for {} is {other:?}; it cannot be answered",
                        authz.identifier()
                    )));
                }
            }
            let name = authz.identifier().to_string();
            let offered: Vec<ChallengeType> = authz.challenges.iter().map(|c| c.r#type.clone()).collect();
            let Some(kind) = kinds.iter().copied().find(|k| offered.contains(&k.acme())) else {
                return Err(AcmeFailure::new(format!(
                    "the CA offers no challenge berth can answer for {name} (offered: {}; berth answers {})",
                    offered.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", "),
                    kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            let mut handle = authz
                .challenge(kind.acme())
                .ok_or_else(|| AcmeFailure::new(format!("the {} challenge for {name} vanished", kind.as_str())))?;
            let key_authorization = handle.key_authorization();
            let mut digest = [0u8; 32];
            digest.copy_from_slice(key_authorization.digest().as_ref());
            let challenge = Challenge {
                kind,
                name: name.trim_start_matches("*.").to_string(),
                token: handle.token.clone(),
                key_authorization: key_authorization.as_str().to_string(),
                digest,
                dns_value: key_authorization.dns_value(),
            };
            responder.publish(&challenge).await.map_err(AcmeFailure::new)?;
            published.push(challenge);
            handle
                .set_ready()
                .await
                .map_err(|e| AcmeFailure::from_acme("telling the CA the challenge is ready", e))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(ORDER_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| AcmeFailure::from_acme("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(self.invalid_order(&mut order, status).await);
        }
        order
            .finalize_csr(csr_der)
            .await
            .map_err(|e| AcmeFailure::from_acme("finalizing the order", e))?;
        order
            .poll_certificate(&retries)
            .await
            .map_err(|e| AcmeFailure::from_acme("downloading the certificate", e))
    }

    /// The failure of an order that did not become ready: the failed challenge's error
    /// (what the CA saw), which is the part a person can act on.
    async fn invalid_order(&self, order: &mut instant_acme::Order, status: OrderStatus) -> AcmeFailure {
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    let doc = Some(problem_document(problem));
                    return AcmeFailure {
                        message: format!(
                            "the CA could not validate {} by {:?}: {}",
                            authz.identifier(),
                            challenge.r#type,
                            problem.detail.as_deref().unwrap_or("no detail")
                        ),
                        problem: doc,
                    };
                }
            }
        }
        AcmeFailure::new(format!("the order ended {status:?} without a reason from the CA"))
    }
}

/// An RFC 8555 problem document as JSON (type, detail, status, subproblems).
fn problem_document(problem: &instant_acme::Problem) -> serde_json::Value {
    serde_json::json!({
        "type": problem.r#type,
        "detail": problem.detail,
        "status": problem.status,
        "subproblems": problem.subproblems.iter().map(|s| serde_json::json!({
            "type": s.r#type,
            "detail": s.detail,
            "identifier": s.identifier.as_ref().map(|i| format!("{i:?}")),
        })).collect::<Vec<_>>(),
    })
}

/// A private key and a certificate signing request for `names`.
pub fn key_and_csr(names: &[String]) -> Result<(String, Vec<u8>), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("making a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("naming the request: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("making the signing request: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The self-signed certificate (PEM chain, PEM key) that answers a TLS-ALPN-01
/// challenge for `name` (RFC 8737: the name as its only SAN and the key authorization's
/// digest in a critical `acmeIdentifier` extension).
pub fn tls_alpn_certificate(name: &str, digest: &[u8; 32]) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("making a key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| format!("naming the certificate: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the challenge certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// When a PEM chain's first certificate stops and starts being valid (ms since the epoch).
pub fn validity_ms(chain_pem: &str) -> Result<(i64, i64), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp() * 1000,
        validity.not_after.timestamp() * 1000,
    ))
}

/// The ARI identifier of the leaf of `chain_pem` (RFC 9773 section 4.1): the base64url
/// authority key identifier, a dot, the base64url serial number's DER content.
pub fn certificate_identifier(chain_pem: &str) -> Result<CertificateIdentifier<'static>, String> {
    use base64::Engine as _;
    use x509_parser::extensions::ParsedExtension;
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .ok_or("the certificate has no authority key identifier, so the CA cannot be asked about it")?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(CertificateIdentifier {
        authority_key_identifier: b64.encode(aki).into(),
        serial: b64.encode(cert.tbs_certificate.raw_serial()).into(),
    })
}

/// A transport error with its causes in the text ("error sending request" alone does not
/// say that the CA's certificate was refused or the connection was reset).
fn with_causes(e: reqwest::Error) -> instant_acme::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    instant_acme::Error::Other(text.into())
}

/// instant-acme's HTTP over reqwest: berth's timeouts, a bounded body, and the operator's
/// extra roots beside the system's.
struct ReqwestAcmeHttp {
    client: reqwest::Client,
}

impl ReqwestAcmeHttp {
    fn new(extra_roots_pem: Option<&[u8]>) -> Result<Self, AcmeFailure> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AcmeFailure::new(format!("the ACME CA roots file is not PEM certificates: {e}")))?;
            if roots.is_empty() {
                return Err(AcmeFailure::new("the ACME CA roots file holds no certificate"));
            }
            builder = builder.tls_certs_merge(roots);
        }
        let client = builder
            .build()
            .map_err(|e| AcmeFailure::new(format!("making the ACME HTTP client: {e}")))?;
        Ok(Self { client })
    }
}

impl HttpClient for ReqwestAcmeHttp {
    fn request(
        &self,
        req: axum::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let mut request = client.request(parts.method, parts.uri.to_string()).body(body);
            for (name, value) in &parts.headers {
                request = request.header(name, value);
            }
            let mut response = request.send().await.map_err(with_causes)?;
            let mut head = axum::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                head = head.header(name, value);
            }
            let mut collected = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(with_causes)? {
                if collected.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(instant_acme::Error::Str(
                        "the ACME server's response is larger than 1 MiB",
                    ));
                }
                collected.extend_from_slice(&chunk);
            }
            let response = head
                .body(http_body_util::Full::new(Bytes::from(collected)))
                .map_err(instant_acme::Error::Http)?;
            Ok(BytesResponse::from(response))
        })
    }
}
