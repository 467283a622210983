//! `zitadel.authorization.v2.AuthorizationService` (docs/zitadel-contract.md §4.1, §4.4),
//! `zitadel.internal_permission.v2.InternalPermissionService` (§5.2) and
//! `zitadel.org.v2.OrganizationService` list calls (§5.1). Shapes follow the
//! `zitadel-client` 4.1.9 SDK models.

use std::time::Instant;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Ctx;
use super::state::*;
use super::wire::*;

fn required(req: &Value, name: &str) -> ApiResult<String> {
    let v = string(req, name)?;
    if v.is_empty() {
        return Err(err(
            Code::InvalidArgument,
            "FAKE-required",
            "Errors.Invalid.Argument",
            &format!("{name} is required"),
        ));
    }
    Ok(v)
}

fn grant_not_found() -> ApiError {
    err(Code::NotFound, "COMMAND-3M9sd", "Errors.UserGrant.NotFound", "User grant not found")
}

/// Roles of an authorization must exist on the project, or, for a project grant, be
/// among the granted roles: else FailedPrecondition `Errors.Project.Role.NotFound`.
fn check_roles(allowed: &[String], roles: &[String]) -> ApiResult<()> {
    if roles.iter().any(|r| !allowed.contains(r)) {
        return Err(err(Code::FailedPrecondition, "COMMAND-mm9F4", "Errors.Project.Role.NotFound", "Role not found"));
    }
    Ok(())
}

/// The roles an authorization on `project` created on `org` may carry, and its project
/// grant id: the org owns the project, or holds a project grant for it (docs/zitadel-contract.md §4.1).
fn allowed_roles(project: &Project, org: &str) -> ApiResult<(Vec<String>, Option<String>)> {
    if project.owner_org == org {
        return Ok((project.roles.clone(), None));
    }
    match project.grants.get(org) {
        Some((id, roles)) => Ok((roles.clone(), Some(id.clone()))),
        None => Err(err(
            Code::FailedPrecondition,
            "FAKE-pgrant-nf",
            "Errors.Project.Grant.NotFound",
            "Project grant not found",
        )),
    }
}

pub fn create_authorization(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let user_id = required(req, "userId")?;
    let project_id = required(req, "projectId")?;
    // `organizationId` is REQUIRED in v2 (docs/zitadel-contract.md §4.4).
    let org_id = required(req, "organizationId")?;
    let roles = strings(req, "roleKeys")?;
    // An unknown org fails in the auth interceptor (docs/zitadel-contract.md §2.4); then ZITADEL checks
    // the user (`checkUserGrantPreCondition`), then project, grant and roles.
    if !s.orgs.contains_key(&org_id) {
        return Err(err(Code::PermissionDenied, "AUTH-5mWD2", "Errors.Org.NotFound", "Organisation doesn't exist"));
    }
    if s.user(&user_id).is_none() {
        return Err(err(Code::FailedPrecondition, "FAKE-user-nf", "Errors.User.NotFound", "User could not be found"));
    }
    let project = s.projects.get(&project_id).ok_or_else(|| {
        err(Code::FailedPrecondition, "FAKE-project-nf", "Errors.Project.NotFound", "Project not found")
    })?;
    let (allowed, grant_id) = allowed_roles(project, &org_id)?;
    check_roles(&allowed, &roles)?;
    // Unique per (grant org, user, project, project grant) (docs/zitadel-contract.md §4.1).
    if s.authorizations.iter().any(|a| a.org_id == org_id && a.user_id == user_id && a.project_id == project_id) {
        return Err(err(
            Code::AlreadyExists,
            "FAKE-grant-exists",
            "Errors.UserGrant.AlreadyExists",
            "User grant already exists",
        ));
    }
    let id = s.new_id();
    let now = OffsetDateTime::now_utc();
    s.authorizations.push(Authorization {
        id: id.clone(),
        user_id,
        project_id,
        org_id,
        project_grant_id: grant_id,
        roles,
        active: true,
        created: now,
        changed: now,
        written: Instant::now(),
    });
    Ok(json!({"id": id, "creationDate": ts(now)}))
}

