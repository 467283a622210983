//! Calls the operator makes with its admin credential: the SCIM server's
//! machine user, its keys and its instance roles (docs/zitadel-contract.md §2, §3.1, §5.2).

use base64::Engine;
use serde_json::{Value, json};

use super::client::{Client, USER_SERVICE};
use super::error::{Code, ZitadelError};

pub(crate) const PERMISSION_SERVICE: &str = "zitadel.internal_permission.v2.InternalPermissionService";

/// A machine key as `AddKey` returns it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NewMachineKey {
    pub key_id: String,
    /// The key file JSON (what the console downloads).
    pub key_file: String,
}

impl std::fmt::Debug for NewMachineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMachineKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

pub(crate) fn str_at(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

pub(crate) fn decode(method: &str, reason: impl Into<String>) -> ZitadelError {
    ZitadelError::Decode { method: method.into(), reason: reason.into() }
}

impl Client {
    /// Creates a machine user; returns its id.
    pub(crate) async fn create_machine_user(
        &self,
        org: &str,
        username: &str,
        name: &str,
        description: &str,
    ) -> Result<String, ZitadelError> {
        let v: Value = self
            .call(
                USER_SERVICE,
                "CreateUser",
                &json!({
                    "organizationId": org,
                    "username": username,
                    "machine": {"name": name, "description": description},
                }),
            )
            .await?;
        str_at(&v, "/id").ok_or_else(|| decode("CreateUser", "no id in the answer"))
    }

    /// The id of the machine user with this username in `org`, if any.
    pub(crate) async fn find_user_in_org(&self, org: &str, username: &str) -> Result<Option<String>, ZitadelError> {
        Ok(self
            .find_users_by_username(username)
            .await?
            .into_iter()
            .find(|u| u.organization_id == org && u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id))
    }

    pub(crate) async fn add_machine_key(&self, user_id: &str) -> Result<NewMachineKey, ZitadelError> {
        let v: Value = self.call(USER_SERVICE, "AddKey", &json!({"userId": user_id})).await?;
        let key_id = str_at(&v, "/keyId").ok_or_else(|| decode("AddKey", "no keyId in the answer"))?;
        let content = str_at(&v, "/keyContent").ok_or_else(|| decode("AddKey", "no keyContent in the answer"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content.as_bytes())
            .map_err(|e| decode("AddKey", format!("keyContent is not base64: {e}")))?;
        let key_file = String::from_utf8(bytes).map_err(|_| decode("AddKey", "keyContent is not UTF-8"))?;
        Ok(NewMachineKey { key_id, key_file })
    }

    /// Ids of the user's machine keys.
    pub(crate) async fn list_machine_keys(&self, user_id: &str) -> Result<Vec<String>, ZitadelError> {
        let v: Value = self
            .call(
                USER_SERVICE,
                "ListKeys",
                &json!({"pagination": {"limit": 1000}, "filters": [{"userIdFilter": {"id": user_id}}]}),
            )
            .await?;
        Ok(v.get("result")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| str_at(k, "/id")).collect())
            .unwrap_or_default())
    }

    /// Removes a key; one already gone is fine.
    pub(crate) async fn remove_machine_key(&self, user_id: &str, key_id: &str) -> Result<(), ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "RemoveKey", &json!({"userId": user_id, "keyId": key_id})).await {
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The user's instance roles; `None` when it is no instance administrator.
    pub(crate) async fn instance_roles(&self, user_id: &str) -> Result<Option<Vec<String>>, ZitadelError> {
        let v: Value = self
            .call(
                PERMISSION_SERVICE,
                "ListAdministrators",
                &json!({"filters": [
                    {"inUserIdsFilter": {"ids": [user_id]}},
                    {"resource": {"instance": true}},
                ]}),
            )
            .await?;
        let admins = v.get("administrators").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(admins.iter().find(|a| str_at(a, "/user/id").as_deref() == Some(user_id)).map(|a| {
            a.get("roles")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default()
        }))
    }

    /// Makes the user an instance administrator with exactly `roles`.
    pub(crate) async fn set_instance_roles(
        &self,
        user_id: &str,
        roles: &[String],
        exists: bool,
    ) -> Result<(), ZitadelError> {
        let body = json!({"userId": user_id, "resource": {"instance": true}, "roles": roles});
        let method = if exists { "UpdateAdministrator" } else { "CreateAdministrator" };
        match self.call::<Value>(PERMISSION_SERVICE, method, &body).await {
            // Someone else added it between our read and this write.
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                let _: Value = self.call(PERMISSION_SERVICE, "UpdateAdministrator", &body).await?;
                Ok(())
            }
            r => r.map(|_| ()),
        }
    }

    /// The id of the user this client's credential belongs to (`/auth/v1/users/me`).
    pub(crate) async fn whoami(&self) -> Result<String, ZitadelError> {
        let v: Value = self.get_rest("/auth/v1/users/me").await?;
        str_at(&v, "/user/id").ok_or_else(|| decode("/auth/v1/users/me", "no user.id in the answer"))
    }
}
