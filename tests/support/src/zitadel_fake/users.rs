//! `zitadel.user.v2.UserService` (docs/zitadel-contract.md §3.1; shapes checked against the
//! `zitadel-client` 4.1.9 SDK models).

use std::time::Instant;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::state::*;
use super::wire::*;
use super::{Ctx, oauth};

const MAX_METADATA_VALUE: usize = 500_000;

fn user_not_found() -> ApiError {
    err(Code::NotFound, "FAKE-user-nf", "Errors.User.NotFound", "User could not be found")
}

fn len_ok(s: &str, min: usize, max: usize) -> bool {
    let n = s.chars().count();
    n >= min && n <= max
}

fn required_user_id(req: &Value) -> ApiResult<String> {
    let id = string(req, "userId")?;
    if !len_ok(&id, 1, 200) {
        return Err(invalid("userId"));
    }
    Ok(id)
}

fn code6() -> String {
    (0..6).map(|_| char::from(b'A' + rand::random::<u8>() % 26)).collect()
}

/// The org a create call targets: the request's org, else `x-zitadel-orgid`, else the
/// caller's org (docs/zitadel-contract.md §2.4). An org that does not exist is PermissionDenied.
fn target_org(s: &State, ctx: &Ctx, org_id: Option<String>, org_domain: Option<String>) -> ApiResult<String> {
    let org = match (org_id.filter(|x| !x.is_empty()), org_domain.filter(|x| !x.is_empty())) {
        (Some(id), _) => Some(id),
        (None, Some(d)) => Some(s.org_by_domain(&d).map(|o| o.id.clone()).unwrap_or(d)),
        (None, None) => ctx.org_header.clone().or_else(|| Some(ctx.caller_org.clone())),
    };
    match org {
        Some(o) if s.orgs.contains_key(&o) => Ok(o),
        _ => Err(err(Code::PermissionDenied, "AUTH-5mWD2", "Errors.Org.NotFound", "Organisation doesn't exist")),
    }
}

/// Username rules (docs/zitadel-contract.md §3.1 "Rules enforced"; `userValidateDomain` in ZITADEL's
/// command layer): a domain part that is a verified domain of another org is
/// InvalidArgument.
fn check_username_domain(s: &State, username: &str, org: &str) -> ApiResult<()> {
    if !len_ok(username, 1, 200) {
        return Err(err(Code::InvalidArgument, "V2-zzad3", "Errors.Invalid.Argument", "Username is empty or too long"));
    }
    if let Some((_, domain)) = username.rsplit_once('@')
        && s.orgs
            .values()
            .any(|o| o.id != org && o.domains.iter().any(|d| d.verified && d.name.eq_ignore_ascii_case(domain)))
    {
        return Err(err(
            Code::InvalidArgument,
            "COMMAND-SFd21",
            "Errors.User.DomainNotAllowedAsUsername",
            "Domain is already taken and is not allowed as username",
        ));
    }
    Ok(())
}

/// Usernames are unique instance-wide, case-insensitive (a unique constraint, checked
/// when the events are pushed): AlreadyExists.
fn check_username_unique(s: &State, username: &str, except: Option<&str>) -> ApiResult<()> {
    if s.username_owner(username).is_some_and(|id| Some(id.as_str()) != except) {
        return Err(err(Code::AlreadyExists, "FAKE-uexists", "Errors.User.AlreadyExists", "User already exists"));
    }
    Ok(())
}

fn check_username(s: &State, username: &str, org: &str, except: Option<&str>) -> ApiResult<()> {
    check_username_domain(s, username, org)?;
    check_username_unique(s, username, except)
}

fn parse_profile(p: &Value) -> ApiResult<Profile> {
    let profile = Profile {
        given_name: string(p, "givenName")?,
        family_name: string(p, "familyName")?,
        nick_name: string(p, "nickName")?,
        display_name: string(p, "displayName")?,
        preferred_language: string(p, "preferredLanguage")?,
        gender: enum_name(p, "gender", &["GENDER_UNSPECIFIED", "GENDER_FEMALE", "GENDER_MALE", "GENDER_DIVERSE"])?,
    };
    check_profile(profile)
}

/// Given and family name are trimmed and required (`AddHuman.Validate`); the display
/// name defaults to "given family" (`ensureDisplayName`).
fn check_profile(mut p: Profile) -> ApiResult<Profile> {
    p.given_name = p.given_name.trim().to_string();
    p.family_name = p.family_name.trim().to_string();
    if !len_ok(&p.given_name, 1, 200) {
        return Err(err(
            Code::InvalidArgument,
            "USER-UCej2",
            "Errors.User.Profile.FirstNameEmpty",
            "Given name is empty",
        ));
    }
    if !len_ok(&p.family_name, 1, 200) {
        return Err(err(
            Code::InvalidArgument,
            "USER-4hB7d",
            "Errors.User.Profile.LastNameEmpty",
            "Family name is empty",
        ));
    }
    if p.display_name.trim().is_empty() {
        p.display_name = format!("{} {}", p.given_name, p.family_name);
    }
    Ok(p)
}

/// `SetHumanEmail{email, isVerified | sendCode | returnCode}` → (email, verified, returned code).
fn parse_email(e: &Value) -> ApiResult<(String, bool, Option<String>)> {
    let email = string(e, "email")?;
    if email.is_empty() {
        return Err(err(Code::InvalidArgument, "FAKE-email", "Errors.User.Email.Empty", "Email is empty"));
    }
    if !email.contains('@') || !len_ok(&email, 1, 200) {
        return Err(err(Code::InvalidArgument, "FAKE-email2", "Errors.User.Email.Invalid", "Email is invalid"));
    }
    let verified = boolean(e, "isVerified")?;
    let code = if has(e, "returnCode") { Some(code6()) } else { None };
    Ok((email, verified, code))
}

