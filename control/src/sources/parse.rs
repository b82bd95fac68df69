//! Kubernetes YAML (or JSON) documents into typed objects: the form
//! `kubectl get -o yaml` prints, one object or a `List`, several documents
//! per file separated by `---`.

use crate::model::routes::{gateway, smi, RouteObject};
use crate::model::{Kind, Object};

/// Splits a file into its YAML documents (at lines that are `---`).
pub fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

/// The objects of one document. Kinds weft does not use are skipped (a
/// Deployment next to its Service is normal); the routing resources
/// (TrafficSplit, HTTPRouteGroup, TCPRoute, HTTPRoute, GRPCRoute: see
/// [`crate::model::routes`]) are read in the versions weft takes, and any
/// other version or kind of their groups is an error; a document that is not valid
/// YAML, an object of a used kind that does not fit its schema, and an
/// object Kubernetes itself would not know (see [`check_type`]) are errors
/// with the reason.
pub fn objects(doc: &str) -> Result<Vec<Object>, String> {
    let value: serde_json::Value =
        serde_saphyr::from_str(doc).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn collect(value: serde_json::Value, out: &mut Vec<Object>) -> Result<(), String> {
    if value.is_null() {
        return Ok(()); // an empty document
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or("no `kind`")?
        .to_owned();
    if kind == "List" {
        let items = value
            .get("items")
            .and_then(|i| i.as_array())
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            collect(item, out).map_err(|e| format!("items[{i}]: {e}"))?;
        }
        return Ok(());
    }
    let api = match value.get("apiVersion") {
        None | Some(serde_json::Value::Null) => return Err(format!("{kind} without `apiVersion`")),
        Some(serde_json::Value::String(api)) => api.clone(),
        Some(other) => other.to_string(),
    };
    let typed = |what: &str| format!("{what} does not fit its schema");
    if access_type(&api, &kind)? {
        let target = serde_json::from_value(value)
            .map_err(|e| format!("{}: {e}", typed("TrafficTarget")))?;
        out.push(Object::TrafficTarget(Box::new(target)));
        return Ok(());
    }
    if let Some(route) = route_type(&api, &kind)? {
        let fit = |e: serde_json::Error| format!("{}: {e}", typed(&kind));
        let object = match route {
            Route::Split4 => {
                RouteObject::TrafficSplit(Box::new(serde_json::from_value(value).map_err(fit)?))
            }
            Route::Split2 => RouteObject::TrafficSplit(Box::new(
                serde_json::from_value::<smi::v1alpha2::TrafficSplit>(value)
                    .map_err(fit)?
                    .into(),
            )),
            Route::Split1 => RouteObject::TrafficSplit(Box::new(
                serde_json::from_value::<smi::v1alpha1::TrafficSplit>(value)
                    .map_err(fit)?
                    .try_into()?,
            )),
            Route::Group => {
                RouteObject::HttpRouteGroup(Box::new(serde_json::from_value(value).map_err(fit)?))
            }
            Route::Tcp => {
                RouteObject::TcpRoute(Box::new(serde_json::from_value(value).map_err(fit)?))
            }
            Route::Http => RouteObject::HttpRoute(Box::new(
                serde_json::from_value::<gateway::HTTPRoute>(value).map_err(fit)?,
            )),
            Route::Grpc => RouteObject::GrpcRoute(Box::new(
                serde_json::from_value::<gateway::GRPCRoute>(value).map_err(fit)?,
            )),
        };
        out.push(Object::Route(object));
        return Ok(());
    }
    match check_type(&api, &kind)? {
        Some(Kind::Service) => out.push(Object::Service(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Service")))?,
        ))),
        Some(Kind::Pod) => out.push(Object::Pod(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Pod")))?,
        ))),
        Some(Kind::Namespace) => out.push(Object::Namespace(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Namespace")))?,
        ))),
        Some(Kind::Slice) => out.push(Object::Slice(Box::new(
            serde_json::from_value(value)
                .map_err(|e| format!("{}: {e}", typed("EndpointSlice")))?,
        ))),
        // Routing resources were read above.
        None | Some(Kind::Route(_) | Kind::TrafficTarget) => {}
    }
    Ok(())
}

/// Whether this is a TrafficTarget weft reads (`access.smi-spec.io/v1alpha3`);
/// an error for any other version or kind of that group.
fn access_type(api: &str, kind: &str) -> Result<bool, String> {
    let Some(("access.smi-spec.io", version)) = api.split_once('/') else {
        return Ok(false);
    };
    match (kind, version) {
        ("TrafficTarget", "v1alpha3") => Ok(true),
        ("TrafficTarget", _) => Err(format!(
            "TrafficTarget apiVersion '{api}' is not one weft reads: use access.smi-spec.io/v1alpha3"
        )),
        _ => Err(format!(
            "kind '{kind}' is not a kind of access.smi-spec.io weft reads (TrafficTarget)"
        )),
    }
}

/// A routing resource weft reads, by version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Split4,
    Split2,
    Split1,
    Group,
    Tcp,
    Http,
    Grpc,
}

