//! The SMI resources weft routes with, as they are written: TrafficSplit
//! (`split.smi-spec.io` v1alpha4, and the older v1alpha2 and v1alpha1
//! turned into v1alpha4 on the way in), HTTPRouteGroup and TCPRoute
//! (`specs.smi-spec.io/v1alpha4`).
//!
//! Numbers that the schema bounds (weights, ports) are read wide (`i64`)
//! so that a weight of -1 reaches [`super::check`] and is refused with a
//! reason naming the field, not a serde message.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// TrafficSplit `split.smi-spec.io/v1alpha4`: requests to `service` (the
/// apex) that match `matches` are split between `backends` by weight.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha4",
    kind = "TrafficSplit",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub backends: Vec<SplitBackend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<SplitMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SplitBackend {
    #[serde(default)]
    pub service: String,
    /// Relative; v1alpha1's quantities arrive here in thousandths (`500m`
    /// is 500, `1` is 1000).
    #[serde(default)]
    pub weight: i64,
}

/// `{kind: HTTPRouteGroup | TCPRoute, name}` (a TypedLocalObjectReference).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitMatch {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

/// TrafficSplit `split.smi-spec.io/v1alpha2`: integer weights, no matches.
pub mod v1alpha2 {
    use super::*;

    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficSplit",
        namespaced,
        schema = "disabled"
    )]
    pub struct TrafficSplitSpec {
        #[serde(default)]
        pub service: String,
        #[serde(default)]
        pub backends: Vec<SplitBackend>,
    }
}

/// TrafficSplit `split.smi-spec.io/v1alpha1`: weights are quantities
/// (`10m`, `1`, `1500m`), no matches.
pub mod v1alpha1 {
    use super::*;

    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced,
        schema = "disabled"
    )]
    pub struct TrafficSplitSpec {
        #[serde(default)]
        pub service: String,
        #[serde(default)]
        pub backends: Vec<Backend>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
    pub struct Backend {
        #[serde(default)]
        pub service: String,
        pub weight: Option<serde_json::Value>,
    }
}

impl From<v1alpha2::TrafficSplit> for TrafficSplit {
    fn from(old: v1alpha2::TrafficSplit) -> Self {
        let mut split = TrafficSplit::new("", TrafficSplitSpec::default());
        split.metadata = old.metadata;
        split.spec.service = old.spec.service;
        split.spec.backends = old.spec.backends;
        split
    }
}

impl TryFrom<v1alpha1::TrafficSplit> for TrafficSplit {
    type Error = String;

    /// Weights become thousandths: `500m` → 500, `1` → 1000, `1.5` → 1500.
    fn try_from(old: v1alpha1::TrafficSplit) -> Result<Self, String> {
        let mut split = TrafficSplit::new("", TrafficSplitSpec::default());
        split.metadata = old.metadata;
        split.spec.service = old.spec.service;
        for (i, b) in old.spec.backends.into_iter().enumerate() {
            let weight = match &b.weight {
                None => 0,
                Some(v) => {
                    milli_quantity(v).map_err(|e| format!("spec.backends[{i}].weight: {e}"))?
                }
            };
            split.spec.backends.push(SplitBackend {
                service: b.service,
                weight,
            });
        }
        Ok(split)
    }
}

/// A v1alpha1 TrafficSplit as the API server serves it at v1alpha4: with
/// no conversion webhook an object is served as it was written, so its
/// weights may be quantity strings (`500m`, `"1"`), which v1alpha4 and
/// v1alpha2 never have. When any weight of `split` (JSON) is a string,
/// every weight is turned in place into thousandths, as [`v1alpha1`] reads
/// them (an integer `1` beside `500m` is 1000): whether any was.
pub fn quantity_weights(split: &mut serde_json::Value) -> Result<bool, String> {
    let Some(backends) = split
        .pointer_mut("/spec/backends")
        .and_then(|b| b.as_array_mut())
    else {
        return Ok(false);
    };
    if !backends.iter().any(|b| b["weight"].is_string()) {
        return Ok(false);
    }
    for (i, backend) in backends.iter_mut().enumerate() {
        if let Some(weight) = backend.get_mut("weight").filter(|w| !w.is_null()) {
            let milli =
                milli_quantity(weight).map_err(|e| format!("spec.backends[{i}].weight: {e}"))?;
            *weight = milli.into();
        }
    }
    Ok(true)
}

/// A Kubernetes quantity in thousandths: `500m`, `2`, `1.5`, `1k`. Negative
/// values pass (the check refuses them with the field's name); anything
/// else is an error.
pub fn milli_quantity(v: &serde_json::Value) -> Result<i64, String> {
    let text = match v {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("{other} is not a quantity")),
    };
    let bad = || format!("'{text}' is not a quantity (500m, 1, 1.5)");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let scale: f64 = match suffix {
        "m" => 1.0,
        "" => 1e3,
        "k" => 1e6,
        "M" => 1e9,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let milli = (n * scale).round();
    if !milli.is_finite() || milli.abs() > 1e15 {
        return Err(bad());
    }
    Ok(milli as i64)
}

/// HTTPRouteGroup `specs.smi-spec.io/v1alpha4`: named matches on path
/// regex, methods and headers.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "HTTPRouteGroup",
    namespaced,
    schema = "disabled"
)]
pub struct HTTPRouteGroupSpec {
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Header conditions in either encoding found in the wild: a list of
/// one-key maps (the CRD's schema) or one map (the spec's text).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Headers {
    List(Vec<BTreeMap<String, String>>),
    Map(BTreeMap<String, String>),
}

impl Headers {
    /// Name → value regex, in the order written; the field path of each
    /// (`headers[0]` or `headers.user-agent`) for errors.
    pub fn pairs(&self) -> Vec<(String, &str, &str)> {
        match self {
            Headers::List(list) => list
                .iter()
                .enumerate()
                .flat_map(|(i, m)| {
                    m.iter()
                        .map(move |(k, v)| (format!("headers[{i}]"), k.as_str(), v.as_str()))
                })
                .collect(),
            Headers::Map(m) => m
                .iter()
                .map(|(k, v)| (format!("headers.{k}"), k.as_str(), v.as_str()))
                .collect(),
        }
    }
}

/// TCPRoute `specs.smi-spec.io/v1alpha4`: the ports a split applies to
/// (none listed: every port).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "TCPRoute",
    namespaced,
    schema = "disabled"
)]
pub struct TCPRouteSpec {
    #[serde(default)]
    pub matches: TcpMatch,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct TcpMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ports: Vec<i64>,
}
