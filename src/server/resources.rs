//! The SCIM endpoints: Users and Groups CRUD, list and search, discovery.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::http::{ApiResult, QueryParams, etag_list, if_match, read_json, scim_json};
use crate::scim::discovery::{self, MAX_PAGE_SIZE};
use crate::scim::error::ScimError;
use crate::scim::filter::{Filter, sort_key_cmp};
use crate::scim::patch::parse_patch;
use crate::scim::resource::{AttributeSelection, etag, etag_matches, location, normalize, with_location};
use crate::scim::schema::{LIST_RESPONSE_SCHEMA, ResourceKind, resolve_path};
use crate::store::{Query, Record};

type St = State<Arc<AppState>>;

const DEFAULT_PAGE_SIZE: usize = 100;
/// Longest `sortBy` (one attribute path; the longest URN-qualified one is
/// under 80 characters).
const MAX_SORT_BY_LEN: usize = 256;

fn with_etag(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

impl AppState {
    /// A user's computed `groups` attribute, `None` when it is in no group.
    async fn groups_attribute(&self, user_id: &str) -> ApiResult<Option<Value>> {
        let groups = self.store.groups_of(user_id).await.map_err(|e| e.into_scim())?;
        Ok((!groups.is_empty()).then(|| {
            Value::Array(
                groups
                    .into_iter()
                    .map(|g| {
                        json!({"value": g.id, "$ref": location(&self.base_url, ResourceKind::Group, &g.id), "display": g.display_name, "type": "direct"})
                    })
                    .collect(),
            )
        }))
    }

    /// The stored text with `groups` and `location` spliced in, answered
    /// without parsing or re-serialising the document. `None` when the slow
    /// path must answer: the text is not in the expected shape, or it is no
    /// longer `version` (another write came in between).
    async fn stored_response(
        &self,
        kind: ResourceKind,
        id: &str,
        version: Option<u64>,
        groups: bool,
    ) -> ApiResult<Option<Response>> {
        let Some((stored, text)) = self.store.get_text(kind, id).await.map_err(|e| e.into_scim())? else {
            return match version {
                None => Err(ScimError::not_found(format!("{} {id} not found", kind.name())).into()),
                Some(_) => Ok(None),
            };
        };
        if version.is_some_and(|v| v != stored) {
            return Ok(None);
        }
        let groups = if groups { self.groups_attribute(id).await? } else { None };
        let Some(body) =
            crate::scim::resource::splice_response(&text, groups.as_ref(), &location(&self.base_url, kind, id))
        else {
            return Ok(None);
        };
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(super::http::SCIM_CONTENT_TYPE));
        Ok(Some(with_etag(resp, stored)))
    }

    /// A stored record as a client sees it: `groups` for users, `location`,
    /// and the requested attribute selection.
    async fn render(&self, kind: ResourceKind, rec: &Record, selection: &AttributeSelection) -> ApiResult<Value> {
        let mut doc = (*rec.doc).clone();
        if kind == ResourceKind::User
            && !selection.excludes_top("groups")
            && let Some(list) = self.groups_attribute(&rec.id).await?
            && let Value::Object(o) = &mut doc
        {
            // Before meta, where a reader expects attributes.
            let meta = o.shift_remove("meta");
            o.insert("groups".into(), list);
            if let Some(m) = meta {
                o.insert("meta".into(), m);
            }
        }
        let doc = with_location(doc, &self.base_url, kind);
        if selection.is_empty() {
            return Ok(doc);
        }
        Ok(selection.apply(kind, &doc))
    }

    async fn resource_response(
        &self,
        kind: ResourceKind,
        status: StatusCode,
        rec: &Record,
        selection: &AttributeSelection,
    ) -> ApiResult {
        if selection.is_empty() {
            // A new user is in no group yet, so a create skips that lookup.
            let groups = kind == ResourceKind::User && status != StatusCode::CREATED;
            if let Some(mut resp) = self.stored_response(kind, &rec.id, Some(rec.version), groups).await? {
                *resp.status_mut() = status;
                if status == StatusCode::CREATED
                    && let Ok(v) = HeaderValue::from_str(&location(&self.base_url, kind, &rec.id))
                {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(resp);
            }
        }
        let body = self.render(kind, rec, selection).await?;
        let mut resp = with_etag(scim_json(status, &body), rec.version);
        if status == StatusCode::CREATED
            && let Some(loc) = body.pointer("/meta/location").and_then(Value::as_str)
            && let Ok(v) = HeaderValue::from_str(loc)
        {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }
}

/// The list parameters shared by GET and POST /.search.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    pub filter: Option<String>,
    pub start_index: usize,
    pub count: usize,
    pub sort_by: Option<String>,
    pub descending: bool,
    pub attributes: Option<String>,
    pub excluded: Option<String>,
}

/// The `attributes` / `excludedAttributes` of a query, checked before a write
/// so a refused selection stores nothing.
fn selection_of(kind: ResourceKind, raw_query: Option<&str>) -> ApiResult<AttributeSelection> {
    let q = QueryParams::parse(raw_query);
    Ok(AttributeSelection::parse(kind, q.get("attributes"), q.get("excludedAttributes"))?)
}

fn parse_int(name: &str, v: &str) -> Result<i64, ScimError> {
    v.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("'{name}' must be an integer, not '{v}'")))
}