/// `SetHumanPhone{phone, isVerified | sendCode | returnCode}`; the number is normalised
/// to E.164 like ZITADEL's `PhoneNumber.Normalize` (separators dropped, `00` → `+`, a
/// national `0…` number taken as Swiss, ZITADEL's default region).
fn parse_phone(p: &Value) -> ApiResult<(String, bool, Option<String>)> {
    let raw = string(p, "phone")?;
    let verified = boolean(p, "isVerified")?;
    let mut phone: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '/' | '.')).collect();
    if let Some(rest) = phone.strip_prefix("00") {
        phone = format!("+{rest}");
    } else if let Some(rest) = phone.strip_prefix('0') {
        phone = format!("+41{rest}");
    }
    let digits = phone.strip_prefix('+').unwrap_or_default();
    if !phone.is_empty() && (digits.len() < 6 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit())) {
        return Err(err(Code::InvalidArgument, "PHONE-so0wa", "Errors.User.Phone.Invalid", "Phone number is invalid"));
    }
    let code = if has(p, "returnCode") && !phone.is_empty() { Some(code6()) } else { None };
    let verified = verified && !phone.is_empty();
    Ok((phone, verified, code))
}

/// In updates an empty email or phone number changes nothing (`ChangeUserHuman`);
/// removing a phone is `RemovePhone`.
fn update_contact(v: &Value, field_name: &str, parse: fn(&Value) -> ApiResult<Contact>) -> ApiResult<Option<Contact>> {
    if string(v, field_name)?.trim().is_empty() { Ok(None) } else { parse(v).map(Some) }
}

