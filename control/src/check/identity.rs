//! The `weft-identity` group: the issuer Secret weft-control signs with
//! (valid, its key its own, a CA, signed by the trust anchors it carries,
//! not expired, warned about under 30 days), the trust anchors ConfigMap of
//! the control plane's namespace (the chart's), and the copy of it every
//! namespace annotated `weft.dev/inject=enabled` needs (injected proxies
//! mount `weft-trust-anchors` from their own namespace).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::certs::{self, chains_to, days_until, pem_certs, rfc3339};
use super::kube::Kube;
use super::layout::Layout;
use super::report::{Check, Group};
use crate::identity::ca::{ANCHORS_FILE, ISSUER_CERT_FILE};
use crate::identity::issuer;

pub const GROUP: &str = "weft-identity";
pub const SECRET: &str = "the issuer Secret holds a valid issuer";
pub const EXPIRY: &str = "the issuer certificate is within its validity";
pub const CHAIN: &str = "the issuer is signed by the trust anchors";
pub const ANCHORS: &str = "the trust anchors ConfigMap matches the issuer's anchors";
pub const NAMESPACES: &str = "every injected namespace has the trust anchors";
pub const DESCRIPTIONS: &[&str] = &[SECRET, EXPIRY, CHAIN, ANCHORS, NAMESPACES];

/// Under this much life left the issuer is a warning.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The issuer, as the webhook check needs it.
#[derive(Clone, Debug)]
pub struct IssuerCerts {
    /// `tls.crt`: the issuer, then intermediates.
    pub chain: Vec<Vec<u8>>,
    /// `ca.crt`.
    pub anchors: Vec<Vec<u8>>,
}

/// The group, and the issuer when its Secret is valid.
pub async fn check(
    kube: &Kube,
    layout: &Layout,
    injected: &[String],
    now: SystemTime,
) -> (Group, Option<IssuerCerts>) {
    let mut g = Group::new(GROUP);
    let (ns, name) = (&layout.issuer_namespace, &layout.issuer_name);
    let hint_new = "make one with `weft identity init --out ca` and install it (charts/weft/README.md), or check cert-manager's Certificate";
    let secret = match kube.get::<Secret>(ns, name).await {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            g.push(Check::error(
                SECRET,
                format!("no Secret {ns}/{name}"),
                hint_new,
            ));
            None
        }
        Err(e) => {
            g.push(Check::error(
                SECRET,
                e.to_string(),
                "may you read Secrets there?",
            ));
            None
        }
    };
    let issuer = match secret {
        Some(s) => match parse(&s, &layout.trust_domain) {
            Ok(certs) => {
                g.push(Check::success(SECRET, Some(format!("{ns}/{name}"))));
                Some(certs)
            }
            Err(e) => {
                g.push(Check::error(SECRET, format!("{ns}/{name}: {e}"), hint_new));
                None
            }
        },
        None => None,
    };
    match &issuer {
        Some(certs) => {
            g.push(expiry(&certs.chain[0], now));
            g.push(chain(certs));
        }
        None => {
            for d in [EXPIRY, CHAIN] {
                g.push(Check::skipped(d, "there is no valid issuer Secret"));
            }
        }
    }
    let reference = issuer.as_ref().map(|i| i.anchors.clone());
    g.push(anchors_configmap(kube, layout, reference.as_deref()).await);
    g.push(injected_anchors(kube, layout, injected, reference.as_deref()).await);
    (g, issuer)
}

/// The issuer of `secret`, as weft-control would load it.
fn parse(secret: &Secret, trust_domain: &str) -> Result<IssuerCerts, String> {
    issuer::from_secret(secret, trust_domain)?;
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    Ok(IssuerCerts {
        chain: pem_certs(&text(ISSUER_CERT_FILE)),
        anchors: pem_certs(&text(ANCHORS_FILE)),
    })
}

/// Whether the issuer `der` is valid at `now`, and for how long.
pub fn expiry(der: &[u8], now: SystemTime) -> Check {
    let v = match certs::validity(der) {
        Ok(v) => v,
        Err(e) => return Check::error(EXPIRY, e, "replace the issuer"),
    };
    let rotate = "rotate it: weft identity rotate-issuer --dir ca, then update the Secret (cert-manager renews its own)";
    if now < v.not_before {
        return Check::error(
            EXPIRY,
            format!(
                "not valid before {} (a clock ahead?)",
                rfc3339(v.not_before)
            ),
            "check the clocks of the machine that made it and of the cluster",
        );
    }
    if now >= v.not_after {
        return Check::error(
            EXPIRY,
            format!(
                "expired at {}: weft-control cannot sign certificates, proxies lose mTLS as theirs expire",
                rfc3339(v.not_after)
            ),
            rotate,
        );
    }
    let days = days_until(v.not_after, now);
    let left = format!("expires {}, in {days} days", rfc3339(v.not_after));
    if v.not_after.duration_since(now).unwrap_or_default() < WARN_BEFORE {
        Check::warning(EXPIRY, format!("{left}: under 30 days"), rotate)
    } else {
        Check::success(EXPIRY, Some(left))
    }
}

