//! placeholder during construction
pub mod codec;
pub mod members;
