//! JSON Web Tokens (RFC 7519) signed with RS256, ES256 or SM2-with-SM3, verified against a JWKS.
//!
//! Only asymmetric algorithms are accepted (no `none`, no HMAC: a shared secret cannot be kept
//! from the gateway's logs and backups). The algorithm is taken from the key, never trusted from
//! the token header alone: a header naming another algorithm than its key's is a forgery.
//!
//! SM2 has no registered JOSE name; we use `SM2SM3` (SM2 signature, SM3 digest, default ID
//! `1234567812345678`), with JWK `kty: EC, crv: SM2` and, like ES256, the raw `r || s` signature.

use super::sm;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde_json::{Map, Value, json};

/// The JOSE algorithms we verify and sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    Sm2Sm3,
}

impl Alg {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Sm2Sm3 => "SM2SM3",
        }
    }
    /// Parses an `alg` value.
    pub fn from_name(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "SM2SM3" => Some(Alg::Sm2Sm3),
            _ => None,
        }
    }
}

/// A verification key from a JWKS.
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Alg,
    key: PKey<Public>,
}

/// Why a token was refused (each is a 401; the text goes into the OperationOutcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("the token's algorithm '{0}' is not accepted (RS256, ES256, SM2SM3)")]
    Algorithm(String),
    #[error("no key in the JWKS matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no 'exp' claim")]
    NoExpiry,
    #[error("the token's audience is not this gateway")]
    Audience,
    #[error("the token's issuer is not trusted")]
    Issuer,
}

fn b64(s: &str) -> Result<Vec<u8>, TokenError> {
    B64.decode(s).map_err(|_| TokenError::Malformed)
}

fn bn(v: &Value, field: &str) -> Result<BigNum, String> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| format!("JWK without '{field}'"))?;
    let bytes = B64
        .decode(s)
        .map_err(|_| format!("JWK '{field}' is not base64url"))?;
    BigNum::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Reads one JWK (RSA, EC P-256, EC SM2).
pub fn jwk_from_json(v: &Value) -> Result<Jwk, String> {
    let kid = v["kid"].as_str().map(str::to_string);
    let (alg, key) = match (v["kty"].as_str(), v["crv"].as_str()) {
        (Some("RSA"), _) => {
            let rsa =
                Rsa::from_public_components(bn(v, "n")?, bn(v, "e")?).map_err(|e| e.to_string())?;
            (Alg::Rs256, PKey::from_rsa(rsa).map_err(|e| e.to_string())?)
        }
        (Some("EC"), Some(crv @ ("P-256" | "SM2"))) => {
            let (nid, alg) = if crv == "SM2" {
                (Nid::SM2, Alg::Sm2Sm3)
            } else {
                (Nid::X9_62_PRIME256V1, Alg::Es256)
            };
            let group = EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
            let (x, y) = (bn(v, "x")?, bn(v, "y")?);
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .map_err(|e| format!("JWK point is not on {crv}: {e}"))?;
            let pkey = PKey::from_ec_key(ec).map_err(|e| e.to_string())?;
            // Through DER so that OpenSSL types an SM2-curve key as SM2 (as it does for files).
            let der = pkey.public_key_to_der().map_err(|e| e.to_string())?;
            (
                alg,
                PKey::public_key_from_der(&der).map_err(|e| e.to_string())?,
            )
        }
        (kty, crv) => return Err(format!("JWK kty {kty:?} crv {crv:?} is not supported")),
    };
    if let Some(a) = v["alg"].as_str()
        && Alg::from_name(a) != Some(alg)
    {
        return Err(format!("JWK alg '{a}' does not fit its key"));
    }
    Ok(Jwk { kid, alg, key })
}

/// Reads a JWKS document (`{"keys": [...]}`).
pub fn jwks_from_json(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v["keys"].as_array().ok_or("JWKS without 'keys'")?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| jwk_from_json(k).map_err(|e| format!("keys[{i}]: {e}")))
        .collect()
}

fn coord(n: &BigNum) -> String {
    B64.encode(n.to_vec_padded(32).unwrap_or_else(|_| n.to_vec()))
}