/// Metadata entries `{key, value(base64)}` (`AddMetadataEntry.Valid`): key trimmed and
/// non-empty (≤ 200 chars), value 1..500000 bytes.
fn parse_metadata(entries: &[Value]) -> ApiResult<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in entries {
        let key = string(e, "key")?.trim().to_string();
        let value = bytes(e, "value")?;
        if key.is_empty() {
            return Err(err(
                Code::InvalidArgument,
                "USER-Drght",
                "Errors.User.Metadata.KeyEmpty",
                "Metadata key is empty",
            ));
        }
        if value.is_empty() {
            return Err(err(
                Code::InvalidArgument,
                "USER-Dbgth",
                "Errors.User.Metadata.ValueEmpty",
                "Metadata value is empty",
            ));
        }
        if !len_ok(&key, 1, 200) || value.len() > MAX_METADATA_VALUE {
            return Err(err(Code::InvalidArgument, "FAKE-meta", "Errors.Metadata.Invalid", "Metadata is invalid"));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn parse_link(l: &Value) -> ApiResult<Link> {
    let link = Link { idp_id: string(l, "idpId")?, user_id: string(l, "userId")?, user_name: string(l, "userName")? };
    if !len_ok(&link.idp_id, 1, 200) || !len_ok(&link.user_id, 1, 200) || !len_ok(&link.user_name, 1, 200) {
        return Err(invalid("idpLink"));
    }
    Ok(link)
}

/// IdP link rules (docs/zitadel-contract.md §3.1; `addLink`): the IdP is an instance IdP or one of the
/// user's org, else FailedPrecondition.
fn check_idp(s: &State, link: &Link, user_org: &str) -> ApiResult<()> {
    match s.idps.get(&link.idp_id) {
        Some(idp) if idp.org.as_deref().is_none_or(|o| o == user_org) => Ok(()),
        _ => Err(err(
            Code::FailedPrecondition,
            "COMMAND-39nf2",
            "Errors.IDPConfig.NotExisting",
            "IDP configuration does not exist",
        )),
    }
}

/// (idpId, IdP user id) is unique instance-wide, else AlreadyExists.
fn check_link(s: &State, link: &Link, user_org: &str) -> ApiResult<()> {
    check_idp(s, link, user_org)?;
    if s.link_index.contains_key(&(link.idp_id.clone(), link.user_id.clone())) {
        return Err(err(
            Code::AlreadyExists,
            "FAKE-link-exists",
            "Errors.User.ExternalIDP.AlreadyExists",
            "External IDP already taken",
        ));
    }
    Ok(())
}

struct NewHuman {
    user_id: Option<String>,
    username: Option<String>,
    org: String,
    human: Value,
}

/// AddHumanUser and CreateUser{human}: validation in ZITADEL's order (fields, org,
/// supplied id, domain, links, uniqueness), then one write.
fn create_human(s: &mut State, n: NewHuman) -> ApiResult<(String, Option<String>, Option<String>)> {
    let h = &n.human;
    let profile = parse_profile(field(h, "profile").unwrap_or(&Value::Null))?;
    let (email, email_verified, email_code) = parse_email(field(h, "email").unwrap_or(&Value::Null))?;
    let (phone, phone_verified, phone_code) = match field(h, "phone") {
        Some(p) => parse_phone(p)?,
        None => (String::new(), false, None),
    };
    let metadata = parse_metadata(array(h, "metadata")?)?;
    let links = array(h, "idpLinks")?.iter().map(parse_link).collect::<ApiResult<Vec<_>>>()?;
    let password_set = has(h, "password") || has(h, "hashedPassword");
    let username = n.username.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).unwrap_or_else(|| email.clone());
    let id = match n.user_id.filter(|x| !x.is_empty()) {
        Some(id) => {
            if !len_ok(&id, 1, 200) {
                return Err(invalid("userId"));
            }
            // docs/zitadel-contract.md §3.1 / §8.2: an existing supplied id is FailedPrecondition, not 409.
            if s.user(&id).is_some() {
                return Err(err(
                    Code::FailedPrecondition,
                    "COMMAND-7yiox1isql",
                    "Errors.User.AlreadyExisting",
                    "User already exists",
                ));
            }
            id
        }
        None => s.new_id(),
    };
    // ZITADEL's order: domain rule, IdP existence, then the unique constraints on push.
    check_username_domain(s, &username, &n.org)?;
    for l in &links {
        check_idp(s, l, &n.org)?;
    }
    check_username_unique(s, &username, None)?;
    for (i, l) in links.iter().enumerate() {
        check_link(s, l, &n.org)?;
        if links[..i].iter().any(|o| o.idp_id == l.idp_id && o.user_id == l.user_id) {
            return Err(err(
                Code::AlreadyExists,
                "FAKE-link-exists",
                "Errors.User.ExternalIDP.AlreadyExists",
                "External IDP already taken",
            ));
        }
    }
    let mut user = User::new(
        id.clone(),
        n.org,
        username,
        Kind::Human { profile, email, email_verified, phone, phone_verified, password_set },
        Instant::now(),
    );
    // v2-created users are ACTIVE at once (docs/zitadel-contract.md §3.1).
    let now = user.created;
    user.metadata = metadata.into_iter().map(|(k, v)| (k, MetaEntry { value: v, changed: now })).collect();
    user.links = links;
    insert_user(s, user);
    Ok((id, email_code, phone_code))
}

/// A tombstone with the same id is replaced (re-use of a deleted id).
pub fn insert_user(s: &mut State, user: User) {
    s.insert_user(user);
}

pub fn add_human_user(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let org = field(req, "organization").cloned().unwrap_or(Value::Null);
    let org = target_org(s, ctx, opt_string(&org, "orgId")?, opt_string(&org, "orgDomain")?)?;
    let (id, email_code, phone_code) = create_human(
        s,
        NewHuman {
            user_id: opt_string(req, "userId")?,
            username: opt_string(req, "username")?,
            org,
            human: req.clone(),
        },
    )?;
    let u = s.user(&id).ok_or_else(user_not_found)?;
    Ok(prune(json!({"userId": id, "details": u.details(), "emailCode": email_code, "phoneCode": phone_code})))
}

pub fn create_user(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let org = target_org(s, ctx, opt_string(req, "organizationId")?, None)?;
    let user_id = opt_string(req, "userId")?;
    let username = opt_string(req, "username")?;
    match (field(req, "human"), field(req, "machine")) {
        (Some(h), None) => {
            let (id, email_code, phone_code) = create_human(s, NewHuman { user_id, username, org, human: h.clone() })?;
            let u = s.user(&id).ok_or_else(user_not_found)?;
            Ok(prune(
                json!({"id": id, "creationDate": ts(u.created), "emailCode": email_code, "phoneCode": phone_code}),
            ))
        }
        (None, Some(m)) => {
            let name = string(m, "name")?;
            if !len_ok(&name, 1, 200) {
                return Err(err(
                    Code::InvalidArgument,
                    "FAKE-mname",
                    "Errors.User.Machine.Name.Empty",
                    "Name is empty",
                ));
            }
            let id = match user_id.filter(|x| !x.is_empty()) {
                Some(id) if s.user(&id).is_some() => {
                    return Err(err(
                        Code::FailedPrecondition,
                        "COMMAND-7yiox1isql",
                        "Errors.User.AlreadyExisting",
                        "User already exists",
                    ));
                }
                Some(id) => id,
                None => s.new_id(),
            };
            // A machine user without a username gets its id as username.
            let username = username.filter(|u| !u.is_empty()).unwrap_or_else(|| id.clone());
            check_username(s, &username, &org, None)?;
            let kind = Kind::Machine { name, description: string(m, "description")? };
            let user = User::new(id.clone(), org, username, kind, Instant::now());
            let now = user.created;
            insert_user(s, user);
            Ok(json!({"id": id, "creationDate": ts(now)}))
        }
        _ => {
            Err(err(Code::InvalidArgument, "FAKE-utype", "Errors.User.TypeInvalid", "exactly one of human or machine"))
        }
    }
}

pub fn get_user_by_id(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s.user(&id).ok_or_else(user_not_found)?;
    Ok(json!({"details": u.details(), "user": u.to_json()}))
}

/// v1 `GET /auth/v1/users/me`: `{"user": {"id", "userName", "state", "details": {"resourceOwner"}}}`.
pub fn get_my_user(s: &mut State, ctx: &Ctx, _: &Value) -> ApiResult {
    let u = s.user(&ctx.caller).ok_or_else(user_not_found)?;
    Ok(json!({"user": {
        "id": u.id,
        "userName": u.username,
        "state": u.state.to_string(),
        "details": {"resourceOwner": u.org},
    }}))
}

// --- ListUsers -----------------------------------------------------------------------

const MAX_NESTING: usize = 20;

#[derive(Clone, Copy)]
enum TextField {
    UserName,
    FirstName,
    LastName,
    NickName,
    DisplayName,
    Email,
    Phone,
}

/// A `SearchQuery` of ListUsers, parsed once per request.
enum Query {
    Text(TextField, String, String),
    State(String),
    Machine(bool),
    InIds(std::collections::HashSet<String>),
    InEmails(Vec<String>),
    Org(String),
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    MetaKey(String, String),
    MetaValue(Vec<u8>, bool),
}

const TEXT_QUERIES: [(&str, &str, TextField); 8] = [
    ("userNameQuery", "userName", TextField::UserName),
    ("loginNameQuery", "loginName", TextField::UserName),
    ("firstNameQuery", "firstName", TextField::FirstName),
    ("lastNameQuery", "lastName", TextField::LastName),
    ("nickNameQuery", "nickName", TextField::NickName),
    ("displayNameQuery", "displayName", TextField::DisplayName),
    ("emailQuery", "emailAddress", TextField::Email),
    ("phoneQuery", "number", TextField::Phone),
];

fn parse_query(q: &Value, depth: usize) -> ApiResult<Query> {
    if depth > MAX_NESTING {
        return Err(err(Code::InvalidArgument, "FAKE-nest", "Errors.Query.InvalidRequest", "queries nested too deep"));
    }
    for (name, value, f) in TEXT_QUERIES {
        if let Some(x) = field(q, name) {
            return Ok(Query::Text(f, text_method(x)?, string(x, value)?));
        }
    }
    if let Some(x) = field(q, "stateQuery") {
        let states = [
            "USER_STATE_UNSPECIFIED",
            ACTIVE,
            INACTIVE,
            "USER_STATE_DELETED",
            "USER_STATE_LOCKED",
            "USER_STATE_INITIAL",
        ];
        return Ok(Query::State(enum_name(x, "state", &states)?));
    }
    if let Some(x) = field(q, "typeQuery") {
        let t = enum_name(x, "type", &["TYPE_UNSPECIFIED", "TYPE_HUMAN", "TYPE_MACHINE"])?;
        return Ok(Query::Machine(t == "TYPE_MACHINE"));
    }
    if let Some(x) = field(q, "inUserIdsQuery") {
        return Ok(Query::InIds(strings(x, "userIds")?.into_iter().collect()));
    }
    if let Some(x) = field(q, "inUserEmailsQuery") {
        return Ok(Query::InEmails(strings(x, "userEmails")?.iter().map(|e| e.to_lowercase()).collect()));
    }
    if let Some(x) = field(q, "organizationIdQuery") {
        return Ok(Query::Org(string(x, "organizationId")?));
    }
    if let Some(x) = field(q, "andQuery") {
        return Ok(Query::And(
            array(x, "queries")?.iter().map(|q| parse_query(q, depth + 1)).collect::<ApiResult<_>>()?,
        ));
    }
    if let Some(x) = field(q, "orQuery") {
        return Ok(Query::Or(
            array(x, "queries")?.iter().map(|q| parse_query(q, depth + 1)).collect::<ApiResult<_>>()?,
        ));
    }
    if let Some(x) = field(q, "notQuery") {
        let sub = field(x, "query").ok_or_else(|| invalid("notQuery.query"))?;
        return Ok(Query::Not(Box::new(parse_query(sub, depth + 1)?)));
    }
    if let Some(x) = field(q, "metadataKeyFilter") {
        return Ok(Query::MetaKey(text_method(x)?, string(x, "key")?));
    }
    if let Some(x) = field(q, "metadataValueFilter") {
        let m = enum_name(x, "method", &["BYTE_FILTER_METHOD_EQUALS", "BYTE_FILTER_METHOD_NOT_EQUALS"])?;
        return Ok(Query::MetaValue(bytes(x, "value")?, m != "BYTE_FILTER_METHOD_NOT_EQUALS"));
    }
    Err(err(Code::InvalidArgument, "FAKE-query", "Errors.Query.InvalidRequest", "unknown or empty user query"))
}

impl Query {
    fn uses_metadata(&self) -> bool {
        match self {
            Query::MetaKey(..) | Query::MetaValue(..) => true,
            Query::And(qs) | Query::Or(qs) => qs.iter().any(Query::uses_metadata),
            Query::Not(q) => q.uses_metadata(),
            _ => false,
        }
    }

    /// One query against a user and (for the metadata filters) one of its metadata
    /// rows: ZITADEL left-joins the metadata table, so key and value filters in one AND
    /// group must hold for the same row (docs/zitadel-contract.md §3.1 ListUsers).
    fn matches(&self, u: &User, row: Option<(&String, &MetaEntry)>) -> bool {
        match self {
            Query::Text(f, method, wanted) => {
                let p = match &u.kind {
                    Kind::Human { profile, .. } => Some(profile),
                    Kind::Machine { .. } => None,
                };
                let empty = String::new();
                let actual = match f {
                    TextField::UserName => &u.username,
                    TextField::FirstName => p.map_or(&empty, |p| &p.given_name),
                    TextField::LastName => p.map_or(&empty, |p| &p.family_name),
                    TextField::NickName => p.map_or(&empty, |p| &p.nick_name),
                    TextField::DisplayName => return text_match(method, &u.display_name(), wanted),
                    TextField::Email => return text_match(method, u.email(), wanted),
                    TextField::Phone => match &u.kind {
                        Kind::Human { phone, .. } => phone,
                        Kind::Machine { .. } => &empty,
                    },
                };
                text_match(method, actual, wanted)
            }
            Query::State(st) => u.state == st,
            Query::Machine(m) => *m == u.is_machine(),
            Query::InIds(ids) => ids.contains(&u.id),
            Query::InEmails(emails) => emails.iter().any(|e| e.eq_ignore_ascii_case(u.email())),
            Query::Org(o) => *o == u.org,
            Query::And(qs) => qs.iter().all(|q| q.matches(u, row)),
            Query::Or(qs) => qs.iter().any(|q| q.matches(u, row)),
            Query::Not(q) => !q.matches(u, row),
            Query::MetaKey(method, key) => row.is_some_and(|(k, _)| text_match(method, k, key)),
            Query::MetaValue(value, equals) => row.is_some_and(|(_, e)| (e.value == *value) == *equals),
        }
    }
}

fn user_matches(queries: &[Query], metadata: bool, u: &User) -> bool {
    if queries.iter().all(|q| q.matches(u, None)) {
        return true;
    }
    metadata && u.metadata.iter().any(|row| queries.iter().all(|q| q.matches(u, Some(row))))
}

const USER_SORT: [&str; 10] = [
    "USER_FIELD_NAME_UNSPECIFIED",
    "USER_FIELD_NAME_USER_NAME",
    "USER_FIELD_NAME_FIRST_NAME",
    "USER_FIELD_NAME_LAST_NAME",
    "USER_FIELD_NAME_NICK_NAME",
    "USER_FIELD_NAME_DISPLAY_NAME",
    "USER_FIELD_NAME_EMAIL",
    "USER_FIELD_NAME_STATE",
    "USER_FIELD_NAME_TYPE",
    "USER_FIELD_NAME_CREATION_DATE",
];

/// Narrows a ListUsers scan by the indexes when a top-level query pins the users down
/// (`inUserIdsQuery`, or an exact `userNameQuery`): the result is the same, only faster
/// for large benchmarks. `None`: scan everything.
fn candidates<'a>(s: &'a State, queries: &[Value]) -> ApiResult<Option<Vec<&'a String>>> {
    for q in queries {
        if let Some(x) = field(q, "inUserIdsQuery") {
            let mut c: Vec<&User> = strings(x, "userIds")?.iter().filter_map(|id| s.users.get(id)).collect();
            c.sort_by_key(|u| u.order);
            c.dedup_by_key(|u| u.order);
            return Ok(Some(c.into_iter().map(|u| &u.id).collect()));
        }
        if let Some(x) = field(q, "userNameQuery")
            && s.tombstones == 0
            && text_method(x)?.starts_with("EQUALS")
        {
            return Ok(Some(s.username_owner(&string(x, "userName")?).into_iter().collect()));
        }
    }
    Ok(None)
}

