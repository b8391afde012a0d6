//! The domain: item types, the validation rules (each written once, with its OpenAPI schema),
//! `FieldError`, and the exact price representation. Knows nothing of HTTP or storage.

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `name` or `tags[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Largest accepted price (in currency units).
pub const MAX_PRICE_CENTS: i64 = 100_000_000_000; // 1e9 units
/// Largest accepted quantity: the largest integer every JSON client represents exactly.
pub const MAX_QUANTITY: i64 = 9_007_199_254_740_991;
pub const MAX_TAGS: usize = 10;

/// A price held exactly as an integer number of cents, written to JSON as a decimal number
/// (`1999` cents is `19.99`, never `19.989999`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

impl Price {
    pub fn from_cents(cents: i64) -> Self {
        Self(cents)
    }
    pub fn cents(self) -> i64 {
        self.0
    }

    /// The exact price a JSON number denotes, if it has at most two decimals.
    ///
    /// A decimal literal with up to two decimals parses to the double nearest to it; scaled by
    /// 100 that double is within a few ulps of the integer cent count (for any literal of up to
    /// 15 significant digits).
    pub fn from_decimal(value: f64) -> Option<Price> {
        if !value.is_finite() {
            return None;
        }
        let scaled = value * 100.0;
        let cents = scaled.round();
        if cents.abs() > 1e15 {
            return None;
        }
        // At most two decimals, up to binary floating-point noise: a client that computes
        // 3 * 0.01 sends 0.030000000000000002, which is 3 cents. The tolerance (a few ulps of
        // the cent count, at least 1e-9) is far below what a third decimal adds (>= 0.1 cent).
        let tolerance = 1e-9_f64.max(cents.abs() * 4.0 * f64::EPSILON);
        if (scaled - cents).abs() > tolerance {
            return None;
        }
        Some(Price(cents as i64))
    }

    /// The price as the `f64` nearest to its decimal value, which serialises back to that decimal.
    pub fn as_f64(self) -> f64 {
        // Both operands are exact, and IEEE division rounds correctly, so this is the same
        // double the decimal literal parses to.
        self.0 as f64 / 100.0
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// A stored item, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Item {
    /// Server-assigned UUIDv7 (time-ordered).
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Exact to the cent.
    #[schema(value_type = f64, example = 19.99, minimum = 0.01, maximum = 1_000_000_000)]
    pub price: Price,
    #[schema(minimum = 0)]
    pub quantity: i64,
    pub tags: Vec<String>,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Incremented on every change; the `ETag` is derived from it.
    #[schema(minimum = 1)]
    pub version: i64,
}

impl Item {
    /// The strong entity tag of this version of the item.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The writable fields, as a JSON merge patch (RFC 7396) is applied to them.
    pub fn to_input_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "price": self.price,
            "quantity": self.quantity,
            "tags": self.tags,
        })
    }
}

/// The body of `POST /v1/items` and `PUT /v1/items/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Trimmed; 1 to 100 characters, no control characters.
    #[schema(schema_with = name_schema)]
    #[validate(
        length(
            min = 1,
            max = MAX_NAME_CHARS,
            message = "must be 1 to 100 characters after trimming"
        ),
        custom(function = "no_control_chars")
    )]
    pub name: String,
    /// Optional; up to 1000 characters.
    #[serde(default)]
    #[schema(schema_with = description_schema)]
    #[validate(
        length(max = MAX_DESCRIPTION_CHARS, message = "must be at most 1000 characters"),
        custom(function = "text_chars")
    )]
    pub description: Option<String>,
    /// Greater than 0, at most 1e9, at most two decimals.
    #[schema(
        example = 19.99,
        minimum = 0.01,
        maximum = 1_000_000_000,
        multiple_of = 0.01
    )]
    #[validate(custom(function = "valid_price"))]
    pub price: f64,
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64, example = 3)]
    #[validate(range(min = 0, max = MAX_QUANTITY, message = "must be an integer from 0 to 9007199254740991"))]
    #[serde(deserialize_with = "integral")]
    pub quantity: i64,
    /// Up to 10 unique tags, each 1 to 32 characters of `a-z`, `0-9` and `-`.
    #[serde(default)]
    #[schema(schema_with = tags_schema, example = json!(["kitchen", "ceramic"]))]
    #[validate(custom(function = "valid_tags"))]
    pub tags: Vec<String>,
}

/// An integer, also when written with a zero fraction (`107.0` is the integer 107 in JSON
/// Schema); other fractions and values beyond the exactly representable range are refused.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Integral;
    impl serde::de::Visitor<'_> for Integral {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() == 0.0 && v.abs() <= MAX_QUANTITY as f64 {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Integral)
}

