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
    let b: BTreeMap<Bound, f64> = [(1.0, 10.0), (5.0, 90.0), (10.0, 100.0), (f64::INFINITY, 100.0)]
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
    let a = Scrape::new(pod("w", "w-0"), "weft_response_total{direction=\"inbound\",tls=\"true\",status_class=\"2xx\"} 50\n", t).unwrap();
    let b = Scrape::new(pod("w", "w-0"), "weft_response_total{direction=\"inbound\",tls=\"true\",status_class=\"2xx\"} 5\n", t + Duration::from_secs(1)).unwrap();
    let r = &rows(By::Pod, &[a], &[b])[0];
    assert_eq!(r.requests, 5.0);
    assert_eq!(r.rps, Some(5.0));
}