pub fn list_users(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "query")?;
    let raw_queries = array(req, "queries")?;
    let queries = raw_queries.iter().map(|q| parse_query(q, 0)).collect::<ApiResult<Vec<_>>>()?;
    let metadata = queries.iter().any(Query::uses_metadata);
    let sort = enum_name(req, "sortingColumn", &USER_SORT)?;
    // Eventual consistency: lists do not see users written within the lag, and still
    // see users deleted within it (docs/zitadel-contract.md §8.3).
    let mut found = Vec::new();
    let ids: Vec<&String> = match candidates(s, raw_queries)? {
        Some(c) => c,
        None => s.user_order.values().collect(),
    };
    for id in ids {
        let Some(u) = s.users.get(id) else { continue };
        let seen = match u.deleted {
            Some(d) => d.elapsed() < s.faults.list_lag,
            None => s.visible(u.written),
        };
        if seen && user_matches(&queries, metadata, u) {
            found.push(u);
        }
    }
    if sort != USER_SORT[0] {
        let key = |u: &User| -> String {
            let p = match &u.kind {
                Kind::Human { profile, .. } => profile.clone(),
                Kind::Machine { .. } => Profile::default(),
            };
            match sort.as_str() {
                "USER_FIELD_NAME_USER_NAME" => u.username.clone(),
                "USER_FIELD_NAME_FIRST_NAME" => p.given_name,
                "USER_FIELD_NAME_LAST_NAME" => p.family_name,
                "USER_FIELD_NAME_NICK_NAME" => p.nick_name,
                "USER_FIELD_NAME_DISPLAY_NAME" => u.display_name(),
                "USER_FIELD_NAME_EMAIL" => u.email().to_string(),
                "USER_FIELD_NAME_STATE" => u.state.to_string(),
                "USER_FIELD_NAME_TYPE" => u.is_machine().to_string(),
                _ => String::new(),
            }
        };
        found.sort_by_key(|u| (key(u), u.created));
        if !page.asc {
            found.reverse();
        }
    }
    let total = found.len() as u64;
    let result: Vec<Value> = page.apply(found).into_iter().map(User::to_json).collect();
    let sorting = if sort == USER_SORT[0] { Value::Null } else { Value::String(sort) };
    Ok(prune(json!({
        "details": {"totalResult": i64s(total), "timestamp": ts(OffsetDateTime::now_utc())},
        "sortingColumn": sorting,
        "result": result,
    })))
}