/// The routing resources: `None` for a group that is not SMI's split or
/// specs group nor the Gateway API's, and for the Gateway API's kinds that
/// belong to gateways (Gateway, ReferenceGrant, TLSRoute, ...); an error
/// for any other kind or version of those groups, naming what weft takes.
fn route_type(api: &str, kind: &str) -> Result<Option<Route>, String> {
    let Some((group, version)) = api.split_once('/') else {
        return Ok(None);
    };
    let pick = |versions: &[(&str, Route)]| {
        versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, r)| Some(*r))
            .ok_or_else(|| {
                let names: Vec<String> = versions
                    .iter()
                    .map(|(v, _)| format!("{group}/{v}"))
                    .collect();
                format!(
                    "{kind} apiVersion '{api}' is not one weft reads: use {}",
                    names.join(" or ")
                )
            })
    };
    match (group, kind) {
        ("split.smi-spec.io", "TrafficSplit") => pick(&[
            ("v1alpha4", Route::Split4),
            ("v1alpha2", Route::Split2),
            ("v1alpha1", Route::Split1),
        ]),
        ("specs.smi-spec.io", "HTTPRouteGroup") => pick(&[("v1alpha4", Route::Group)]),
        ("specs.smi-spec.io", "TCPRoute") => pick(&[("v1alpha4", Route::Tcp)]),
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            pick(&[("v1", Route::Http), ("v1beta1", Route::Http)])
        }
        ("gateway.networking.k8s.io", "GRPCRoute") => pick(&[("v1", Route::Grpc)]),
        ("gateway.networking.k8s.io", _) => Ok(None),
        ("split.smi-spec.io", _) => Err(format!(
            "kind '{kind}' is not a kind of {group} weft reads (TrafficSplit)"
        )),
        ("specs.smi-spec.io", _) => Err(format!(
            "kind '{kind}' is not a kind of {group} weft reads (HTTPRouteGroup, TCPRoute)"
        )),
        _ => Ok(None),
    }
}

/// The kinds of the core group (`apiVersion: v1`) and of the built-in
/// groups without a dot in their name: these sets are closed (a custom
/// resource's group always has a dot), so a kind outside them is a mistake.
const CLOSED_GROUPS: &[(&str, &[&str], &[&str])] = &[
    (
        "",
        &["v1"],
        &[
            "Binding",
            "ComponentStatus",
            "ConfigMap",
            "Endpoints",
            "Event",
            "LimitRange",
            "Namespace",
            "Node",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Pod",
            "PodTemplate",
            "ReplicationController",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
        ],
    ),
    (
        "apps",
        &["v1"],
        &[
            "ControllerRevision",
            "DaemonSet",
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
        ],
    ),
    ("batch", &["v1"], &["CronJob", "Job"]),
    (
        "autoscaling",
        &["v1", "v2"],
        &["HorizontalPodAutoscaler", "Scale"],
    ),
    ("policy", &["v1"], &["Eviction", "PodDisruptionBudget"]),
    // The group weft reads EndpointSlices from: nothing else lives there.
    ("discovery.k8s.io", &["v1"], &["EndpointSlice"]),
];

