//! API applications of a project and their keys, made by the operator with
//! its admin credential for the self-service API's token introspection
//! (management API v1, in the project owner's organisation; docs/zitadel-contract.md §9.1).

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use super::admin::{decode, str_at};
use super::client::Client;
use super::error::{Code, ZitadelError};

/// An API application as ZITADEL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiApp {
    pub app_id: String,
    pub client_id: String,
}

/// A key as `AddAppKey` returns it: shown once, stored by the caller.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NewAppKey {
    pub key_id: String,
    /// The key JSON (`{"type":"application","keyId","key","appId","clientId"}`).
    pub key_file: String,
}

impl std::fmt::Debug for NewAppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAppKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A removal of something already gone succeeds.
fn gone_is_fine(r: Result<Value, ZitadelError>) -> Result<(), ZitadelError> {
    match r {
        Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
        r => r.map(|_| ()),
    }
}

fn apps_path(project: &str) -> String {
    format!("/management/v1/projects/{project}/apps")
}

impl Client {
    /// The API application named exactly `name` in `project`, if any.
    pub(crate) async fn find_api_app(
        &self,
        org: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<ApiApp>, ZitadelError> {
        let body = json!({
            "query": {"limit": 100},
            "queries": [{"nameQuery": {"name": name, "method": "TEXT_QUERY_METHOD_EQUALS"}}],
        });
        let path = format!("{}/_search", apps_path(project));
        let v: Value = self.rest_in_org(Method::POST, &path, org, Some(&body)).await?;
        let apps = v.get("result").and_then(Value::as_array).cloned().unwrap_or_default();
        // The name query is a filter the server may apply loosely; the exact
        // name and an API configuration are what make it ours.
        Ok(apps
            .iter()
            .find(|a| str_at(a, "/name").as_deref() == Some(name))
            .and_then(|a| Some(ApiApp { app_id: str_at(a, "/id")?, client_id: str_at(a, "/apiConfig/clientId")? })))
    }

    /// Creates an API application that authenticates with private-key JWTs.
    pub(crate) async fn create_api_app(&self, org: &str, project: &str, name: &str) -> Result<ApiApp, ZitadelError> {
        let body = json!({"name": name, "authMethodType": "API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT"});
        let path = format!("{}/api", apps_path(project));
        let v: Value = self.rest_in_org(Method::POST, &path, org, Some(&body)).await?;
        let app_id = str_at(&v, "/appId").ok_or_else(|| decode(&path, "no appId in the answer"))?;
        let client_id = str_at(&v, "/clientId").ok_or_else(|| decode(&path, "no clientId in the answer"))?;
        Ok(ApiApp { app_id, client_id })
    }

    /// Removes an application with its keys; one already gone is fine.
    pub(crate) async fn remove_app(&self, org: &str, project: &str, app_id: &str) -> Result<(), ZitadelError> {
        let path = format!("{}/{app_id}", apps_path(project));
        gone_is_fine(self.rest_in_org(Method::DELETE, &path, org, None).await)
    }

    /// Ids of the application's keys.
    pub(crate) async fn list_app_keys(
        &self,
        org: &str,
        project: &str,
        app_id: &str,
    ) -> Result<Vec<String>, ZitadelError> {
        let path = format!("{}/{app_id}/keys/_search", apps_path(project));
        let v: Value = self.rest_in_org(Method::POST, &path, org, Some(&json!({"query": {"limit": 100}}))).await?;
        Ok(v.get("result")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| str_at(k, "/id")).collect())
            .unwrap_or_default())
    }

    /// Adds a JSON key to the application.
    pub(crate) async fn add_app_key(&self, org: &str, project: &str, app_id: &str) -> Result<NewAppKey, ZitadelError> {
        let path = format!("{}/{app_id}/keys", apps_path(project));
        let v: Value = self.rest_in_org(Method::POST, &path, org, Some(&json!({"type": "KEY_TYPE_JSON"}))).await?;
        let key_id = str_at(&v, "/id").ok_or_else(|| decode(&path, "no id in the answer"))?;
        let details = str_at(&v, "/keyDetails").ok_or_else(|| decode(&path, "no keyDetails in the answer"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(details.as_bytes())
            .map_err(|e| decode(&path, format!("keyDetails is not base64: {e}")))?;
        let key_file = String::from_utf8(bytes).map_err(|_| decode(&path, "keyDetails is not UTF-8"))?;
        Ok(NewAppKey { key_id, key_file })
    }

    /// Revokes a key; one already gone is fine.
    pub(crate) async fn remove_app_key(
        &self,
        org: &str,
        project: &str,
        app_id: &str,
        key_id: &str,
    ) -> Result<(), ZitadelError> {
        let path = format!("{}/{app_id}/keys/{key_id}", apps_path(project));
        gone_is_fine(self.rest_in_org(Method::DELETE, &path, org, None).await)
    }
}