impl ListParams {
    fn from_query(q: &QueryParams) -> Result<Self, ScimError> {
        Self::build(
            q.get("filter").map(str::to_string),
            q.get("startIndex").map(|v| parse_int("startIndex", v)).transpose()?,
            q.get("count").map(|v| parse_int("count", v)).transpose()?,
            q.get("sortBy").map(str::to_string),
            q.get("sortOrder").map(str::to_string),
            q.get("attributes").map(str::to_string),
            q.get("excludedAttributes").map(str::to_string),
        )
    }

    fn from_search_body(body: &Value) -> Result<Self, ScimError> {
        let obj =
            body.as_object().ok_or_else(|| ScimError::invalid_syntax("the search request must be a JSON object"))?;
        let get = |k: &str| obj.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v);
        let string = |k: &str| -> Result<Option<String>, ScimError> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::invalid_value(format!("'{k}' must be a string"))),
            }
        };
        let int = |k: &str| -> Result<Option<i64>, ScimError> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => {
                    n.as_i64().map(Some).ok_or_else(|| ScimError::invalid_value(format!("'{k}' must be an integer")))
                }
                Some(Value::String(s)) => parse_int(k, s).map(Some),
                Some(_) => Err(ScimError::invalid_value(format!("'{k}' must be an integer"))),
            }
        };
        let list = |k: &str| -> Result<Option<String>, ScimError> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .map(|v| Some(v.join(",")))
                    .ok_or_else(|| ScimError::invalid_value(format!("'{k}' must be an array of attribute names"))),
                Some(_) => Err(ScimError::invalid_value(format!("'{k}' must be an array of attribute names"))),
            }
        };
        Self::build(
            string("filter")?,
            int("startIndex")?,
            int("count")?,
            string("sortBy")?,
            string("sortOrder")?,
            list("attributes")?,
            list("excludedAttributes")?,
        )
    }

    fn build(
        filter: Option<String>,
        start_index: Option<i64>,
        count: Option<i64>,
        sort_by: Option<String>,
        sort_order: Option<String>,
        attributes: Option<String>,
        excluded: Option<String>,
    ) -> Result<Self, ScimError> {
        let descending = match sort_order.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder must be 'ascending' or 'descending', not '{other}'"
                )));
            }
        };
        Ok(ListParams {
            filter: filter.filter(|f| !f.trim().is_empty()),
            // RFC 7644 §3.4.2.4: startIndex < 1 means 1, count < 0 means 0.
            start_index: start_index.unwrap_or(1).max(1) as usize,
            count: count.map(|c| c.clamp(0, MAX_PAGE_SIZE as i64) as usize).unwrap_or(DEFAULT_PAGE_SIZE),
            sort_by: sort_by.filter(|s| !s.trim().is_empty()),
            descending,
            attributes,
            excluded,
        })
    }
}

