//! How the SCIM server authenticates to ZITADEL: a personal access token, or a
//! machine key used for the JWT profile grant (RFC 7523), whose access token is
//! cached until shortly before it expires.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::error::ZitadelError;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Renew this long before the token expires, so no request carries a token
/// that dies in flight.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
pub(crate) const TOKEN_SCOPE: &str = "openid urn:zitadel:iam:org:project:id:zitadel:aud";

/// A machine key file, as the ZITADEL console downloads it or `AddKey` returns it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyFile {
    pub key_id: String,
    pub key: String,
    pub user_id: String,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile").field("key_id", &self.key_id).field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

pub(crate) struct JwtSigner {
    pub key_id: String,
    pub user_id: String,
    key: ring::signature::RsaKeyPair,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("key_id", &self.key_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

fn pem_der(pem: &str) -> Result<(String, Vec<u8>), ZitadelError> {
    let bad = |why: &str| ZitadelError::Credentials(format!("the machine key is not a PEM RSA key: {why}"));
    let begin = pem.find("-----BEGIN ").ok_or_else(|| bad("no BEGIN line"))?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----").ok_or_else(|| bad("malformed BEGIN line"))?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end = rest.find("-----END ").ok_or_else(|| bad("no END line"))?;
    let b64: String = rest[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("invalid base64"))?;
    Ok((label, der))
}

impl JwtSigner {
    pub(crate) fn from_key_file(text: &str) -> Result<Self, ZitadelError> {
        let kf: KeyFile = serde_json::from_str(text).map_err(|e| {
            ZitadelError::Credentials(format!(
                "the key file is not ZITADEL's machine key JSON ({{\"type\":\"serviceaccount\",\"keyId\",\"key\",\"userId\"}}): {e}"
            ))
        })?;
        let (label, der) = pem_der(&kf.key)?;
        let key = if label.contains("RSA PRIVATE KEY") {
            ring::signature::RsaKeyPair::from_der(&der)
        } else {
            ring::signature::RsaKeyPair::from_pkcs8(&der)
        }
        .map_err(|e| ZitadelError::Credentials(format!("the machine key is not a usable RSA key: {e}")))?;
        Ok(JwtSigner { key_id: kf.key_id, user_id: kf.user_id, key })
    }

    /// An API application's key JSON (`{"type":"application","keyId","key","appId","clientId"}`):
    /// the assertions it signs name the client id as `iss` and `sub` (private-key JWT
    /// client authentication, RFC 7523 §2.2).
    pub(crate) fn from_application_key_file(text: &str) -> Result<Self, ZitadelError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct AppKeyFile {
            key_id: String,
            key: String,
            client_id: String,
        }
        let kf: AppKeyFile = serde_json::from_str(text).map_err(|e| {
            ZitadelError::Credentials(format!(
                "the key file is not ZITADEL's API application key JSON ({{\"type\":\"application\",\"keyId\",\"key\",\"appId\",\"clientId\"}}): {e}"
            ))
        })?;
        let file = json!({"keyId": kf.key_id, "key": kf.key, "userId": kf.client_id}).to_string();
        Self::from_key_file(&file)
    }

    /// The signed assertion for the token request.
    pub(crate) fn assertion(&self, audience: &str, now: SystemTime) -> Result<String, ZitadelError> {
        self.assertion_for(audience, now, 3600)
    }

    /// An assertion valid for `lifetime_secs`.
    pub(crate) fn assertion_for(
        &self,
        audience: &str,
        now: SystemTime,
        lifetime_secs: u64,
    ) -> Result<String, ZitadelError> {
        let iat = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let header = json!({"alg": "RS256", "kid": self.key_id, "typ": "JWT"});
        let claims = json!({
            "iss": self.user_id,
            "sub": self.user_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + lifetime_secs,
        });
        let signing_input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| ZitadelError::Credentials("signing the JWT assertion failed".into()))?;
        Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
    }
}

pub(crate) enum Credential {
    Pat(String),
    Key(Box<JwtSigner>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Pat(_) => f.write_str("Credential::Pat(<redacted>)"),
            Credential::Key(k) => write!(f, "Credential::Key({k:?})"),
        }
    }
}

impl Credential {
    pub(crate) fn load(pat_file: Option<&Path>, key_file: Option<&Path>) -> Result<Self, ZitadelError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| ZitadelError::Credentials(format!("cannot read {}: {e}", p.display())))
        };
        match (pat_file, key_file) {
            (Some(p), None) => {
                let pat = read(p)?.trim().to_string();
                if pat.is_empty() {
                    return Err(ZitadelError::Credentials(format!("{} is empty", p.display())));
                }
                Ok(Credential::Pat(pat))
            }
            (None, Some(k)) => Ok(Credential::Key(Box::new(JwtSigner::from_key_file(&read(k)?)?))),
            _ => Err(ZitadelError::Credentials("set exactly one of patFile and keyFile".into())),
        }
    }

    /// A credential from its text: a machine key JSON, or else a PAT.
    pub(crate) fn parse(text: &str) -> Result<Self, ZitadelError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(ZitadelError::Credentials("the credential is empty".into()));
        }
        if t.starts_with('{') {
            Ok(Credential::Key(Box::new(JwtSigner::from_key_file(t)?)))
        } else {
            Ok(Credential::Pat(t.to_string()))
        }
    }
}

/// A cached access token.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub token: String,
    pub renew_at: Instant,
}

impl CachedToken {
    pub(crate) fn new(token: String, expires_in: Duration, now: Instant) -> Self {
        let renew_at = now + expires_in.saturating_sub(RENEW_MARGIN).max(expires_in / 2);
        CachedToken { token, renew_at }
    }
    pub(crate) fn fresh(&self, now: Instant) -> bool {
        now < self.renew_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway 2048-bit test key (generated for these tests only).
    const TEST_KEY: &str = include_str!("testdata/test_rsa_key.pem");

    #[test]
    fn signs_a_verifiable_rs256_assertion() {
        let kf = json!({"type": "serviceaccount", "keyId": "k1", "key": TEST_KEY, "userId": "u1"}).to_string();
        let s = JwtSigner::from_key_file(&kf).unwrap();
        let jwt = s.assertion("https://id.example.com", UNIX_EPOCH + Duration::from_secs(1_800_000_000)).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], "k1");
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some("u1"), Some("u1")));
        assert_eq!(claims["aud"], "https://id.example.com");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&s.key).as_ref().to_vec(),
        );
        let sig = B64URL.decode(parts[2]).unwrap();
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
    }

    #[test]
    fn bad_key_files_are_explained() {
        let e = JwtSigner::from_key_file("{}").unwrap_err().to_string();
        assert!(e.contains("machine key JSON"), "{e}");
        let e = JwtSigner::from_key_file(&json!({"keyId": "k", "key": "nope", "userId": "u"}).to_string()).unwrap_err();
        assert!(e.to_string().contains("PEM"), "{e}");
        assert!(format!("{:?}", Credential::Pat("secret-pat".into())).contains("redacted"));
    }

    #[test]
    fn tokens_renew_before_expiry() {
        let now = Instant::now();
        let t = CachedToken::new("t".into(), Duration::from_secs(43199), now);
        assert!(t.fresh(now + Duration::from_secs(43000)));
        assert!(!t.fresh(now + Duration::from_secs(43150)));
    }
}
