//! The receiver's two servers over one [`Store`]: OTLP/gRPC
//! `TraceService/Export` (opentelemetry-proto's generated server on the
//! project's tonic) and Jaeger's query API over HTTP/1.1 and HTTP/2
//! (hyper). Both take a bound listener and a shutdown future. Beside
//! Jaeger's paths the query port serves the receiver's own controls, for a
//! receiver running in a pod: `GET /receiver/stats` (spans kept, exports
//! accepted and refused, spans dropped, failing) and `POST
//! /receiver/failing?on` / `?off`.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use super::jaeger;
use super::span::spans_of;
use super::store::Store;

/// Serves both listeners until `shutdown` completes, then returns once no
/// export is in flight, without waiting for idle exporter connections to
/// go (an exporter keeps its connection open: tonic's graceful shutdown
/// would wait for it); those are closed when the runtime ends.
///
/// # Errors
/// If the gRPC server fails (its listener broke).
pub async fn serve(
    grpc: TcpListener,
    query: TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(serve_query(query, store.clone(), {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }));
    let (stopping, mut stopped_grpc) = tokio::sync::watch::channel(false);
    let grpc = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Export(store.clone())))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            async move {
                shutdown.await;
                let _ = stop.send(true);
                let _ = stopping.send(true);
            },
        );
    let drained = async {
        let _ = stopped_grpc.wait_for(|s| *s).await;
        store.idle().await;
    };
    let served = tokio::select! {
        served = grpc => served,
        () = drained => Ok(()),
    };
    let _ = http.await;
    served
}

/// `TraceService/Export`: records the spans, or answers UNAVAILABLE while
/// the store is set failing.
#[derive(Debug)]
struct Export(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Export {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _handling = self.0.begin();
        if self.0.failing() {
            self.0.refuse();
            return Err(tonic::Status::unavailable(
                "the test receiver is set failing",
            ));
        }
        self.0.record(spans_of(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves Jaeger's query API from `listener` until `shutdown` completes.
pub async fn serve_query(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(&store, &req)) }
            });
            // A client that goes away mid-request is no error of ours.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(store: &Store, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or(""));
    let (code, body) = match (req.method(), path) {
        (&Method::GET, "/receiver/stats") => (200, stats(store)),
        (&Method::POST, "/receiver/failing") => match query {
            "on" | "off" => {
                store.set_failing(query == "on");
                (200, stats(store))
            }
            _ => (
                400,
                serde_json::json!({"error": "POST /receiver/failing?on or ?off"}),
            ),
        },
        (&Method::GET, _) => jaeger::answer(&*store.lock(), path, query),
        _ => (
            405,
            serde_json::json!({"data": null, "errors": [{"code": 405, "msg": "GET only"}]}),
        ),
    };
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// The receiver's own counters (not part of Jaeger's API).
fn stats(store: &Store) -> serde_json::Value {
    serde_json::json!({
        "spans": store.lock().len(),
        "exports": store.exports(),
        "refused": store.refused(),
        "dropped": store.dropped(),
        "failing": store.failing(),
    })
}
