//! Kubernetes YAML (or JSON) documents into typed objects: the form
//! `kubectl get -o yaml` prints, one object or a `List`, several documents
//! per file separated by `---`.

use crate::model::Object;

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
/// Deployment next to its Service is normal); a document that is not valid
/// YAML, or an object of a used kind that does not fit its schema, is an
/// error with the reason.
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
    let api = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    let typed = |what: &str| format!("{what} does not fit its schema");
    match (api.as_str(), kind.as_str()) {
        (_, "List") => {
            let items = value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                collect(item, out).map_err(|e| format!("items[{i}]: {e}"))?;
            }
        }
        ("v1", "Service") => out.push(Object::Service(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Service")))?,
        ))),
        ("v1", "Pod") => out.push(Object::Pod(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Pod")))?,
        ))),
        ("v1", "Namespace") => out.push(Object::Namespace(Box::new(
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", typed("Namespace")))?,
        ))),
        ("discovery.k8s.io/v1", "EndpointSlice") => out.push(Object::Slice(Box::new(
            serde_json::from_value(value)
                .map_err(|e| format!("{}: {e}", typed("EndpointSlice")))?,
        ))),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

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
}
