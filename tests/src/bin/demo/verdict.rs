//! The summary: a verdict per feature, each computed from what the
//! proxies counted (and, for the trace, what the receiver holds) between
//! the first scrape after start-up and the last one after the callers
//! stopped. Each can fail; the bounds are written beside each check.

use serde_json::Value;
use std::fmt::Write as _;
use weft_control::stat::{cli, rows, By, Row, Scrape};

use crate::app::App;
use crate::cluster::Cluster;
use crate::scrape::sum;
use crate::Step;

#[derive(Debug)]
pub struct Verdict {
    pub feature: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// Fewest requests a split step must have to be judged.
const MIN_STEP_REQUESTS: f64 = 20.0;
/// The least tolerance of a split share (points of 100).
const MIN_SPLIT_BOUND: f64 = 0.05;

/// The split's actual shares (old, new) among the requests web's proxy
/// routed to its two backends between the scrapes, and how many.
pub fn shares(app: &App, before: &[Scrape], after: &[Scrape]) -> Option<([f64; 2], f64)> {
    let backends = app.backends();
    let routes = rows(By::Route, before, after);
    let count = |b: &str| -> f64 {
        routes
            .iter()
            .filter(|r| r.from.as_deref() == Some("web"))
            .filter(|r| {
                r.backend
                    .as_deref()
                    .is_some_and(|x| x == b || x.starts_with(&format!("{b}.")))
            })
            .map(|r| r.requests)
            .sum()
    };
    let n = [count(&backends[0]), count(&backends[1])];
    let all = n[0] + n[1];
    (all > 0.0).then(|| ([n[0] / all, n[1] / all], all))
}

fn row<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

pub fn all(
    app: &App,
    cluster: &Cluster,
    first: &[Scrape],
    last: &[Scrape],
    steps: &[Step],
) -> Vec<Verdict> {
    let deploys = rows(By::Deploy, first, last);
    vec![
        mtls(app, &deploys),
        split(app, steps),
        retries(&deploys),
        intruder(cluster, first, last),
        trace(cluster),
    ]
}

/// Every meshed hop on mesh TLS: each serving workload's inbound and each
/// workload's outbound responses, 100% of them, and some of each.
fn mtls(app: &App, deploys: &[Row]) -> Verdict {
    let mut pass = true;
    let mut parts = Vec::new();
    for w in app.servers.iter().chain(&app.clients) {
        let Some(r) = row(deploys, &w.name) else {
            pass = false;
            parts.push(format!("{}: no metrics", w.name));
            continue;
        };
        let serving = app.servers.iter().any(|s| s.name == w.name);
        // (side, share on mesh TLS, responses) of each hop this workload has.
        let mut hops = Vec::new();
        if serving {
            hops.push(("in", r.mtls, r.requests));
        }
        if r.outbound_requests > 0.0 || !serving {
            hops.push(("out", r.outbound_mtls, r.outbound_requests));
        }
        for (side, share, n) in hops {
            pass &= n > 0.0 && share == Some(1.0);
            parts.push(format!(
                "{} {side} {} of {n:.0}",
                w.name,
                cli::percent(share)
            ));
        }
    }
    Verdict {
        feature: "mTLS on every meshed hop",
        pass,
        detail: parts.join(", "),
    }
}

/// Each step's new-backend share within max(5 points, 4 standard errors of
/// a share of n requests) of its weight: a binomial bound, so it holds on
/// a slow machine (fewer requests, a wider bound) and fails for a split
/// that is really off.
fn split(app: &App, steps: &[Step]) -> Verdict {
    let mut pass = true;
    let mut parts = Vec::new();
    for s in steps {
        let want = f64::from(s.weights[1]) / f64::from(s.weights[0] + s.weights[1]);
        let (Some(from), Some(to)) = (&s.from, &s.to) else {
            pass = false;
            parts.push(format!("{}/{}: not measured", s.weights[0], s.weights[1]));
            continue;
        };
        match shares(app, from, to) {
            Some((got, n)) if n >= MIN_STEP_REQUESTS => {
                let bound = MIN_SPLIT_BOUND.max(4.0 * (want * (1.0 - want) / n).sqrt());
                let ok = (got[1] - want).abs() <= bound;
                pass &= ok;
                parts.push(format!(
                    "{}/{}: {:.1}/{:.1} of {n:.0} (±{:.1}){}",
                    s.weights[0],
                    s.weights[1],
                    got[0] * 100.0,
                    got[1] * 100.0,
                    bound * 100.0,
                    if ok { "" } else { " OFF" }
                ));
            }
            got => {
                pass = false;
                parts.push(format!(
                    "{}/{}: only {:.0} requests",
                    s.weights[0],
                    s.weights[1],
                    got.map_or(0.0, |g| g.1)
                ));
            }
        }
    }
    Verdict {
        feature: "traffic split follows its weights",
        pass,
        detail: parts.join("; "),
    }
}

/// ratings failed some of its calls (it fails a fifth: its proxy counted
/// at most 95% OK, gRPC statuses included, and web's proxy retried at least
/// 10% of them), yet web's calls and web's answers were at least 99% OK,
/// and load got at least 99% OK.
fn retries(deploys: &[Row]) -> Verdict {
    let (Some(web), Some(ratings), Some(load)) = (
        row(deploys, "web"),
        row(deploys, "ratings"),
        row(deploys, "load"),
    ) else {
        return Verdict {
            feature: "failures hidden by retries",
            pass: false,
            detail: "no metrics of web, ratings or load".into(),
        };
    };
    let share = if ratings.requests > 0.0 {
        web.retries / ratings.requests
    } else {
        0.0
    };
    let pass = share >= 0.10
        && ratings.success.is_some_and(|s| s <= 0.95)
        && web.outbound_success.is_some_and(|s| s >= 0.99)
        && web.success.is_some_and(|s| s >= 0.99)
        && load.outbound_success.is_some_and(|s| s >= 0.99);
    Verdict {
        feature: "ratings' failures hidden by retries",
        pass,
        detail: format!(
            "ratings answered {} of {:.0} calls OK; web's proxy retried {:.0} ({:.1}%; {:.0} refused by the budget); web's calls got {} OK, web answered {} OK, load saw {} OK",
            cli::percent(ratings.success),
            ratings.requests,
            web.retries,
            share * 100.0,
            web.retries_skipped,
            cli::percent(web.outbound_success),
            cli::percent(web.success),
            cli::percent(load.outbound_success)
        ),
    }
}

/// The intruder sent requests; the books proxies denied at least as many
/// for its identity; no 2xx came back to it; and the books apps served
/// exactly what their proxies allowed (so no denied request reached them).
fn intruder(cluster: &Cluster, first: &[Scrape], last: &[Scrape]) -> Verdict {
    let delta = |s: &[Scrape], w: &[&str], n: &str, l: &[(&str, &str)]| sum(s, w, n, l);
    let d = |w: &[&str], n: &str, l: &[(&str, &str)]| delta(last, w, n, l) - delta(first, w, n, l);
    let books = ["books-v1", "books-v2"];
    let id = weft_tests::mesh::shop_id("intruder");
    let sent = d(
        &["intruder"],
        "weft_response_total",
        &[("direction", "outbound")],
    );
    let ok = d(
        &["intruder"],
        "weft_response_total",
        &[("direction", "outbound"), ("status_class", "2xx")],
    );
    let denied = d(
        &books,
        "weft_inbound_authz_total",
        &[("result", "deny"), ("client_id", &id)],
    );
    let allowed = sum(
        last,
        &books,
        "weft_inbound_authz_total",
        &[("result", "allow")],
    );
    let served: u64 = books
        .iter()
        .flat_map(|w| cluster.of(w))
        .map(|m| weft_tests::mesh::app_served(&m.pod))
        .sum();
    let pass = sent > 0.0 && ok == 0.0 && denied >= sent && served as f64 == allowed;
    Verdict {
        feature: "intruder denied, the app never reached",
        pass,
        detail: format!(
            "intruder got {sent:.0} answers, {ok:.0} of them 2xx; books' proxies denied {denied:.0} of its requests; books' apps served {served}, their proxies allowed {allowed:.0}"
        ),
    }
}

/// One trace of a request of load's that crossed every hop: spans from
/// load, web, a books version and ratings.
fn trace(cluster: &Cluster) -> Verdict {
    let feature = "one request traced across the mesh";
    let found = cluster
        .receiver
        .query(&cluster.rx_pod, "/api/traces?service=load&limit=100");
    let traces = match found {
        Ok(t) => t,
        Err(e) => {
            return Verdict {
                feature,
                pass: false,
                detail: format!("the receiver: {e:#}"),
            }
        }
    };
    let empty = Vec::new();
    let all = traces["data"].as_array().unwrap_or(&empty);
    let services = |t: &Value| -> Vec<String> {
        t["spans"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|s| t["processes"][s["processID"].as_str()?]["serviceName"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let complete = all.iter().find(|t| {
        let s = services(t);
        ["load", "web", "ratings"]
            .iter()
            .all(|w| s.iter().any(|x| x == w))
            && s.iter().any(|x| x.starts_with("books"))
    });
    let Some(t) = complete else {
        return Verdict {
            feature,
            pass: false,
            detail: format!(
                "none of {} traces of load crosses web, books and ratings",
                all.len()
            ),
        };
    };
    let mut detail = format!(
        "trace {} ({} traces of load recorded):",
        t["traceID"].as_str().unwrap_or("?"),
        all.len()
    );
    let mut spans: Vec<&Value> = t["spans"].as_array().unwrap_or(&empty).iter().collect();
    spans.sort_by_key(|s| s["startTime"].as_u64().unwrap_or(0));
    for s in spans {
        let service = s["processID"]
            .as_str()
            .and_then(|p| t["processes"][p]["serviceName"].as_str())
            .unwrap_or("?");
        let kind = s["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["key"] == "span.kind"))
            .and_then(|t| t["value"].as_str())
            .unwrap_or("?");
        let _ = write!(
            detail,
            "\n      {service:<9} {kind:<7} {:<40} {:>7.2} ms",
            s["operationName"].as_str().unwrap_or("?"),
            s["duration"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    Verdict {
        feature,
        pass: true,
        detail,
    }
}

/// The whole run's table and the verdicts.
pub fn summary(first: &[Scrape], last: &[Scrape], verdicts: &[Verdict]) -> String {
    let mut out = String::from("\n== summary: the whole run\n\n");
    out.push_str(&cli::table(By::Deploy, &rows(By::Deploy, first, last)));
    out.push('\n');
    for v in verdicts {
        let _ = writeln!(
            out,
            "{} {}: {}",
            if v.pass { "PASS" } else { "FAIL" },
            v.feature,
            v.detail
        );
    }
    let failed = verdicts.iter().filter(|v| !v.pass).count();
    if failed == 0 {
        out.push_str("\nall verdicts pass\n");
    } else {
        let _ = writeln!(out, "\n{failed} verdict(s) FAILED");
    }
    out
}
