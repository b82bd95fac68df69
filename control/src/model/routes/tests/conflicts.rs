//! The conflict rules: an HTTPRoute and a TrafficSplit on one Service,
//! two splits for one apex, a split naming a missing Service.

use super::*;

#[test]
fn an_httproute_wins_over_a_trafficsplit_on_the_same_service() {
    let split = "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec: {service: web, backends: [{service: web-v1, weight: 1}]}
";
    let mut s = store(&format!(
        "{}---\n{split}---\n{}",
        shop(),
        http_route(
            "shop",
            "web-route",
            None,
            "  - backendRefs: [{name: web-v2, port: 80}]\n"
        )
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "any", &Request::get("/")), "web-v2");
    assert_eq!(t.tcp, None);
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].kind, "TrafficSplit");
    assert_eq!(
        t.problems[0].object,
        ("shop".to_owned(), "web-split".to_owned())
    );
    assert!(
        t.problems[0]
            .reason
            .contains("HTTPRoute shop/web-route is attached there"),
        "{}",
        t.problems[0].reason
    );
    // On the port the route does not name, the split would be in force,
    // but no backend has port 9000: it leaves that port alone, unreported.
    let t9000 = table(&s, "shop", "web", 9000);
    assert_eq!((&t9000.producer, &t9000.problems), (&None, &vec![]));
    assert_eq!(one(&t9000, "any", &Request::get("/")), "web");
    // A consumer route does not displace the split for other clients.
    s.delete(
        Kind::Route(ObjectKind::HttpRoute),
        &("shop".into(), "web-route".into()),
    );
    load(
        &mut s,
        &http_route(
            "checkout",
            "mine",
            None,
            "  - backendRefs: [{name: web-v2, namespace: shop, port: 80}]\n",
        ),
    )
    .unwrap();
    let t = table(&s, "shop", "web", 80);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(one(&t, "frontend", &Request::get("/")), "web-v1");
    assert_eq!(one(&t, "checkout", &Request::get("/")), "web-v2");
}

#[test]
fn two_splits_for_one_apex_the_oldest_wins_and_the_other_is_reported() {
    let split = |name: &str, created: &str, backend: &str| {
        format!(
            "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: {name}, namespace: shop{created}}}
spec: {{service: web, backends: [{{service: {backend}, weight: 1}}]}}
"
        )
    };
    let s = store(&format!(
        "{}---\n{}---\n{}",
        shop(),
        split(
            "a-new",
            ", creationTimestamp: \"2026-03-01T00:00:00Z\"",
            "web-v1"
        ),
        split(
            "z-old",
            ", creationTimestamp: \"2026-01-01T00:00:00Z\"",
            "web-v2"
        ),
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "x", &Request::get("/")), "web-v2");
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].object.1, "a-new");
    assert!(
        t.problems[0].reason.contains("TrafficSplit z-old is older"),
        "{}",
        t.problems[0].reason
    );
    // Without creation times: by name.
    let s = store(&format!(
        "{}---\n{}---\n{}",
        shop(),
        split("b", "", "web-v1"),
        split("a", "", "web-v2")
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "x", &Request::get("/")), "web-v2");
    assert_eq!(t.problems[0].object.1, "b");
}

#[test]
fn a_split_naming_a_missing_service_is_reported_and_takes_effect_when_it_appears() {
    let mut s = store(&format!(
        "{}---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: shop}}\nspec: {{service: web, backends: [{{service: web-v3, weight: 1}}, {{service: web-v1, weight: 1}}]}}\n",
        shop()
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(t.problems[0].object, ("shop".to_owned(), "s".to_owned()));
    assert_eq!(
        t.problems[0].reason,
        "backend web-v3: Service shop/web-v3 does not exist"
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 4),
        counts(&[("web-v1", 4)])
    );
    load(&mut s, &svc("shop", "web-v3", &[80])).unwrap();
    let t = table(&s, "shop", "web", 80);
    assert!(t.problems.is_empty());
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 4),
        counts(&[("web-v1", 2), ("web-v3", 2)])
    );
    // A split whose apex does not exist is kept, and in force once it does.
    load(&mut s, "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: t, namespace: shop}\nspec: {service: later, backends: [{service: web-v1, weight: 1}]}\n").unwrap();
    assert!(table(&s, "shop", "later", 80).producer.is_some());
    let touched = s
        .apply(&parse::objects(&svc("shop", "later", &[80])).unwrap()[0])
        .unwrap();
    assert!(touched.services.contains(&("shop".into(), "later".into())));
    assert_eq!(
        one(&table(&s, "shop", "later", 80), "x", &Request::get("/")),
        "web-v1"
    );
}
