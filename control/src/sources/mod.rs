//! Sources: where the model's objects come from. Each turns its input into
//! [`crate::model::Change`]s; everything downstream is shared.

pub mod decode;
pub mod files;
pub mod kube;
pub mod parse;
