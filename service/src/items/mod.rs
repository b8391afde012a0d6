//! The items resource: model and validation, HTTP handlers, storage backends.

pub mod api;
pub mod cursor;
pub mod model;
pub mod store;