/// The public JWK of a key (for `huitong token --jwk`).
pub fn public_jwk(key: &PKey<Private>, kid: &str) -> Result<Value, String> {
    if let Ok(rsa) = key.rsa() {
        return Ok(json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec()),
        }));
    }
    let ec = sm::ec_public(key).map_err(|_| "key is neither RSA nor EC")?;
    let crv = match ec.group().curve_name() {
        Some(Nid::SM2) => "SM2",
        Some(Nid::X9_62_PRIME256V1) => "P-256",
        other => return Err(format!("curve {other:?} is not supported")),
    };
    let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
    let (mut x, mut y) = (
        BigNum::new().map_err(|e| e.to_string())?,
        BigNum::new().map_err(|e| e.to_string())?,
    );
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .map_err(|e| e.to_string())?;
    let alg = if crv == "SM2" { "SM2SM3" } else { "ES256" };
    Ok(
        json!({ "kty": "EC", "crv": crv, "kid": kid, "alg": alg, "use": "sig", "x": coord(&x), "y": coord(&y) }),
    )
}

/// The algorithm a private key signs with.
pub fn alg_of(key: &PKey<Private>) -> Result<Alg, String> {
    if key.rsa().is_ok() {
        return Ok(Alg::Rs256);
    }
    match sm::ec_public(key).ok().and_then(|k| k.group().curve_name()) {
        Some(Nid::SM2) => Ok(Alg::Sm2Sm3),
        Some(Nid::X9_62_PRIME256V1) => Ok(Alg::Es256),
        _ => Err("key is not RSA, P-256 or SM2".into()),
    }
}

/// `r || s`, each 32 bytes, from a DER ECDSA/SM2 signature.
pub fn der_to_raw(der: &[u8]) -> Result<Vec<u8>, String> {
    let sig = EcdsaSig::from_der(der).map_err(|e| e.to_string())?;
    let mut out = sig.r().to_vec_padded(32).map_err(|e| e.to_string())?;
    out.extend(sig.s().to_vec_padded(32).map_err(|e| e.to_string())?);
    Ok(out)
}

fn raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let r = BigNum::from_slice(&raw[..32]).ok()?;
    let s = BigNum::from_slice(&raw[32..]).ok()?;
    EcdsaSig::from_private_components(r, s).ok()?.to_der().ok()
}

/// Signs `claims` into a compact JWS.
pub fn sign(key: &PKey<Private>, kid: Option<&str>, claims: &Value) -> Result<String, String> {
    let alg = alg_of(key)?;
    let mut header = Map::new();
    header.insert("alg".into(), alg.name().into());
    header.insert("typ".into(), "JWT".into());
    if let Some(k) = kid {
        header.insert("kid".into(), k.into());
    }
    let input = format!(
        "{}.{}",
        B64.encode(Value::Object(header).to_string()),
        B64.encode(claims.to_string())
    );
    let sig = match alg {
        Alg::Rs256 => {
            let mut s = Signer::new(MessageDigest::sha256(), key).map_err(|e| e.to_string())?;
            s.update(input.as_bytes()).map_err(|e| e.to_string())?;
            s.sign_to_vec().map_err(|e| e.to_string())?
        }
        Alg::Es256 => {
            let mut s = Signer::new(MessageDigest::sha256(), key).map_err(|e| e.to_string())?;
            s.update(input.as_bytes()).map_err(|e| e.to_string())?;
            der_to_raw(&s.sign_to_vec().map_err(|e| e.to_string())?)?
        }
        Alg::Sm2Sm3 => der_to_raw(&sm::sm2_sign(key, input.as_bytes())?)?,
    };
    Ok(format!("{input}.{}", B64.encode(sig)))
}

fn verify_with(k: &Jwk, input: &[u8], sig: &[u8]) -> bool {
    match k.alg {
        Alg::Rs256 => Verifier::new(MessageDigest::sha256(), &k.key)
            .and_then(|mut v| {
                v.update(input)?;
                v.verify(sig)
            })
            .unwrap_or(false),
        Alg::Es256 => raw_to_der(sig).is_some_and(|der| {
            Verifier::new(MessageDigest::sha256(), &k.key)
                .and_then(|mut v| {
                    v.update(input)?;
                    v.verify(&der)
                })
                .unwrap_or(false)
        }),
        Alg::Sm2Sm3 => raw_to_der(sig).is_some_and(|der| sm::sm2_verify(&k.key, input, &der)),
    }
}

/// What a verified token must also satisfy.
pub struct Expectations<'a> {
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub now_secs: i64,
    pub leeway_secs: i64,
}