// --- updates -------------------------------------------------------------------------

/// A partial profile over the stored one: fields present in the request replace the
/// stored ones (proto3 `optional`: present-but-empty clears), absent ones stay.
fn merge_profile(old: &Profile, p: &Value) -> ApiResult<Profile> {
    let mut np = old.clone();
    let set = |name: &str, slot: &mut String| -> ApiResult<()> {
        if let Some(v) = opt_string(p, name)? {
            *slot = v;
        }
        Ok(())
    };
    set("givenName", &mut np.given_name)?;
    set("familyName", &mut np.family_name)?;
    set("nickName", &mut np.nick_name)?;
    set("displayName", &mut np.display_name)?;
    set("preferredLanguage", &mut np.preferred_language)?;
    if has(p, "gender") {
        np.gender = enum_name(p, "gender", &["GENDER_UNSPECIFIED", "GENDER_FEMALE", "GENDER_MALE", "GENDER_DIVERSE"])?;
    }
    check_profile(np)
}

/// UpdateHumanUser: every top-level part optional (docs/zitadel-contract.md §3.1). A sent profile
/// (`SetHumanProfile`) must carry givenName and familyName; its other fields are proto3
/// `optional`, so absent ones keep their value. Unchanged data is a no-op success.
pub fn update_human_user(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s.user(&id).ok_or_else(user_not_found)?.clone();
    if u.is_machine() {
        return Err(err(Code::FailedPrecondition, "FAKE-nothuman", "Errors.User.NotHuman", "User is not a human"));
    }
    let username = opt_string(req, "username")?;
    if let Some(n) = &username
        && *n != u.username
    {
        check_username(s, n, &u.org, Some(&id))?;
    }
    let profile = match (field(req, "profile"), &u.kind) {
        (Some(p), Kind::Human { profile, .. }) => {
            for name in ["givenName", "familyName"] {
                if string(p, name)?.is_empty() {
                    return Err(err(
                        Code::InvalidArgument,
                        "FAKE-profile",
                        "Errors.User.Profile.Invalid",
                        &format!("profile.{name} is required"),
                    ));
                }
            }
            Some(merge_profile(profile, p)?)
        }
        _ => None,
    };
    let email = field(req, "email").map(|e| update_contact(e, "email", parse_email)).transpose()?.flatten();
    let phone = field(req, "phone").map(|p| update_contact(p, "phone", parse_phone)).transpose()?.flatten();
    let password = has(req, "password");
    let codes = apply_human(s, &id, username, profile, email, phone, password);
    let u = s.user(&id).ok_or_else(user_not_found)?;
    Ok(prune(json!({"details": u.details(), "emailCode": codes.0, "phoneCode": codes.1})))
}

