//! The items resource below HTTP: the domain (`model`, `cursor`) and its storage (`store`).

pub mod cursor;
pub mod model;
pub mod store;