async fn list_kind(st: &AppState, kind: ResourceKind, p: &ListParams, lenient: bool) -> ApiResult<(usize, Vec<Value>)> {
    let selection = AttributeSelection::parse(kind, p.attributes.as_deref(), p.excluded.as_deref())?;
    let filter = p
        .filter
        .as_deref()
        .map(|f| if lenient { Filter::parse_lenient(kind, f) } else { Filter::parse(kind, f) })
        .transpose()?;
    let sort_attr = match &p.sort_by {
        Some(s) if s.len() > MAX_SORT_BY_LEN => {
            return Err(ScimError::invalid_path(format!(
                "'sortBy' is {} bytes long; the limit is {MAX_SORT_BY_LEN}",
                s.len()
            ))
            .into());
        }
        Some(s) => Some(resolve_path(kind, s).ok_or_else(|| {
            ScimError::invalid_value(format!("cannot sort by '{s}': no such attribute for {}", kind.name()))
        })?),
        None => None,
    };
    let matcher = |doc: &Value| filter.as_ref().is_none_or(|f| f.matches(doc));
    let descending = p.descending;
    let sorter = sort_attr.map(|attr| {
        move |a: &Value, b: &Value| {
            let o = sort_key_cmp(attr, a, b);
            if descending { o.reverse() } else { o }
        }
    });
    let page = st
        .store
        .query(Query {
            kind,
            hint: filter.as_ref().and_then(|f| f.index_hint(kind)),
            matches: filter.as_ref().map(|_| &matcher as &(dyn Fn(&Value) -> bool + Sync)),
            sort: sorter.as_ref().map(|s| s as &(dyn Fn(&Value, &Value) -> std::cmp::Ordering + Sync)),
            start_index: p.start_index,
            count: p.count,
        })
        .await
        .map_err(|e| e.into_scim())?;
    let mut out = Vec::with_capacity(page.records.len());
    for rec in &page.records {
        out.push(st.render(kind, rec, &selection).await?);
    }
    Ok((page.total, out))
}

fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": total,
            "itemsPerPage": resources.len(),
            "startIndex": start_index,
            "Resources": resources,
        }),
    )
}

pub(crate) async fn list(st: &AppState, kind: ResourceKind, raw_query: Option<&str>) -> ApiResult {
    let q = QueryParams::parse(raw_query);
    let p = ListParams::from_query(&q)?;
    let (total, resources) = list_kind(st, kind, &p, false).await?;
    Ok(list_response(total, p.start_index, resources))
}

pub(crate) async fn search(st: &AppState, kind: Option<ResourceKind>, headers: &HeaderMap, body: Body) -> ApiResult {
    let body = read_json(headers, body, st.max_body).await?;
    let p = ListParams::from_search_body(&body)?;
    match kind {
        Some(kind) => {
            let (total, resources) = list_kind(st, kind, &p, false).await?;
            Ok(list_response(total, p.start_index, resources))
        }
        None => {
            // Root search: users then groups, paged together. A filter that
            // names an attribute only one kind has matches nothing of the other.
            let all = ListParams { start_index: 1, count: usize::MAX, ..p };
            let mut resources = Vec::new();
            for kind in [ResourceKind::User, ResourceKind::Group] {
                resources.extend(list_kind(st, kind, &all, true).await?.1);
            }
            let total = resources.len();
            let page: Vec<Value> = resources.into_iter().skip(p.start_index - 1).take(p.count).collect();
            Ok(list_response(total, p.start_index, page))
        }
    }
}

