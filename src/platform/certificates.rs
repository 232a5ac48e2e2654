//! The certificate loop's shared state: berth's ACME client once its account is known,
//! the loop's wake-up, whether the base domain's wildcard is loaded and what the CA said
//! about renewal windows. The loop and its rules are in `service::certificates`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::acme::AcmeClient;

/// Certificate state kept by the platform: berth's ACME client once its account is known,
/// and the loop's wake-up.
#[derive(Default)]
pub struct CertState {
    pub(crate) client: tokio::sync::Mutex<Option<Arc<AcmeClient>>>,
    /// Wakes the certificate loop (a domain became due).
    pub wake: Notify,
    /// Whether the edge holds a certificate for `*.<base domain>` (sites' URLs are https).
    pub(crate) base_https: std::sync::atomic::AtomicBool,
    /// What berth knows of the CA's renewal information.
    pub(crate) ari: Mutex<AriState>,
    /// The TLS-ALPN-01 certificates this replica made for the stored challenges, by name
    /// and key authorization; its lock makes loads of the challenges one at a time.
    pub(crate) challenge_keys: tokio::sync::Mutex<HashMap<(String, String), Arc<berth_edge::CertifiedKey>>>,
}

/// The CA's renewal information (ARI) as far as berth has asked.
#[derive(Default)]
pub(crate) struct AriState {
    /// Whether the CA offers it (`None`: not asked yet).
    pub(crate) supported: Option<bool>,
    /// When each certificate (by subject) is asked about next (ms).
    pub(crate) next_check: HashMap<String, i64>,
    /// When the next pass is due (ms); 0 once a certificate is new.
    pub(crate) next_pass: i64,
}

impl CertState {
    /// A new certificate for `subject`: the CA is asked about it at the next pass.
    pub(crate) fn ari_forget(&self, subject: &str) {
        let mut ari = self.ari.lock().unwrap_or_else(PoisonError::into_inner);
        ari.next_check.remove(subject);
        ari.next_pass = 0;
    }

    pub(crate) fn ari_next_pass(&self) -> i64 {
        self.ari.lock().unwrap_or_else(PoisonError::into_inner).next_pass
    }

    pub(crate) fn ari_supported(&self) -> bool {
        self.ari.lock().unwrap_or_else(PoisonError::into_inner).supported == Some(true)
    }
}

impl CertState {
    /// Whether every site's host is served over HTTPS (the base domain's wildcard
    /// certificate is loaded).
    pub fn base_https(&self) -> bool {
        self.base_https.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for CertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertState").finish_non_exhaustive()
    }
}

/// The context a certificate of `subject` is sealed under (its chain under
/// `<context>:chain`, its key under `<context>:key`).
pub(crate) fn seal_context(subject: &str) -> String {
    format!("certificate:{subject}")
}

/// A stored certificate's PEM chain and private key, opened.
pub(crate) fn open(
    platform: &super::Platform,
    row: &crate::store::certificates::CertificateRow,
) -> anyhow::Result<(String, String)> {
    let context = seal_context(&row.subject);
    Ok((
        platform.secrets.open(&row.chain, &format!("{context}:chain"))?,
        platform.secrets.open(&row.key, &format!("{context}:key"))?,
    ))
}
