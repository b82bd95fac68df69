//! Reading the kube source's objects one at a time: a list or watch event
//! of a custom resource whose object does not fit weft's typed struct (an
//! older version served as written, a field of the wrong type) gives a
//! [`Decoded::Refused`] with the object's name and the reason, instead of
//! failing the whole list (which kube-runtime would retry forever, so that
//! weft-control never synced).
//!
//! Custom resources are read through a `serde_json::Value` (one more tree
//! per object, on kinds that change rarely); the built-in kinds, which the
//! API server validated against the schema their k8s-openapi types are
//! generated from, are read straight into their types as before.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Debug;

use crate::model::authz::smi::TrafficTarget;
use crate::model::routes::{gateway, smi};

/// An object of a watched kind as the API server sent it.
#[derive(Clone, Debug)]
pub enum Decoded<K> {
    Fits(K),
    /// It does not fit `K`: what its metadata says of its namespace, name
    /// and resourceVersion (the watcher resumes from it), and why. Boxed:
    /// rare, and the events of `K` stay the size they were.
    Refused {
        metadata: Box<ObjectMeta>,
        reason: String,
    },
}

/// A kind the kube source watches: how its objects are read.
pub trait Decode:
    Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static
{
    /// Whether each object is read on its own ([`Decoded::Refused`] when it
    /// does not fit) rather than straight into `Self`.
    const ALONE: bool = true;

    /// Reads one object; the reason when it does not fit.
    fn decode(object: &Value) -> Result<Self, String> {
        Self::deserialize(object).map_err(unfit::<Self>)
    }
}

fn unfit<K: Resource<DynamicType = ()>>(e: serde_json::Error) -> String {
    format!("{} does not fit its schema: {e}", K::kind(&()))
}

impl Decode for Service {
    const ALONE: bool = false;
}
impl Decode for EndpointSlice {
    const ALONE: bool = false;
}
impl Decode for Pod {
    const ALONE: bool = false;
}
impl Decode for Namespace {
    const ALONE: bool = false;
}
impl Decode for smi::HTTPRouteGroup {}
impl Decode for smi::TCPRoute {}
impl Decode for TrafficTarget {}
impl Decode for gateway::HTTPRoute {}
impl Decode for gateway::GRPCRoute {}

impl Decode for smi::TrafficSplit {
    /// Also a v1alpha1 object served at v1alpha4, its weights quantities
    /// (see [`smi::quantity_weights`]).
    fn decode(object: &Value) -> Result<Self, String> {
        let error = match Self::deserialize(object) {
            Ok(split) => return Ok(split),
            Err(e) => e,
        };
        let mut object = object.clone();
        if smi::quantity_weights(&mut object)? {
            Self::deserialize(&object).map_err(unfit::<Self>)
        } else {
            Err(unfit::<Self>(error))
        }
    }
}

impl<'de, K: Decode> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !K::ALONE {
            return K::deserialize(d).map(Decoded::Fits);
        }
        let object = Value::deserialize(d)?;
        Ok(match K::decode(&object) {
            Ok(k) => Decoded::Fits(k),
            Err(reason) => {
                let field = |f: &str| object["metadata"][f].as_str().map(str::to_owned);
                let metadata = Box::new(ObjectMeta {
                    namespace: field("namespace"),
                    name: field("name"),
                    resource_version: field("resourceVersion"),
                    ..ObjectMeta::default()
                });
                Decoded::Refused { metadata, reason }
            }
        })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Decoded::Fits(k) => k.meta(),
            Decoded::Refused { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Decoded::Fits(k) => k.meta_mut(),
            Decoded::Refused { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(weight: Value) -> Value {
        json!({
            "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
            "metadata": {"name": "canary", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": weight}]}
        })
    }

    /// One object that does not fit is refused alone; the list reads.
    #[test]
    fn an_object_that_does_not_fit_is_refused_alone() {
        let list = json!([split(json!(1)), split(json!(true))]).to_string();
        let read: Vec<Decoded<smi::TrafficSplit>> = serde_json::from_str(&list).unwrap();
        assert!(matches!(&read[0], Decoded::Fits(s) if s.spec.backends[0].weight == 1));
        let Decoded::Refused { metadata, reason } = &read[1] else {
            panic!("refused: {:?}", read[1])
        };
        assert_eq!(metadata.name.as_deref(), Some("canary"));
        assert_eq!(metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(read[1].meta().resource_version.as_deref(), Some("7"));
        assert_eq!(
            reason,
            "TrafficSplit does not fit its schema: invalid type: boolean `true`, expected i64"
        );
    }

    #[test]
    fn a_split_with_quantity_weights_reads_in_thousandths() {
        let read: Decoded<smi::TrafficSplit> =
            serde_json::from_value(split(json!("500m"))).unwrap();
        assert!(matches!(read, Decoded::Fits(s) if s.spec.backends[0].weight == 500));
        let read: Decoded<smi::TrafficSplit> = serde_json::from_value(split(json!("5x"))).unwrap();
        assert!(
            matches!(&read, Decoded::Refused { reason, .. } if reason == "spec.backends[0].weight: '5x' is not a quantity (500m, 1, 1.5)"),
            "{read:?}"
        );
    }

    #[test]
    fn built_in_kinds_are_read_straight() {
        let bad = json!({"metadata": {"name": "web"}, "spec": {"ports": "x"}});
        assert!(serde_json::from_value::<Decoded<Service>>(bad).is_err());
    }
}
