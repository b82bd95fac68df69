//! The proxies' side: `Discovery.Watch` streams spread over a few HTTP/2
//! connections, one task each, logging when its snapshot and each `Add` or
//! `Remove` arrived. The tasks only note arrival times; matching them to
//! the changes is done afterwards (`measure`).

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;

use crate::plan::Op;

/// Counters the benchmark polls while the streams run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Streams that received their first snapshot.
    pub snapshots: AtomicUsize,
    /// Addresses received in `Add`s and `Remove`s, over all streams.
    pub deliveries: AtomicUsize,
    /// Streams that failed or ended.
    pub failed: AtomicUsize,
}

/// What one stream received.
#[derive(Debug, Default)]
pub struct Log {
    /// When the first snapshot arrived and how many endpoints it held.
    pub snapshot: Option<(Instant, usize)>,
    /// Every address of every `Add` and `Remove`, with its arrival time.
    pub deliveries: Vec<(Op, SocketAddr, Instant)>,
    /// Snapshots after the first: the server coalesced changes.
    pub resnapshots: usize,
    /// `NoEndpoints`, `DoesNotExist` and `Profile` updates.
    pub others: usize,
    pub error: Option<String>,
}

/// Opens `n` HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            endpoint
                .connect()
                .await
                .context("connecting to weft-control")?,
        );
    }
    Ok(channels)
}

/// The running streams.
#[derive(Debug)]
pub struct Watchers {
    tasks: Vec<JoinHandle<Log>>,
    stop: watch::Sender<bool>,
    pub progress: Arc<Progress>,
}

impl Watchers {
    /// Starts one stream per target, stream `i` on connection `i % n`, so
    /// every connection carries a share of each Service's watchers. Must be
    /// called within the runtime.
    pub fn open(channels: &[Channel], targets: &[SocketAddr]) -> Self {
        let progress = Arc::new(Progress::default());
        let (stop, stopped) = watch::channel(false);
        let tasks = targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let client = DiscoveryClient::new(channels[i % channels.len()].clone());
                tokio::spawn(follow(client, *target, progress.clone(), stopped.clone()))
            })
            .collect();
        Self {
            tasks,
            stop,
            progress,
        }
    }

    /// Ends every stream and returns their logs (a task that did not end
    /// within `limit` is aborted and its log lost).
    pub async fn stop(self, limit: Duration) -> Vec<Log> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + limit;
        let mut logs = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(log)) => logs.push(log),
                Ok(Err(e)) => logs.push(Log {
                    error: Some(format!("watcher task failed: {e}")),
                    ..Log::default()
                }),
                Err(_) => {
                    abort.abort();
                    logs.push(Log {
                        error: Some("watcher task did not stop".into()),
                        ..Log::default()
                    });
                }
            }
        }
        logs
    }
}

/// One stream: reads updates until told to stop or the stream fails.
async fn follow(
    mut client: DiscoveryClient<Channel>,
    target: SocketAddr,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Log {
    let mut log = Log::default();
    let request = pb::WatchRequest {
        destination: Some(pb::watch_request::Destination::Addr(target.into())),
        context: None,
    };
    let mut stream = match client.watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            log.error = Some(format!("Watch {target}: {status}"));
            progress.failed.fetch_add(1, Relaxed);
            return log;
        }
    };
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = stop.changed() => return log,
        };
        let now = Instant::now();
        match message {
            Ok(Some(update)) => log.record(update.kind, now, &progress),
            Ok(None) => {
                log.error = Some(format!("Watch {target}: the server ended the stream"));
                break;
            }
            Err(status) => {
                log.error = Some(format!("Watch {target}: {status}"));
                break;
            }
        }
    }
    progress.failed.fetch_add(1, Relaxed);
    log
}

impl Log {
    fn record(&mut self, kind: Option<U>, now: Instant, progress: &Progress) {
        let addrs = |op, addrs: Vec<SocketAddr>, log: &mut Self| {
            progress.deliveries.fetch_add(addrs.len(), Relaxed);
            log.deliveries
                .extend(addrs.into_iter().map(|a| (op, a, now)));
        };
        match kind {
            Some(U::Snapshot(s)) if self.snapshot.is_none() => {
                self.snapshot = Some((now, s.endpoints.len()));
                progress.snapshots.fetch_add(1, Relaxed);
            }
            Some(U::Snapshot(_)) => self.resnapshots += 1,
            Some(U::Add(a)) => {
                let list = a.endpoints.iter().filter_map(|e| e.addr.as_ref());
                addrs(
                    Op::Add,
                    list.filter_map(|a| a.try_into().ok()).collect(),
                    self,
                );
            }
            Some(U::Remove(r)) => {
                let list = r.addrs.iter().filter_map(|a| a.try_into().ok());
                addrs(Op::Remove, list.collect(), self);
            }
            Some(U::NoEndpoints(_) | U::DoesNotExist(_) | U::Profile(_)) | None => {
                self.others += 1;
            }
        }
    }
}
