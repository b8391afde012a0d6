// Rule test for rust-no-panic (semgrep --test): annotated lines must (not) match.
use anyhow::Context;

async fn get_item(id: &str) -> Result<Item, ApiError> {
    // ruleid: rust-no-panic
    let uuid = Uuid::parse_str(id).unwrap();
    // ruleid: rust-no-panic
    let row = store.get(uuid).await.expect("db is up");
    if row.deleted {
        // ruleid: rust-no-panic
        panic!("deleted row {uuid}");
    }
    match row.state {
        State::A => {}
        // ruleid: rust-no-panic
        _ => unreachable!(),
    }
    // ruleid: rust-no-panic
    todo!()
}

fn later() {
    // ruleid: rust-no-panic
    unimplemented!("PATCH");
    // ruleid: rust-no-panic
    std::panic!("qualified");
    // ruleid: rust-no-panic
    let e = parse("x").unwrap_err();
}

fn fine(id: &str) -> anyhow::Result<u64> {
    // ok: rust-no-panic
    let a = id.parse::<u64>().unwrap_or(0);
    // ok: rust-no-panic
    let b = id.parse::<u64>().unwrap_or_default();
    // ok: rust-no-panic
    let c = id.parse::<u64>().unwrap_or_else(|_| 1);
    // ok: rust-no-panic
    let d = id.parse::<u64>().context("parsing id")?;
    // ok: rust-no-panic
    let e = id.parse::<u64>().map_err(|e| anyhow::anyhow!("bad id: {e}"))?;
    Ok(a + b + c + d + e)
}

fn documented_exception() -> Regex {
    // ok: rust-no-panic
    Regex::new("^[a-z]+$").unwrap() // nosemgrep: rust-no-panic -- constant pattern, covered by a unit test
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        // ok: rust-no-panic
        assert_eq!(fine("1").unwrap(), 1);
    }

    fn helper() -> u64 {
        // ok: rust-no-panic
        "1".parse().expect("literal")
    }
}

#[test]
fn top_level_test() {
    // ok: rust-no-panic
    fine("2").unwrap();
}

#[tokio::test]
async fn async_test() {
    // ok: rust-no-panic
    fine("2").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn async_test_mt() {
    // ok: rust-no-panic
    fine("2").unwrap();
}
