//! One attempt of a request: to an address over the client connection's
//! HTTP/1 session or an HTTP/2 connection, or to an endpoint of a Service
//! picked by its balancer (connecting with fail-over), its outcome recorded
//! with the endpoint.

use http::Request;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

use super::dispatch::Cut;
use super::forward::{Forward, Used};
use super::{Body, Target};
use crate::balance::{connect, Balancer, Picked};
use crate::errors::ProxyError;
use crate::transport::connect::Remote;

type H2 = hyper::client::conn::http2::SendRequest<Body>;

impl Forward {
    /// Sends one request to `target`, cut short at `cut`; `used` records
    /// where it went.
    pub(super) async fn send(
        &self,
        target: Target<'_>,
        req: Request<Body>,
        h2: bool,
        used: &mut Used,
        cut: Option<Cut>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let dst = target.addr();
        match (target, h2) {
            (Target::Addr(addr), false) => {
                self.sending(used, None);
                Cut::within(cut, dst, self.session.send(&Remote::plain(addr), req)).await
            }
            (Target::Addr(addr), true) => {
                let mut sender = Cut::within(cut, dst, self.h2_sender(addr)).await?;
                self.sending(used, None);
                let sent = async {
                    sender
                        .send_request(req)
                        .await
                        .map_err(|e| ProxyError::Upstream(addr, e))
                };
                Cut::within(cut, dst, sent).await
            }
            (Target::Balanced(dest), false) => {
                let balancer = &dest.balancer;
                let session = &self.session;
                let connecting = connect::connect(balancer, dest.addr, |r| session.connect(r));
                let (picked, ()) = Cut::within(cut, dst, connecting).await?;
                self.sending(used, self.mesh_of(&picked));
                let remote = picked.remote();
                let sent = self.session.send(&remote, req);
                let result = Cut::within(cut, dst, sent).await;
                self.finish(balancer, picked, &result);
                result
            }
            (Target::Balanced(dest), true) => {
                let balancer = &dest.balancer;
                let upstream = &self.upstream;
                let connecting =
                    connect::connect(
                        balancer,
                        dest.addr,
                        |r| async move { upstream.h2(&r).await },
                    );
                let (picked, mut sender) = Cut::within(cut, dst, connecting).await?;
                self.sending(used, self.mesh_of(&picked));
                let addr = picked.addr();
                let sent = async {
                    sender
                        .send_request(req)
                        .await
                        .map_err(|e| ProxyError::Upstream(addr, e))
                };
                // Cut short, the attempt counts against the endpoint: a
                // hung endpoint loses its traffic instead of keeping it.
                let result = Cut::within(cut, dst, sent).await;
                self.finish(balancer, picked, &result);
                result
            }
        }
    }

    /// The identity a connection to `picked` proves: its proxy's, when it
    /// is meshed and this proxy speaks mesh TLS.
    pub(super) fn mesh_of(&self, picked: &Picked) -> Option<Arc<str>> {
        self.upstream.connector.tls.as_ref()?;
        picked.endpoint.info.identity.clone()
    }

    /// Records a balanced request's outcome with its endpoint.
    fn finish(
        &self,
        balancer: &Balancer,
        picked: Picked,
        result: &Result<http::Response<Incoming>, ProxyError>,
    ) {
        let ok = match result {
            Ok(rsp) => !(self.accrual_5xx() && rsp.status().is_server_error()),
            Err(_) => false,
        };
        balancer.finish(picked, ok);
    }

    /// The connection's HTTP/2 connection to `addr` (one address per client
    /// connection: the app, or the original destination).
    async fn h2_sender(&self, addr: SocketAddr) -> Result<H2, ProxyError> {
        let held = self.h2.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(sender) = held.filter(|s| !s.is_closed()) {
            return Ok(sender);
        }
        let sender = self.upstream.h2(&Remote::plain(addr)).await?;
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}