pub(crate) async fn create(st: &AppState, kind: ResourceKind, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let selection = selection_of(kind, parts.uri.query())?;
    let input = read_json(&parts.headers, body, st.max_body).await?;
    let attrs = normalize(kind, &input)?;
    let rec = st.provisioning.create(kind, attrs).await?;
    st.resource_response(kind, StatusCode::CREATED, &rec, &selection).await
}

/// GET of one resource with no attribute selection: the stored text with `groups`
/// and `location` spliced in. `None` when the slow path must answer.
async fn get_fast(st: &AppState, kind: ResourceKind, id: &str, selected: bool) -> ApiResult<Option<Response>> {
    if selected {
        return Ok(None);
    }
    st.stored_response(kind, id, None, kind == ResourceKind::User).await
}

pub(crate) async fn get(st: &AppState, kind: ResourceKind, id: &str, req: Request) -> ApiResult {
    let selected =
        req.uri().query().is_some_and(|q| q.contains("ttributes")) || req.headers().contains_key(header::IF_NONE_MATCH);
    if let Some(resp) = get_fast(st, kind, id, selected).await? {
        return Ok(resp);
    }
    let rec = st
        .store
        .get(kind, id)
        .await
        .map_err(|e| e.into_scim())?
        .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
    if let Some(tags) = etag_list(req.headers(), header::IF_NONE_MATCH)
        && etag_matches(&tags, &etag(rec.version))
    {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), rec.version));
    }
    let selection = selection_of(kind, req.uri().query())?;
    st.resource_response(kind, StatusCode::OK, &rec, &selection).await
}

pub(crate) async fn replace(st: &AppState, kind: ResourceKind, id: &str, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let selection = selection_of(kind, parts.uri.query())?;
    let input = read_json(&parts.headers, body, st.max_body).await?;
    let attrs = normalize(kind, &input)?;
    let rec = st.provisioning.replace(kind, id, attrs, if_match(&parts.headers)).await?;
    st.resource_response(kind, StatusCode::OK, &rec, &selection).await
}

pub(crate) async fn patch(st: &AppState, kind: ResourceKind, id: &str, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let selection = selection_of(kind, parts.uri.query())?;
    let input = read_json(&parts.headers, body, st.max_body).await?;
    let ops = parse_patch(&input)?;
    let rec = st.provisioning.patch(kind, id, ops, if_match(&parts.headers)).await?;
    st.resource_response(kind, StatusCode::OK, &rec, &selection).await
}

pub(crate) async fn delete(st: &AppState, kind: ResourceKind, id: &str, headers: &HeaderMap) -> ApiResult {
    st.provisioning.delete(kind, id, if_match(headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------ discovery

pub(crate) async fn service_provider_config(State(st): St) -> Response {
    scim_json(StatusCode::OK, &discovery::service_provider_config(&st.base_url))
}

pub(crate) async fn resource_types(State(st): St) -> Response {
    let all = [ResourceKind::User, ResourceKind::Group].map(|k| discovery::resource_type(k, &st.base_url));
    scim_json(StatusCode::OK, &discovery::list_of(all.to_vec()))
}

pub(crate) async fn resource_type(State(st): St, Path(id): Path<String>) -> ApiResult {
    let kind =
        [ResourceKind::User, ResourceKind::Group].into_iter().find(|k| k.name().eq_ignore_ascii_case(&id)).ok_or_else(
            || ScimError::not_found(format!("resource type '{id}' not found; this server has User and Group")),
        )?;
    Ok(scim_json(StatusCode::OK, &discovery::resource_type(kind, &st.base_url)))
}

pub(crate) async fn schemas(State(st): St) -> Response {
    scim_json(StatusCode::OK, &discovery::list_of(discovery::schemas(&st.base_url)))
}

pub(crate) async fn schema(State(st): St, Path(id): Path<String>) -> ApiResult {
    discovery::schemas(&st.base_url)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id)))
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("schema '{id}' not found")).into())
}
