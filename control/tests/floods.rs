//! Hostile clients of the control plane, each scenario printing its
//! figures: 10,000 Watch streams on one connection and more, a Certify
//! flood with bad tokens from one and from several connections, a 50 MB
//! manifest in the directory source. Each asserts the bound, the refusal
//! (its status or log line, and its metric) and that everyone else is
//! still served.
//!
//! weft-control runs as its own process (the binary, on loopback port 0),
//! so that its RSS (`/proc/<pid>/status`) and CPU (`process_cpu_seconds_total`)
//! are its own: a tonic client in the same process would add its own
//! per-stream buffers to the figure. The Kubernetes API is the fake one.

use rcgen::{CertificateParams, KeyPair, SanType};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use weft_control::identity::ca;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;
use weft_proto::identity::v1 as id;
use weft_proto::identity::v1::identity_client::IdentityClient;
use weft_tests::fakekube::{FakeKube, SECRETS, TOKEN_REVIEWS};

/// The weft-control binary: this build's, or `WEFT_FLOODS_CONTROL` (a
/// release build, for release figures).
fn control_bin() -> String {
    std::env::var("WEFT_FLOODS_CONTROL")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft-control").to_owned())
}
/// The longest any single wait may take on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// A weft-control process, killed when dropped; its log lines kept.
struct Control {
    child: std::process::Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    log: Arc<(Mutex<Vec<String>>, Notify)>,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Control {
    /// Starts weft-control with `args` and waits until it is ready.
    async fn start(args: &[String]) -> Self {
        let mut child = Command::new(control_bin())
            .args(["--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"])
            .args(args)
            .env("WEFT_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("weft-control starts");
        let log: Arc<(Mutex<Vec<String>>, Notify)> = Arc::default();
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.0.lock().unwrap().push(line);
                lines.1.notify_waiters();
            }
        });
        let mut control = Self {
            child,
            grpc: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = control.until_log(&["weft-control serving"]).await;
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        (control.grpc, control.admin) = (field("grpc"), field("admin"));
        weft_tests::until_ready(control.admin, WAIT).await;
        control
    }

    /// The first log line holding every one of `words`, waiting for it.
    async fn until_log(&self, words: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (lines, notify) = &*self.log;
            let more = notify.notified();
            if let Some(l) = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l.clone();
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                panic!("no log line with {words:?} within {WAIT:?}");
            }
        }
    }

    /// `VmRSS` or `VmHWM` (the peak) of the process, in KiB.
    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS")
    }

    async fn metric(&self, series: &str) -> f64 {
        weft_tests::admin_metric(self.admin, series)
            .await
            .unwrap_or(0.0)
    }

    async fn until_metric(&self, series: &str, want: f64) {
        weft_tests::until_admin_metric(self.admin, series, want, WAIT).await;
    }

    /// A channel of its own (one HTTP/2 connection) from 127.0.0.1.
    async fn channel(&self) -> Channel {
        self.channel_from([127, 0, 0, 1]).await
    }

    /// A channel of its own (one HTTP/2 connection) from the loopback
    /// address `from` (each a client IP of its own to weft-control).
    async fn channel_from(&self, from: [u8; 4]) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .local_address(Some(std::net::Ipv4Addr::from(from).into()))
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connects to weft-control")
    }
}