/// Whether `now` lies within a token's `exp` and `nbf`, with the leeway (also what a remembered
/// token is held to on every use, `tokens::TokenCache`).
pub fn check_lifetime(
    expiry: i64,
    not_before: Option<i64>,
    exp: &Expectations<'_>,
) -> Result<(), TokenError> {
    if exp.now_secs > expiry.saturating_add(exp.leeway_secs) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = not_before
        && exp.now_secs.saturating_add(exp.leeway_secs) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Verifies a compact JWS against `keys` and the expectations; returns its claims.
pub fn verify(token: &str, keys: &[Jwk], exp: &Expectations<'_>) -> Result<Value, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| TokenError::Malformed)?;
    let alg_name = header["alg"].as_str().unwrap_or("").to_string();
    let alg = Alg::from_name(&alg_name).ok_or(TokenError::Algorithm(alg_name))?;
    let kid = header["kid"].as_str().map(str::to_string);
    let sig = b64(s)?;
    let input = &token.as_bytes()[..h.len() + 1 + p.len()];
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| k.alg == alg && (kid.is_none() || k.kid == kid))
        .collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey(kid));
    }
    if !candidates.iter().any(|k| verify_with(k, input, &sig)) {
        return Err(TokenError::Signature);
    }
    let claims: Value = serde_json::from_slice(&b64(p)?).map_err(|_| TokenError::Malformed)?;
    let expiry = claims["exp"].as_i64().ok_or(TokenError::NoExpiry)?;
    check_lifetime(expiry, claims["nbf"].as_i64(), exp)?;
    if let Some(aud) = exp.audience {
        let ok = match &claims["aud"] {
            Value::String(a) => a == aud,
            Value::Array(v) => v.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    if let Some(iss) = exp.issuer
        && claims["iss"].as_str() != Some(iss)
    {
        return Err(TokenError::Issuer);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(nid: Option<Nid>) -> PKey<Private> {
        let k = match nid {
            None => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            Some(n) => {
                let g = EcGroup::from_curve_name(n).unwrap();
                PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
            }
        };
        PKey::private_key_from_pem(&k.private_key_to_pem_pkcs8().unwrap()).unwrap()
    }

    fn exp() -> Expectations<'static> {
        Expectations {
            audience: Some("gw"),
            issuer: None,
            now_secs: 1_000,
            leeway_secs: 0,
        }
    }

    #[test]
    fn each_algorithm_round_trips_and_refuses_a_swapped_key() {
        let mut nids = vec![None, Some(Nid::X9_62_PRIME256V1)];
        if sm::available() {
            nids.push(Some(Nid::SM2));
        }
        for nid in nids {
            let key = keypair(nid);
            let other = keypair(nid);
            let jwks = vec![jwk_from_json(&public_jwk(&key, "k1").unwrap()).unwrap()];
            let claims = json!({"sub": "a", "aud": "gw", "exp": 2_000});
            let t = sign(&key, Some("k1"), &claims).unwrap();
            assert_eq!(verify(&t, &jwks, &exp()).unwrap()["sub"], "a");
            let forged = sign(&other, Some("k1"), &claims).unwrap();
            assert_eq!(verify(&forged, &jwks, &exp()), Err(TokenError::Signature));
            let late = Expectations {
                now_secs: 3_000,
                ..exp()
            };
            assert_eq!(verify(&t, &jwks, &late), Err(TokenError::Expired));
            let elsewhere = Expectations {
                audience: Some("other"),
                ..exp()
            };
            assert_eq!(verify(&t, &jwks, &elsewhere), Err(TokenError::Audience));
        }
    }

    #[test]
    fn none_and_hmac_are_refused() {
        let key = keypair(Some(Nid::X9_62_PRIME256V1));
        let jwks = vec![jwk_from_json(&public_jwk(&key, "k1").unwrap()).unwrap()];
        for alg in ["none", "HS256"] {
            let h = B64.encode(format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}"));
            let p = B64.encode("{\"aud\":\"gw\",\"exp\":2000}");
            let t = format!("{h}.{p}.");
            assert!(matches!(
                verify(&t, &jwks, &exp()),
                Err(TokenError::Algorithm(_))
            ));
        }
        assert_eq!(verify("a.b", &jwks, &exp()), Err(TokenError::Malformed));
    }
}
