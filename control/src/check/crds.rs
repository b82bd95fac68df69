//! The SMI CRDs weft reads (the chart's `crds/`), and whether a cluster's
//! match: installed, established, serving the version weft-control watches,
//! storing the version the chart stores, and listed by API discovery.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::kube::Kube;
use super::report::Check;

/// One CRD of the chart.
#[derive(Clone, Copy, Debug)]
pub struct Crd {
    pub name: &'static str,
    pub group: &'static str,
    pub plural: &'static str,
    /// The version weft-control watches, which the chart also stores.
    pub version: &'static str,
}

/// The chart's CRDs (`charts/weft/crds/`; the ARCHITECTURE's versions).
pub const SMI: [Crd; 4] = [
    Crd {
        name: "trafficsplits.split.smi-spec.io",
        group: "split.smi-spec.io",
        plural: "trafficsplits",
        version: "v1alpha4",
    },
    Crd {
        name: "httproutegroups.specs.smi-spec.io",
        group: "specs.smi-spec.io",
        plural: "httproutegroups",
        version: "v1alpha4",
    },
    Crd {
        name: "tcproutes.specs.smi-spec.io",
        group: "specs.smi-spec.io",
        plural: "tcproutes",
        version: "v1alpha4",
    },
    Crd {
        name: "traffictargets.access.smi-spec.io",
        group: "access.smi-spec.io",
        plural: "traffictargets",
        version: "v1alpha3",
    },
];

pub const INSTALLED: &str = "the SMI CRDs are installed";
pub const SERVED: &str = "the SMI CRDs are served";

impl Crd {
    /// What is wrong with `found`'s versions, if anything.
    pub fn versions_problem(&self, found: &CustomResourceDefinition) -> Option<String> {
        let versions = &found.spec.versions;
        let served = versions.iter().any(|v| v.name == self.version && v.served);
        let stored: Vec<&str> = versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        let all: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
        if !served {
            Some(format!(
                "{}: does not serve {} (versions {}); weft reads {}",
                self.name,
                self.version,
                all.join(", "),
                self.version
            ))
        } else if stored != [self.version] {
            Some(format!(
                "{}: stores {}, weft's chart stores {}",
                self.name,
                stored.join(", "),
                self.version
            ))
        } else {
            None
        }
    }

    /// What keeps `found` from being used, if anything: its versions, or
    /// not (yet) Established.
    pub fn problem(&self, found: &CustomResourceDefinition) -> Option<String> {
        if let Some(p) = self.versions_problem(found) {
            return Some(p);
        }
        let established = found
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        (!established).then(|| format!("{}: not Established", self.name))
    }
}

/// Every CRD of [`SMI`] installed and usable; `Ok` when it is.
pub async fn installed(kube: &Kube) -> Result<Check, Check> {
    let mut problems = Vec::new();
    for crd in SMI {
        match kube.get_cluster::<CustomResourceDefinition>(crd.name).await {
            Ok(Some(found)) => problems.extend(crd.problem(&found)),
            Ok(None) => problems.push(format!("{}: not installed", crd.name)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(Check::success(INSTALLED, None))
    } else {
        Err(Check::error(
            INSTALLED,
            problems.join("\n"),
            "kubectl apply -f charts/weft/crds/ (helm install creates them; helm upgrade does not change them)",
        ))
    }
}

/// API discovery lists every CRD's resource at the version weft watches.
pub async fn served(kube: &Kube) -> Check {
    let mut problems = Vec::new();
    for crd in SMI {
        let gv = format!("{}/{}", crd.group, crd.version);
        let what = format!("discovery of {gv}");
        match kube
            .call(&what, kube.client.list_api_group_resources(&gv))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == crd.plural) => {}
            Ok(_) => problems.push(format!("{gv}: {} not listed", crd.plural)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Check::success(SERVED, None)
    } else {
        Check::error(
            SERVED,
            problems.join("\n"),
            "the API server does not serve them yet: kubectl get crd; kubectl api-resources | grep smi-spec",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(versions: serde_json::Value, established: bool) -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "metadata": {"name": "trafficsplits.split.smi-spec.io"},
            "spec": {"group": "split.smi-spec.io", "scope": "Namespaced",
                     "names": {"kind": "TrafficSplit", "plural": "trafficsplits"},
                     "versions": versions},
            "status": {"conditions": [{"type": "Established",
                                       "status": if established {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    #[test]
    fn versions_and_establishment() {
        let ts = SMI[0];
        let v = |name: &str, served: bool, storage: bool| json!({"name": name, "served": served, "storage": storage});
        let good = crd(
            json!([v("v1alpha4", true, true), v("v1alpha1", true, false)]),
            true,
        );
        assert_eq!(ts.problem(&good), None);
        let old = crd(json!([v("v1alpha3", true, true)]), true);
        assert!(ts
            .problem(&old)
            .unwrap()
            .contains("does not serve v1alpha4"));
        let stored = crd(
            json!([v("v1alpha4", true, false), v("v1alpha3", true, true)]),
            true,
        );
        assert!(ts.problem(&stored).unwrap().contains("stores v1alpha3"));
        let pending = crd(json!([v("v1alpha4", true, true)]), false);
        assert!(ts.problem(&pending).unwrap().contains("not Established"));
    }

    #[test]
    fn the_table_is_the_charts() {
        for crd in SMI {
            let file = format!(
                "{}/../charts/weft/crds/{}.yaml",
                env!("CARGO_MANIFEST_DIR"),
                crd.plural
            );
            let text = std::fs::read_to_string(&file).unwrap();
            let parsed: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(parsed.metadata.name.as_deref(), Some(crd.name));
            assert_eq!(crd.versions_problem(&parsed), None, "{file}");
        }
    }
}