/// A directory of manifests for the files source, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-floods-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `name` whole (to a temporary name, then renamed).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }

    /// weft-control on this directory, polled every 50 ms, with `args`.
    async fn control(&self, args: &[String]) -> Control {
        let mut all = vec![
            format!("--source={}", self.0.display()),
            "--poll-interval=50ms".to_owned(),
        ];
        all.extend_from_slice(args);
        Control::start(&all).await
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Service `name` in `shop` with an EndpointSlice of `ips`, port 8080.
fn service(name: &str, cluster_ip: &str, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [{ip}]}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  clusterIP: {cluster_ip}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

fn watch_request(authority: &str) -> pb::WatchRequest {
    pb::WatchRequest {
        destination: Some(pb::watch_request::Destination::Authority(authority.into())),
        context: Some(pb::ProxyContext {
            pod_namespace: "shop".into(),
            ..Default::default()
        }),
    }
}

async fn next(stream: &mut tonic::Streaming<pb::Update>) -> U {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
        .kind
        .expect("an update has a kind")
}

/// The endpoints' addresses of a snapshot, sorted.
fn addrs(endpoints: &[pb::Endpoint]) -> Vec<String> {
    let mut v: Vec<String> = endpoints
        .iter()
        .map(|e| {
            SocketAddr::try_from(e.addr.as_ref().unwrap())
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Watches `authority` on `channel` until its snapshot: its endpoints.
async fn snapshot(
    channel: &Channel,
    authority: &str,
) -> (tonic::Streaming<pb::Update>, Vec<String>) {
    let mut stream = DiscoveryClient::new(channel.clone())
        .watch(watch_request(authority))
        .await
        .expect("the watch is taken")
        .into_inner();
    loop {
        match next(&mut stream).await {
            U::Snapshot(s) => return (stream, addrs(&s.endpoints)),
            U::DoesNotExist(_) => continue,
            other => panic!("a snapshot first, not {other:?}"),
        }
    }
}

/// Opens `n` watches on `channel` of names nobody publishes (each one a
/// hub entry while it is watched), each read to its first update.
async fn open_watches(
    channel: &Channel,
    n: usize,
    round: &str,
) -> Vec<tonic::Streaming<pb::Update>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let mut client = DiscoveryClient::new(channel.clone());
            async move {
                let mut s = client
                    .watch(watch_request(&format!("n{i}.{round}:80")))
                    .await
                    .unwrap_or_else(|e| panic!("watch {i} taken: {e}"))
                    .into_inner();
                assert!(matches!(next(&mut s).await, U::DoesNotExist(_)));
                s
            }
        })
        .buffer_unordered(200)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watches_on_one_connection_then_refused_and_others_served() {
    const LIMIT: usize = 10_000; // the default --max-watches-per-connection
    const OVER: usize = 100;
    let dir = Dir::new("watches");
    dir.write("web.yaml", &service("web", "10.96.0.10", &["10.0.0.1"]));
    let control = dir.control(&[]).await;

    // A proxy on its own connection, watching web.
    let other = control.channel().await;
    let (mut web, eps) = snapshot(&other, "web.shop:80").await;
    assert_eq!(eps, ["10.0.0.1:8080"]);
    let rss_before = control.rss_kib();

    // One connection, 10,000 watches of names nobody publishes.
    let hostile = control.channel().await;
    let started = Instant::now();
    let streams = open_watches(&hostile, LIMIT, "a").await;
    let opened = started.elapsed();
    control
        .until_metric("weft_control_watchers", (LIMIT + 1) as f64)
        .await;
    let rss_held = control.rss_kib();

    // More on the same connection: each refused, counted.
    let mut client = DiscoveryClient::new(hostile.clone());
    for i in 0..OVER {
        let refused = client
            .watch(watch_request(&format!("over{i}.hostile:80")))
            .await
            .expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(
            refused.message(),
            format!(
                "this connection already has {LIMIT} watches open (--max-watches-per-connection)"
            )
        );
    }
    control
        .until_metric("weft_control_watches_refused_total", OVER as f64)
        .await;

    // The other proxy: an update promptly, and a new watch on its connection.
    let changed = Instant::now();
    dir.write(
        "web.yaml",
        &service("web", "10.96.0.10", &["10.0.0.1", "10.0.0.2"]),
    );
    let U::Add(add) = next(&mut web).await else {
        panic!("an Add")
    };
    let update_latency = changed.elapsed();
    assert_eq!(addrs(&add.endpoints), ["10.0.0.2:8080"]);
    let new_watch = Instant::now();
    let (_again, eps) = snapshot(&other, "web.shop:80").await;
    let new_watch_latency = new_watch.elapsed();
    assert_eq!(eps, ["10.0.0.1:8080", "10.0.0.2:8080"]);
    // A new connection from the same client (another port) has its own count.
    let (_third, _) = snapshot(&control.channel().await, "web.shop:80").await;

    // The hostile connection's streams end: every slot and name is freed.
    drop(streams);
    control.until_metric("weft_control_watchers", 3.0).await;
    let (reused, _) = snapshot(&hostile, "web.shop:80").await;
    let rss_after = control.rss_kib();
    drop(reused);
    // Again, other names: the memory the first ones took is reused.
    let again = open_watches(&hostile, LIMIT, "b").await;
    control
        .until_metric("weft_control_watchers", (LIMIT + 3) as f64)
        .await;
    let rss_again = control.rss_kib();
    drop(again);

    let per_stream = (rss_held.saturating_sub(rss_before)) * 1024 / LIMIT as u64;
    println!("watches: {LIMIT} on one connection opened in {opened:?}");
    println!(
        "watches: weft-control RSS {rss_before} KiB before, {rss_held} KiB holding them ({per_stream} bytes per stream), {rss_after} KiB after they ended, {rss_again} KiB holding {LIMIT} others"
    );
    println!("watches: {OVER} more refused RESOURCE_EXHAUSTED, weft_control_watches_refused_total {OVER}");
    println!(
        "watches: the other connection's update after {update_latency:?}, a new watch's snapshot after {new_watch_latency:?}"
    );
    // The bound: what a stream costs (h2 stream, its task, its hub entry).
    assert!(
        per_stream <= 16 * 1024,
        "{per_stream} bytes of RSS per watch stream"
    );
    assert!(
        rss_again <= rss_held + rss_held / 10,
        "RSS grew from {rss_held} KiB to {rss_again} KiB between two rounds of {LIMIT} watches"
    );
    assert!(
        update_latency < Duration::from_secs(5),
        "the other proxy's update took {update_latency:?}"
    );
}

/// `bytes` of YAML a model does not keep: ConfigMaps (a kind weft skips,
/// parsed all the same), 1 KiB of data each.
fn filler(bytes: usize) -> String {
    let value = "x".repeat(1000);
    let mut out = String::with_capacity(bytes + 1200);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: filler-{i}, namespace: shop}}\ndata: {{v: {value}}}\n"
        ));
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_manifest_is_refused_unread_and_the_rest_served() {
    const HUGE: usize = 50 * 1024 * 1024;
    let dir = Dir::new("huge");
    dir.write("a-web.yaml", &service("web", "10.96.0.10", &["10.0.0.1"]));
    dir.write("b-db.yaml", &service("db", "10.96.0.11", &["10.0.1.1"]));
    // The default --files-max-bytes (8 MiB).
    let control = dir.control(&[]).await;
    let channel = control.channel().await;
    let (mut web, eps) = snapshot(&channel, "web.shop:80").await;
    assert_eq!(eps, ["10.0.0.1:8080"]);
    let (mut db, _) = snapshot(&channel, "db.shop:80").await;
    let (rss_before, peak_before) = (control.rss_kib(), control.memory_kib("VmHWM"));

    // web's file replaced by 50 MB that would move web to 10.0.0.99, and a
    // new 50 MB file with a Service of its own.
    let mut big_web = service("web", "10.96.0.10", &["10.0.0.99"]);
    big_web.push_str(&filler(HUGE));
    let mut huge = service("huge", "10.96.0.12", &["10.0.2.1"]);
    huge.push_str(&filler(HUGE));
    let written = Instant::now();
    dir.write("a-web.yaml", &big_web);
    dir.write("c-huge.yaml", &huge);
    let (web_path, huge_path) = (dir.0.join("a-web.yaml"), dir.0.join("c-huge.yaml"));
    for (path, size) in [(&web_path, big_web.len()), (&huge_path, huge.len())] {
        let line = control
            .until_log(&[
                "file refused: larger than --files-max-bytes",
                &format!("path={}", path.display()),
            ])
            .await;
        assert!(line.contains(&format!("size={size}")), "{line}");
        assert!(line.contains("limit=8388608"), "{line}");
    }
    let refused_after = written.elapsed();
    control
        .until_metric(
            r#"weft_control_source_errors_total{source="files",kind="file_too_large"}"#,
            2.0,
        )
        .await;

    // The other files are still served: db's change arrives.
    dir.write(
        "b-db.yaml",
        &service("db", "10.96.0.11", &["10.0.1.1", "10.0.1.2"]),
    );
    let U::Add(add) = next(&mut db).await else {
        panic!("an Add")
    };
    assert_eq!(addrs(&add.endpoints), ["10.0.1.2:8080"]);
    // web kept what it had: nothing came on its watch, a new watch says
    // the same, and the huge file's Service does not exist.
    assert!(
        futures_util::FutureExt::now_or_never(web.message()).is_none(),
        "no update for web"
    );
    let (_, eps) = snapshot(&channel, "web.shop:80").await;
    assert_eq!(eps, ["10.0.0.1:8080"]);
    let mut none = DiscoveryClient::new(channel.clone())
        .watch(watch_request("huge.shop:80"))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut none).await, U::DoesNotExist(_)));
    let (rss_after, peak_after) = (control.rss_kib(), control.memory_kib("VmHWM"));

    // A file just under the limit is parsed: what that costs at its peak.
    let at_limit = filler(8 * 1024 * 1024 - 2048);
    let parsed = Instant::now();
    // Read before b-db.yaml in the same scan: db's update comes after it.
    dir.write("a0-at-limit.yaml", &at_limit);
    dir.write("b-db.yaml", &service("db", "10.96.0.11", &["10.0.1.1"]));
    let U::Remove(_) = next(&mut db).await else {
        panic!("a Remove")
    };
    let parse_took = parsed.elapsed();
    let peak_parsed = control.memory_kib("VmHWM");

    println!(
        "files: two {} MB files refused unread within {refused_after:?} of being written",
        HUGE / 1024 / 1024
    );
    println!(
        "files: weft-control RSS {rss_before} KiB before, {rss_after} KiB after; peak RSS {peak_before} KiB before, {peak_after} KiB after"
    );
    println!(
        "files: a {} byte file (the limit is 8388608) parsed within {parse_took:?}, peak RSS then {peak_parsed} KiB (+{} KiB)",
        at_limit.len(),
        peak_parsed.saturating_sub(peak_after)
    );
    // Refused unread: the peak did not move by anything like 50 MB.
    assert!(
        peak_after < peak_before + 16 * 1024,
        "peak RSS went from {peak_before} KiB to {peak_after} KiB"
    );
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn csr(san: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    p.serialize_request(&key).unwrap().der().to_vec()
}

