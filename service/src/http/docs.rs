//! API documentation: the OpenAPI 3.1 document generated from the handlers, and Swagger UI.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;
use super::{
    error::{self, PROBLEM_JSON},
    hardening, items, probes,
};
use crate::{
    auth::{SCOPE_READ, SCOPE_WRITE},
    config::Config,
    items::model,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shipshape",
        description = "Items API. Errors are RFC 9457 problem+json; every response carries `X-Trace-ID` and `traceparent`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        items::create,
        items::list,
        items::get,
        items::replace,
        items::patch,
        items::delete,
        probes::healthz,
        probes::readyz,
        probes::metrics,
    ),
    components(schemas(
        model::Item,
        model::ItemInput,
        model::ItemPatch,
        items::ItemPage,
        error::Problem,
        model::FieldError,
        probes::ProbeStatus,
    )),
    tags(
        (name = "items", description = "The items resource"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

/// `/openapi.json` and the Swagger UI at `/docs` (assets compiled into the binary).
pub fn routes(config: &Config) -> Router<AppState> {
    // Serialised once: the document is fixed for the life of the process.
    let document = bytes::Bytes::from(serde_json::to_vec(&openapi(config)).unwrap_or_default());
    let ui = Router::new()
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .layer(hardening::docs_csp());
    Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                }
            }),
        )
        .merge(ui)
}

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The OpenAPI document as this instance enforces it: the bearer scheme and the 401/403
/// answers when auth is on (reads optionally anonymous), 429 when rate limiting is on, and
/// `/metrics` only when the API port serves it.
pub fn openapi(config: &Config) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{
        Content, Ref, ResponseBuilder,
        header::Header,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    };
    let mut doc = ApiDoc::openapi();
    if config.http.metrics_listen.is_some() {
        // Served on its own listener only: this document describes the API port.
        doc.paths.paths.remove("/metrics");
    }
    let auth = config.auth.enabled;
    if auth {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "JWT with `sub`, `exp` and a space-separated `scope` claim: \
                         `items:read` for GET, `items:write` for changes",
                    ))
                    .build(),
            ),
        );
    }
    not_null_headers(&mut doc);
    let string = || ObjectBuilder::new().schema_type(Type::String).build();
    let problem = |description: &str, headers: &[(&str, &str)]| {
        let mut r = ResponseBuilder::new().description(description).content(
            PROBLEM_JSON,
            Content::new(Some(Ref::from_schema_name("Problem"))),
        );
        for (name, about) in headers {
            let mut h = Header::new(string());
            h.description = Some((*about).to_owned());
            r = r.header(*name, h);
        }
        r.build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let ops = [
            (&mut item.get, true),
            (&mut item.post, false),
            (&mut item.put, false),
            (&mut item.patch, false),
            (&mut item.delete, false),
        ];
        for (op, read) in ops {
            let Some(op) = op.as_mut() else { continue };
            let responses = &mut op.responses.responses;
            if auth {
                let scope = if read { SCOPE_READ } else { SCOPE_WRITE };
                let mut security = vec![SecurityRequirement::new(BEARER, [scope])];
                if read && config.auth.public_reads {
                    security.push(SecurityRequirement::default());
                }
                op.security = Some(security);
                responses.insert(
                    "401".into(),
                    problem(
                        "Missing, malformed, expired or otherwise invalid bearer token",
                        &[("WWW-Authenticate", "RFC 6750 Bearer challenge")],
                    )
                    .into(),
                );
                responses.insert(
                    "403".into(),
                    problem(
                        "The token lacks the scope this operation needs",
                        &[("WWW-Authenticate", "RFC 6750 insufficient_scope challenge")],
                    )
                    .into(),
                );
            }
            if config.rate_limit.enabled {
                responses.insert(
                    "429".into(),
                    problem(
                        "Rate limit exceeded",
                        &[
                            ("Retry-After", "Seconds to wait before retrying"),
                            ("RateLimit", "Remaining quota (IETF RateLimit header draft)"),
                            (
                                "RateLimit-Policy",
                                "Quota policy (IETF RateLimit header draft)",
                            ),
                        ],
                    )
                    .into(),
                );
            }
        }
    }
    doc
}

/// An optional header is absent or a string, never JSON `null`: utoipa types an
/// `Option<String>` header as `["string", "null"]`, which makes fuzzers send `If-Match: null`
/// as if the schema allowed it. Optional stays optional (`required: false`).
fn not_null_headers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr, Schema,
        path::ParameterIn,
        schema::{SchemaType, Type},
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            for p in op.parameters.iter_mut().flatten() {
                let RefOr::T(p) = p else { continue };
                if p.parameter_in != ParameterIn::Header {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(o))) = &mut p.schema
                    && let SchemaType::Array(types) = &o.schema_type
                {
                    let types: Vec<Type> = types
                        .iter()
                        .filter(|t| **t != Type::Null)
                        .cloned()
                        .collect();
                    o.schema_type = match types.as_slice() {
                        [one] => SchemaType::Type(one.clone()),
                        _ => SchemaType::Array(types),
                    };
                }
            }
        }
    }
}
