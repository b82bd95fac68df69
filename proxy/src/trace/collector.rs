//! How the span exporter reaches the collector: like the app's own
//! traffic, through this proxy's discovery and mesh TLS. The proxy's own
//! connections are never redirected by weft-init (its uid is exempt), so
//! the exporter's gRPC channel dials with this instead of plain TCP:
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
