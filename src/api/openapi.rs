//! The OpenAPI 3 document of the API, served at `/api/v1/openapi.json`. It is written by
//! hand (`openapi.json` beside this file) for readable schemas; a test checks that its
//! operations are exactly the routes of [`super::table`], and that open and protected
//! routes are marked as such.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use super::DOCUMENT;
    use crate::api::routes::{Access, table};

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let open = op
                    .get("security")
                    .is_some_and(|s| s == &serde_json::json!([]));
                documented.insert((method.to_uppercase(), path.clone(), open));
            }
        }
        let routed: BTreeSet<_> = table()
            .into_iter()
            .map(|r| {
                (
                    r.method.to_owned(),
                    r.path.to_owned(),
                    r.access == Access::Open,
                )
            })
            .collect();
        assert_eq!(documented, routed);
    }
}
