//! Every list is paged: `limit` (1-1000, default 100) items in creation order, after the item
//! whose id is `after`. A full page carries `Link: <…&after=…>; rel="next"` (RFC 8288) naming
//! the next one; a page without it is the last. So one request never costs the server more
//! than a page, however much an account holds.

use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_store::Page;
use serde::{Deserialize, Serialize};

use crate::problem::{ApiError, ApiResult, parse_query};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// `after` and `limit`, for lists with no other parameter.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The id of the last item of the previous page (what `Link: rel="next"` carries).
    #[param(max_length = 128)]
    pub after: Option<String>,
    /// At most this many items (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<Page> {
        page(self.after.as_deref(), self.limit)
    }
}

/// A page from `after` and `limit` as a client sent them; a limit out of range is refused,
/// not clamped.
pub fn page(after: Option<&str>, limit: Option<i64>) -> ApiResult<Page> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT} (got {limit})"),
        ));
    }
    if let Some(a) = after
        && (a.is_empty() || a.chars().count() > 128)
    {
        return Err(ApiError::invalid(
            "after",
            "must be the id of an item (1-128 characters)",
        ));
    }
    Ok(Page {
        after: after.map(str::to_owned),
        limit,
    })
}

/// No query parameters at all: any one is refused, by name.
pub fn no_query(raw: Option<&str>) -> ApiResult<()> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    parse_query::<NoParams>(raw).map(|_| ())
}

/// A JSON array of `items`: a page read from the store as `page`, where `fetched` rows came
/// back, the last with id `last`. A full page links the next one.
pub fn paged<T: Serialize>(uri: &Uri, page: &Page, fetched: usize, last: Option<&str>, items: Vec<T>) -> Response {
    let mut resp = axum::Json(items).into_response();
    if let Some(last) = last.filter(|_| fetched as i64 >= page.limit)
        && let Ok(v) = HeaderValue::try_from(format!("<{}>; rel=\"next\"", next_link(uri, last)))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// `uri` with `after` set to `last` (other parameters kept).
fn next_link(uri: &Uri, last: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != "after" {
            q.append_pair(&k, &v);
        }
    }
    q.append_pair("after", last);
    format!("{}?{}", uri.path(), q.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_refused_by_name() {
        assert_eq!(page(None, None).unwrap().limit, DEFAULT_LIMIT);
        for bad in [0, -1, 1001, 1_000_000] {
            match page(None, Some(bad)) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "limit"),
                other => panic!("{other:?}"),
            }
        }
        assert!(page(Some(""), None).is_err());
    }

    #[test]
    fn the_next_link_keeps_the_filters() {
        let uri: Uri = "/api/v1/instances?status=running&after=old&limit=2".parse().unwrap();
        assert_eq!(
            next_link(&uri, "a b"),
            "/api/v1/instances?status=running&limit=2&after=a+b"
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        match no_query(Some("verbose=1")) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "verbose"),
            other => panic!("{other:?}"),
        }
        assert!(no_query(None).is_ok());
        assert!(no_query(Some("")).is_ok());
    }
}