type Contact = (String, bool, Option<String>);

fn apply_human(
    s: &mut State,
    id: &str,
    username: Option<String>,
    profile: Option<Profile>,
    email_in: Option<Contact>,
    phone_in: Option<Contact>,
    password: bool,
) -> (Option<String>, Option<String>) {
    let renamed = match username {
        Some(n) if s.user(id).is_some_and(|u| u.username != n) => {
            s.rename_user(id, n);
            true
        }
        _ => false,
    };
    let Some(u) = s.user_mut(id) else { return (None, None) };
    let before = format!("{:?}", u.kind);
    let mut codes = (None, None);
    if let Kind::Human { profile: p, email, email_verified, phone, phone_verified, password_set } = &mut u.kind {
        if let Some(np) = profile {
            *p = np;
        }
        if let Some((e, v, c)) = email_in {
            if *email != e || v {
                *email_verified = v;
            }
            *email = e;
            codes.0 = c;
        }
        if let Some((ph, v, c)) = phone_in {
            if *phone != ph || v {
                *phone_verified = v;
            }
            *phone = ph;
            codes.1 = c;
        }
        *password_set |= password;
    }
    if renamed || format!("{:?}", u.kind) != before {
        u.touch();
    }
    codes
}

/// UpdateUser (newer, partial): `{userId, username?, human:{profile:{partial}, email?,
/// phone?, password?}}` or `machine:{name?, description?}` → `{changeDate}`.
pub fn update_user(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s.user(&id).ok_or_else(user_not_found)?.clone();
    let username = opt_string(req, "username")?;
    if let Some(n) = &username
        && *n != u.username
    {
        check_username(s, n, &u.org, Some(&id))?;
    }
    let mut codes = (None, None);
    match (&u.kind, field(req, "human"), field(req, "machine")) {
        (Kind::Human { profile, .. }, h, None) => {
            let h = h.cloned().unwrap_or(Value::Null);
            let profile = field(&h, "profile").map(|p| merge_profile(profile, p)).transpose()?;
            let email = field(&h, "email").map(|e| update_contact(e, "email", parse_email)).transpose()?.flatten();
            let phone = field(&h, "phone").map(|p| update_contact(p, "phone", parse_phone)).transpose()?.flatten();
            codes = apply_human(s, &id, username, profile, email, phone, has(&h, "password"));
        }
        (Kind::Machine { .. }, None, m) => {
            let m = m.cloned().unwrap_or(Value::Null);
            let name = opt_string(&m, "name")?;
            if name.as_deref().is_some_and(|n| !len_ok(n, 1, 200)) {
                return Err(err(
                    Code::InvalidArgument,
                    "FAKE-mname",
                    "Errors.User.Machine.Name.Empty",
                    "Name is empty",
                ));
            }
            let description = opt_string(&m, "description")?;
            let renamed = match username {
                Some(n) if n != u.username => {
                    s.rename_user(&id, n);
                    true
                }
                _ => false,
            };
            if let Some(u) = s.user_mut(&id) {
                let before = format!("{:?}", u.kind);
                if let Kind::Machine { name: n, description: d } = &mut u.kind {
                    if let Some(x) = name {
                        *n = x;
                    }
                    if let Some(x) = description {
                        *d = x;
                    }
                }
                if renamed || format!("{:?}", u.kind) != before {
                    u.touch();
                }
            }
        }
        _ => {
            return Err(err(Code::FailedPrecondition, "FAKE-utype", "Errors.User.TypeInvalid", "wrong user type"));
        }
    }
    let u = s.user(&id).ok_or_else(user_not_found)?;
    Ok(prune(json!({"changeDate": ts(u.changed), "emailCode": codes.0, "phoneCode": codes.1})))
}

/// Moves an active user to inactive or back; the other way round is the
/// FailedPrecondition ZITADEL answers.
fn set_user_state(s: &mut State, req: &Value, to: &'static str, already: (&str, &str, &str)) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    if (u.state == INACTIVE) == (to == INACTIVE) {
        let (id, key, message) = already;
        return Err(err(Code::FailedPrecondition, id, key, message));
    }
    u.state = to;
    u.touch();
    Ok(json!({"details": u.details()}))
}

pub fn deactivate_user(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    set_user_state(s, req, INACTIVE, ("FAKE-inactive", "Errors.User.AlreadyInactive", "User is already deactivated"))
}

