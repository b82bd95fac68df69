//! The model: typed objects from the sources in, destinations out.

pub mod objects;
pub mod store;
#[cfg(test)]
mod tests;

pub use objects::ObjKey;
pub use store::{DestKey, DestView, Kind, Object, Store, Touched};
