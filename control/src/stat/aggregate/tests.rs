use super::*;
use std::time::{Duration, Instant};

fn pod(workload: &str, pod: &str) -> PodRef {
    PodRef {
        namespace: "shop".into(),
        workload: workload.into(),
        pod: pod.into(),
    }
}

#[test]
fn quantiles_interpolate_within_a_bucket() {
    let b: BTreeMap<Bound, f64> = [
        (1.0, 10.0),
        (5.0, 90.0),
        (10.0, 100.0),
        (f64::INFINITY, 100.0),
    ]
    .into_iter()
    .map(|(k, v)| (Bound(k), v))
    .collect();
    assert_eq!(quantile(&b, 0.05), Some(0.5));
    assert_eq!(quantile(&b, 0.5), Some(1.0 + 4.0 * 0.5));
    assert_eq!(quantile(&b, 0.99), Some(5.0 + 5.0 * 0.9));
    assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
    let inf: BTreeMap<Bound, f64> = [(Bound(1.0), 0.0), (Bound(f64::INFINITY), 4.0)].into();
    assert_eq!(quantile(&inf, 0.5), Some(1.0));
}

#[test]
fn a_restarted_counter_counts_whole() {
    let t = Instant::now();
    let a = Scrape::new(
        pod("w", "w-0"),
        "weft_response_total{direction=\"inbound\",tls=\"true\",status_class=\"2xx\"} 50\n",
        t,
    )
    .unwrap();
    let b = Scrape::new(
        pod("w", "w-0"),
        "weft_response_total{direction=\"inbound\",tls=\"true\",status_class=\"2xx\"} 5\n",
        t + Duration::from_secs(1),
    )
    .unwrap();
    let r = &rows(By::Pod, &[a], &[b])[0];
    assert_eq!(r.requests, 5.0);
    assert_eq!(r.rps, Some(5.0));
}

/// Two scrapes of web-0 and books-v2-0, one second apart, from a demo run
/// (`weft-demo --keep`, then curl of their admin ports): web calls books
/// (a TrafficSplit at 0/100) and ratings (retried); an intruder calls books.
const WEB_A: &str = include_str!("../testdata/web-0.a.prom");
const WEB_B: &str = include_str!("../testdata/web-0.b.prom");
const BOOKS_A: &str = include_str!("../testdata/books-v2-0.a.prom");
const BOOKS_B: &str = include_str!("../testdata/books-v2-0.b.prom");

fn demo_scrapes() -> (Vec<Scrape>, Vec<Scrape>) {
    let t = Instant::now();
    let later = t + Duration::from_secs(1);
    let s = |w, p, text, at| Scrape::new(pod(w, p), text, at).unwrap();
    (
        vec![
            s("web", "web-0", WEB_A, t),
            s("books-v2", "books-v2-0", BOOKS_A, t),
        ],
        vec![
            s("web", "web-0", WEB_B, later),
            s("books-v2", "books-v2-0", BOOKS_B, later),
        ],
    )
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn a_real_scrape_pair_gives_the_workload_rows() {
    let (a, b) = demo_scrapes();
    let rows = rows(By::Deploy, &a, &b);
    assert_eq!(rows.len(), 2);
    let web = rows.iter().find(|r| r.name == "web").unwrap();
    // 922 - 889 inbound responses, all 2xx and on mesh TLS, in one second.
    assert_eq!(web.requests, 33.0);
    assert!(close(web.success, 1.0) && close(web.mtls, 1.0) && close(web.rps, 33.0));
    // The inbound buckets' delta: 6 under 5 ms, 28 under 10, 32 under 20, 33 under 30.
    assert!(
        close(web.p50_ms, 5.0 + 5.0 * (16.5 - 6.0) / 22.0),
        "{web:?}"
    );
    assert!(
        close(web.p95_ms, 10.0 + 10.0 * (31.35 - 28.0) / 4.0),
        "{web:?}"
    );
    assert!(
        close(web.p99_ms, 20.0 + 10.0 * (32.67 - 32.0) / 1.0),
        "{web:?}"
    );
    assert_eq!(web.retries, 8.0);
    assert_eq!((web.outbound_requests, web.denied), (66.0, 0.0));
    assert!(close(web.outbound_mtls, 1.0));
    let books = rows.iter().find(|r| r.name == "books-v2").unwrap();
    // 36 responses, two of them the 403s of the intruder's denied requests.
    assert_eq!((books.requests, books.denied), (36.0, 2.0));
    assert!(close(books.success, 1.0));
}

#[test]
fn without_an_earlier_scrape_rows_count_from_the_start_without_a_rate() {
    let (_, b) = demo_scrapes();
    let rows = rows(By::Pod, &[], &b);
    let web = rows.iter().find(|r| r.name == "web-0").unwrap();
    assert_eq!(web.requests, 922.0);
    assert_eq!(web.rps, None);
    assert!(close(web.p50_ms, 4.0 + (461.0 - 276.0) / 275.0), "{web:?}");
}

#[test]
fn route_rows_are_the_split_as_the_caller_made_it() {
    let (a, b) = demo_scrapes();
    let rows = rows(By::Route, &a, &b);
    let split: Vec<&Row> = rows
        .iter()
        .filter(|r| r.name == "TrafficSplit/shop/books")
        .collect();
    assert_eq!(split.len(), 2, "{rows:#?}");
    let v1 = split
        .iter()
        .find(|r| r.backend.as_deref() == Some("books-v1.shop.svc.cluster.local:80"))
        .unwrap();
    let v2 = split
        .iter()
        .find(|r| r.backend.as_deref() == Some("books-v2.shop.svc.cluster.local:80"))
        .unwrap();
    assert_eq!((v1.requests, v2.requests), (0.0, 33.0));
    assert!(close(v2.share, 1.0) && close(v1.share, 0.0));
    assert_eq!(v2.from.as_deref(), Some("web"));
    assert!(v2.mtls.is_none());
}

#[test]
fn grpc_failures_count_against_the_success_rate() {
    let t = Instant::now();
    let text = |ok: u32, failed: u32, out_failed: u32| {
        format!(
            "weft_response_total{{direction=\"inbound\",tls=\"true\",status_class=\"2xx\"}} {}\n\
             weft_grpc_response_total{{direction=\"inbound\",tls=\"true\",grpc_status=\"0\"}} {ok}\n\
             weft_grpc_response_total{{direction=\"inbound\",tls=\"true\",grpc_status=\"14\"}} {failed}\n\
             weft_response_total{{direction=\"outbound\",tls=\"true\",status_class=\"2xx\"}} {}\n\
             weft_grpc_response_total{{direction=\"outbound\",tls=\"true\",grpc_status=\"none\"}} {out_failed}\n",
            ok + failed,
            10 * out_failed
        )
    };
    let a = Scrape::new(pod("ratings", "ratings-0"), &text(0, 0, 0), t).unwrap();
    let b = Scrape::new(
        pod("ratings", "ratings-0"),
        &text(80, 20, 1),
        t + Duration::from_secs(1),
    )
    .unwrap();
    let r = &rows(By::Deploy, &[a], &[b])[0];
    assert_eq!(r.requests, 100.0);
    assert!(close(r.success, 0.8), "{r:?}");
    assert!(close(r.outbound_success, 0.9), "{r:?}");
}