/// The `name` schema: 1 to 100 characters of [`NAME_PATTERN`].
// `example`, as utoipa's derive writes it, so the document is the one clients already have.
#[allow(deprecated)]
fn name_schema() -> utoipa::openapi::schema::Object {
    name_schema_builder()
        .description(Some("Trimmed; 1 to 100 characters, no control characters."))
        .example(Some(serde_json::json!("Espresso cup")))
        .build()
}

fn name_schema_builder() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS as usize))
        .pattern(Some(NAME_PATTERN))
}

/// The `description` schema: up to 1000 characters of [`DESCRIPTION_PATTERN`] (or null when
/// `nullable`, as a merge patch clears it).
fn description_schema_builder(nullable: bool) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let kind = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::from(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .max_length(Some(MAX_DESCRIPTION_CHARS as usize))
        .pattern(Some(DESCRIPTION_PATTERN))
}

/// `Option<String>`: JSON `null` is accepted and means no description.
fn description_schema() -> utoipa::openapi::schema::Object {
    description_schema_builder(true)
        .description(Some("Optional; up to 1000 characters."))
        .build()
}

/// One tag: [`TAG_PATTERN`].
fn tag_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(TAG_PATTERN))
        .build()
}

/// The `tags` schema: up to 10 unique tags (or null when `nullable`).
fn tags_schema_builder(nullable: bool) -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    let builder = ArrayBuilder::new();
    let builder = if nullable {
        builder.schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
    } else {
        builder
    };
    builder
        .items(tag_schema())
        .max_items(Some(MAX_TAGS))
        .unique_items(true)
}

fn tags_schema() -> utoipa::openapi::schema::Array {
    tags_schema_builder(false).build()
}

/// The body of `PATCH /v1/items/{id}` as documented: a JSON merge patch (RFC 7396) naming only
/// the fields to change; `null` clears `description` or `tags`. (The handler merges the raw
/// JSON and validates the result like a PUT body; this type only describes it.)
pub struct ItemPatch;

impl utoipa::PartialSchema for ItemPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Fields to change (RFC 7396 merge patch); null clears description or tags",
            ))
            .property("name", name_schema_builder())
            .property("description", description_schema_builder(true))
            .property(
                "price",
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0.01))
                    .maximum(Some(1_000_000_000))
                    .multiple_of(Some(0.01)),
            )
            .property(
                "quantity",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_QUANTITY as f64)),
            )
            .property("tags", tags_schema_builder(true))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for ItemPatch {
    fn name() -> std::borrow::Cow<'static, str> {
        "ItemPatch".into()
    }
}

/// A name: no control characters and at least one visible character (same as `ItemInput`).
pub const NAME_PATTERN: &str =
    "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";
/// A description: no control characters except tab, newline and carriage return.
pub const DESCRIPTION_PATTERN: &str = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$";
/// A tag: the rule [`is_valid_tag`] checks, as a pattern (a unit test holds them together).
pub const TAG_PATTERN: &str = "^[a-z0-9-]{1,32}$";
/// Longest name, in characters (after trimming).
pub const MAX_NAME_CHARS: u64 = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: u64 = 1000;

/// Validated, normalised item fields, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub name: String,
    pub description: Option<String>,
    pub price: Price,
    pub quantity: i64,
    pub tags: Vec<String>,
}

impl ItemInput {
    /// Trims the name and checks every field, reporting all problems at once.
    pub fn into_new_item(mut self) -> Result<NewItem, Vec<FieldError>> {
        self.name = self.name.trim().to_owned();
        self.validate().map_err(|e| flatten(&e))?;
        let price = Price::from_decimal(self.price)
            .ok_or_else(|| vec![FieldError::new("price", "invalid price")])?;
        Ok(NewItem {
            name: self.name,
            description: self.description,
            price,
            quantity: self.quantity,
            tags: self.tags,
        })
    }
}

fn no_control_chars(value: &str) -> Result<(), ValidationError> {
    if value.chars().any(char::is_control) {
        return Err(err("must not contain control characters"));
    }
    Ok(())
}

