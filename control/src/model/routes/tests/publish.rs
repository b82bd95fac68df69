//! A route change as watchers see it through the hub: exactly the
//! destinations whose tables changed get one `Profile` update, encoded once
//! per view (the producer one, each consumer namespace's).

use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use super::*;
use crate::hub::Hub;
use crate::model::ObjKey;

/// Publishes what a change touched, as the model task does.
fn publish(hub: &Hub, s: &Store, touched: &crate::model::Touched) {
    for svc in &touched.services {
        hub.publish(svc, s.destinations(svc), s.cluster_ips(svc));
    }
}

fn key(name: &str) -> ObjKey {
    ("shop".into(), name.into())
}

fn weights(u: &pb::Update) -> Vec<u32> {
    let Some(U::Profile(p)) = &u.kind else {
        panic!("a profile: {u:?}")
    };
    let http = p.routes.as_ref().unwrap().http.as_ref().unwrap();
    http.rules[0].backends.iter().map(|b| b.weight).collect()
}

fn route(weight: u32) -> String {
    http_route(
        "shop",
        "split",
        None,
        &format!(
            "  - backendRefs: [{{name: web-v1, port: 80, weight: {weight}}}, {{name: web-v2, port: 80, weight: 10}}]
"
        ),
    )
}

fn consumer() -> String {
    http_route(
        "checkout",
        "mine",
        None,
        "  - backendRefs: [{name: web-canary, namespace: shop, port: 80}]
",
    )
}

#[test]
fn a_route_change_is_one_profile_update_to_its_destination_alone() {
    let mut s = store(&format!(
        "{}---\n{}---\n{}---\n{}",
        shop(),
        svc("shop", "cart", &[80]),
        route(90),
        consumer()
    ));
    let hub = Hub::default();
    for name in ["web", "web-v1", "web-v2", "web-canary", "cart"] {
        hub.publish(
            &key(name),
            s.destinations(&key(name)),
            s.cluster_ips(&key(name)),
        );
    }
    let mut subs: Vec<_> = [("web", 80), ("web", 9000), ("web-v1", 80), ("cart", 80)]
        .iter()
        .map(|(n, p)| {
            let mut sub = hub.subscribe(&dest("shop", n, *p));
            sub.borrow_and_update();
            sub
        })
        .collect();
    let before = hub
        .subscribe(&dest("shop", "web", 80))
        .borrow_and_update()
        .view
        .clone()
        .unwrap();

    // The weight changes: only web's tables name this route.
    let mut touched = Default::default();
    for doc in parse::documents(&route(50)) {
        for obj in parse::objects(&doc).unwrap() {
            touched = s.apply(&obj).unwrap();
        }
    }
    assert_eq!(touched.services.iter().collect::<Vec<_>>(), [&key("web")]);
    publish(&hub, &s, &touched);
    let changed: Vec<bool> = subs.iter().map(|s| s.has_changed().unwrap()).collect();
    assert_eq!(changed, [true, false, false, false], "web:80 alone");

    let state = subs[0].borrow_and_update().clone();
    assert_eq!(state.version, 2);
    let delta = state.delta.as_ref().unwrap();
    assert!(delta.profile_changed && delta.added.is_empty() && delta.removed.is_empty());
    let (old_view, new) = (before.view(), state.view.as_ref().unwrap().view());
    let producer = delta.updates(old_view, new, "shop");
    assert_eq!(producer.len(), 1, "one Profile update");
    assert_eq!(weights(&producer[0].decode()), [50, 10]);
    // Encoded once for every watcher outside `checkout`, whatever its
    // namespace (or none).
    assert!(std::ptr::eq(
        producer,
        delta.updates(old_view, new, "frontend")
    ));
    assert!(std::ptr::eq(producer, delta.updates(old_view, new, "")));
    // Clients in `checkout` use their own route, which did not change.
    assert!(delta.updates(old_view, new, "checkout").is_empty());
}

#[test]
fn snapshots_are_one_per_view_and_a_consumer_change_reaches_its_namespace() {
    let mut s = store(&format!("{}---\n{}---\n{}", shop(), route(90), consumer()));
    let hub = Hub::default();
    hub.publish(&key("web"), s.destinations(&key("web")), vec![]);
    let mut sub = hub.subscribe(&dest("shop", "web", 80));
    let published = sub.borrow_and_update().view.clone().unwrap();
    let mine = published.snapshot("checkout");
    let theirs = published.snapshot("frontend");
    assert!(std::ptr::eq(theirs, published.snapshot("shop")), "shared");
    assert!(
        std::ptr::eq(mine, published.snapshot("checkout")),
        "encoded once"
    );
    let ns_of = |e: &crate::encoded::Encoded| {
        let Some(U::Snapshot(snap)) = e.decode().kind else {
            panic!("a snapshot")
        };
        snap.profile.unwrap().routes.unwrap().consumer_namespace
    };
    assert_eq!(ns_of(mine), "checkout");
    assert_eq!(ns_of(theirs), "");

    // The consumer route goes: `checkout` now gets the producer profile,
    // the others nothing at all.
    let touched = s.delete(
        Kind::Route(ObjectKind::HttpRoute),
        &("checkout".into(), "mine".into()),
    );
    publish(&hub, &s, &touched);
    let state = sub.borrow_and_update().clone();
    let (old, new) = (published.view(), state.view.as_ref().unwrap().view());
    let delta = state.delta.as_ref().unwrap();
    assert!(delta.updates(old, new, "frontend").is_empty());
    let theirs = delta.updates(old, new, "checkout");
    assert_eq!(theirs.len(), 1);
    let Some(U::Profile(p)) = theirs[0].decode().kind else {
        panic!("a profile")
    };
    assert_eq!(
        p.routes.unwrap().consumer_namespace,
        "",
        "the producer routes"
    );
}

#[test]
fn a_backend_service_going_or_coming_changes_the_routes_that_name_it() {
    let mut s = store(&format!("{}---\n{}", shop(), route(90)));
    let invalid = |s: &Store| -> Vec<bool> {
        let routes = s.destinations(&key("web"))[0]
            .1
            .profile
            .routes
            .clone()
            .unwrap();
        let rule = &routes.http.unwrap().rules[0];
        rule.backends
            .iter()
            .map(|b| {
                matches!(
                    b.backend.as_ref().unwrap().target,
                    Some(pb::backend::Target::Invalid(_))
                )
            })
            .collect()
    };
    assert_eq!(invalid(&s), [false, false]);
    let touched = s.delete(Kind::Service, &key("web-v2"));
    assert!(touched.services.contains(&key("web")), "{touched:?}");
    assert_eq!(invalid(&s), [false, true], "web-v2's share gets 500");
    load(&mut s, &svc("shop", "web-v2", &[80])).unwrap();
    assert_eq!(invalid(&s), [false, false]);
    // Endpoints come and go without a table being recomputed: the routes
    // stay as they were.
    let before = s.destinations(&key("web"));
    load(
        &mut s,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{name: p80, port: 8080}]\nendpoints: [{addresses: [10.244.0.9]}]\n",
    )
    .unwrap();
    let after = s.destinations(&key("web"));
    assert_eq!(after[0].1.profile, before[0].1.profile);
    assert_eq!(after[0].1.endpoints.len(), 1);
}
