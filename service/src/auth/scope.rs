//! The scopes a token needs: `items:read` for reads, `items:write` for everything else.

/// Scope needed for reads (`GET`/`HEAD` on `/v1/items*`).
pub const SCOPE_READ: &str = "items:read";
/// Scope needed for every other method on `/v1`.
pub const SCOPE_WRITE: &str = "items:write";

/// The scope an operation needs: reads (`GET`, `HEAD`) need [`SCOPE_READ`], the rest
/// [`SCOPE_WRITE`].
pub fn required_scope(method: &str) -> &'static str {
    match method {
        "GET" | "HEAD" => SCOPE_READ,
        _ => SCOPE_WRITE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_and_everything_else_write() {
        assert_eq!(required_scope("GET"), SCOPE_READ);
        assert_eq!(required_scope("HEAD"), SCOPE_READ);
        for m in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"] {
            assert_eq!(required_scope(m), SCOPE_WRITE, "{m}");
        }
    }
}
