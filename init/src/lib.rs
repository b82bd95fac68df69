//! The parsers of weft-init's flags, shared with the injector
//! (`weft_control::inject`), which checks the `weft.dev/` annotations that
//! become these flags with the same code: a value the injector takes is a
//! value weft-init takes. Pure parsing; nothing here touches the system.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod ports;