/// How far the flood got: answers, and whether the proxies are done.
#[derive(Default)]
struct Progress {
    answered: std::sync::atomic::AtomicU64,
    proxies_done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

/// The flood sends at least this many requests, and goes on until the
/// proxies were certified.
const FLOOD_AT_LEAST: u64 = 10_000;

impl Progress {
    fn answered(&self) {
        self.answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    fn over(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.proxies_done.load(Relaxed) && self.answered.load(Relaxed) >= FLOOD_AT_LEAST
    }

    /// Waits until `n` requests were answered.
    async fn until_answered(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let more = self.notify.notified();
            if self.answered.load(std::sync::atomic::Ordering::Relaxed) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                panic!("the flood did not get {n} answers within {WAIT:?}");
            }
        }
    }
}

/// What the flood got back, by status code.
#[derive(Debug, Default)]
struct Answers {
    unauthenticated: u64,
    limited: u64,
    bad_request: u64,
}

/// Certify with bad tokens on `channel`, `in_flight` at once, until
/// `stop`: nine in ten a token nobody issued (each a new one, so no
/// refusal is remembered), one in twenty over 16 KiB, one in twenty with an
/// identity that is not one. The CSR is junk: nothing gets that far.
async fn flood(
    channel: Channel,
    name: String,
    in_flight: usize,
    progress: Arc<Progress>,
) -> Answers {
    use futures_util::StreamExt;
    let long = "t".repeat(20 * 1024);
    let answers = futures_util::stream::iter(0..)
        .take_while(|_| std::future::ready(!progress.over()))
        .map(|i: u64| {
            let mut client = IdentityClient::new(channel.clone());
            let (identity, token) = match i % 20 {
                0 => (WEB.to_owned(), long.clone()),
                1 => (
                    "spiffe://cluster.local/not-an-identity".to_owned(),
                    String::new(),
                ),
                _ => (WEB.to_owned(), format!("bad-token-{name}-{i}")),
            };
            async move {
                client
                    .certify(id::CertifyRequest {
                        identity,
                        token,
                        certificate_signing_request: vec![0x30, 0x03, 1, 2, 3],
                    })
                    .await
            }
        })
        .buffer_unordered(in_flight);
    let mut answers = std::pin::pin!(answers);
    let mut got = Answers::default();
    while let Some(answer) = answers.next().await {
        let status = answer.expect_err("a bad token is never certified");
        progress.answered();
        match status.code() {
            Code::Unauthenticated => {
                assert!(
                    status.message().starts_with("invalid token: "),
                    "{status:?}"
                );
                got.unauthenticated += 1;
            }
            Code::ResourceExhausted => {
                assert!(
                    status
                        .message()
                        .contains("too many token reviews from 127.0.0."),
                    "{status:?}"
                );
                got.limited += 1;
            }
            Code::InvalidArgument => got.bad_request += 1,
            _ => panic!("the flood got {status:?}"),
        }
    }
    got
}