/// UpdateAuthorization replaces the role set; same roles is a success (docs/zitadel-contract.md §8.2).
pub fn update_authorization(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required(req, "id")?;
    let roles = strings(req, "roleKeys")?;
    let a = s.authorizations.iter().find(|a| a.id == id).ok_or_else(grant_not_found)?;
    let project = s.projects.get(&a.project_id).ok_or_else(grant_not_found)?;
    let (allowed, _) = allowed_roles(project, &a.org_id)?;
    check_roles(&allowed, &roles)?;
    let a = s.authorizations.iter_mut().find(|a| a.id == id).ok_or_else(grant_not_found)?;
    if a.roles != roles {
        a.roles = roles;
        a.changed = OffsetDateTime::now_utc();
    }
    Ok(json!({"changeDate": ts(a.changed)}))
}

/// DeleteAuthorization is idempotent; `deletionDate` is unset when nothing was deleted.
pub fn delete_authorization(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required(req, "id")?;
    let before = s.authorizations.len();
    s.authorizations.retain(|a| a.id != id);
    if s.authorizations.len() == before {
        return Ok(json!({}));
    }
    Ok(json!({"deletionDate": ts(OffsetDateTime::now_utc())}))
}

fn set_active(s: &mut State, req: &Value, active: bool) -> ApiResult {
    let id = required(req, "id")?;
    let a = s.authorizations.iter_mut().find(|a| a.id == id).ok_or_else(grant_not_found)?;
    if a.active != active {
        a.active = active;
        a.changed = OffsetDateTime::now_utc();
    }
    Ok(json!({"changeDate": ts(a.changed)}))
}

pub fn activate_authorization(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    set_active(s, req, true)
}

pub fn deactivate_authorization(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    set_active(s, req, false)
}

fn org_name(s: &State, id: &str) -> String {
    s.orgs.get(id).map(|o| o.name.clone()).unwrap_or_default()
}

fn authorization_json(s: &State, a: &Authorization) -> Value {
    let project = s.projects.get(&a.project_id);
    let user = s.user(&a.user_id);
    prune(json!({
        "id": a.id,
        "creationDate": ts(a.created),
        "changeDate": ts(a.changed),
        "project": {
            "id": a.project_id,
            "name": project.map(|p| p.name.clone()),
            "organizationId": project.map(|p| p.owner_org.clone()),
        },
        "organization": {"id": a.org_id, "name": org_name(s, &a.org_id)},
        "user": {
            "id": a.user_id,
            "preferredLoginName": user.map(|u| u.username.clone()),
            "displayName": user.map(User::display_name),
            "organizationId": user.map(|u| u.org.clone()),
        },
        "state": if a.active { "STATE_ACTIVE" } else { "STATE_INACTIVE" },
        // Role display names are not modelled: the key stands in for it.
        "roles": a.roles.iter().map(|r| json!({"key": r, "displayName": r})).collect::<Vec<_>>(),
    }))
}

fn authorization_matches(s: &State, f: &Value, a: &Authorization) -> ApiResult<bool> {
    let user = s.user(&a.user_id);
    if let Some(x) = field(f, "authorizationIds") {
        return Ok(strings(x, "ids")?.contains(&a.id));
    }
    if let Some(x) = field(f, "inUserIds") {
        return Ok(strings(x, "ids")?.contains(&a.user_id));
    }
    // v2beta spelling (docs/zitadel-contract.md §4.3); the v2 SDK has only `inUserIds`.
    if let Some(x) = field(f, "userId") {
        return Ok(string(x, "id")? == a.user_id);
    }
    if let Some(x) = field(f, "organizationId") {
        return Ok(string(x, "id")? == a.org_id);
    }
    if let Some(x) = field(f, "projectId") {
        return Ok(string(x, "id")? == a.project_id);
    }
    if let Some(x) = field(f, "projectGrantId") {
        return Ok(Some(string(x, "id")?) == a.project_grant_id);
    }
    if let Some(x) = field(f, "userOrganizationId") {
        return Ok(user.is_some_and(|u| string(x, "id").is_ok_and(|id| id == u.org)));
    }
    if let Some(x) = field(f, "projectName") {
        let name = s.projects.get(&a.project_id).map(|p| p.name.clone()).unwrap_or_default();
        return Ok(text_match(&text_method(x)?, &name, &string(x, "name")?));
    }
    if let Some(x) = field(f, "roleKey") {
        let m = text_method(x)?;
        let k = string(x, "key")?;
        return Ok(a.roles.iter().any(|r| text_match(&m, r, &k)));
    }
    if let Some(x) = field(f, "state") {
        let st = enum_name(x, "state", &["STATE_UNSPECIFIED", "STATE_ACTIVE", "STATE_INACTIVE"])?;
        return Ok((st == "STATE_ACTIVE") == a.active);
    }
    if let Some(x) = field(f, "userDisplayName") {
        let dn = user.map(User::display_name).unwrap_or_default();
        return Ok(text_match(&text_method(x)?, &dn, &string(x, "displayName")?));
    }
    if let Some(x) = field(f, "userPreferredLoginName") {
        let n = user.map(|u| u.username.clone()).unwrap_or_default();
        return Ok(text_match(&text_method(x)?, &n, &string(x, "loginName")?));
    }
    Err(err(Code::InvalidArgument, "FAKE-filter", "Errors.Query.InvalidRequest", "unknown or empty filter"))
}

