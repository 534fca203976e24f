//! The rustls configuration for one cluster: which server certificates to trust and
//! which client certificate to present.
//!
//! reqwest is built without a default crypto provider (aws-lc is slow to build), so
//! the `ClientConfig` is assembled here with the ring provider and handed to reqwest
//! as a preconfigured backend. reqwest leaves ALPN alone for preconfigured configs, so
//! it is set here: `h2` first, so the API server's HTTP/2 multiplexes our requests
//! over one connection.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, InconsistentKeys, RootCertStore, SignatureScheme};

use super::config::{ClusterConfig, ClusterConfigError};

/// Builds the TLS client config for `cluster`, presenting `identity` if given.
pub(crate) fn client_config(
    cluster: &ClusterConfig,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, ClusterConfigError> {
    let fail = |problem: String| ClusterConfigError::Tls {
        origin: cluster.origin.clone(),
        problem,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = server_verifier(cluster, provider.clone()).map_err(fail)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("no usable TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => {
            let certified = certified_key(chain, key, &provider).map_err(fail)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Pairs the client certificate with its key. Unlike rustls's
/// `with_client_auth_cert`, a certificate webpki cannot parse (an X.509 v1 certificate
/// from a hand-rolled `openssl x509 -req`, which Go's TLS and so kubectl accept) is
/// not an error; only a key that provably does not match the certificate is.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    if chain.is_empty() {
        return Err("the client certificate is empty".into());
    }
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the client key is not usable: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err("the client key does not belong to the client certificate".into())
        }
        _ => Ok(certified),
    }
}

fn server_verifier(
    cluster: &ClusterConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    if cluster.insecure_skip_tls_verify {
        tracing::warn!(origin = %cluster.origin, "TLS verification of the API server is disabled (insecure-skip-tls-verify)");
        return Ok(Arc::new(NoVerification(provider)));
    }
    let inner: Arc<dyn ServerCertVerifier> = match &cluster.ca {
        Some(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("the certificate authority is not usable: {e}"))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("the certificate authority is not usable: {e}"))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("the system trust store is not usable: {e}"))?,
        ),
    };
    match &cluster.tls_server_name {
        None => Ok(inner),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| format!("tls-server-name \"{name}\" is not a valid DNS name or IP"))?;
            Ok(Arc::new(OverrideName { inner, name }))
        }
    }
}

/// Verifies the server certificate against `tls-server-name` instead of the URL host
/// (e.g. an API server reached by IP whose certificate names `kubernetes`).
#[derive(Debug)]
struct OverrideName {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for OverrideName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure-skip-tls-verify`: accepts any certificate, but still checks that the
/// handshake is signed by it (so the session keys are the peer's).
struct NoVerification(Arc<CryptoProvider>);

impl fmt::Debug for NoVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerification")
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::config::tests::{CERT_PEM, KEY_PEM};
    use crate::kube::config::{Auth, parse_certs, parse_key};

    /// A key that does not belong to `CERT_PEM`.
    const OTHER_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3zIoosiLtxONnQex
9vKUD3dC97+AwjwUG2SrgKQ39d2hRANCAATQHRfOw4LoA7aA23rUg9auiBRbFi+t
ziEf2aR7gQwoH02O4VLHcPjbirPx+bPx0/4kqc7ahE18b/0+WNnQtCpw
-----END PRIVATE KEY-----
";
    /// An X.509 v1 certificate (no extensions) for `KEY_PEM`.
    const V1_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBIjCByQIUOGJe7OVGwAdquClEfOPtfilr8dcwCgYIKoZIzj0EAwIwFDESMBAG
A1UEAwwJdjEtY2xpZW50MB4XDTI2MTEyNDA5MDkxNFoXDTM2MTEyMTA5MDkxNFow
FDESMBAGA1UEAwwJdjEtY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
TAsoX/Lj40+Fz5yqiS+m12L8QpYI2IukgLCTQburKjTVz0JsWKHh1O27iu8MMfab
TBtiahV6FLLyvtEG3SunyTAKBggqhkjOPQQDAgNIADBFAiEAqjqvL7FYiG848Ory
oIuF7ttZ+4RvX9UOwHQoG1He0vYCIGHuKc2UTgz7gYVORh1GoBPjOJu0fZSyxoPd
EHRZv+C+
-----END CERTIFICATE-----
";

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            server: reqwest::Url::parse("https://127.0.0.1:6443").unwrap(),
            ca: Some(parse_certs(CERT_PEM.as_bytes()).unwrap()),
            insecure_skip_tls_verify: false,
            auth: Auth::None,
            tls_server_name: Some("kubernetes".into()),
            default_namespace: "default".into(),
            origin: "test".into(),
        }
    }

    #[test]
    fn builds_with_ca_identity_and_alpn() {
        let identity = (
            parse_certs(CERT_PEM.as_bytes()).unwrap(),
            parse_key(KEY_PEM.as_bytes()).unwrap(),
        );
        let config = client_config(&cluster(), Some(identity)).expect("tls config");
        assert_eq!(config.alpn_protocols[0], b"h2");
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn v1_client_certificates_work_but_mismatched_keys_do_not() {
        let v1 = (
            parse_certs(V1_CERT_PEM.as_bytes()).unwrap(),
            parse_key(KEY_PEM.as_bytes()).unwrap(),
        );
        client_config(&cluster(), Some(v1)).expect("a v1 certificate is accepted");
        let mismatched = (
            parse_certs(CERT_PEM.as_bytes()).unwrap(),
            parse_key(OTHER_KEY_PEM.as_bytes()).unwrap(),
        );
        let err = client_config(&cluster(), Some(mismatched)).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn insecure_and_platform_roots_build() {
        let mut insecure = cluster();
        insecure.ca = None;
        insecure.insecure_skip_tls_verify = true;
        client_config(&insecure, None).expect("insecure config");
        let mut system = cluster();
        system.ca = None;
        system.tls_server_name = None;
        client_config(&system, None).expect("platform roots");
    }
}