/// How many proxies are certified during a flood, each with its token.
const PROXIES: usize = 5;

fn proxy_token(k: usize) -> String {
    format!("token-of-web-proxy-{k}")
}

/// What a flood cost and what the proxies saw.
struct Flooded {
    answers: Answers,
    took: Duration,
    /// Each proxy's Certify.
    proxies: Vec<Duration>,
    /// The client IPs (one connection each).
    ips: u64,
    cpu_seconds: f64,
    rss_kib: (u64, u64),
    /// weft-control's threads after the flood.
    threads: u64,
}

impl Flooded {
    fn requests(&self) -> u64 {
        self.answers.unauthenticated + self.answers.limited + self.answers.bad_request
    }

    fn print(&self, what: &str) {
        let (requests, a) = (self.requests(), &self.answers);
        println!(
            "{what}: {requests} requests in {:?} ({:.0}/s) from {} client IPs over as many connections",
            self.took,
            requests as f64 / self.took.as_secs_f64(),
            self.ips
        );
        println!(
            "{what}: {} rate_limited (RESOURCE_EXHAUSTED), {} invalid_token (UNAUTHENTICATED), {} bad_request (INVALID_ARGUMENT)",
            a.limited, a.unauthenticated, a.bad_request
        );
        println!(
            "{what}: weft-control CPU {:.2} s ({:.0} µs per request), RSS {} KiB before, {} KiB after, {} threads",
            self.cpu_seconds,
            self.cpu_seconds * 1e6 / requests as f64,
            self.rss_kib.0,
            self.rss_kib.1,
            self.threads
        );
        println!(
            "{what}: {PROXIES} proxies certified during it, slowest {:?} ({:?})",
            self.slowest(),
            self.proxies
        );
    }

