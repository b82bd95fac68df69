//! The upstream HTTP/1 connection of one client connection.
//!
//! HTTP/1 requests on a client connection come one at a time, so the
//! session keeps the upstream connection it got for the next request: to
//! the same destination (always, for a plain address; while p2c picks the
//! same endpoint, for a Service) no pool is touched. When the destination
//! changes, the connection goes back to the idle connections of the one it
//! was for ([`Conns`], the endpoint's own) and one of the new one's is
//! taken or made; when the client connection ends, the same. Upgraded
//! (WebSocket, h2c) connections are never pooled.

use hyper::body::Incoming;
use std::sync::{Arc, Mutex};

use super::Body;
use crate::client::{Client, Conns, H1};
use crate::errors::ProxyError;
use crate::transport::connect::Remote;

/// A connection, and the destination whose connections it belongs to.
type Held = (Arc<Conns>, H1);

#[derive(Debug)]
pub struct H1Session {
    client: Arc<Client>,
    // HTTP/1 requests on a connection come one at a time: this lock is never
    // contended, it only makes the session shareable with hyper's service.
    held: Mutex<Option<Held>>,
}

impl H1Session {
    pub fn new(client: Arc<Client>) -> Self {
        Self {
            client,
            held: Mutex::new(None),
        }
    }

    /// A connection to `conns`' destination at `remote`: the one held, an
    /// idle one, or a new one. An error here means nothing was sent.
    pub async fn checkout(&self, conns: &Arc<Conns>, remote: &Remote) -> Result<Held, ProxyError> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        match held {
            Some((c, sender)) if Arc::ptr_eq(&c, conns) => return Ok((c, sender)),
            Some((c, sender)) => c.release(sender, self.client.max_idle, self.client.idle_timeout),
            None => {}
        }
        let sender = match conns.take_idle(self.client.idle_timeout) {
            Some(s) => s,
            None => self.client.h1_connect(remote, false).await?,
        };
        Ok((Arc::clone(conns), sender))
    }

    /// Drops the connection held (a request on it was abandoned, so it may
    /// still be busy with it: it is neither reused nor pooled).
    pub fn discard(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn hold(&self, held: Held) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
    }

    /// Sends `req` to `remote` on `held` (from [`H1Session::checkout`]),
    /// which the session keeps for the next request. A pooled connection
    /// that turns out closed before the request went out is replaced once
    /// (by another idle one or a new one).
    pub async fn send(
        &self,
        held: Held,
        remote: &Remote,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let dst = remote.addr;
        let (mut conns, sender) = held;
        let mut next = Some(sender);
        let mut req = req;
        for attempt in 0..2 {
            let mut sender = match next.take() {
                Some(s) => s,
                None => match conns.take_idle(self.client.idle_timeout) {
                    Some(s) => s,
                    None => self.client.h1_connect(remote, false).await?,
                },
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let sent = sender.try_send_request(req);
            self.hold((conns, sender));
            match sent.await {
                Ok(rsp) => return Ok(rsp),
                Err(mut e) => {
                    let unsent = e.take_message().filter(|_| attempt == 0);
                    let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
                    match (unsent, held) {
                        (Some(unsent), Some((c, _closed))) => {
                            conns = c;
                            req = unsent;
                        }
                        _ => return Err(ProxyError::Upstream(dst, e.into_error())),
                    }
                }
            }
        }
        // Two connections in a row were closed before the request went out.
        let mut sender = self.client.h1_connect(remote, false).await?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::Upstream(dst, e));
        self.hold((conns, sender));
        rsp
    }
}

impl Drop for H1Session {
    fn drop(&mut self) {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((conns, sender)) = held {
            conns.release(sender, self.client.max_idle, self.client.idle_timeout);
        }
    }
}
