//! OIDC discovery and the JWT-profile token endpoint (docs/zitadel-contract.md §2.2), plus the RSA
//! helpers the fake needs (ring: PKCS#1 keys, RS256 signatures).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::state::*;
use super::wire::decode_bytes;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ZITADEL_AUD_SCOPE: &str = "urn:zitadel:iam:org:project:id:zitadel:aud";

pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The DER body of the first PEM block with the given label.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    decode_bytes(&b64, label).ok()
}

fn key_pair(pem: &str) -> Result<RsaKeyPair, String> {
    let der = pem_body(pem, "RSA PRIVATE KEY").ok_or("not a PKCS#1 RSA PRIVATE KEY PEM")?;
    RsaKeyPair::from_der(&der).map_err(|e| format!("rejected RSA key: {e}"))
}

/// The PKCS#1 `RSAPublicKey` DER of a PKCS#1 private key PEM.
pub fn public_key_of_private_pem(pem: &str) -> Result<Vec<u8>, String> {
    Ok(key_pair(pem)?.public_key().as_ref().to_vec())
}

/// One DER TLV: (tag, contents, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = b.get(hdr..hdr + len)?;
    Some((tag, body, &b[hdr + len..]))
}

/// A public key PEM as PKCS#1 `RSAPublicKey` DER: accepts `RSA PUBLIC KEY` (PKCS#1) and
/// `PUBLIC KEY` (SubjectPublicKeyInfo, RSA only).
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    if let Some(der) = pem_body(pem, "RSA PUBLIC KEY") {
        return Ok(der);
    }
    let spki = pem_body(pem, "PUBLIC KEY").ok_or("publicKey is not a PEM public key")?;
    let (_, seq, _) = der_tlv(&spki).ok_or("bad SubjectPublicKeyInfo")?;
    let (_, _alg, rest) = der_tlv(seq).ok_or("bad AlgorithmIdentifier")?;
    let (tag, bits, _) = der_tlv(rest).ok_or("bad subjectPublicKey")?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return Err("bad subjectPublicKey bit string".into());
    }
    Ok(bits[1..].to_vec())
}

fn b64url_json(part: &str) -> Option<Value> {
    let raw = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Signs a JWT-profile assertion with a ZITADEL key file, as a client would: header
/// `{alg:RS256, kid:keyId}`, claims `iss = sub = userId`, `aud`, `iat = now + iat_offset`,
/// `exp = iat + lifetime`. For tests of the fake and of clients.
pub fn jwt_assertion(key_file: &str, audience: &str, iat_offset_secs: i64, lifetime_secs: i64) -> String {
    let kf: Value = serde_json::from_str(key_file).expect("key file JSON");
    let pem = kf["key"].as_str().expect("key file: key");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + iat_offset_secs;
    // Service-account key files name the user, application key files the client.
    let subject = if kf["type"] == "application" { &kf["clientId"] } else { &kf["userId"] };
    let claims = json!({
        "iss": subject, "sub": subject, "aud": audience, "iat": now, "exp": now + lifetime_secs,
    });
    sign_jwt(pem, kf["keyId"].as_str().unwrap_or_default(), &claims)
}

/// A compact RS256 JWS of `claims` with header `{alg, typ, kid}`.
pub fn sign_jwt(pem: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let kp = key_pair(pem).expect("key file: RSA key");
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The parts of a compact JWS: header, claims, the signed input and the signature.
pub struct Jws {
    pub header: Value,
    pub claims: Value,
    pub input: String,
    pub signature: Vec<u8>,
}

pub fn parse_jws(jwt: &str) -> Result<Jws, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWS compact serialisation".into());
    }
    let header = b64url_json(parts[0]).ok_or("bad JWT header")?;
    let claims = b64url_json(parts[1]).ok_or("bad JWT claims")?;
    let signature = URL_SAFE_NO_PAD.decode(parts[2].trim_end_matches('=')).map_err(|_| "bad signature encoding")?;
    Ok(Jws { header, claims, input: format!("{}.{}", parts[0], parts[1]), signature })
}

/// RS256 over `jws.input` with a PKCS#1 public key.
pub fn verify_rs256(jws: &Jws, public_der: &[u8]) -> Result<(), String> {
    if jws.header["alg"] != "RS256" {
        return Err(format!("unsupported alg {}", jws.header["alg"]));
    }
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_der)
        .verify(jws.input.as_bytes(), &jws.signature)
        .map_err(|_| "signature does not verify".to_string())
}