fn text_chars(value: &str) -> Result<(), ValidationError> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(err(
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

fn valid_price(value: f64) -> Result<(), ValidationError> {
    match Price::from_decimal(value) {
        None => Err(err("must have at most two decimals")),
        Some(p) if p.cents() <= 0 => Err(err("must be greater than 0")),
        Some(p) if p.cents() > MAX_PRICE_CENTS => Err(err("must be at most 1000000000")),
        Some(_) => Ok(()),
    }
}

fn valid_tags(tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(err("at most 10 tags"));
    }
    for (i, tag) in tags.iter().enumerate() {
        if !is_valid_tag(tag) {
            return Err(err(&format!("tag {i} must be {TAG_RULE}")));
        }
        if tags[..i].contains(tag) {
            return Err(err(&format!("tag {i} ({tag:?}) is a duplicate")));
        }
    }
    Ok(())
}

/// The tag rule in words, for error messages.
pub const TAG_RULE: &str = "1 to 32 characters of a-z, 0-9 and -";

/// Whether `tag` is 1 to 32 characters of `[a-z0-9-]`.
pub fn is_valid_tag(tag: &str) -> bool {
    (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn err(message: &str) -> ValidationError {
    ValidationError::new("invalid").with_message(message.to_owned().into())
}

/// validator's nested error map as a flat, sorted `{field, message}` list.
fn flatten(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (field, kind) in errors.errors() {
        if let ValidationErrorsKind::Field(list) = kind {
            for e in list {
                let message = e.message.as_deref().unwrap_or("is invalid").to_owned();
                out.push(FieldError::new(field.to_string(), message));
            }
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn input(name: &str, price: f64) -> ItemInput {
        ItemInput {
            name: name.into(),
            description: None,
            price,
            quantity: 1,
            tags: vec![],
        }
    }

    #[test]
    fn prices_are_exact() {
        for (lit, cents) in [
            ("19.99", 1999),
            ("0.01", 1),
            ("1000000000", 100_000_000_000),
            ("0.1", 10),
            ("123456.78", 12_345_678),
        ] {
            let v: f64 = lit.parse().unwrap();
            let p = Price::from_decimal(v).unwrap();
            assert_eq!(p.cents(), cents, "{lit}");
            assert_eq!(
                serde_json::to_string(&p).unwrap().trim_end_matches(".0"),
                lit
            );
        }
        assert!(Price::from_decimal(19.999).is_none());
        assert!(Price::from_decimal(0.001).is_none());
        assert!(Price::from_decimal(f64::NAN).is_none());
        assert!(Price::from_decimal(1e300).is_none());
    }

    #[test]
    fn trims_and_validates_name() {
        assert_eq!(input("  cup  ", 1.0).into_new_item().unwrap().name, "cup");
        let errs = input("   ", 1.0).into_new_item().unwrap_err();
        assert_eq!(errs[0].field, "name");
        assert!(input(&"x".repeat(100), 1.0).into_new_item().is_ok());
        assert!(input(&"x".repeat(101), 1.0).into_new_item().is_err());
        assert!(
            input(&"é".repeat(100), 1.0).into_new_item().is_ok(),
            "length counts characters"
        );
        assert!(input("a\u{0}b", 1.0).into_new_item().is_err());
    }

    #[test]
    fn reports_every_invalid_field() {
        let bad = ItemInput {
            name: "".into(),
            description: Some("d".repeat(1001)),
            price: -1.0,
            quantity: -1,
            tags: vec!["UPPER".into()],
        };
        let fields: Vec<_> = bad
            .into_new_item()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["description", "name", "price", "quantity", "tags"]);
    }

    #[test]
    fn validates_tags() {
        let mut i = input("a", 1.0);
        i.tags = vec!["a".into(), "a".into()];
        assert!(i.clone().into_new_item().is_err());
        i.tags = (0..11).map(|n| format!("t{n}")).collect();
        assert!(i.clone().into_new_item().is_err());
        i.tags = vec!["ok-1".into(), "x".repeat(32)];
        assert!(i.clone().into_new_item().is_ok());
        i.tags = vec!["x".repeat(33)];
        assert!(i.into_new_item().is_err());
    }

    proptest! {
        /// The documented patterns and the checks the server runs accept the same strings.
        #[test]
        fn patterns_and_rules_agree(s in "(\\PC|[\\x00-\\x20\\x7f-\\xa0]){0,40}") {
            let tag = regex::Regex::new(TAG_PATTERN).unwrap();
            prop_assert_eq!(tag.is_match(&s), is_valid_tag(&s));
            let name = regex::Regex::new(NAME_PATTERN).unwrap();
            prop_assert_eq!(
                name.is_match(&s),
                !s.trim().is_empty() && no_control_chars(&s).is_ok()
            );
            let description = regex::Regex::new(DESCRIPTION_PATTERN).unwrap();
            prop_assert_eq!(description.is_match(&s), text_chars(&s).is_ok());
        }

        #[test]
        fn any_two_decimal_price_round_trips(cents in 1i64..=MAX_PRICE_CENTS) {
            let text = format!("{}.{:02}", cents / 100, cents % 100);
            let parsed: f64 = serde_json::from_str(&text).unwrap();
            let price = Price::from_decimal(parsed).unwrap();
            prop_assert_eq!(price.cents(), cents);
            let back: f64 = serde_json::from_str(&serde_json::to_string(&price).unwrap()).unwrap();
            prop_assert_eq!(back, parsed);
        }
    }
}
