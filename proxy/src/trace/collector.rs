//! The OTLP/gRPC client ([`Otlp`]), and how it reaches the collector:
//! like the app's own traffic, through this proxy's discovery and mesh
//! TLS. The proxy's own connections are never redirected by weft-init
//! (its uid is exempt), so the exporter's gRPC channel dials with this
//! instead of plain TCP:
//!
//! - the collector's `host:port` is looked up (a Service name resolves to
//!   its ClusterIP), then asked of discovery like any original destination;
//! - a Service's endpoint is picked by the balancer (failing over as a
//!   connection does) and reached over mesh TLS when its pod is meshed and
//!   this proxy has an identity (ALPN h2: the collector's proxy hands the
//!   stream to the collector as HTTP/2), else in plaintext;
//! - anything else (no discovery, not a Service) is dialled as addressed.
//!
//! Each (re)connect of the channel dials again, so a collector that moves
//! is followed.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::balance::connect::connect;
use crate::discovery::{Resolved, Resolver};
use crate::tls::Alpn;
use crate::transport::connect::{Connector, Io, Remote};

/// Dials the collector (a tower `Service<Uri>`, as tonic's
/// `connect_with_connector_lazy` takes). The URI is ignored: the address
/// is the one configured.
#[derive(Clone, Debug)]
pub struct Dialer {
    host: Arc<str>,
    port: u16,
    resolver: Option<Arc<Resolver>>,
    connector: Connector,
}

/// How a dial went: whether it went over mesh TLS, for the log.
type Dialed = Result<TokioIo<Io>, Box<dyn std::error::Error + Send + Sync>>;

impl Dialer {
    /// A dialer of `host:port` (already checked by `grpc_endpoint`).
    pub fn new(
        host: &str,
        port: u16,
        resolver: Option<Arc<Resolver>>,
        connector: Connector,
    ) -> Self {
        Self {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            resolver,
            connector,
        }
    }

    async fn dial(self) -> Dialed {
        let addr: SocketAddr = tokio::net::lookup_host((&*self.host, self.port))
            .await?
            .next()
            .ok_or_else(|| format!("{}:{} has no address", self.host, self.port))?;
        let resolved = match &self.resolver {
            Some(resolver) => resolver.resolve(addr).await,
            None => Resolved::Passthrough,
        };
        let io = match resolved {
            Resolved::Service(dest) => {
                let connector = &self.connector;
                let (picked, io) = connect(&dest.balancer, addr, |ep| async move {
                    connector.connect(&ep.remote(), Alpn::Http2).await
                })
                .await?;
                // A long-lived channel: not counted as the endpoint's load.
                drop(picked);
                io
            }
            Resolved::Passthrough => {
                self.connector
                    .connect(&Remote::plain(addr), Alpn::Http2)
                    .await?
            }
        };
        tracing::debug!(collector = %addr, mesh_tls = matches!(io, tokio_util::either::Either::Right(_)), "connected to the trace collector");
        Ok(TokioIo::new(io))
    }
}

impl tonic::codegen::Service<http::Uri> for Dialer {
    type Response = TokioIo<Io>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Dialed> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial())
    }
}

/// The collector's OTLP/gRPC `TraceService`, called with requests
/// [`wire`](super::wire) encoded: tonic's client, with a codec that sends
/// bytes as they are.
#[derive(Debug)]
pub struct Otlp {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Otlp {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }
}

impl super::export::Export for Otlp {
    async fn send(&mut self, request: bytes::Bytes) -> Result<u64, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the collector: {e}")))?;
        let rsp = self
            .grpc
            .unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(EXPORT),
                Encoded,
            )
            .await?;
        let rejected = rsp
            .into_inner()
            .partial_success
            .map_or(0, |p| p.rejected_spans);
        Ok(u64::try_from(rejected).unwrap_or(0))
    }
}

/// Sends a request already encoded; decodes the collector's answer.
#[derive(Clone, Copy, Debug)]
struct Encoded;

/// OTLP's `ExportTraceServiceResponse`: the two fields the proxy reads,
/// declared here rather than taken from opentelemetry-proto, whose
/// generated trace types come only with its `trace` feature, which builds
/// the whole opentelemetry SDK into the proxy.
#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

impl tonic::codec::Codec for Encoded {
    type Encode = bytes::Bytes;
    type Decode = Answer;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = Answer;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Answer>, tonic::Status> {
        use prost::Message;
        Answer::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("the collector's answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message;

    #[test]
    fn the_collectors_answer_decodes_as_opentelemetry_proto_writes_it() {
        let full = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "too old".into(),
            }),
        };
        let ours = Answer::decode(full.encode_to_vec().as_slice()).unwrap();
        let partial = ours.partial_success.expect("partial success");
        assert_eq!(
            (partial.rejected_spans, &*partial.error_message),
            (7, "too old")
        );
        let none = Answer::decode(
            ExportTraceServiceResponse::default()
                .encode_to_vec()
                .as_slice(),
        );
        assert_eq!(none.unwrap().partial_success, None);
    }
}