fn chain(certs: &IssuerCerts) -> Check {
    if chains_to(&certs.chain[0], &certs.chain[1..], &certs.anchors) {
        Check::success(CHAIN, None)
    } else {
        Check::error(
            CHAIN,
            format!("{ISSUER_CERT_FILE} is not signed by any certificate of {ANCHORS_FILE}: proxies would refuse every certificate weft-control signs"),
            "put the issuer's own trust anchor in ca.crt (weft identity init writes both)",
        )
    }
}

/// The certificates of ConfigMap `ns/name`'s `ca.crt`: `Ok(None)` when there is none.
async fn anchors_of(kube: &Kube, ns: &str, name: &str) -> Result<Option<Vec<Vec<u8>>>, String> {
    match kube.get::<ConfigMap>(ns, name).await {
        Ok(Some(cm)) => {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get(ANCHORS_FILE))
                .cloned()
                .unwrap_or_default();
            Ok(Some(pem_certs(&text)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn same(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

async fn anchors_configmap(kube: &Kube, layout: &Layout, reference: Option<&[Vec<u8>]>) -> Check {
    let (ns, name) = (&layout.namespace, &layout.anchors_configmap);
    let hint = "set identity.trustAnchorsPEM in the chart (helm upgrade ... --set-file identity.trustAnchorsPEM=ca/ca.crt)";
    match anchors_of(kube, ns, name).await {
        Err(e) => Check::error(ANCHORS, e, "may you read ConfigMaps there?"),
        // Nothing is injected in the control plane's namespace, so no proxy
        // needs it there; the chart makes it only from trustAnchorsPEM.
        Ok(None) => Check::warning(
            ANCHORS,
            format!("no ConfigMap {ns}/{name} (no proxy runs in the control plane's namespace)"),
            hint,
        ),
        Ok(Some(certs)) if certs.is_empty() => {
            Check::error(ANCHORS, format!("{ns}/{name}: no certificate in {ANCHORS_FILE}"), hint)
        }
        Ok(Some(certs)) => match reference {
            None => Check::success(
                ANCHORS,
                Some(format!("{ns}/{name}: {} certificate(s); not compared (no valid issuer)", certs.len())),
            ),
            Some(r) if same(&certs, r) => Check::success(ANCHORS, Some(format!("{ns}/{name}"))),
            Some(_) => Check::error(
                ANCHORS,
                format!("{ns}/{name}'s {ANCHORS_FILE} differs from the issuer Secret's: proxies would not trust each other's certificates"),
                hint,
            ),
        },
    }
}

async fn injected_anchors(
    kube: &Kube,
    layout: &Layout,
    injected: &[String],
    reference: Option<&[Vec<u8>]>,
) -> Check {
    let name = &layout.anchors_configmap;
    let mut problems = Vec::new();
    for ns in injected {
        match anchors_of(kube, ns, name).await {
            Err(e) => problems.push(e),
            Ok(None) => problems.push(format!(
                "{ns}: no ConfigMap {name}: its injected pods cannot start (the proxy mounts it)"
            )),
            Ok(Some(certs)) if certs.is_empty() => {
                problems.push(format!("{ns}/{name}: no certificate in {ANCHORS_FILE}"))
            }
            Ok(Some(certs)) => {
                if reference.is_some_and(|r| !same(&certs, r)) {
                    problems.push(format!(
                        "{ns}/{name}: differs from the issuer Secret's anchors"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Check::success(
            NAMESPACES,
            Some(match injected.len() {
                0 => "no namespace is annotated weft.dev/inject=enabled".to_owned(),
                n => format!("{n} namespace(s)"),
            }),
        )
    } else {
        Check::error(
            NAMESPACES,
            problems.join("\n"),
            &format!("the proxies mount {name} from their own namespace, and weft-control publishes it there unless --publish-trust-anchors=false (chart value identity.publishTrustAnchors): see its log and weft_control_trust_anchors_published_total; or create it (kubectl -n NAMESPACE create configmap {name} --from-file=ca.crt=ca/ca.crt)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;
    use crate::identity::ca;

    #[test]
    fn expiry_warns_under_30_days_and_fails_when_past() {
        let day = Duration::from_secs(86_400);
        let g = ca::generate("cluster.local", 400 * day, 365 * day).unwrap();
        let issuer = pem_certs(&g.issuer_pem).remove(0);
        let now = SystemTime::now();
        assert_eq!(expiry(&issuer, now).result, Outcome::Success);
        assert_eq!(expiry(&issuer, now + 340 * day).result, Outcome::Warning);
        let past = expiry(&issuer, now + 366 * day);
        assert_eq!(past.result, Outcome::Error);
        assert!(past.detail.unwrap().starts_with("expired at "));
        assert_eq!(expiry(&issuer, now - day).result, Outcome::Error);
    }
}
