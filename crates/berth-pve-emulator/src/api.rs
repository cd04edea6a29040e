//! Handler plumbing: the error type that maps onto PVE's statuses, replies, parameters and request context.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use serde_json::Value;

use crate::perms::Token;
use crate::server::Shared;
use crate::state::World;

/// A failed request, as PVE's `rest_handler` would map it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400 `Parameter verification failed.` with per-parameter messages (`raise_param_exc`).
    #[error("Parameter verification failed.")]
    Param(BTreeMap<String, String>),
    /// 403 `Permission check failed (<path>, <privilege>)`.
    #[error("Permission check failed ({0})")]
    Perm(String),
    /// 500 with the `die` text.
    #[error("{0}")]
    Fail(String),
    /// Any other status with its message (501, 595, 596, 599, ...).
    #[error("{1}")]
    Status(u16, String),
}

impl ApiError {
    pub fn param(name: &str, msg: impl Into<String>) -> ApiError {
        ApiError::Param(BTreeMap::from([(name.to_string(), msg.into())]))
    }
    pub fn fail(msg: impl Into<String>) -> ApiError {
        ApiError::Fail(msg.into())
    }
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Param(_) => 400,
            ApiError::Perm(_) => 403,
            ApiError::Fail(_) => 500,
            ApiError::Status(code, _) => *code,
        }
    }
    pub fn errors(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            ApiError::Param(e) => Some(e),
            _ => None,
        }
    }
}

pub(crate) type ApiResult = Result<Reply, ApiError>;

/// A successful answer: `{"data": ..., "total"?: N}`.
pub(crate) struct Reply {
    pub data: Value,
    pub total: Option<u64>,
    /// The top-level `changes` attribute (staged network edits).
    pub changes: Option<String>,
}

impl Reply {
    pub fn data(data: Value) -> ApiResult {
        Ok(Reply {
            data,
            total: None,
            changes: None,
        })
    }
    pub fn null() -> ApiResult {
        Ok(Reply {
            data: Value::Null,
            total: None,
            changes: None,
        })
    }
}

/// Query + body parameters (query overrides body), decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    /// Every parameter as text, in request order (a JSON array as its JSON text).
    pub pairs: Vec<(String, String)>,
    /// Parameters a JSON body gave as arrays, element by element (as text).
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An `array` parameter as the handler sees it after PVE's `normalize_legacy_param_formats`:
    /// a JSON array element by element; a form value (a repeated key joined with NUL, as
    /// `decode_urlencoded` does) as a one-element list.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        if let Some(items) = self.lists.get(name) {
            return Some(items.clone());
        }
        let values: Vec<&str> = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| vec![values.join("\0")])
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::param(name, "property is missing and it is not optional"))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_int(name, v).map(Some),
        }
    }

    pub fn vmid(&self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_vmid(name, v).map(Some),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(v) => Err(ApiError::param(
                name,
                format!("type check ('boolean') failed - got '{v}'"),
            )),
        }
    }

    /// A `pve-configid-list` (or any list PVE's `split_list` reads): commas, semicolons,
    /// spaces or NULs between the items.
    pub fn split_list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|d| {
                d.split([',', ';', ' ', '\0'])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.bool(name)?.unwrap_or(false))
    }

    /// Parameters other than the listed ones, in request order, last value winning.
    pub fn without(&self, skip: &[&str]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.pairs {
            if skip.contains(&k.as_str()) {
                continue;
            }
            if let Some(slot) = out.iter_mut().find(|(ok, _)| ok == k) {
                slot.1 = v.clone();
            } else {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }
}

pub(crate) fn parse_int(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::param(name, format!("type check ('integer') failed - got '{v}'")))
}

pub(crate) fn parse_vmid(name: &str, v: &str) -> Result<u32, ApiError> {
    let n = parse_int(name, v)?;
    if n < 100 {
        return Err(ApiError::param(name, "value must have a minimum value of 100"));
    }
    if n > 999_999_999 {
        return Err(ApiError::param(name, "value must have a maximum value of 999999999"));
    }
    Ok(n as u32)
}

/// What injected fault (if any) the task started by this request must show.
#[derive(Clone, Debug)]
pub(crate) enum TaskFault {
    Failure(String),
    Warnings(u32),
}

/// One request being handled.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub token: Token,
    pub params: Params,
    pub task_fault: Option<TaskFault>,
}

impl Ctx {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world()
    }
}
