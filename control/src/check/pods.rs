//! What a pod's status says: whether it (or one of its containers) is
//! ready, and if not, the most telling reason (a waiting container's
//! reason such as `CrashLoopBackOff`, a termination, the pod's phase).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// `metadata.name`, or `(unnamed)`.
pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("(unnamed)")
}

/// Why `pod` is not ready (`container`: why that container is not), or
/// `None` when it is.
pub fn not_ready(pod: &Pod, container: Option<&str>) -> Option<String> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if let Some(name) = container {
        let statuses = status.into_iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        let found: Option<&ContainerStatus> = statuses.into_iter().find(|c| c.name == name);
        return match found {
            Some(c) if c.ready => None,
            Some(c) => Some(format!("{name} not ready{}", state(c))),
            None => Some(format!("{name} has no status yet (pod {phase})")),
        };
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return None;
    }
    let containers: Vec<String> = status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter(|c| !c.ready)
        .map(|c| format!("{} not ready{}", c.name, state(c)))
        .collect();
    Some(if containers.is_empty() {
        format!("not ready (pod {phase})")
    } else {
        containers.join(", ")
    })
}

/// ` (waiting: CrashLoopBackOff, 5 restarts)` and the like.
fn state(c: &ContainerStatus) -> String {
    let s = c.state.as_ref();
    let mut parts = Vec::new();
    if let Some(w) = s.and_then(|s| s.waiting.as_ref()) {
        parts.push(format!("waiting: {}", w.reason.as_deref().unwrap_or("?")));
    } else if let Some(t) = s.and_then(|s| s.terminated.as_ref()) {
        let why = t.reason.as_deref().unwrap_or("?");
        parts.push(format!("terminated: {why}, exit {}", t.exit_code));
    } else if s.and_then(|s| s.running.as_ref()).is_some() {
        parts.push("running, readiness probe failing".into());
    }
    if c.restart_count > 0 {
        parts.push(format!("{} restarts", c.restart_count));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn reasons() {
        let ready = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "weft-proxy", "ready": true, "restartCount": 0,
                "image": "i", "imageID": ""}]}));
        assert_eq!(not_ready(&ready, None), None);
        assert_eq!(not_ready(&ready, Some("weft-proxy")), None);
        let crashing = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "weft-proxy", "ready": false, "restartCount": 5,
                "image": "i", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}));
        assert_eq!(
            not_ready(&crashing, Some("weft-proxy")).unwrap(),
            "weft-proxy not ready (waiting: CrashLoopBackOff, 5 restarts)"
        );
        assert_eq!(
            not_ready(&crashing, None).unwrap(),
            "weft-proxy not ready (waiting: CrashLoopBackOff, 5 restarts)"
        );
        let pending = pod(json!({"phase": "Pending"}));
        assert_eq!(
            not_ready(&pending, None).unwrap(),
            "not ready (pod Pending)"
        );
        assert_eq!(
            not_ready(&pending, Some("weft-proxy")).unwrap(),
            "weft-proxy has no status yet (pod Pending)"
        );
    }
}
