//! `weft.identity.v1.Identity/Certify`, and the reload of the issuer when
//! its files change.

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use weft_proto::identity::v1 as pb;

use super::ca::{Authority, ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE};
use super::{Identity, Reviewer};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The Certify service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    authority: Arc<ArcSwap<Authority>>,
    reviewer: Arc<dyn Reviewer>,
    lifetime: Duration,
    results: Family<ResultLabel, Counter>,
}

impl IdentityService {
    pub fn new(
        authority: Authority,
        reviewer: Arc<dyn Reviewer>,
        lifetime: Duration,
        registry: &mut Registry,
    ) -> Self {
        let results = Family::<ResultLabel, Counter>::default();
        registry.sub_registry_with_prefix("weft_control").register(
            "certify",
            "Certify requests by result (issued, bad_request, invalid_token, identity_mismatch, bad_csr)",
            results.clone(),
        );
        Self {
            authority: Arc::new(ArcSwap::from_pointee(authority)),
            reviewer,
            lifetime,
            results,
        }
    }

    /// Reads the CA directory again whenever one of its files changes; a
    /// broken set of files is reported and the issuer in use stays.
    pub fn watch(&self, dir: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
        let authority = self.authority.clone();
        tokio::spawn(async move {
            let mut seen = stamps(&dir);
            loop {
                tokio::time::sleep(every).await;
                let now = stamps(&dir);
                if now == seen {
                    continue;
                }
                seen = now;
                let trust_domain = authority.load().trust_domain.clone();
                match Authority::load(&dir, &trust_domain) {
                    Ok(a) => {
                        info!(dir = %dir.display(), "issuer reloaded");
                        authority.store(Arc::new(a));
                    }
                    Err(error) => warn!(%error, "issuer not reloaded; the one in use stays"),
                }
            }
        })
    }

    fn refuse(&self, result: &'static str, status: Status) -> Status {
        self.results.get_or_create(&ResultLabel { result }).inc();
        warn!(result, reason = status.message(), "certify refused");
        status
    }
}

fn stamps(dir: &Path) -> Vec<Option<SystemTime>> {
    [ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let req = request.into_inner();
        let authority = self.authority.load_full();
        let wanted = Identity::from_spiffe(&req.identity, &authority.trust_domain)
            .map_err(|e| self.refuse("bad_request", Status::invalid_argument(e)))?;
        let holder = self.reviewer.review(&req.token).map_err(|e| {
            self.refuse(
                "invalid_token",
                Status::unauthenticated(format!("invalid token: {e}")),
            )
        })?;
        if holder != wanted {
            return Err(self.refuse(
                "identity_mismatch",
                Status::permission_denied(format!(
                    "identity mismatch: the token is for {}, the request asks for {}",
                    holder.spiffe_id(&authority.trust_domain),
                    req.identity
                )),
            ));
        }
        let leaf = authority
            .certify(&req.certificate_signing_request, &wanted, self.lifetime)
            .map_err(|e| self.refuse("bad_csr", Status::invalid_argument(e.to_string())))?;
        self.results
            .get_or_create(&ResultLabel { result: "issued" })
            .inc();
        let until = leaf
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        info!(identity = %req.identity, "certificate issued");
        Ok(Response::new(pb::CertifyResponse {
            leaf_certificate: leaf.der,
            intermediate_certificates: leaf.intermediates,
            valid_until: Some(prost_types::Timestamp {
                seconds: until.as_secs() as i64,
                nanos: until.subsec_nanos() as i32,
            }),
        }))
    }
}