pub fn list_authorizations(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "pagination")?;
    let filters = array(req, "filters")?;
    // Fast pre-filter on a top-level inUserIds (same result, cheaper for big benchmarks).
    let mut users: Option<std::collections::HashSet<String>> = None;
    for f in filters {
        if let Some(x) = field(f, "inUserIds") {
            users = Some(strings(x, "ids")?.into_iter().collect());
        }
    }
    let mut found = Vec::new();
    'a: for a in &s.authorizations {
        if !s.visible(a.written)
            || users.as_ref().is_some_and(|u| !u.contains(&a.user_id))
            || (ctx.own_only && a.user_id != ctx.caller)
        {
            continue;
        }
        for f in filters {
            if !authorization_matches(s, f, a)? {
                continue 'a;
            }
        }
        found.push(authorization_json(s, a));
    }
    let total = found.len() as u64;
    Ok(prune(json!({
        "pagination": {"totalResult": i64s(total), "appliedLimit": i64s(page.limit as u64)},
        "authorizations": page.apply(found),
    })))
}

// --- administrators ------------------------------------------------------------------

const INSTANCE_ROLES: [&str; 7] = [
    "IAM_OWNER",
    "IAM_OWNER_VIEWER",
    "IAM_ORG_MANAGER",
    "IAM_USER_MANAGER",
    "IAM_ADMIN_IMPERSONATOR",
    "IAM_END_USER_IMPERSONATOR",
    "IAM_LOGIN_CLIENT",
];
const ORG_ROLES: [&str; 9] = [
    "ORG_OWNER",
    "ORG_USER_MANAGER",
    "ORG_OWNER_VIEWER",
    "ORG_SETTINGS_MANAGER",
    "ORG_USER_PERMISSION_EDITOR",
    "ORG_PROJECT_PERMISSION_EDITOR",
    "ORG_PROJECT_CREATOR",
    "ORG_ADMIN_IMPERSONATOR",
    "ORG_END_USER_IMPERSONATOR",
];
const PROJECT_ROLES: [&str; 4] =
    ["PROJECT_OWNER", "PROJECT_OWNER_VIEWER", "PROJECT_OWNER_GLOBAL", "PROJECT_OWNER_VIEWER_GLOBAL"];
const PROJECT_GRANT_ROLES: [&str; 2] = ["PROJECT_GRANT_OWNER", "PROJECT_GRANT_OWNER_VIEWER"];

/// `resource: {instance:true} | {organizationId} | {projectId} | {projectGrant:{projectId, organizationId}}`.
pub fn parse_resource(r: Option<&Value>) -> ApiResult<Resource> {
    let r = r.ok_or_else(|| invalid("resource"))?;
    if boolean(r, "instance")? {
        return Ok(Resource::Instance);
    }
    if let Some(o) = opt_string(r, "organizationId")?.filter(|x| !x.is_empty()) {
        return Ok(Resource::Org(o));
    }
    if let Some(p) = opt_string(r, "projectId")?.filter(|x| !x.is_empty()) {
        return Ok(Resource::Project(p));
    }
    if let Some(g) = field(r, "projectGrant") {
        return Ok(Resource::ProjectGrant {
            project_id: string(g, "projectId")?,
            org_id: string(g, "organizationId")?,
        });
    }
    Err(invalid("resource"))
}

fn member_key(resource: &Resource, what: &str) -> String {
    match resource {
        Resource::Instance => format!("Errors.Instance.Member.{what}"),
        Resource::Org(_) => format!("Errors.Org.Member.{what}"),
        Resource::Project(_) => format!("Errors.Project.Member.{what}"),
        Resource::ProjectGrant { .. } => format!("Errors.Project.Grant.Member.{what}"),
    }
}

