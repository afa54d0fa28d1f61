//! 商用密码 primitives over the system OpenSSL: SM3 hashes and SM2 signatures with the
//! distinguishing ID Chinese counterparties expect.
//!
//! OpenSSL's default SM2 ID is empty, and the `openssl` crate cannot set one on a signing context.
//! GB/T 32918.2 defines the signed digest as `e = SM3(Z || M)` with
//! `Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)`, and OpenSSL's SM2 signature on a
//! pre-computed digest signs `e` as given; so we compute `Z` ourselves with the default ID
//! `1234567812345678` and sign or verify `e`. Interoperability with `openssl dgst -sm3 -sigopt
//! distid:1234567812345678` is proved by `tests/security_auth.rs`.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcGroupRef;
use openssl::hash::{Hasher, MessageDigest};
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::pkey_ctx::PkeyCtx;

/// The distinguishing ID of GB/T 35276 (the default every Chinese SM2 implementation uses).
pub const DEFAULT_SM2_ID: &[u8] = b"1234567812345678";

/// Whether this OpenSSL build offers SM2 and SM3 (Debian's 3.0 does; some builds disable them).
pub fn available() -> bool {
    MessageDigest::from_name("SM3").is_some()
        && openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SM2).is_ok()
}

/// SM3 of `data`.
pub fn sm3(data: &[u8]) -> Result<[u8; 32], openssl::error::ErrorStack> {
    let mut h = Hasher::new(sm3_digest()?)?;
    h.update(data)?;
    let d = h.finish()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&d[..32]);
    Ok(out)
}

/// SM3 of `data` as lowercase hex.
pub fn sm3_hex(data: &[u8]) -> String {
    sm3(data).map(|d| hex(&d)).unwrap_or_default()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn sm3_digest() -> Result<MessageDigest, openssl::error::ErrorStack> {
    MessageDigest::from_name("SM3").ok_or_else(openssl::error::ErrorStack::get)
}

fn pad32(n: &BigNum) -> Vec<u8> {
    n.to_vec_padded(32).unwrap_or_else(|_| n.to_vec())
}

/// The EC view of a public key. OpenSSL 3 types SM2-curve keys as `SM2`, for which
/// `EVP_PKEY_get1_EC_KEY` fails; the SubjectPublicKeyInfo decodes as an EC key on any curve.
pub fn ec_public<T: HasPublic>(
    key: &PKeyRef<T>,
) -> Result<openssl::ec::EcKey<openssl::pkey::Public>, String> {
    let der = key.public_key_to_der().map_err(|e| e.to_string())?;
    openssl::ec::EcKey::public_key_from_der(&der).map_err(|_| "not an EC or SM2 key".to_string())
}

/// `e = SM3(Z || M)` for the key's public point and the default ID.
fn digest_e<T: HasPublic>(key: &PKeyRef<T>, message: &[u8]) -> Result<[u8; 32], String> {
    let ec = ec_public(key)?;
    let group: &EcGroupRef = ec.group();
    let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
    let (mut p, mut a, mut b) = (
        BigNum::new().map_err(|e| e.to_string())?,
        BigNum::new().map_err(|e| e.to_string())?,
        BigNum::new().map_err(|e| e.to_string())?,
    );
    group
        .components_gfp(&mut p, &mut a, &mut b, &mut ctx)
        .map_err(|e| e.to_string())?;
    let (mut xg, mut yg) = (
        BigNum::new().map_err(|e| e.to_string())?,
        BigNum::new().map_err(|e| e.to_string())?,
    );
    group
        .generator_opt()
        .ok_or("the curve has no generator")?
        .affine_coordinates(group, &mut xg, &mut yg, &mut ctx)
        .map_err(|e| e.to_string())?;
    let (mut xa, mut ya) = (
        BigNum::new().map_err(|e| e.to_string())?,
        BigNum::new().map_err(|e| e.to_string())?,
    );
    ec.public_key()
        .affine_coordinates(group, &mut xa, &mut ya, &mut ctx)
        .map_err(|e| e.to_string())?;
    let bits = (DEFAULT_SM2_ID.len() * 8) as u16;
    let mut z_in = Vec::with_capacity(2 + DEFAULT_SM2_ID.len() + 6 * 32);
    z_in.extend_from_slice(&bits.to_be_bytes());
    z_in.extend_from_slice(DEFAULT_SM2_ID);
    for n in [&a, &b, &xg, &yg, &xa, &ya] {
        z_in.extend_from_slice(&pad32(n));
    }
    let z = sm3(&z_in).map_err(|e| e.to_string())?;
    let mut e_in = Vec::with_capacity(32 + message.len());
    e_in.extend_from_slice(&z);
    e_in.extend_from_slice(message);
    sm3(&e_in).map_err(|e| e.to_string())
}

/// Whether `key` is an SM2 key (its curve is SM2).
pub fn is_sm2<T: HasPublic>(key: &PKeyRef<T>) -> bool {
    ec_public(key)
        .ok()
        .and_then(|k| k.group().curve_name())
        .is_some_and(|n| n == openssl::nid::Nid::SM2)
}

/// An SM2 signature (DER) over `message` with the default ID.
pub fn sm2_sign(key: &PKeyRef<Private>, message: &[u8]) -> Result<Vec<u8>, String> {
    let e = digest_e(key, message)?;
    let mut ctx = PkeyCtx::new(key).map_err(|e| e.to_string())?;
    ctx.sign_init().map_err(|e| e.to_string())?;
    let mut sig = Vec::new();
    ctx.sign_to_vec(&e, &mut sig).map_err(|e| e.to_string())?;
    Ok(sig)
}

/// Checks an SM2 signature (DER) over `message` with the default ID.
pub fn sm2_verify<T: HasPublic>(key: &PKeyRef<T>, message: &[u8], sig_der: &[u8]) -> bool {
    let Ok(e) = digest_e(key, message) else {
        return false;
    };
    let Ok(mut ctx) = PkeyCtx::new(key) else {
        return false;
    };
    if ctx.verify_init().is_err() {
        return false;
    }
    ctx.verify(&e, sig_der).unwrap_or(false)
}

/// Reads a private key (PEM, PKCS#8 or traditional).
pub fn private_key_pem(pem: &[u8]) -> Result<PKey<Private>, String> {
    PKey::private_key_from_pem(pem).map_err(|e| format!("not a PEM private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm3_known_answer() {
        // GB/T 32905 example 1: SM3("abc").
        assert_eq!(
            sm3_hex(b"abc"),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn sm2_round_trip_and_tamper() {
        if !available() {
            println!("skipped: this OpenSSL has no SM2");
            return;
        }
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SM2).unwrap();
        let ec = openssl::ec::EcKey::generate(&group).unwrap();
        // Through PEM so that OpenSSL types the key as SM2, as it does for files.
        let pem = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let key = private_key_pem(&pem).unwrap();
        let sig = sm2_sign(&key, b"head").unwrap();
        assert!(sm2_verify(&key, b"head", &sig));
        assert!(!sm2_verify(&key, b"heae", &sig));
    }
}
