//! Discovery updates encoded once and shared by every watcher they go to,
//! and the `weft.discovery.v1.Discovery` gRPC service that sends them as
//! they are.
//!
//! tonic's generated server fixes a stream's item to `pb::Update` and
//! encodes it again on every stream: one change to a Service with 2,500
//! watchers was encoded 2,500 times, and a snapshot once per watch. Here a
//! published version of a destination carries its updates encoded, gRPC
//! message prefix included (by the first watcher that needs them, so
//! nothing is encoded for destinations nobody watches), and each stream's
//! body hands those shared bytes to HTTP/2 as they are.
//!
//! tonic's encoder would also copy them into a buffer per stream that keeps
//! its largest size while the stream lives: measured with heaptrack, 15 MB
//! for 2,000 watches (the hot Service's snapshot is 8 KB), more than half
//! of what the streams cost.
//!
//! The service is written out (one path, its request read and decoded
//! here) rather than generated, because the generated one cannot take
//! another item type; `discovery.proto` stays the contract, and the
//! proto's own generated client is what the tests talk to it with.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::body::Frame;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::{Request, Status};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use crate::discovery::{DiscoveryServer, WatchStream};

const WATCH_PATH: &str = "/weft.discovery.v1.Discovery/Watch";
/// A `WatchRequest` is a few hundred bytes; more is refused.
const MAX_REQUEST: usize = 64 * 1024;
/// gRPC's message prefix: a compression flag and a 32-bit length.
const PREFIX: usize = 5;

/// One `Update`, encoded with its gRPC message prefix, as it goes on the
/// wire; cloning shares the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    bytes: Bytes,
    /// The update's kind, for `weft_control_updates_total`.
    kind: &'static str,
}

impl Encoded {
    pub fn new(kind: U) -> Self {
        let name = kind_name(&kind);
        let update = pb::Update { kind: Some(kind) };
        let len = update.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFIX + len);
        buf.put_u8(0);
        // A message over 4 GiB cannot be made from the model (the
        // Service's endpoints would not fit in memory first).
        buf.put_u32(u32::try_from(len).expect("an update under 4 GiB"));
        update.encode(&mut buf).expect("capacity reserved");
        Self {
            bytes: buf.freeze(),
            kind: name,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The update again (tests, and clients of this crate's streams).
    pub fn decode(&self) -> pb::Update {
        pb::Update::decode(&self.bytes[PREFIX..]).expect("encoded by Encoded::new")
    }
}

/// The metric label of an update's kind.
pub fn kind_name(kind: &U) -> &'static str {
    match kind {
        U::Snapshot(_) => "snapshot",
        U::Add(_) => "add",
        U::Remove(_) => "remove",
        U::NoEndpoints(_) => "no_endpoints",
        U::DoesNotExist(_) => "does_not_exist",
        U::Profile(_) => "profile",
    }
}

/// The Discovery gRPC service, to add to a tonic server.
#[derive(Debug, Clone)]
pub struct DiscoveryService(Arc<DiscoveryServer>);

impl DiscoveryService {
    pub fn new(server: DiscoveryServer) -> Self {
        Self(Arc::new(server))
    }
}

impl NamedService for DiscoveryService {
    const NAME: &'static str = pb::discovery_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for DiscoveryService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != WATCH_PATH {
                return Ok(Status::unimplemented(format!(
                    "{} has no method {}",
                    pb::discovery_server::SERVICE_NAME,
                    req.uri().path()
                ))
                .into_http());
            }
            let request = match read_request(req).await {
                Ok(r) => r,
                Err(status) => return Ok(status.into_http()),
            };
            Ok(match server.watch(request).await {
                Ok(stream) => {
                    let mut response = http::Response::new(tonic::body::Body::new(Updates {
                        stream: stream.into_inner(),
                        done: false,
                    }));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        tonic::metadata::GRPC_CONTENT_TYPE,
                    );
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Reads the one `WatchRequest` of a call.
async fn read_request<B>(req: http::Request<B>) -> Result<Request<pb::WatchRequest>, Status>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_REQUEST)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the request: {e}")))?
        .to_bytes();
    let message = match body.split_first() {
        Some((0, rest)) if rest.len() >= 4 => {
            let (len, message) = rest.split_at(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if message.len() != len {
                return Err(Status::invalid_argument(
                    "the request is not one gRPC message",
                ));
            }
            message
        }
        Some((1, _)) => {
            return Err(Status::unimplemented(
                "compressed requests are not accepted",
            ))
        }
        _ => {
            return Err(Status::invalid_argument(
                "the request is not one gRPC message",
            ))
        }
    };
    let message = pb::WatchRequest::decode(message)
        .map_err(|e| Status::invalid_argument(format!("decoding WatchRequest: {e}")))?;
    Ok(Request::from_http(http::Request::from_parts(
        parts, message,
    )))
}

/// A watch's response body: each update's bytes as they are (no copy per
/// stream), then the trailers with the stream's status.
struct Updates {
    stream: WatchStream,
    done: bool,
}

impl Body for Updates {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        use futures_util::StreamExt;
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(self.stream.poll_next_unpin(cx)) {
            Some(Ok(update)) => return Poll::Ready(Some(Ok(Frame::data(update.bytes)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        // A status whose message cannot be a header value says so itself.
        if let Err(status) = status.add_header(&mut trailers) {
            let _ = status.add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
