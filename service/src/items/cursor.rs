//! Opaque pagination cursors: the last item id of a page, versioned and base64url-encoded.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

const TAG: &[u8; 2] = b"c1";

/// Encodes "continue after this id".
pub fn encode(last_id: Uuid) -> String {
    let mut raw = Vec::with_capacity(18);
    raw.extend_from_slice(TAG);
    raw.extend_from_slice(last_id.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor made by [`encode`]; anything else is `None`.
pub fn decode(cursor: &str) -> Option<Uuid> {
    if cursor.len() > 64 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let rest = raw.strip_prefix(TAG)?;
    let bytes: [u8; 16] = rest.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips() {
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(id)), Some(id));
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(s in ".{0,100}") {
            let _ = decode(&s);
        }

        #[test]
        fn only_own_cursors_decode(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let s = URL_SAFE_NO_PAD.encode(&bytes);
            let ok = bytes.len() == 18 && bytes.starts_with(TAG);
            prop_assert_eq!(decode(&s).is_some(), ok);
        }
    }
}
