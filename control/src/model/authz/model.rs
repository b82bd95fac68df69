//! The [`Store`]'s answers about inbound policy: the policy of one pod, of
//! the pods of a namespace, and of a pod it does not know.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::check::Rule;
use super::compute::{grants, Routes};
use super::{DefaultPolicy, PodPolicy};
use crate::model::objects::PodInfo;
use crate::model::{ObjKey, Store};

impl Store {
    /// With `--default-inbound-policy` (default `all-unauthenticated`).
    pub fn with_default_policy(mut self, policy: DefaultPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// The policy of a pod the model has; `None` for one it does not.
    pub fn pod_policy(&self, pod: &ObjKey) -> Option<PodPolicy> {
        let info = self.pods.get(pod)?;
        Some(self.policy_of(info, &mut HashMap::new()))
    }

    /// The policy of every pod of a namespace (a TrafficTarget, route group
    /// or the Namespace changed): each destination's grants computed once.
    pub fn pod_policies_in(&self, ns: &str) -> Vec<(ObjKey, PodPolicy)> {
        let mut by_account = HashMap::new();
        self.pods
            .values()
            .filter(|p| p.key.0 == ns)
            .map(|p| (p.key.clone(), self.policy_of(p, &mut by_account)))
            .collect()
    }

    /// The policy of a pod of `ns` that the model does not know (yet).
    pub fn unknown_pod_policy(&self, ns: &str) -> PodPolicy {
        let ns_default = self.namespaces.get(ns).and_then(|n| n.default_policy);
        PodPolicy::default_only(self.default_policy, ns_default, None)
    }

    /// What the TrafficTargets of `ns` name that does not exist: `(target,
    /// reason)`, for the log (each allows nothing until it appears).
    pub fn target_problems(&self, ns: &str) -> BTreeSet<(ObjKey, String)> {
        let mut out = BTreeSet::new();
        for t in self.targets.values().filter(|t| t.key.0 == ns) {
            for (i, rule) in t.rules.iter().enumerate() {
                let key = |name: &str| (ns.to_owned(), name.to_owned());
                let why = match rule {
                    Rule::Tcp { name } if !self.routes.tcp_routes.contains_key(&key(name)) => {
                        format!("spec.rules[{i}]: TCPRoute {ns}/{name} does not exist: the rule allows nothing")
                    }
                    Rule::Group { name, matches } => match self.routes.groups.get(&key(name)) {
                        None => format!(
                            "spec.rules[{i}]: HTTPRouteGroup {ns}/{name} does not exist: the rule allows nothing"
                        ),
                        Some(g) => {
                            let missing: Vec<&str> = matches
                                .iter()
                                .flatten()
                                .filter(|m| !g.names.contains(m))
                                .map(String::as_str)
                                .collect();
                            if missing.is_empty() {
                                continue;
                            }
                            format!(
                                "spec.rules[{i}].matches: HTTPRouteGroup {ns}/{name} has no match {}: allowed nothing",
                                missing.join(", ")
                            )
                        }
                    },
                    Rule::Tcp { .. } => continue,
                };
                out.insert((t.key.clone(), why));
            }
        }
        out
    }

    fn policy_of(
        &self,
        pod: &PodInfo,
        by_account: &mut HashMap<String, Option<Arc<Vec<super::compute::Grant>>>>,
    ) -> PodPolicy {
        let ns = &pod.key.0;
        let grants = by_account
            .entry(pod.service_account.clone())
            .or_insert_with(|| {
                let mut targets = self
                    .targets
                    .values()
                    .filter(|t| t.key.0 == *ns && t.destination == pod.service_account)
                    .peekable();
                targets.peek()?;
                let routes = Routes {
                    groups: &self.routes.groups,
                    tcp_routes: &self.routes.tcp_routes,
                };
                Some(Arc::new(grants(routes, targets)))
            })
            .clone();
        let namespace = self.namespaces.get(ns);
        let mut policy = match grants {
            Some(g) => PodPolicy::targeted(g),
            None => PodPolicy::default_only(
                self.default_policy,
                namespace.and_then(|n| n.default_policy),
                pod.default_policy,
            ),
        };
        policy.opaque_ports = pod.opaque_ports.clone();
        if let Some(n) = namespace {
            policy.opaque_ports.extend(&n.opaque_ports);
        }
        policy
    }
}
