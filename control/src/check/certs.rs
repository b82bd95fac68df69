//! The certificate facts `weft check` needs, with x509-parser (what the
//! identity module uses): a certificate's validity, and whether one is
//! signed, directly or through intermediates, by one of a set of anchors.

use std::time::{Duration, SystemTime};
use x509_parser::certificate::X509Certificate;

/// How far an issuer may chain through intermediates to an anchor.
const MAX_DEPTH: usize = 5;

/// Every `CERTIFICATE` of a PEM text, as DER.
pub fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    crate::identity::ca::all_der(text, "CERTIFICATE")
}

/// A certificate's validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The validity of `der`, or why it does not parse.
pub fn validity(der: &[u8]) -> Result<Validity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(Validity {
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
    })
}

/// Whether `cert` is one of `anchors`, or is signed by one, directly or
/// through `intermediates` (each of them a CA signed in turn).
pub fn chains_to(cert: &[u8], intermediates: &[Vec<u8>], anchors: &[Vec<u8>]) -> bool {
    let anchors: Vec<X509Certificate<'_>> = anchors.iter().filter_map(|a| parse(a)).collect();
    let intermediates: Vec<X509Certificate<'_>> =
        intermediates.iter().filter_map(|i| parse(i)).collect();
    let Some(mut current) = parse(cert) else {
        return false;
    };
    for _ in 0..MAX_DEPTH {
        if anchors.iter().any(|a| a.as_ref() == current.as_ref()) {
            return true;
        }
        let signed_by = |signer: &X509Certificate<'_>| {
            signer.is_ca() && current.verify_signature(Some(signer.public_key())).is_ok()
        };
        if anchors.iter().any(signed_by) {
            return true;
        }
        match intermediates.iter().find(|i| signed_by(i)) {
            Some(next) => current = next.clone(),
            None => return false,
        }
    }
    false
}

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c)
}

/// Days (rounded down) from `now` until `t`; negative when past.
pub fn days_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => (d.as_secs() / 86_400) as i64,
        Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
    }
}

/// `t` as an RFC 3339 UTC time, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs}s after the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca;

    #[test]
    fn an_issuer_chains_to_its_anchor_and_not_to_another() {
        let day = Duration::from_secs(86_400);
        let g = ca::generate("cluster.local", 10 * day, 5 * day).unwrap();
        let other = ca::generate("cluster.local", 10 * day, 5 * day).unwrap();
        let issuer = pem_certs(&g.issuer_pem).remove(0);
        let anchors = pem_certs(&g.anchor_pem);
        assert!(chains_to(&issuer, &[], &anchors));
        assert!(chains_to(&anchors[0], &[], &anchors));
        assert!(!chains_to(&issuer, &[], &pem_certs(&other.anchor_pem)));
        // A leaf the issuer signed, through the issuer as intermediate.
        let authority = ca::Authority::from_pem(
            &g.issuer_pem,
            &g.issuer_key_pem,
            &g.anchor_pem,
            "cluster.local",
        )
        .unwrap();
        let serving = authority
            .serving(&["weft-control.weft-system.svc".into()], day)
            .unwrap();
        assert!(chains_to(&serving.chain[0], &serving.chain[1..], &anchors));
        assert!(!chains_to(&serving.chain[0], &[], &anchors));
        assert!(!chains_to(b"not DER", &[], &anchors));
        let v = validity(&issuer).unwrap();
        let left = days_until(v.not_after, SystemTime::now());
        assert!((4..=5).contains(&left), "{left}");
    }

    #[test]
    fn days_and_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 10);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(days_until(t, now), 10);
        assert_eq!(days_until(now, t), -11);
        assert_eq!(rfc3339(t), "1970-01-11T00:00:00Z");
    }
}