/// Role keys are resource-type specific (docs/zitadel-contract.md §5.2); unknown → InvalidArgument.
fn check_member_roles(s: &State, resource: &Resource, roles: &[String]) -> ApiResult<()> {
    let (valid, key): (&[&str], &str) = match resource {
        Resource::Instance => (&INSTANCE_ROLES, "Errors.IAM.MemberInvalid"),
        Resource::Org(o) => {
            if !s.orgs.contains_key(o) {
                return Err(err(Code::NotFound, "FAKE-org-nf", "Errors.Org.NotFound", "Organisation not found"));
            }
            (&ORG_ROLES, "Errors.Org.MemberInvalid")
        }
        Resource::Project(p) | Resource::ProjectGrant { project_id: p, .. } => {
            if !s.projects.contains_key(p) {
                return Err(err(Code::NotFound, "FAKE-project-nf", "Errors.Project.NotFound", "Project not found"));
            }
            if matches!(resource, Resource::Project(_)) {
                (&PROJECT_ROLES, "Errors.Project.MemberInvalid")
            } else {
                (&PROJECT_GRANT_ROLES, "Errors.Project.Grant.MemberInvalid")
            }
        }
    };
    if roles.is_empty() || roles.iter().any(|r| !valid.contains(&r.as_str())) {
        return Err(err(Code::InvalidArgument, "FAKE-member-inval", key, "Member is invalid"));
    }
    Ok(())
}

pub fn create_administrator(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let user_id = required(req, "userId")?;
    let resource = parse_resource(field(req, "resource"))?;
    let roles = strings(req, "roles")?;
    check_member_roles(s, &resource, &roles)?;
    if s.user(&user_id).is_none() {
        return Err(err(Code::FailedPrecondition, "FAKE-user-nf", "Errors.User.NotFound", "User could not be found"));
    }
    if s.admins.iter().any(|a| a.user_id == user_id && a.resource == resource) {
        return Err(err(
            Code::AlreadyExists,
            "FAKE-member-exists",
            &member_key(&resource, "AlreadyExists"),
            "Member already exists",
        ));
    }
    let now = OffsetDateTime::now_utc();
    s.admins.push(Admin { user_id, resource, roles, created: now, changed: now, written: Instant::now() });
    Ok(json!({"creationDate": ts(now)}))
}

/// UpdateAdministrator replaces the role set; identical roles succeed (docs/zitadel-contract.md §5.2).
pub fn update_administrator(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let user_id = required(req, "userId")?;
    let resource = parse_resource(field(req, "resource"))?;
    let roles = strings(req, "roles")?;
    check_member_roles(s, &resource, &roles)?;
    let a =
        s.admins.iter_mut().find(|a| a.user_id == user_id && a.resource == resource).ok_or_else(|| {
            err(Code::NotFound, "FAKE-member-nf", &member_key(&resource, "NotFound"), "Member not found")
        })?;
    if a.roles != roles {
        a.roles = roles;
        a.changed = OffsetDateTime::now_utc();
    }
    Ok(json!({"changeDate": ts(a.changed)}))
}

/// DeleteAdministrator is idempotent (docs/zitadel-contract.md §5.2).
pub fn delete_administrator(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let user_id = required(req, "userId")?;
    let resource = parse_resource(field(req, "resource"))?;
    let before = s.admins.len();
    s.admins.retain(|a| !(a.user_id == user_id && a.resource == resource));
    if s.admins.len() == before {
        return Ok(json!({}));
    }
    Ok(json!({"deletionDate": ts(OffsetDateTime::now_utc())}))
}