pub fn reactivate_user(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    set_user_state(s, req, ACTIVE, ("FAKE-notinactive", "Errors.User.NotInactive", "User is not deactivated"))
}

/// RemovePhone: `{userId}` → `{details}`; an unknown user is NotFound
/// `Errors.User.Phone.NotFound`; a user without a phone is fine.
pub fn remove_phone(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s
        .user_mut(&id)
        .ok_or_else(|| err(Code::NotFound, "COMMAND-ieJ2e", "Errors.User.Phone.NotFound", "Phone not found"))?;
    if let Kind::Human { phone, phone_verified, .. } = &mut u.kind {
        phone.clear();
        *phone_verified = false;
    }
    u.touch();
    Ok(json!({"details": u.details()}))
}

/// DeleteUser: hard delete; frees the username, cascades authorizations, memberships,
/// links and credentials (docs/zitadel-contract.md §3.1).
pub fn delete_user(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    u.touch();
    let details = u.details();
    s.remove_user(&id);
    s.authorizations.retain(|a| a.user_id != id);
    s.admins.retain(|a| a.user_id != id);
    s.pats.retain(|_, (uid, _)| *uid != id);
    s.access_tokens.retain(|_, t| t.user_id != id);
    Ok(json!({"details": details}))
}

// --- metadata ------------------------------------------------------------------------

pub fn set_user_metadata(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let entries = parse_metadata(array(req, "metadata")?)?;
    if entries.is_empty() {
        return Err(invalid("metadata"));
    }
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    let now = OffsetDateTime::now_utc();
    for (k, v) in entries {
        match u.metadata.get_mut(&k) {
            Some(e) if e.value == v => {}
            Some(e) => {
                e.value = v;
                e.changed = now;
            }
            None => {
                u.metadata.insert(k, MetaEntry { value: v, changed: now });
            }
        }
    }
    u.touch();
    Ok(json!({"setDate": ts(now)}))
}

pub fn list_user_metadata(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let page = page(req, "pagination")?;
    let u = s.user(&id).ok_or_else(user_not_found)?;
    let mut out = Vec::new();
    'rows: for (k, e) in &u.metadata {
        for f in array(req, "filters")? {
            let Some(kf) = field(f, "keyFilter") else {
                return Err(err(Code::InvalidArgument, "FAKE-filter", "Errors.Query.InvalidRequest", "unknown filter"));
            };
            if !text_match(&text_method(kf)?, k, &string(kf, "key")?) {
                continue 'rows;
            }
        }
        // The SDK's `UserServiceMetadata` has only key and value (the reference lists dates too).
        out.push(json!({"key": k, "value": b64(&e.value)}));
    }
    let total = out.len() as u64;
    Ok(prune(json!({
        "pagination": {"totalResult": i64s(total), "appliedLimit": i64s(page.limit as u64)},
        "metadata": page.apply(out),
    })))
}

pub fn delete_user_metadata(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let keys = strings(req, "keys")?;
    if keys.is_empty() {
        return Err(invalid("keys"));
    }
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    if keys.iter().any(|k| !u.metadata.contains_key(k)) {
        return Err(err(Code::NotFound, "META-2nnds", "Errors.Metadata.KeyNotExisting", "Metadata key does not exist"));
    }
    for k in &keys {
        u.metadata.remove(k);
    }
    u.touch();
    Ok(json!({"deletionDate": ts(OffsetDateTime::now_utc())}))
}

// --- IdP links -----------------------------------------------------------------------

pub fn add_idp_link(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let link = parse_link(field(req, "idpLink").unwrap_or(&Value::Null))?;
    let org = s.user(&id).ok_or_else(user_not_found)?.org.clone();
    check_link(s, &link, &org)?;
    s.link_index.insert((link.idp_id.clone(), link.user_id.clone()), id.clone());
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    u.links.push(link);
    u.touch();
    Ok(json!({"details": u.details()}))
}

pub fn list_idp_links(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let page = page(req, "query")?;
    let u = s.user(&id).ok_or_else(user_not_found)?;
    let links: Vec<Value> =
        u.links.iter().map(|l| json!({"idpId": l.idp_id, "userId": l.user_id, "userName": l.user_name})).collect();
    let total = links.len() as u64;
    Ok(prune(json!({
        "details": {"totalResult": i64s(total), "timestamp": ts(OffsetDateTime::now_utc())},
        "result": page.apply(links),
    })))
}

pub fn remove_idp_link(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let idp_id = string(req, "idpId")?;
    let linked = string(req, "linkedUserId")?;
    let u = s.user_mut(&id).ok_or_else(user_not_found)?;
    let before = u.links.len();
    u.links.retain(|l| !(l.idp_id == idp_id && l.user_id == linked));
    if u.links.len() == before {
        return Err(err(Code::NotFound, "FAKE-link-nf", "Errors.User.ExternalIDP.NotFound", "External IDP not found"));
    }
    u.touch();
    let details = u.details();
    s.link_index.remove(&(idp_id, linked));
    Ok(json!({"details": details}))
}

// --- machine credentials -------------------------------------------------------------

fn machine_mut<'a>(s: &'a mut State, id: &str) -> ApiResult<&'a mut User> {
    let u = s.user_mut(id).ok_or_else(user_not_found)?;
    if !u.is_machine() {
        return Err(err(
            Code::FailedPrecondition,
            "FAKE-notmachine",
            "Errors.User.NotMachine",
            "User is not a machine user",
        ));
    }
    Ok(u)
}

