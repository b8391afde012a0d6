//! Opaque pagination cursors: where the previous page ended and the listing it belongs to
//! (the `tag` and `q` filters and the page size), versioned and base64url-encoded.
//!
//! A cursor carries its listing, so `?cursor=<next_cursor>` alone continues the filtered
//! listing it was issued for; a request that passes a cursor with different filters is refused
//! by the handler. Layout of version 2 (before base64url): `c2:`, the last item id (16 bytes),
//! the page size (1 byte), the tag length (1 byte, 0 = no tag), the tag, then the `q` text as
//! given (UTF-8, at most 100 characters, empty = no name filter). Version 1 (`c1` + id,
//! issued before cursors carried their listing) still decodes, without a listing, so paging
//! survives a rolling upgrade.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

use super::model::is_valid_tag;

const V1: &[u8; 2] = b"c1";
/// Three bytes, so that every version 2 cursor starts with the same four characters (`YzI6`).
const V2: &[u8; 3] = b"c2:";
/// Longest `q` in characters (the handler's limit too).
pub const MAX_Q_CHARS: usize = 100;
/// Longest encoded cursor: 3 + 16 + 1 + 1 + 32 (tag) + 400 (q) bytes in base64url.
pub const MAX_LEN: usize = 604;

/// The OpenAPI `pattern` of the `cursor` parameter. Every cursor [`decode`] accepts matches
/// it (a string that does not match is always refused), which the tests check.
pub const PATTERN: &str = "^(YzE[A-Za-z0-9_-]{21}|YzI6[A-Za-z0-9_-]{24,600})?$";

/// The listing a cursor continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Page size, 1 to 100.
    pub limit: u32,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// Only items whose name contains this text, ignoring case (as the client gave it).
    pub q: Option<String>,
}

/// A decoded cursor: continue after `after`, within `listing` (`None`: a version 1 cursor,
/// which did not record its listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub after: Uuid,
    pub listing: Option<Listing>,
}

/// Encodes "continue `listing` after this id".
pub fn encode(last_id: Uuid, listing: &Listing) -> String {
    let tag = listing.tag.as_deref().unwrap_or("");
    let q = listing.q.as_deref().unwrap_or("");
    let mut raw = Vec::with_capacity(V2.len() + 18 + tag.len() + q.len());
    raw.extend_from_slice(V2);
    raw.extend_from_slice(last_id.as_bytes());
    // The handler validated both: limit 1..=100, tag at most 32 bytes.
    raw.push(u8::try_from(listing.limit).unwrap_or(u8::MAX));
    raw.push(u8::try_from(tag.len()).unwrap_or(u8::MAX));
    raw.extend_from_slice(tag.as_bytes());
    raw.extend_from_slice(q.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor made by [`encode`] (or a version 1 cursor); anything else is `None`.
pub fn decode(cursor: &str) -> Option<Cursor> {
    if cursor.len() > MAX_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    if let Some(rest) = raw.strip_prefix(V2) {
        let (id, rest) = rest.split_first_chunk::<16>()?;
        let (&[limit, tag_len], rest) = rest.split_first_chunk::<2>()?;
        let (tag, q) = rest.split_at_checked(usize::from(tag_len))?;
        let tag = std::str::from_utf8(tag).ok()?;
        let q = std::str::from_utf8(q).ok()?;
        let limit = u32::from(limit);
        let tag_ok = tag.is_empty() || is_valid_tag(tag);
        if !(1..=100).contains(&limit) || !tag_ok || q.chars().count() > MAX_Q_CHARS {
            return None;
        }
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        return Some(Cursor {
            after: Uuid::from_bytes(*id),
            listing: Some(Listing {
                limit,
                tag: some(tag),
                q: some(q),
            }),
        });
    }
    // The pattern admits only the version 1 cursors of UUIDv7 ids (first byte below 0x40,
    // until the year 10889): decode exactly those.
    if !cursor.starts_with("YzE") {
        return None;
    }
    let bytes: [u8; 16] = raw.strip_prefix(V1)?.try_into().ok()?;
    Some(Cursor {
        after: Uuid::from_bytes(bytes),
        listing: None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A minimal matcher for [`PATTERN`] (no regex engine in the dependency tree).
    fn matches_pattern(s: &str) -> bool {
        let b64 = |t: &str| {
            t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(&c))
        };
        s.is_empty()
            || (s.len() == 24 && s.starts_with("YzE") && b64(&s[3..]))
            || ((28..=604).contains(&s.len()) && s.starts_with("YzI6") && b64(&s[4..]))
    }

    fn listing() -> impl Strategy<Value = Listing> {
        (
            1u32..=100,
            proptest::option::of("[a-z0-9-]{1,32}"),
            proptest::option::of("\\PC{1,100}"),
        )
            .prop_map(|(limit, tag, q)| Listing { limit, tag, q })
    }

    #[test]
    fn round_trips() {
        let id = Uuid::now_v7();
        let l = Listing {
            limit: 10,
            tag: Some("kitchen".into()),
            q: Some("cup".into()),
        };
        assert_eq!(
            decode(&encode(id, &l)),
            Some(Cursor {
                after: id,
                listing: Some(l)
            })
        );
    }

    #[test]
    fn version_1_cursors_still_decode_without_a_listing() {
        let id = Uuid::now_v7();
        let mut raw = b"c1".to_vec();
        raw.extend_from_slice(id.as_bytes());
        let c = URL_SAFE_NO_PAD.encode(raw);
        assert!(matches_pattern(&c));
        assert_eq!(
            decode(&c),
            Some(Cursor {
                after: id,
                listing: None
            })
        );
    }

    #[test]
    fn the_longest_cursor_fits() {
        let l = Listing {
            limit: 100,
            tag: Some("t".repeat(32)),
            q: Some("\u{10FFFF}".repeat(MAX_Q_CHARS)),
        };
        let c = encode(Uuid::max(), &l);
        assert_eq!(c.len(), MAX_LEN);
        assert!(matches_pattern(&c));
        assert_eq!(decode(&c).unwrap().listing, Some(l));
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(s in ".{0,700}") {
            let _ = decode(&s);
        }

        /// Every listing survives the round trip, and its cursor matches the documented pattern.
        #[test]
        fn listings_round_trip(id in any::<u128>(), l in listing()) {
            let id = Uuid::from_u128(id);
            let c = encode(id, &l);
            prop_assert!(matches_pattern(&c), "{c}");
            prop_assert_eq!(decode(&c), Some(Cursor { after: id, listing: Some(l) }));
        }

        /// Whatever decodes matches the pattern (so schema-invalid cursors are always refused),
        /// and decoded listings are valid ones.
        #[test]
        fn only_own_cursors_decode(bytes in proptest::collection::vec(any::<u8>(), 0..80), v2 in any::<bool>()) {
            let mut raw = if v2 { V2.to_vec() } else { Vec::new() };
            raw.extend_from_slice(&bytes);
            let s = URL_SAFE_NO_PAD.encode(&raw);
            if let Some(c) = decode(&s) {
                prop_assert!(matches_pattern(&s), "{s}");
                if let Some(l) = c.listing {
                    prop_assert!((1..=100).contains(&l.limit));
                    prop_assert!(l.tag.as_deref().is_none_or(is_valid_tag));
                    prop_assert!(l.q.as_deref().is_none_or(|q| !q.is_empty() && q.chars().count() <= MAX_Q_CHARS));
                }
            } else {
                let v1 = raw.len() == 18 && raw.starts_with(V1) && raw[2] < 0x40;
                prop_assert!(!v1, "a version 1 cursor was refused");
            }
        }
    }
}