/// The claims every JWT-bearer assertion must carry (docs/zitadel-contract.md §2.2),
/// whoever signs it: `iss = sub = subject` (`who` names it in the error), `aud`
/// (string or array) contains the issuer, `iat` not older than 1 h (and not in the
/// future beyond a minute of skew), `exp` in the future, the signing key not expired.
pub fn check_assertion_claims(
    s: &State,
    claims: &Value,
    subject: &str,
    who: &str,
    key_expiration: time::OffsetDateTime,
) -> Result<(), String> {
    if claims["iss"] != subject || claims["sub"] != subject {
        return Err(format!("iss and sub must both be {who}"));
    }
    let issuer = s.url.trim_end_matches('/');
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a.trim_end_matches('/') == issuer,
        Value::Array(a) => a.iter().any(|x| x.as_str().is_some_and(|x| x.trim_end_matches('/') == issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud must contain the issuer {issuer}"));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let iat = claims["iat"].as_i64().ok_or("iat missing")?;
    let exp = claims["exp"].as_i64().ok_or("exp missing")?;
    if now - iat > 3600 {
        return Err("iat is older than 1 h".into());
    }
    if iat > now + 60 {
        return Err("iat is in the future".into());
    }
    if exp <= now {
        return Err("assertion expired".into());
    }
    if key_expiration.unix_timestamp() <= now {
        return Err("key expired".into());
    }
    Ok(())
}

/// Verifies a service user's assertion: RS256 with header `kid` = a registered key
/// id, the claims [`check_assertion_claims`] requires with the key's user as
/// subject, the user active. Returns the user id.
fn verify_assertion(s: &State, jwt: &str) -> Result<String, String> {
    let jws = parse_jws(jwt).map_err(|e| format!("assertion: {e}"))?;
    if jws.header["alg"] != "RS256" {
        return Err(format!("unsupported alg {}", jws.header["alg"]));
    }
    let kid = jws.header["kid"].as_str().ok_or("JWT header has no kid")?;
    let (user, key) =
        s.live_users().find_map(|u| u.keys.iter().find(|k| k.id == kid).map(|k| (u, k))).ok_or("unknown key id")?;
    check_assertion_claims(s, &jws.claims, &user.id, "the key's user id", key.expiration)?;
    if user.state != ACTIVE {
        return Err("user is not active".into());
    }
    verify_rs256(&jws, &key.public_der)?;
    Ok(user.id.clone())
}

pub fn discovery(s: &State) -> Value {
    let url = s.url.trim_end_matches('/');
    json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/oauth/v2/authorize"),
        "token_endpoint": format!("{url}/oauth/v2/token"),
        "introspection_endpoint": format!("{url}/oauth/v2/introspect"),
        "userinfo_endpoint": format!("{url}/oidc/v1/userinfo"),
        "jwks_uri": format!("{url}/oauth/v2/keys"),
        "grant_types_supported": ["client_credentials", JWT_BEARER],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "scopes_supported": ["openid", "profile", "email"],
    })
}

/// `POST /oauth/v2/token` with a form body. Returns (HTTP status, JSON body).
pub fn token(s: &mut State, form: &[(String, String)]) -> (u16, Value) {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default();
    let oauth_err = |e: &str, d: &str| (400, json!({"error": e, "error_description": d}));
    if get("grant_type") != JWT_BEARER {
        return oauth_err("unsupported_grant_type", "only the JWT profile grant is faked");
    }
    let scopes: Vec<&str> = get("scope").split_whitespace().collect();
    if !scopes.contains(&"openid") || !scopes.contains(&ZITADEL_AUD_SCOPE) {
        return oauth_err("invalid_scope", "scope must contain openid and urn:zitadel:iam:org:project:id:zitadel:aud");
    }
    match verify_assertion(s, get("assertion")) {
        Err(e) => oauth_err("invalid_grant", &e),
        Ok(user_id) => {
            let token = random_token();
            let expires_in = s.token_expires_in;
            s.access_tokens.insert(
                token.clone(),
                AccessToken { user_id, expires: Instant::now() + Duration::from_secs(expires_in) },
            );
            s.tokens_issued += 1;
            (200, json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}))
        }
    }
}