    fn slowest(&self) -> Duration {
        self.proxies.iter().copied().max().unwrap_or_default()
    }

    /// The bounds both sources keep, and the refusals counted by reason.
    async fn check(&self, control: &Control) {
        let certify = async |result: &str| {
            control
                .metric(&format!(
                    "weft_control_certify_total{{result=\"{result}\"}}"
                ))
                .await as u64
        };
        assert_eq!(certify("rate_limited").await, self.answers.limited);
        assert_eq!(certify("invalid_token").await, self.answers.unauthenticated);
        assert_eq!(certify("bad_request").await, self.answers.bad_request);
        assert_eq!(certify("issued").await, PROXIES as u64);
        assert!(
            self.slowest() < Duration::from_secs(5),
            "a proxy's Certify took {:?} during the flood",
            self.slowest()
        );
        let (before, after) = self.rss_kib;
        assert!(
            after < before + 32 * 1024,
            "RSS went from {before} KiB to {after} KiB"
        );
    }
}

/// Floods `control` with bad tokens (one connection from 127.0.0.2 with
/// 64 requests in flight, eight from 127.0.0.3 to 127.0.0.10 with 16
/// each) while [`PROXIES`] proxies from 127.0.0.1 are certified one after
/// the other, each with a token never seen before.
async fn flood_while_proxies_certify(control: &Control) -> Flooded {
    use std::sync::atomic::Ordering;
    let (rss_before, cpu_before) = (
        control.rss_kib(),
        control.metric("process_cpu_seconds_total").await,
    );
    let progress = Arc::new(Progress::default());
    let mut floods = vec![];
    let mut sources = vec![([127, 0, 0, 2], 64)];
    sources.extend((3..=10).map(|last| ([127, 0, 0, last], 16)));
    for (from, in_flight) in &sources {
        let channel = control.channel_from(*from).await;
        let name = format!("{}", from[3]);
        floods.push(tokio::spawn(flood(
            channel,
            name,
            *in_flight,
            progress.clone(),
        )));
    }
    let started = Instant::now();
    progress.until_answered(1000).await;

    let channel = control.channel().await;
    let mut proxies = vec![];
    for k in 0..PROXIES {
        let asked = Instant::now();
        let rsp = IdentityClient::new(channel.clone())
            .certify(id::CertifyRequest {
                identity: WEB.into(),
                token: proxy_token(k),
                certificate_signing_request: csr(WEB),
            })
            .await
            .unwrap_or_else(|e| panic!("proxy {k} certified during the flood: {e:?}"));
        proxies.push(asked.elapsed());
        assert!(!rsp.into_inner().leaf_certificate.is_empty());
    }
    progress.proxies_done.store(true, Ordering::Relaxed);
    let mut answers = Answers::default();
    for f in floods {
        let a = f.await.unwrap();
        answers.unauthenticated += a.unauthenticated;
        answers.limited += a.limited;
        answers.bad_request += a.bad_request;
    }
    let took = started.elapsed();
    Flooded {
        answers,
        took,
        proxies,
        ips: sources.len() as u64,
        cpu_seconds: control.metric("process_cpu_seconds_total").await - cpu_before,
        rss_kib: (rss_before, control.rss_kib()),
        threads: control.memory_kib("Threads"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certify_flood_with_bad_tokens_is_limited_and_proxies_still_certified() {
    let kube = FakeKube::start();
    let year = Duration::from_secs(365 * 24 * 3600);
    let g = ca::generate("cluster.local", year, year / 12).unwrap();
    kube.apply(
        &SECRETS,
        weft_tests::fakekube::issuer_secret(
            "weft",
            "weft-issuer",
            &g.issuer_pem,
            &g.issuer_key_pem,
            &g.anchor_pem,
        ),
    );
    for k in 0..PROXIES {
        kube.add_token(&proxy_token(k), "system:serviceaccount:shop:web", &["weft"]);
    }
    let control = Control::start(&[
        "--source=kube".into(),
        format!("--kube-api-server={}", kube.url()),
        "--identity-secret=weft/weft-issuer".into(),
        "--leaf-lifetime=1h".into(),
    ])
    .await;
    let reviews_before = kube.creates(&TOKEN_REVIEWS);
    let flooded = flood_while_proxies_certify(&control).await;
    let reviews = kube.creates(&TOKEN_REVIEWS) - reviews_before;
    flooded.print("certify flood (TokenReview)");
    flooded.check(&control).await;
    // The API server saw each client's burst and refills, and the proxies;
    // the rest was refused without asking it.
    let budget = flooded.ips
        * (u64::from(weft_control::identity::review::CLIENT_BURST) + flooded.took.as_secs() + 1)
        + PROXIES as u64;
    println!("certify flood (TokenReview): {reviews} TokenReviews (budget {budget})");
    assert!(
        reviews <= budget,
        "{reviews} TokenReviews, at most {budget}"
    );
    assert!(
        flooded.answers.limited > flooded.requests() / 2,
        "most of the flood is rate-limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certify_flood_on_a_token_file_is_answered_and_proxies_still_certified() {
    let dir = Dir::new("tokens");
    let (manifests, ca_dir, tokens) = (
        dir.0.join("manifests"),
        dir.0.join("ca"),
        dir.0.join("tokens.yaml"),
    );
    std::fs::create_dir_all(&manifests).unwrap();
    let year = Duration::from_secs(365 * 24 * 3600);
    ca::generate("cluster.local", year, year / 12)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let lines: Vec<String> = (0..PROXIES)
        .map(|k| format!("{}: shop/web\n", proxy_token(k)))
        .collect();
    std::fs::write(&tokens, lines.concat()).unwrap();
    let control = Control::start(&[
        format!("--source={}", manifests.display()),
        format!("--identity-dir={}", ca_dir.display()),
        format!("--identity-tokens={}", tokens.display()),
        "--leaf-lifetime=1h".into(),
    ])
    .await;
    let flooded = flood_while_proxies_certify(&control).await;
    flooded.print("certify flood (token file)");
    flooded.check(&control).await;
    assert_eq!(
        flooded.answers.limited, 0,
        "a token file is not rate-limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_any_call_on_one_connection_are_bounded_too() {
    use futures_util::StreamExt;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    const WATCHES: u32 = 1000;
    const STREAMS: usize = (WATCHES + weft_control::run::OTHER_STREAMS_PER_CONNECTION) as usize;
    let dir = Dir::new("streams");
    let control = dir
        .control(&[format!("--max-watches-per-connection={WATCHES}")])
        .await;

    // What the server tells every client: at most this many streams.
    let tcp = tokio::net::TcpStream::connect(control.grpc).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let (answer, _) = h2
        .send_request(
            http::Request::post(format!("http://{}/nothing.Here/Call", control.grpc))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    answer.await.unwrap(); // the server's SETTINGS came before it
    assert_eq!(h2.current_max_send_streams(), STREAMS);
    drop(h2);
    driver.abort();

    // A client that keeps to it: health watches up to the limit, each
    // answered; one more waits until one of them ends.
    let rss_before = control.rss_kib();
    let channel = control.channel().await;
    let watch = |channel: Channel| async move {
        let mut s = HealthClient::new(channel)
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().expect("a status");
        s
    };
    let mut streams: Vec<_> = futures_util::stream::iter(0..STREAMS)
        .map(|_| watch(channel.clone()))
        .buffer_unordered(200)
        .collect()
        .await;
    let rss_held = control.rss_kib();
    let waiting = tokio::spawn(watch(channel.clone()));
    // Another connection is served meanwhile.
    let mut other = DiscoveryClient::new(control.channel().await)
        .watch(watch_request("web.shop:80"))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut other).await, U::DoesNotExist(_)));
    assert!(
        !waiting.is_finished(),
        "one stream over the limit was answered"
    );
    streams.pop();
    let _late = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("answered once a stream ended")
        .unwrap();
    println!(
        "streams: the server allows {STREAMS} streams per connection (--max-watches-per-connection {WATCHES} + {}); {STREAMS} health watches cost {} bytes of RSS each; one more waited until one ended",
        weft_control::run::OTHER_STREAMS_PER_CONNECTION,
        rss_held.saturating_sub(rss_before) * 1024 / STREAMS as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_next_waits_counted_and_is_served_once_one_closes() {
    const MAX: usize = 3;
    const WAITS: &str = "weft_control_connection_limit_waits_total";
    let dir = Dir::new("connections");
    dir.write("web.yaml", &service("web", "10.96.0.10", &["10.0.0.1"]));
    let control = dir.control(&[format!("--max-connections={MAX}")]).await;
    let mut held = Vec::new();
    for _ in 0..MAX {
        let channel = control.channel().await;
        let (stream, eps) = snapshot(&channel, "web.shop:80").await;
        assert_eq!(eps, ["10.0.0.1:8080"]);
        held.push((channel, stream));
    }
    assert_eq!(control.metric(WAITS).await, 0.0);

    // One more: connected (the kernel's backlog), counted, not served.
    let extra = control.channel().await;
    let mut waiting = tokio::spawn(async move { snapshot(&extra, "web.shop:80").await.1 });
    control.until_metric(WAITS, 1.0).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "served past --max-connections={MAX}"
    );
    // The others are still served on their connections.
    let (_again, eps) = snapshot(&held[0].0, "web.shop:80").await;
    assert_eq!(eps, ["10.0.0.1:8080"]);

    // One closes: the one waiting is served.
    drop(held.pop());
    let eps = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(eps, ["10.0.0.1:8080"]);
    println!("--max-connections={MAX}: the next connection waited, counted, and was served once one closed");
}
