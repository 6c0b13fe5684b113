//! Which certificate a Redfish BMC may present. BMCs mostly carry self-signed certificates whose
//! names do not match the address they are reached at, so "any certificate" (what scripts do with
//! `curl -k`) and "a certificate the system trusts" are both wrong: the configuration names the
//! BMC's own certificate (or the authority that signed it), or its SHA-256 fingerprint, and this
//! verifier accepts that and nothing else. The handshake's signature is still checked with the
//! presented certificate's key.

use crate::config::bmc::{Fingerprint, TlsTrust};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex, PoisonError};

/// Why the configured trust cannot be used (the file is unreadable or holds no certificate).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustError(pub String);

/// What the BMC presented when the verifier refused it, for the error message.
pub type Refusal = Arc<Mutex<Option<String>>>;

#[derive(Debug)]
pub struct PinnedVerifier {
    /// Certificates from the configured file (empty with a fingerprint).
    pinned: Vec<CertificateDer<'static>>,
    /// The same certificates as trust anchors: a BMC certificate signed by one of them, with the
    /// BMC's address among its names, is accepted too.
    chain: Option<Arc<WebPkiServerVerifier>>,
    fingerprint: Option<Fingerprint>,
    /// Where the configuration came from, for messages: the file or "fleet.hosts.X.bmc.fingerprint".
    source: String,
    provider: Arc<CryptoProvider>,
    refusal: Refusal,
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint_of(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint(bytes)
}

impl PinnedVerifier {
    /// The verifier for `trust`; `host` names the option in messages. Reads a certificate file now.
    pub fn new(trust: &TlsTrust, host: &str, provider: Arc<CryptoProvider>, refusal: Refusal) -> Result<PinnedVerifier, TrustError> {
        match trust {
            TlsTrust::Fingerprint(f) => Ok(PinnedVerifier {
                pinned: Vec::new(),
                chain: None,
                fingerprint: Some(*f),
                source: format!("fleet.hosts.{host}.bmc.fingerprint"),
                provider,
                refusal,
            }),
            TlsTrust::Certificate(file) => {
                let text = std::fs::read(file).map_err(|e| TrustError(format!("cannot read the BMC certificate {file}: {e}")))?;
                let pinned: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
                    .collect::<Result<_, _>>()
                    .map_err(|e| TrustError(format!("{file} is not a PEM certificate file: {e}")))?;
                if pinned.is_empty() {
                    return Err(TrustError(format!("{file} holds no certificate (expected -----BEGIN CERTIFICATE-----)")));
                }
                let mut roots = rustls::RootCertStore::empty();
                // A self-signed leaf that is not a valid anchor is still pinned exactly.
                let (_, _) = roots.add_parsable_certificates(pinned.iter().cloned());
                let chain = if roots.is_empty() {
                    None
                } else {
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()
                };
                Ok(PinnedVerifier { pinned, chain, fingerprint: None, source: file.clone(), provider, refusal })
            }
        }
    }

    fn refuse(&self, why: String) -> rustls::Error {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of(end_entity);
        if let Some(wanted) = self.fingerprint {
            return if presented == wanted {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(self.refuse(format!("its certificate's SHA-256 fingerprint is {presented}, not {wanted} ({})", self.source)))
            };
        }
        if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        let chained = match &self.chain {
            Some(chain) => chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|e| e.to_string()),
            None => Err("no certificate in it can sign another".into()),
        };
        chained.map_err(|why| {
            self.refuse(format!("it presented a certificate (SHA-256 {presented}) that is neither in {} nor signed by one in it for this address ({why})", self.source))
        })
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client configuration that trusts exactly what `trust` says.
pub fn client_config(trust: &TlsTrust, host: &str, refusal: Refusal) -> Result<rustls::ClientConfig, TrustError> {
    // ring, not aws-lc-rs: no C build with cmake, and a BMC's TLS is classic (no BMC speaks the
    // post-quantum key exchange ring lacks, which is why rustls 0.23.48 deprecates this).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedVerifier::new(trust, host, provider.clone(), refusal)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}
