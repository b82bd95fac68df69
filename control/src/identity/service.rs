//! `weft.identity.v1.Identity/Certify`: the request's identity parsed, the
//! token reviewed, the CSR signed by the issuer in use; every refusal
//! counted with its reason.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use weft_proto::identity::v1 as pb;

use super::issuer::Issuer;
use super::{Identity, ResultLabel, ReviewError, Reviewer};

/// The Certify service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    issuer: Issuer,
    reviewer: Arc<dyn Reviewer>,
    lifetime: Duration,
    results: Family<ResultLabel, Counter>,
}

impl IdentityService {
    pub fn new(
        issuer: Issuer,
        reviewer: Arc<dyn Reviewer>,
        lifetime: Duration,
        registry: &mut Registry,
    ) -> Self {
        let results = Family::<ResultLabel, Counter>::default();
        registry.sub_registry_with_prefix("weft_control").register(
            "certify",
            "Certify requests by result (issued, no_issuer, bad_request, invalid_token, review_unavailable, rate_limited, identity_mismatch, bad_csr)",
            results.clone(),
        );
        Self {
            issuer,
            reviewer,
            lifetime,
            results,
        }
    }

    fn refuse(&self, result: &'static str, status: Status) -> Status {
        self.results.get_or_create(&ResultLabel { result }).inc();
        warn!(result, reason = status.message(), "certify refused");
        status
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        use opentelemetry::trace::{Span as _, Status as SpanStatus};
        use opentelemetry::KeyValue;
        let mut span = crate::trace::certify_span(request.metadata());
        if !crate::trace::recording(&span) {
            return self.issue(request).await;
        }
        span.set_attribute(KeyValue::new(
            "weft.identity",
            request.get_ref().identity.clone(),
        ));
        if let Some(addr) = request.remote_addr() {
            let ip = addr.ip().to_canonical().to_string();
            span.set_attribute(KeyValue::new("client.address", ip));
        }
        let result = self.issue(request).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        if let Err(status) = &result {
            // OpenTelemetry's rule for gRPC servers: a refusal of the
            // caller's request (a bad token, a wrong identity) is the
            // caller's error, not this span's; the server's own failures are.
            let ours = matches!(
                code,
                tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unimplemented
                    | tonic::Code::Internal
                    | tonic::Code::Unavailable
                    | tonic::Code::DataLoss
            );
            let message = status.message().to_owned();
            if ours {
                span.set_status(SpanStatus::error(message));
            } else {
                span.add_event("refused", vec![KeyValue::new("message", message)]);
            }
        }
        span.end();
        result
    }
}

impl IdentityService {
    /// Certify itself: parse, review, sign.
    async fn issue(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let client = request.remote_addr().map(|a| a.ip().to_canonical());
        let req = request.into_inner();
        let authority = self.issuer.current().ok_or_else(|| {
            self.refuse(
                "no_issuer",
                Status::unavailable("no issuer loaded yet (see weft-control's log)"),
            )
        })?;
        let wanted = Identity::from_spiffe(&req.identity, &authority.trust_domain)
            .map_err(|e| self.refuse("bad_request", Status::invalid_argument(e)))?;
        let holder = self
            .reviewer
            .review(&req.token, client)
            .await
            .map_err(|e| match e {
                ReviewError::Invalid(e) => self.refuse(
                    "invalid_token",
                    Status::unauthenticated(format!("invalid token: {e}")),
                ),
                ReviewError::Unavailable(e) => self.refuse(
                    "review_unavailable",
                    Status::unavailable(format!("the token could not be checked: {e}")),
                ),
                ReviewError::Limited(e) => self.refuse(
                    "rate_limited",
                    Status::resource_exhausted(format!("the token was not checked: {e}")),
                ),
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
