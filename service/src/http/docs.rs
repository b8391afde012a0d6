//! API documentation: the OpenAPI 3.1 document generated from the handlers, and Swagger UI.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;
use crate::{error, http::probes, items};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shipshape",
        description = "Items API. Errors are RFC 9457 problem+json; every response carries `X-Trace-ID` and `traceparent`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        items::api::create,
        items::api::list,
        items::api::get,
        items::api::replace,
        items::api::patch,
        items::api::delete,
        probes::healthz,
        probes::readyz,
        probes::metrics,
    ),
    components(schemas(
        items::model::Item,
        items::model::ItemInput,
        items::api::ItemPage,
        error::Problem,
        error::FieldError,
        probes::ProbeStatus,
    )),
    tags(
        (name = "items", description = "The items resource"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

/// `/openapi.json` and the Swagger UI at `/docs` (assets compiled into the binary).
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