fn expiration(req: &Value) -> ApiResult<OffsetDateTime> {
    let now = OffsetDateTime::now_utc();
    match timestamp(req, "expirationDate")? {
        Some(t) if t <= now => Err(err(
            Code::InvalidArgument,
            "FAKE-exp",
            "Errors.MachineKey.ExpireBeforeNow",
            "expiration date is in the past",
        )),
        Some(t) => Ok(t),
        None => Ok(time::macros::datetime!(9999-12-31 23:59:59 UTC)),
    }
}

/// AddKey: `{userId, expirationDate?, publicKey?}` → `{keyId, keyContent, creationDate}`;
/// `keyContent` is the base64 key-file JSON (docs/zitadel-contract.md §2.2), absent when the caller
/// brought its own public key.
pub fn add_key(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let exp = expiration(req)?;
    let public = bytes(req, "publicKey")?;
    machine_mut(s, &id)?;
    let key_id = s.new_id();
    let (public_der, pem) = if public.is_empty() {
        let pem = s.next_pool_key();
        (
            oauth::public_key_of_private_pem(pem)
                .map_err(|e| err(Code::Internal, "FAKE-key", "Errors.Internal", &e))?,
            Some(pem),
        )
    } else {
        let der = oauth::public_key_from_pem(&String::from_utf8_lossy(&public))
            .map_err(|e| err(Code::InvalidArgument, "FAKE-pubkey", "Errors.User.Machine.Key.Invalid", &e))?;
        (der, None)
    };
    let now = OffsetDateTime::now_utc();
    let u = machine_mut(s, &id)?;
    u.keys.push(MachineKey { id: key_id.clone(), public_der, expiration: exp, created: now });
    u.touch();
    let content = pem.map(|pem| {
        let file = json!({
            "type": "serviceaccount",
            "keyId": key_id,
            "key": pem,
            "expirationDate": ts(exp),
            "userId": id,
        });
        b64(file.to_string().as_bytes())
    });
    Ok(prune(json!({"creationDate": ts(now), "keyId": key_id, "keyContent": content})))
}

pub fn remove_key(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let key_id = string(req, "keyId")?;
    let u = machine_mut(s, &id)?;
    let before = u.keys.len();
    u.keys.retain(|k| k.id != key_id);
    if u.keys.len() == before {
        return Err(err(Code::NotFound, "FAKE-key-nf", "Errors.User.Machine.Key.NotFound", "Machine key not found"));
    }
    u.touch();
    Ok(json!({"deletionDate": ts(OffsetDateTime::now_utc())}))
}

fn id_filter(f: &Value, name: &str) -> ApiResult<Option<String>> {
    match field(f, name) {
        Some(x) => Ok(Some(string(x, "id")?)),
        None => Ok(None),
    }
}

fn timestamp_filter(f: &Value, name: &str, actual: OffsetDateTime) -> ApiResult<Option<bool>> {
    field(f, name).map(|x| super::authz::timestamp_cmp(x, actual)).transpose()
}

/// ListKeys: `{pagination, sortingColumn, filters:[{userIdFilter|keyIdFilter|
/// organizationIdFilter:{id}}, {createdDateFilter|expirationDateFilter}]}` →
/// `{pagination, result:[{id, userId, organizationId, creationDate, changeDate, expirationDate}]}`.
pub fn list_keys(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "pagination")?;
    let filters = array(req, "filters")?;
    let mut out = Vec::new();
    for u in s.live_users() {
        'keys: for k in &u.keys {
            for f in filters {
                let ok = if let Some(id) = id_filter(f, "userIdFilter")? {
                    id == u.id
                } else if let Some(id) = id_filter(f, "keyIdFilter")? {
                    id == k.id
                } else if let Some(id) = id_filter(f, "organizationIdFilter")? {
                    id == u.org
                } else if let Some(ok) = timestamp_filter(f, "createdDateFilter", k.created)? {
                    ok
                } else if let Some(ok) = timestamp_filter(f, "expirationDateFilter", k.expiration)? {
                    ok
                } else {
                    return Err(err(
                        Code::InvalidArgument,
                        "FAKE-filter",
                        "Errors.Query.InvalidRequest",
                        "unknown filter",
                    ));
                };
                if !ok {
                    continue 'keys;
                }
            }
            out.push(json!({
                "creationDate": ts(k.created),
                "changeDate": ts(k.created),
                "id": k.id,
                "userId": u.id,
                "organizationId": u.org,
                "expirationDate": ts(k.expiration),
            }));
        }
    }
    let total = out.len() as u64;
    Ok(prune(json!({
        "pagination": {"totalResult": i64s(total), "appliedLimit": i64s(page.limit as u64)},
        "result": page.apply(out),
    })))
}

pub fn add_personal_access_token(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let exp = expiration(req)?;
    machine_mut(s, &id)?;
    let token_id = s.new_id();
    let token = oauth::random_token();
    let now = OffsetDateTime::now_utc();
    let u = machine_mut(s, &id)?;
    u.pats.push(Pat { id: token_id.clone(), token: token.clone(), expiration: exp });
    u.touch();
    s.pats.insert(token.clone(), (id, token_id.clone()));
    Ok(json!({"creationDate": ts(now), "tokenId": token_id, "token": token}))
}

pub fn remove_personal_access_token(s: &mut State, _: &Ctx, req: &Value) -> ApiResult {
    let id = required_user_id(req)?;
    let token_id = string(req, "tokenId")?;
    let u = machine_mut(s, &id)?;
    let Some(pos) = u.pats.iter().position(|p| p.id == token_id) else {
        return Err(err(Code::NotFound, "FAKE-pat-nf", "Errors.User.PAT.NotFound", "Personal access token not found"));
    };
    let pat = u.pats.remove(pos);
    u.touch();
    s.pats.remove(&pat.token);
    Ok(json!({"deletionDate": ts(OffsetDateTime::now_utc())}))
}
