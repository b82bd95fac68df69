//! Upgrades (WebSocket, h2c over HTTP/1): the request goes out on a
//! connection of its own and, when the server switches protocols, the two
//! upgraded streams are spliced for as long as both sides keep them open.
//! The splice outlives the HTTP connection, so the drain tracks it.

use super::Body;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::forward::{Forward, Used};
use super::Target;
use crate::balance::connect;
use crate::errors::ProxyError;
use crate::transport::connect::Remote;

impl Forward {
    pub(super) async fn upgrade(
        &self,
        target: Target<'_>,
        mut req: Request<Incoming>,
        used: &mut Used,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let client = &self.client;
        let (mut sender, addr) = match target {
            Target::Addr(addr) => {
                let sender = client.h1_connect(&Remote::plain(addr), true).await?;
                self.sending(used, None, addr);
                (sender, addr)
            }
            Target::Balanced(dest) => {
                let (picked, sender) =
                    connect::connect(&dest.balancer, dest.addr, |ep| async move {
                        client.h1_connect(&ep.remote(), true).await
                    })
                    .await?;
                self.sending(used, self.mesh_of(&picked), picked.addr());
                // An upgraded connection is not a request: its length says
                // nothing about the endpoint's latency.
                (sender, picked.addr())
            }
        };
        let mut rsp = sender
            .send_request(req.map(Body::Stream))
            .await
            .map_err(|e| ProxyError::Upstream(addr, e))?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let server_side = hyper::upgrade::on(&mut rsp);
            self.tasks.spawn(async move {
                match tokio::try_join!(client_side, server_side) {
                    Ok((c, s)) => {
                        let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                        if let Err(error) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                            debug!(%error, "upgraded connection ended");
                        }
                    }
                    Err(error) => debug!(%error, "upgrade failed"),
                }
            });
        }
        Ok(rsp)
    }
}