fn admin_matches(s: &State, f: &Value, a: &Admin, depth: usize) -> ApiResult<bool> {
    if depth > 20 {
        return Err(err(Code::InvalidArgument, "FAKE-nest", "Errors.Query.InvalidRequest", "filters nested too deep"));
    }
    let user = s.user(&a.user_id);
    if let Some(x) = field(f, "inUserIdsFilter") {
        return Ok(strings(x, "ids")?.contains(&a.user_id));
    }
    if let Some(x) = field(f, "resource") {
        return Ok(parse_resource(Some(x))? == a.resource);
    }
    if let Some(x) = field(f, "role") {
        let k = string(x, "roleKey")?;
        return Ok(a.roles.contains(&k));
    }
    if let Some(x) = field(f, "userOrganizationId") {
        let id = string(x, "id")?;
        return Ok(user.is_some_and(|u| u.org == id));
    }
    if let Some(x) = field(f, "userDisplayName") {
        let dn = user.map(User::display_name).unwrap_or_default();
        return Ok(text_match(&text_method(x)?, &dn, &string(x, "displayName")?));
    }
    if let Some(x) = field(f, "userPreferredLoginName") {
        let n = user.map(|u| u.username.clone()).unwrap_or_default();
        return Ok(text_match(&text_method(x)?, &n, &string(x, "preferredLoginName")?));
    }
    if let Some(x) = field(f, "and") {
        for q in array(x, "queries")? {
            if !admin_matches(s, q, a, depth + 1)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Some(x) = field(f, "or") {
        for q in array(x, "queries")? {
            if admin_matches(s, q, a, depth + 1)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if let Some(x) = field(f, "not") {
        let q = field(x, "query").ok_or_else(|| invalid("not.query"))?;
        return Ok(!admin_matches(s, q, a, depth + 1)?);
    }
    if let Some(x) = field(f, "creationDate") {
        return timestamp_cmp(x, a.created);
    }
    if let Some(x) = field(f, "changeDate") {
        return timestamp_cmp(x, a.changed);
    }
    Err(err(Code::InvalidArgument, "FAKE-filter", "Errors.Query.InvalidRequest", "unknown or empty filter"))
}

/// A `{timestamp, method}` filter (TIMESTAMP_FILTER_METHOD_*) applied to `actual`.
pub fn timestamp_cmp(x: &Value, actual: OffsetDateTime) -> ApiResult<bool> {
    let t = timestamp(x, "timestamp")?.ok_or_else(|| invalid("timestamp"))?;
    let m = enum_name(
        x,
        "method",
        &[
            "TIMESTAMP_FILTER_METHOD_EQUALS",
            "TIMESTAMP_FILTER_METHOD_AFTER",
            "TIMESTAMP_FILTER_METHOD_AFTER_OR_EQUALS",
            "TIMESTAMP_FILTER_METHOD_BEFORE",
            "TIMESTAMP_FILTER_METHOD_BEFORE_OR_EQUALS",
        ],
    )?;
    Ok(match m.trim_start_matches("TIMESTAMP_FILTER_METHOD_") {
        "AFTER" => actual > t,
        "AFTER_OR_EQUALS" => actual >= t,
        "BEFORE" => actual < t,
        "BEFORE_OR_EQUALS" => actual <= t,
        _ => actual == t,
    })
}

fn admin_json(s: &State, a: &Admin) -> Value {
    let user = s.user(&a.user_id);
    let mut v = json!({
        "creationDate": ts(a.created),
        "changeDate": ts(a.changed),
        "user": {
            "id": a.user_id,
            "preferredLoginName": user.map(|u| u.username.clone()),
            "displayName": user.map(User::display_name),
            "organizationId": user.map(|u| u.org.clone()),
        },
        "roles": a.roles,
    });
    match &a.resource {
        Resource::Instance => v["instance"] = json!(true),
        Resource::Org(o) => v["organization"] = json!({"id": o, "name": org_name(s, o)}),
        Resource::Project(p) => {
            let pr = s.projects.get(p);
            v["project"] = json!({
                "id": p,
                "name": pr.map(|x| x.name.clone()),
                "organizationId": pr.map(|x| x.owner_org.clone()),
            });
        }
        Resource::ProjectGrant { project_id, org_id } => {
            v["projectGrant"] = json!({"projectId": project_id, "organizationId": org_id});
        }
    }
    prune(v)
}

pub fn list_administrators(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "pagination")?;
    let filters = array(req, "filters")?;
    let mut found = Vec::new();
    'a: for a in &s.admins {
        if !s.visible(a.written) || (ctx.own_only && a.user_id != ctx.caller) {
            continue;
        }
        for f in filters {
            if !admin_matches(s, f, a, 0)? {
                continue 'a;
            }
        }
        found.push(admin_json(s, a));
    }
    let total = found.len() as u64;
    Ok(prune(json!({
        "pagination": {"totalResult": i64s(total), "appliedLimit": i64s(page.limit as u64)},
        "administrators": page.apply(found),
    })))
}

// --- organizations -------------------------------------------------------------------

fn org_matches(s: &State, q: &Value, o: &Org) -> ApiResult<bool> {
    if let Some(x) = field(q, "idQuery") {
        return Ok(string(x, "id")? == o.id);
    }
    if let Some(x) = field(q, "nameQuery") {
        return Ok(text_match(&text_method(x)?, &o.name, &string(x, "name")?));
    }
    // Any verified domain of the org (`NewOrgVerifiedDomainSearchQuery`), not only the primary one.
    if let Some(x) = field(q, "domainQuery") {
        let (m, d) = (text_method(x)?, string(x, "domain")?);
        return Ok(o.domains.iter().any(|dom| dom.verified && text_match(&m, &dom.name, &d)));
    }
    if let Some(x) = field(q, "stateQuery") {
        let st = enum_name(
            x,
            "state",
            &[
                "ORGANIZATION_STATE_UNSPECIFIED",
                "ORGANIZATION_STATE_ACTIVE",
                "ORGANIZATION_STATE_INACTIVE",
                "ORGANIZATION_STATE_REMOVED",
            ],
        )?;
        return Ok(st == "ORGANIZATION_STATE_ACTIVE");
    }
    if field(q, "defaultQuery").is_some() {
        return Ok(s.orgs.values().min_by_key(|x| x.created).is_some_and(|d| d.id == o.id));
    }
    Err(err(Code::InvalidArgument, "FAKE-query", "Errors.Query.InvalidRequest", "unknown or empty org query"))
}

pub fn list_organizations(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "query")?;
    let queries = array(req, "queries")?;
    let mut orgs: Vec<&Org> = s.orgs.values().collect();
    orgs.sort_by_key(|o| o.created);
    let sort = enum_name(
        req,
        "sortingColumn",
        &[
            "ORGANIZATION_FIELD_NAME_UNSPECIFIED",
            "ORGANIZATION_FIELD_NAME_NAME",
            "ORGANIZATION_FIELD_NAME_CREATION_DATE",
        ],
    )?;
    if sort == "ORGANIZATION_FIELD_NAME_NAME" {
        orgs.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if sort != "ORGANIZATION_FIELD_NAME_UNSPECIFIED" && !page.asc {
        orgs.reverse();
    }
    let mut found = Vec::new();
    'o: for o in orgs {
        for q in queries {
            if !org_matches(s, q, o)? {
                continue 'o;
            }
        }
        found.push(prune(json!({
            "id": o.id,
            "details": {
                "sequence": i64s(o.sequence),
                "changeDate": ts(o.created),
                "resourceOwner": o.id,
                "creationDate": ts(o.created),
            },
            "state": "ORGANIZATION_STATE_ACTIVE",
            "name": o.name,
            "primaryDomain": o.primary_domain(),
        })));
    }
    let total = found.len() as u64;
    let sorting = if sort == "ORGANIZATION_FIELD_NAME_UNSPECIFIED" { Value::Null } else { Value::String(sort) };
    Ok(prune(json!({
        "details": {"totalResult": i64s(total), "timestamp": ts(OffsetDateTime::now_utc())},
        "sortingColumn": sorting,
        "result": page.apply(found),
    })))
}

/// ListOrganizationDomains (SDK 4.1.9 model): `{organizationId, pagination, filters:
/// [{domainFilter:{domain, method}}]}` → `{pagination, domains:[{organizationId, domain,
/// isVerified, isPrimary, validationType}]}`.
pub fn list_organization_domains(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let org_id = required(req, "organizationId")?;
    let page = page(req, "pagination")?;
    let org = s
        .orgs
        .get(&org_id)
        .ok_or_else(|| err(Code::NotFound, "FAKE-org-nf", "Errors.Org.NotFound", "Organisation not found"))?;
    let mut found = Vec::new();
    'd: for d in &org.domains {
        for f in array(req, "filters")? {
            let Some(x) = field(f, "domainFilter") else {
                return Err(err(Code::InvalidArgument, "FAKE-filter", "Errors.Query.InvalidRequest", "unknown filter"));
            };
            if !text_match(&text_method(x)?, &d.name, &string(x, "domain")?) {
                continue 'd;
            }
        }
        found.push(prune(json!({
            "organizationId": org.id,
            "domain": d.name,
            "isVerified": d.verified,
            "isPrimary": d.primary,
        })));
    }
    let total = found.len() as u64;
    Ok(prune(json!({
        "pagination": {"totalResult": i64s(total), "appliedLimit": i64s(page.limit as u64)},
        "domains": page.apply(found),
    })))
}
