//! `labelSelector` and `fieldSelector` query parameters: parsed once per
//! request, then matched against objects.
//!
//! Labels support the whole Kubernetes grammar (`a=b`, `a==b`, `a!=b`, `a`,
//! `!a`, `a in (x,y)`, `a notin (x,y)`); fields support `path=value`,
//! `path==value` and `path!=value`, where `path` is any dotted path into the
//! object (`metadata.name`, `spec.nodeName`, `status.phase`).

use serde_json::Value;

use super::object;
use super::request::Query;

/// What a list or watch request selects: its namespace (from the path) and
/// its `labelSelector` and `fieldSelector`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: Selector,
    pub(crate) fields: Selector,
}

impl Filter {
    /// The filter of a request on a collection in `namespace` (or all).
    pub(crate) fn new(namespace: Option<String>, query: &Query) -> Result<Self, String> {
        Ok(Filter {
            namespace,
            labels: Selector::labels(query.str("labelSelector"))?,
            fields: Selector::fields(query.str("fieldSelector"))?,
        })
    }

    /// Whether the request selects `obj`.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object::namespace(obj) == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Selector {
    requirements: Vec<Requirement>,
    fields: bool,
}

impl Selector {
    /// Parses a `labelSelector`.
    pub(crate) fn labels(text: &str) -> Result<Self, String> {
        let requirements = split_top_level(text)
            .into_iter()
            .map(label_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            requirements,
            fields: false,
        })
    }

    /// A `metav1.LabelSelector` (`matchLabels` and `matchExpressions` with
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`), as a webhook's
    /// namespaceSelector and objectSelector say it; absent or `{}` matches
    /// everything.
    pub(crate) fn label_selector(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("matchLabels[{k}] is not a string"))?;
                requirements.push(Requirement::In(k.clone(), vec![v.to_owned()]));
            }
        }
        for e in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = e["key"]
                .as_str()
                .ok_or("a matchExpression without key")?
                .to_owned();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            requirements.push(match e["operator"].as_str() {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::NotExists(key),
                other => return Err(format!("matchExpressions operator {other:?} is not one of In, NotIn, Exists, DoesNotExist")),
            });
        }
        Ok(Selector {
            requirements,
            fields: false,
        })
    }

    /// Parses a `fieldSelector`.
    pub(crate) fn fields(text: &str) -> Result<Self, String> {
        let requirements = split_top_level(text)
            .into_iter()
            .map(|term| {
                let (key, negate, value) = equality(term)
                    .ok_or_else(|| format!("invalid field selector term {term:?}"))?;
                let values = vec![value.to_owned()];
                Ok(if negate {
                    Requirement::NotIn(key.to_owned(), values)
                } else {
                    Requirement::In(key.to_owned(), values)
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Selector {
            requirements,
            fields: true,
        })
    }

    /// Whether `obj` satisfies every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|req| {
            let value = |key: &str| -> Option<String> {
                if self.fields {
                    Some(field(obj, key))
                } else {
                    obj["metadata"]["labels"][key].as_str().map(str::to_owned)
                }
            };
            match req {
                Requirement::In(k, vs) => value(k).is_some_and(|v| vs.contains(&v)),
                Requirement::NotIn(k, vs) => !value(k).is_some_and(|v| vs.contains(&v)),
                Requirement::Exists(k) => value(k).is_some(),
                Requirement::NotExists(k) => value(k).is_none(),
            }
        })
    }
}

/// The value at a dotted path as a field selector compares it; `""` if absent.
fn field(obj: &Value, path: &str) -> String {
    let v = path.split('.').fold(obj, |v, part| &v[part]);
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits on commas that are not inside parentheses; drops empty terms.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// `key=value`, `key==value` or `key!=value` as (key, negated, value).
fn equality(term: &str) -> Option<(&str, bool, &str)> {
    let (key, negate, value) = if let Some((k, v)) = term.split_once("!=") {
        (k, true, v)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, false, v)
    } else {
        let (k, v) = term.split_once('=')?;
        (k, false, v)
    };
    let key = key.trim();
    (!key.is_empty()).then_some((key, negate, value.trim()))
}

fn label_requirement(term: &str) -> Result<Requirement, String> {
    if let Some((key, negate, value)) = equality(term) {
        let values = vec![value.to_owned()];
        return Ok(if negate {
            Requirement::NotIn(key.to_owned(), values)
        } else {
            Requirement::In(key.to_owned(), values)
        });
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_owned()));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().to_owned();
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Requirement::Exists(key));
    };
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("invalid label selector term {term:?}"))?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    if let Some(rest) = rest.strip_prefix("notin") {
        Ok(Requirement::NotIn(key, set(rest)?))
    } else if let Some(rest) = rest.strip_prefix("in") {
        Ok(Requirement::In(key, set(rest)?))
    } else {
        Err(format!("invalid label selector term {term:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_selectors() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let yes = |s: &str| Selector::labels(s).unwrap().matches(&p);
        assert!(yes(""));
        assert!(yes("app=web,tier==front"));
        assert!(!yes("app=web,tier=back"));
        assert!(yes("app!=db"));
        assert!(yes("missing!=x"));
        assert!(yes("app") && !yes("missing") && yes("!missing") && !yes("!app"));
        assert!(yes("app in (db, web)") && !yes("app notin (db,web)"));
        assert!(yes("app in (web),tier notin (back)"));
        assert!(yes("missing notin (x)") && !yes("missing in (x)"));
        assert!(Selector::labels("app in web").is_err());
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}));
        let yes = |s: &str| Selector::fields(s).unwrap().matches(&p);
        assert!(yes("metadata.name=p,metadata.namespace==ns"));
        assert!(yes("spec.nodeName=n1") && !yes("spec.nodeName!=n1"));
        assert!(yes("status.phase=") && !yes("metadata.name=q"));
        assert!(Selector::fields("nonsense").is_err());
    }
}
