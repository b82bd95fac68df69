//! One attempt of a request: to an address over the client connection's
//! HTTP/1 session or HTTP/2 connection, or to an endpoint of a Service
//! picked by its balancer over that endpoint's own connections (connecting
//! with fail-over), its outcome recorded with the endpoint.

use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;

use super::dispatch::Cut;
use super::forward::{Forward, Used};
use super::{Body, Target};
use crate::balance::{connect, Balancer, Endpoint, Picked};
use crate::client::H2;
use crate::errors::ProxyError;
use crate::transport::connect::Remote;

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
            (Target::Addr(addr), h2) => {
                let owned;
                let conns = match self.addr_conns(addr) {
                    Some(conns) => conns,
                    None => {
                        owned = self.client.addrs.conns(addr, self.client.idle_timeout);
                        &owned
                    }
                };
                let remote = Remote::plain(addr);
                if h2 {
                    let connect = || self.client.h2_connect(&remote);
                    let sender = Cut::within(cut, dst, conns.h2.get(connect)).await?;
                    self.sending(used, None, addr);
                    return Cut::within(cut, dst, send_h2(sender, addr, req)).await;
                }
                let held = Cut::within(cut, dst, self.session.checkout(conns, &remote)).await?;
                self.sending(used, None, addr);
                Cut::within(cut, dst, self.session.send(held, &remote, req)).await
            }
            (Target::Balanced(dest), false) => {
                let balancer = &dest.balancer;
                let session = &self.session;
                let checkout = |ep: Arc<Endpoint>| async move {
                    session.checkout(&ep.conns, &ep.remote()).await
                };
                let connecting = connect::connect(balancer, dest.addr, checkout);
                let (mut picked, held) = Cut::within(cut, dst, connecting).await?;
                picked.sent();
                self.sending(used, self.mesh_of(&picked), picked.addr());
                let remote = picked.remote();
                let sent = self.session.send(held, &remote, req);
                let result = Cut::within(cut, dst, sent).await;
                self.finish(balancer, picked, &result);
                result
            }
            (Target::Balanced(dest), true) => {
                let balancer = &dest.balancer;
                let client = &self.client;
                let sender = |ep: Arc<Endpoint>| async move {
                    let remote = ep.remote();
                    ep.conns.h2.get(|| client.h2_connect(&remote)).await
                };
                let connecting = connect::connect(balancer, dest.addr, sender);
                let (mut picked, sender) = Cut::within(cut, dst, connecting).await?;
                picked.sent();
                self.sending(used, self.mesh_of(&picked), picked.addr());
                // Cut short, the attempt counts against the endpoint: a
                // hung endpoint loses its traffic instead of keeping it.
                let sent = send_h2(sender, picked.addr(), req);
                let result = Cut::within(cut, dst, sent).await;
                self.finish(balancer, picked, &result);
                result
            }
        }
    }

    /// The identity a connection to `picked` proves: its proxy's, when it
    /// is meshed and this proxy speaks mesh TLS.
    pub(super) fn mesh_of(&self, picked: &Picked) -> Option<Arc<str>> {
        self.client.connector.tls.as_ref()?;
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
}

/// Sends `req` on an HTTP/2 connection to `addr`.
async fn send_h2(
    mut sender: H2,
    addr: std::net::SocketAddr,
    req: Request<Body>,
) -> Result<http::Response<Incoming>, ProxyError> {
    sender
        .send_request(req)
        .await
        .map_err(|e| ProxyError::Upstream(addr, e))
}
