//! The model: typed objects from the sources in, destinations out.

pub mod apply;
pub mod authz;
mod keys;
pub mod objects;
pub mod pods;
pub mod policy;
pub mod routes;
pub mod store;
#[cfg(test)]
mod tests;

pub use apply::Change;
pub use objects::ObjKey;
pub use pods::PodView;
pub use store::{parse_host, DestKey, DestView, Kind, Object, Store, Touched};