/// Which kind weft reads `apiVersion`/`kind` as (`None`: a kind weft does
/// not use, skipped), or why Kubernetes would not take it: an apiVersion
/// that is not `[group/]version`, a version or dotless group Kubernetes does
/// not serve, a kind its group does not have (with the kind meant when one
/// is close). Custom resources (a group with a dot) are taken as they are.
pub fn check_type(api: &str, kind: &str) -> Result<Option<Kind>, String> {
    let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
    if !is_version(version) || group.contains('/') || (api.contains('/') && group.is_empty()) {
        return Err(format!(
            "apiVersion '{api}' is not a version (v1) or group/version (apps/v1)"
        ));
    }
    let Some((_, versions, kinds)) = CLOSED_GROUPS.iter().find(|(g, _, _)| *g == group) else {
        if group.contains('.') {
            return Ok(None); // a custom resource, or a group weft does not use
        }
        let hint = match closest(group, CLOSED_GROUPS.iter().map(|(g, _, _)| *g)) {
            Some(g) => {
                let v = CLOSED_GROUPS
                    .iter()
                    .find(|(n, _, _)| *n == g)
                    .map_or("v1", |(_, v, _)| v[0]);
                format!(" (did you mean {g}/{v}?)")
            }
            None => ": the group of a custom resource has a dot (example.com/v1)".to_owned(),
        };
        return Err(format!(
            "apiVersion '{api}' is not one Kubernetes serves{hint}"
        ));
    };
    if !versions.contains(&version) {
        let group = if group.is_empty() {
            String::new()
        } else {
            format!("{group}/")
        };
        return Err(format!(
            "apiVersion '{api}' is not served: use {}",
            versions
                .iter()
                .map(|v| format!("{group}{v}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if !kinds.contains(&kind) {
        let meant = closest(kind, kinds.iter().copied())
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        return Err(format!(
            "kind '{kind}' is not a kind of apiVersion {api}{meant}"
        ));
    }
    Ok(match (group, kind) {
        ("", "Service") => Some(Kind::Service),
        ("", "Pod") => Some(Kind::Pod),
        ("", "Namespace") => Some(Kind::Namespace),
        ("discovery.k8s.io", "EndpointSlice") => Some(Kind::Slice),
        _ => None,
    })
}

/// `v1`, `v2`, `v1beta1`, `v2alpha3`: a Kubernetes API version.
fn is_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (major, rest) = rest.split_at(digits);
    if major.is_empty() || major.starts_with('0') {
        return false;
    }
    match rest
        .strip_prefix("alpha")
        .or_else(|| rest.strip_prefix("beta"))
    {
        None => rest.is_empty(),
        Some(n) => !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The candidate within two edits of `word` (case aside), if one is.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .filter(|c| !c.is_empty())
        .map(|c| (edits(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance, a swap of two neighbours counting as one edit.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_files_and_lists() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080}]
  endpoints: [{addresses: [10.244.0.2]}]
---
";
        let docs = documents(text);
        let kinds: Vec<Vec<Kind>> = docs
            .iter()
            .map(|d| objects(d).unwrap().iter().map(Object::kind).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![vec![Kind::Service], vec![], vec![Kind::Slice], vec![]]
        );
    }

    #[test]
    fn errors_say_why() {
        assert!(objects("kind: [")
            .unwrap_err()
            .starts_with("not valid YAML"));
        assert_eq!(objects("metadata: {}").unwrap_err(), "no `kind`");
        let err = objects("apiVersion: v1\nkind: Service\nspec: {ports: 3}").unwrap_err();
        assert!(err.starts_with("Service does not fit its schema"), "{err}");
    }

    #[test]
    fn kinds_and_api_versions_kubernetes_would_not_know_are_errors() {
        let err = |api: &str, kind: &str| {
            objects(&format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n"
            ))
            .unwrap_err()
        };
        assert_eq!(
            err("v1", "Sevrice"),
            "kind 'Sevrice' is not a kind of apiVersion v1 (did you mean Service?)"
        );
        assert_eq!(
            err("v1", "service"),
            "kind 'service' is not a kind of apiVersion v1 (did you mean Service?)"
        );
        assert_eq!(
            err("v1", "Gadget"),
            "kind 'Gadget' is not a kind of apiVersion v1"
        );
        assert_eq!(
            err("discovery.k8s.io/v1", "EndpointSlices"),
            "kind 'EndpointSlices' is not a kind of apiVersion discovery.k8s.io/v1 (did you mean EndpointSlice?)"
        );
        assert_eq!(
            err("apps/v1", "Deploymnet"),
            "kind 'Deploymnet' is not a kind of apiVersion apps/v1 (did you mean Deployment?)"
        );
        assert_eq!(
            err("v2", "Service"),
            "apiVersion 'v2' is not served: use v1"
        );
        assert_eq!(
            err("discovery.k8s.io/v1beta1", "EndpointSlice"),
            "apiVersion 'discovery.k8s.io/v1beta1' is not served: use discovery.k8s.io/v1"
        );
        assert_eq!(
            err("app/v1", "Deployment"),
            "apiVersion 'app/v1' is not one Kubernetes serves (did you mean apps/v1?)"
        );
        assert_eq!(
            err("widgets/v1", "Widget"),
            "apiVersion 'widgets/v1' is not one Kubernetes serves: the group of a custom resource has a dot (example.com/v1)"
        );
        for bad in [
            "vl",
            "1",
            "v1/",
            "/v1",
            "apps/v1/x",
            "v01",
            "v1beta",
            "v1gamma1",
        ] {
            assert!(
                err(bad, "Service").contains("is not a version"),
                "{bad}: {}",
                err(bad, "Service")
            );
        }
        assert_eq!(
            objects("kind: Service\nmetadata: {name: x}\n").unwrap_err(),
            "Service without `apiVersion`"
        );
        // In a List, the item is named.
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Sevrice, metadata: {name: x}}\n";
        assert!(objects(list)
            .unwrap_err()
            .starts_with("items[0]: kind 'Sevrice'"));
    }

    #[test]
    fn kinds_weft_does_not_use_and_custom_resources_are_skipped() {
        for (api, kind) in [
            ("apps/v1", "Deployment"),
            ("v1", "ConfigMap"),
            ("batch/v1", "CronJob"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("networking.k8s.io/v1", "Ingress"),
            ("policy/v1", "PodDisruptionBudget"),
            ("gateway.networking.k8s.io/v1", "Gateway"),
            ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
            // Knative's Service is not a core Service.
            ("serving.knative.dev/v1", "Service"),
            ("example.com/v2beta3", "Widget"),
        ] {
            let doc = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n");
            assert!(objects(&doc).unwrap().is_empty(), "{api} {kind}");
        }
        assert_eq!(check_type("v1", "Service"), Ok(Some(Kind::Service)));
        assert_eq!(
            check_type("discovery.k8s.io/v1", "EndpointSlice"),
            Ok(Some(Kind::Slice))
        );
    }
}
