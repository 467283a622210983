#!/usr/bin/env python3
"""Contract check of the ZITADEL fake against the official ZITADEL Python SDK.

Usage: zitadel_sdk_contract.py PATH/TO/examples/zitadel_fake

Starts the fake (the `zitadel_fake` example binary), then drives it through
`zitadel-client` (pinned in requirements.txt) over every call the SCIM projector
and the operator make, in a realistic order, plus the error cases they branch on.
A call FAILs when the SDK raises on a response that should succeed, fails to
parse a response, gets a different error than ZITADEL gives, or when the fake's
JSON carries a field the SDK model does not know (a misspelt field would
otherwise be dropped silently). Prints `OK name` / `FAIL name: reason` per
check and ends with `contract: N passed, N failed`; exit 1 on any failure.
"""

import base64
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import typing
import uuid
import warnings

import pydantic

with warnings.catch_warnings():  # authlib.jose deprecation notice inside the SDK
    import authlib.deprecate  # noqa: F401  (installs its own "always" filter first)

    warnings.simplefilter("ignore")
    import zitadel_client.models as M
    from zitadel_client import ApiError, Zitadel, ZitadelError
    from zitadel_client.transport_options import TransportOptions

START_TIMEOUT = 60.0
INSTANCE_HOST = "id.contract.example"

passed = 0
failed = 0


def ok(name):
    global passed
    passed += 1
    print(f"OK {name}", flush=True)


def fail(name, reason):
    global failed
    failed += 1
    print(f"FAIL {name}: {reason}", flush=True)


# --- starting the fake ---------------------------------------------------------------


def start_fake(binary, key_file):
    proc = subprocess.Popen(
        [binary, "--instance-host", INSTANCE_HOST, "--key-file", key_file],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    info = {}
    deadline = time.monotonic() + START_TIMEOUT
    while "ZITADEL KEY FILE" not in info:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            sys.exit(f"the fake did not print its URL within {START_TIMEOUT}s; got {info}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            sys.exit(f"the fake exited early (status {proc.wait()}); got {info}")
        if ": " in line and line.startswith("ZITADEL "):
            k, v = line.split(": ", 1)
            info[k] = v
    return proc, info


# --- checking what the SDK parsed ------------------------------------------------------

_last = {}


def capture_raw(client):
    """Keeps the raw body and response type of the SDK's last call."""
    api_client = client.users.api_client
    original = api_client.response_deserialize

    def wrapped(response_data, response_types_map=None):
        _last["raw"] = response_data.data
        _last["type"] = (response_types_map or {}).get(str(response_data.status))
        return original(response_data=response_data, response_types_map=response_types_map)

    api_client.response_deserialize = wrapped


def _models_in(annotation):
    out = []
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        out.append(annotation)
    for a in typing.get_args(annotation):
        out += _models_in(a)
    return out


def unknown_fields(cls, data, path=""):
    """JSON keys the SDK model does not declare (it would silently drop them)."""
    found = []
    if isinstance(data, list):
        for i, x in enumerate(data):
            found += unknown_fields(cls, x, f"{path}[{i}]")
        return found
    if not isinstance(data, dict):
        return found
    fields = {(f.alias or n): f.annotation for n, f in cls.model_fields.items()}
    for k, v in data.items():
        if k not in fields:
            found.append(f"{path}.{k}" if path else k)
            continue
        for sub in _models_in(fields[k]):
            found += unknown_fields(sub, v, f"{path}.{k}" if path else k)
    return found


def decode_detail(value):
    """Decodes a `zitadel.v1.ErrorDetail` protobuf (field 1 id, field 2 message)."""
    raw = base64.b64decode(value + "=" * (-len(value) % 4))
    out, i = {}, 0
    while i < len(raw):
        tag = raw[i]
        i += 1
        n, shift = 0, 0
        while True:
            b = raw[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out[tag >> 3] = raw[i : i + n].decode()
        i += n
    return out.get(1, ""), out.get(2, "")


def check(name, fn, verify=None):
    """A call that must succeed; `verify(resp)` returns an error text or None."""
    _last.clear()
    try:
        resp = fn()
    except ApiError as e:
        fail(name, f"HTTP {e.code}: {e.response_body}")
        return None
    except Exception as e:  # parse errors, pydantic validation errors
        fail(name, f"{type(e).__name__}: {e}")
        return None
    if _last.get("raw") and _last.get("type"):
        cls = getattr(M, _last["type"], None)
        extra = unknown_fields(cls, json.loads(_last["raw"])) if cls else []
        if extra:
            fail(name, f"fields unknown to the SDK model {_last['type']}: {extra}")
            return resp
    if verify:
        try:
            problem = verify(resp)
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            fail(name, problem)
            return resp
    ok(name)
    return resp


def check_error(name, fn, status, code, key=None):
    """A call that must fail with HTTP `status`, Connect `code` and ZITADEL message key."""
    try:
        fn()
    except ApiError as e:
        body = e.response_body if isinstance(e.response_body, dict) else {}
        if e.code != status:
            return fail(name, f"want HTTP {status}, got {e.code}: {e.response_body}")
        if body.get("code") != code:
            return fail(name, f"want code {code}, got {body}")
        if key is not None:
            details = body.get("details") or [{}]
            d = details[0]
            if d.get("type") != "zitadel.v1.ErrorDetail":
                return fail(name, f"detail type: {d}")
            pid, pkey = decode_detail(d.get("value", ""))
            if pkey != key or (d.get("debug") or {}).get("message") != key or not pid:
                return fail(name, f"want key {key}, got proto ({pid}, {pkey}) debug {d.get('debug')}")
        if status == 429 and not e.response_headers.get("Retry-After"):
            return fail(name, "429 without Retry-After")
        return ok(f"{name} -> {status} {code}")
    except Exception as e:
        return fail(name, f"want ApiError {status}, got {type(e).__name__}: {e}")
    fail(name, f"want HTTP {status}, got success")


def expect(cond, text):
    return None if cond else text


def b64(s):
    return base64.b64encode(s.encode()).decode()


# --- the sequence ----------------------------------------------------------------------


def run(info, key_file):
    url = info["ZITADEL URL"]
    pat = info["ZITADEL PAT"]
    org = info["ZITADEL ORG"]
    project_org = info["ZITADEL PROJECT ORG"]
    project = info["ZITADEL PROJECT"]
    idp = info["ZITADEL IDP"]
    opts = TransportOptions(default_headers={"x-zitadel-instance-host": INSTANCE_HOST})
    z = Zitadel.with_access_token(url, pat, transport_options=opts)
    capture_raw(z)
    U, A, P, O = z.users, z.authorizations, z.internal_permissions, z.organizations

    # Organizations
    check(
        "OrganizationService/ListOrganizations idQuery",
        lambda: O.list_organizations(M.OrganizationServiceListOrganizationsRequest.from_dict({"queries": [{"idQuery": {"id": org}}]})),
        lambda r: expect(len(r.result) == 1 and r.result[0].id == org and r.result[0].primary_domain == "contoso.com"
                         and r.details.total_result == "1", f"{r}"),
    )
    check(
        "OrganizationService/ListOrganizations nameQuery+domainQuery",
        lambda: O.list_organizations(M.OrganizationServiceListOrganizationsRequest.from_dict({
            "query": {"offset": "0", "limit": 10, "asc": True},
            "queries": [{"nameQuery": {"name": "conto", "method": "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE"}},
                        {"domainQuery": {"domain": "contoso.com", "method": "TEXT_QUERY_METHOD_EQUALS"}}]})),
        lambda r: expect([o.id for o in r.result] == [org], f"{r}"),
    )
    check(
        "OrganizationService/ListOrganizations domainQuery on a non-primary verified domain",
        lambda: O.list_organizations(M.OrganizationServiceListOrganizationsRequest.from_dict({
            "queries": [{"domainQuery": {"domain": "CONTOSO.fake-zitadel.localhost",
                                         "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}]})),
        lambda r: expect([o.id for o in r.result] == [org], f"{r}"),
    )
    check(
        "OrganizationService/ListOrganizationDomains",
        lambda: O.list_organization_domains(M.OrganizationServiceListOrganizationDomainsRequest.from_dict({"organizationId": org})),
        lambda r: expect(any(d.domain == "contoso.com" and d.is_verified and d.is_primary for d in r.domains), f"{r}"),
    )

    # Human user, org-scoped, with metadata and an IdP link
    uid = str(uuid.uuid4())
    object_id = str(uuid.uuid4())
    add_req = {
        "userId": uid,
        "username": "alice@contoso.com",
        "organization": {"orgId": org},
        "profile": {"givenName": "Alice", "familyName": "Smith", "displayName": "Alice Smith",
                    "nickName": "ali", "preferredLanguage": "en"},
        "email": {"email": "alice@contoso.com", "isVerified": True},
        "phone": {"phone": "+41791234567", "isVerified": True},
        "metadata": [{"key": "entra.objectId", "value": b64(object_id)}],
        "idpLinks": [{"idpId": idp, "userId": object_id, "userName": "alice@contoso.com"}],
    }
    check(
        "UserService/AddHumanUser",
        lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(add_req)),
        lambda r: expect(r.user_id == uid and r.details.resource_owner == org and r.details.change_date is not None, f"{r}"),
    )
    check(
        "UserService/GetUserByID",
        lambda: U.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id=uid)),
        lambda r: expect(
            r.user.user_id == uid and r.user.state.value == "USER_STATE_ACTIVE" and r.user.username == "alice@contoso.com"
            and r.user.details.resource_owner == org and r.user.human.profile.given_name == "Alice"
            and r.user.human.email.is_verified and r.user.human.phone.phone == "+41791234567"
            and r.user.preferred_login_name == "alice@contoso.com", f"{r}"),
    )
    list_queries = {
        "organizationIdQuery+userNameQuery": [{"organizationIdQuery": {"organizationId": org}},
                                              {"userNameQuery": {"userName": "ALICE@contoso.com",
                                                                 "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}],
        "emailQuery": [{"emailQuery": {"emailAddress": "alice@contoso.com"}}],
        "inUserIdsQuery": [{"inUserIdsQuery": {"userIds": [uid, "nope"]}}],
        "metadata key+value": [{"andQuery": {"queries": [
            {"metadataKeyFilter": {"key": "entra.objectId", "method": "TEXT_FILTER_METHOD_EQUALS"}},
            {"metadataValueFilter": {"value": b64(object_id), "method": "BYTE_FILTER_METHOD_EQUALS"}}]}}],
        "typeQuery+stateQuery": [{"typeQuery": {"type": "TYPE_HUMAN"}}, {"stateQuery": {"state": "USER_STATE_ACTIVE"}},
                                 {"organizationIdQuery": {"organizationId": org}}],
        "orQuery+notQuery": [{"orQuery": {"queries": [{"inUserIdsQuery": {"userIds": [uid]}},
                                                      {"userNameQuery": {"userName": "nobody"}}]}},
                             {"notQuery": {"query": {"typeQuery": {"type": "TYPE_MACHINE"}}}}],
    }
    for label, queries in list_queries.items():
        check(
            f"UserService/ListUsers {label}",
            lambda q=queries: U.list_users(M.UserServiceListUsersRequest.from_dict(
                {"query": {"offset": "0", "limit": 100, "asc": True},
                 "sortingColumn": "USER_FIELD_NAME_USER_NAME", "queries": q})),
            lambda r: expect([u.user_id for u in r.result] == [uid] and r.details.total_result == "1", f"{r}"),
        )
    check(
        "UserService/UpdateHumanUser",
        lambda: U.update_human_user(M.UserServiceUpdateHumanUserRequest.from_dict({
            "userId": uid, "profile": {"givenName": "Alicia", "familyName": "Smith", "displayName": "Alicia Smith"},
            "email": {"email": "alicia@contoso.com", "isVerified": True}})),
        lambda r: expect(r.details is not None, f"{r}"),
    )
    check(
        "UserService/UpdateUser (partial)",
        lambda: U.update_user(M.UserServiceUpdateUserRequest.from_dict({
            "userId": uid, "human": {"profile": {"nickName": "lici"}, "phone": {"phone": "+41790000000", "isVerified": True}}})),
        lambda r: expect(r.change_date is not None, f"{r}"),
    )
    check(
        "UserService/GetUserByID after updates",
        lambda: U.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id=uid)),
        lambda r: expect(
            r.user.human.profile.given_name == "Alicia" and r.user.human.profile.nick_name == "lici"
            and r.user.human.email.email == "alicia@contoso.com" and r.user.human.phone.phone == "+41790000000"
            and r.user.human.profile.preferred_language == "en", f"{r.user.human}"),
    )
    check("UserService/RemovePhone", lambda: U.remove_phone(M.UserServiceRemovePhoneRequest(user_id=uid)),
          lambda r: expect(r.details is not None, f"{r}"))
    check("UserService/GetUserByID after RemovePhone",
          lambda: U.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id=uid)),
          lambda r: expect(r.user.human.phone is None or not r.user.human.phone.phone, f"{r.user.human}"))
    check("UserService/DeactivateUser", lambda: U.deactivate_user(M.UserServiceDeactivateUserRequest(user_id=uid)))
    check_error("UserService/DeactivateUser twice", lambda: U.deactivate_user(M.UserServiceDeactivateUserRequest(user_id=uid)),
                400, "failed_precondition", "Errors.User.AlreadyInactive")
    check(
        "UserService/ListUsers stateQuery INACTIVE",
        lambda: U.list_users(M.UserServiceListUsersRequest.from_dict({"queries": [{"stateQuery": {"state": "USER_STATE_INACTIVE"}}]})),
        lambda r: expect([u.user_id for u in r.result] == [uid], f"{r}"),
    )
    check("UserService/ReactivateUser", lambda: U.reactivate_user(M.UserServiceReactivateUserRequest(user_id=uid)))
    check_error("UserService/ReactivateUser on active", lambda: U.reactivate_user(M.UserServiceReactivateUserRequest(user_id=uid)),
                400, "failed_precondition", "Errors.User.NotInactive")

    # Metadata
    check(
        "UserService/SetUserMetadata",
        lambda: U.set_user_metadata(M.UserServiceSetUserMetadataRequest.from_dict({"userId": uid, "metadata": [
            {"key": "entra.upn", "value": b64("alice@contoso.com")}, {"key": "scim.id", "value": b64(uid)}]})),
        lambda r: expect(r.set_date is not None, f"{r}"),
    )
    check(
        "UserService/ListUserMetadata",
        lambda: U.list_user_metadata(M.UserServiceListUserMetadataRequest.from_dict({"userId": uid,
            "pagination": {"offset": "0", "limit": 10, "asc": True},
            "filters": [{"keyFilter": {"key": "entra.", "method": "TEXT_FILTER_METHOD_STARTS_WITH"}}]})),
        lambda r: expect(sorted((m.key, base64.b64decode(m.value).decode()) for m in r.metadata)
                         == [("entra.objectId", object_id), ("entra.upn", "alice@contoso.com")]
                         and r.pagination.total_result == "2", f"{r}"),
    )
    check("UserService/DeleteUserMetadata",
          lambda: U.delete_user_metadata(M.UserServiceDeleteUserMetadataRequest(user_id=uid, keys=["scim.id"])),
          lambda r: expect(r.deletion_date is not None, f"{r}"))
    check_error("UserService/DeleteUserMetadata missing key",
                lambda: U.delete_user_metadata(M.UserServiceDeleteUserMetadataRequest(user_id=uid, keys=["scim.id"])),
                404, "not_found", "Errors.Metadata.KeyNotExisting")

    # IdP links
    check("UserService/ListIDPLinks",
          lambda: U.list_idp_links(M.UserServiceListIDPLinksRequest.from_dict({"userId": uid, "query": {"limit": 10}})),
          lambda r: expect([(l.idp_id, l.user_id) for l in r.result] == [(idp, object_id)], f"{r}"))
    check("UserService/RemoveIDPLink",
          lambda: U.remove_idp_link(M.UserServiceRemoveIDPLinkRequest(user_id=uid, idp_id=idp, linked_user_id=object_id)))
    check("UserService/ListIDPLinks empty",
          lambda: U.list_idp_links(M.UserServiceListIDPLinksRequest(user_id=uid)),
          lambda r: expect(not r.result, f"{r}"))
    link = {"userId": uid, "idpLink": {"idpId": idp, "userId": object_id, "userName": "alice@contoso.com"}}
    check("UserService/AddIDPLink", lambda: U.add_idp_link(M.UserServiceAddIDPLinkRequest.from_dict(link)))
    check_error("UserService/AddIDPLink duplicate", lambda: U.add_idp_link(M.UserServiceAddIDPLinkRequest.from_dict(link)),
                409, "already_exists", "Errors.User.ExternalIDP.AlreadyExists")

    # Authorizations
    created = check(
        "AuthorizationService/CreateAuthorization",
        lambda: A.create_authorization(M.AuthorizationServiceCreateAuthorizationRequest(
            user_id=uid, project_id=project, organization_id=project_org, role_keys=["Chat.User"])),
        lambda r: expect(r.id and r.creation_date is not None, f"{r}"),
    )
    grant_id = created.id if created else "missing"
    check_error("AuthorizationService/CreateAuthorization duplicate",
                lambda: A.create_authorization(M.AuthorizationServiceCreateAuthorizationRequest(
                    user_id=uid, project_id=project, organization_id=project_org, role_keys=["Chat.User"])),
                409, "already_exists", "Errors.UserGrant.AlreadyExists")
    check_error("AuthorizationService/CreateAuthorization unknown role",
                lambda: A.create_authorization(M.AuthorizationServiceCreateAuthorizationRequest(
                    user_id=uid, project_id=project, organization_id=project_org, role_keys=["Nope"])),
                400, "failed_precondition", "Errors.Project.Role.NotFound")
    check("AuthorizationService/UpdateAuthorization",
          lambda: A.update_authorization(M.AuthorizationServiceUpdateAuthorizationRequest(
              id=grant_id, role_keys=["Chat.User", "Chat.Admin.All"])),
          lambda r: expect(r.change_date is not None, f"{r}"))
    check("AuthorizationService/DeactivateAuthorization",
          lambda: A.deactivate_authorization(M.AuthorizationServiceDeactivateAuthorizationRequest(id=grant_id)))
    check(
        "AuthorizationService/ListAuthorizations",
        lambda: A.list_authorizations(M.AuthorizationServiceListAuthorizationsRequest.from_dict({
            "pagination": {"offset": "0", "limit": 100, "asc": True},
            "filters": [{"inUserIds": {"ids": [uid]}}, {"projectId": {"id": project}},
                        {"organizationId": {"id": project_org}}]})),
        lambda r: expect(
            len(r.authorizations) == 1 and r.authorizations[0].id == grant_id
            and sorted(x.key for x in r.authorizations[0].roles) == ["Chat.Admin.All", "Chat.User"]
            and r.authorizations[0].state.value == "STATE_INACTIVE"
            and r.authorizations[0].user.organization_id == org
            and r.authorizations[0].project.organization_id == project_org
            and r.pagination.total_result == "1", f"{r}"),
    )
    check("AuthorizationService/ActivateAuthorization",
          lambda: A.activate_authorization(M.AuthorizationServiceActivateAuthorizationRequest(id=grant_id)))
    check("AuthorizationService/DeleteAuthorization",
          lambda: A.delete_authorization(M.AuthorizationServiceDeleteAuthorizationRequest(id=grant_id)),
          lambda r: expect(r.deletion_date is not None, f"{r}"))
    check("AuthorizationService/DeleteAuthorization again (idempotent)",
          lambda: A.delete_authorization(M.AuthorizationServiceDeleteAuthorizationRequest(id=grant_id)))

    # Machine user, key, PAT, administrators, JWT profile
    machine = check(
        "UserService/CreateUser machine",
        lambda: U.create_user(M.UserServiceCreateUserRequest.from_dict({
            "organizationId": project_org, "username": "scim-contoso",
            "machine": {"name": "scim-contoso", "description": "SCIM bridge for Contoso"}})),
        lambda r: expect(r.id and r.creation_date is not None, f"{r}"),
    )
    mid = machine.id if machine else "missing"
    key = check(
        "UserService/AddKey",
        lambda: U.add_key(M.UserServiceAddKeyRequest.from_dict({"userId": mid, "expirationDate": "2099-01-01T00:00:00Z"})),
        lambda r: expect(r.key_id and json.loads(base64.b64decode(r.key_content))["userId"] == mid, f"{r}"),
    )
    key_id = key.key_id if key else "missing"
    check("UserService/ListKeys",
          lambda: U.list_keys(M.UserServiceListKeysRequest.from_dict({"filters": [{"userIdFilter": {"id": mid}}]})),
          lambda r: expect([k.id for k in r.result] == [key_id] and r.result[0].organization_id == project_org, f"{r}"))
    tok = check("UserService/AddPersonalAccessToken",
                lambda: U.add_personal_access_token(M.UserServiceAddPersonalAccessTokenRequest.from_dict(
                    {"userId": mid, "expirationDate": "2099-01-01T00:00:00Z"})),
                lambda r: expect(r.token and r.token_id, f"{r}"))
    check("UserService/RemovePersonalAccessToken",
          lambda: U.remove_personal_access_token(M.UserServiceRemovePersonalAccessTokenRequest(
              user_id=mid, token_id=tok.token_id if tok else "missing")))
    instance = {"instance": True}
    check("InternalPermissionService/CreateAdministrator",
          lambda: P.create_administrator(M.InternalPermissionServiceCreateAdministratorRequest.from_dict({
              "userId": mid, "resource": instance, "roles": ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]})),
          lambda r: expect(r.creation_date is not None, f"{r}"))
    check_error("InternalPermissionService/CreateAdministrator duplicate",
                lambda: P.create_administrator(M.InternalPermissionServiceCreateAdministratorRequest.from_dict({
                    "userId": mid, "resource": instance, "roles": ["IAM_OWNER_VIEWER"]})),
                409, "already_exists", "Errors.Instance.Member.AlreadyExists")
    check("InternalPermissionService/ListAdministrators",
          lambda: P.list_administrators(M.InternalPermissionServiceListAdministratorsRequest.from_dict({
              "filters": [{"inUserIdsFilter": {"ids": [mid]}}, {"resource": instance}]})),
          lambda r: expect(len(r.administrators) == 1 and r.administrators[0].instance
                           and sorted(r.administrators[0].roles) == ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]
                           and r.administrators[0].user.id == mid, f"{r}"))

    # The machine user authenticates with its key (JWT profile through the SDK).
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(base64.b64decode(key.key_content).decode() if key else "{}")
        machine_key = f.name
    try:
        zm = Zitadel.with_private_key(url, machine_key, transport_options=opts)
        capture_raw(zm)
        check("JWT profile: token + ListUsers as IAM_USER_MANAGER",
              lambda: zm.users.list_users(M.UserServiceListUsersRequest.from_dict(
                  {"queries": [{"inUserIdsQuery": {"userIds": [uid]}}]})),
              lambda r: expect([u.user_id for u in r.result] == [uid], f"{r}"))
        check_error("JWT profile: CreateAdministrator needs IAM_OWNER",
                    lambda: zm.internal_permissions.create_administrator(
                        M.InternalPermissionServiceCreateAdministratorRequest.from_dict(
                            {"userId": uid, "resource": instance, "roles": ["IAM_OWNER"]})),
                    403, "permission_denied")
    except Exception as e:
        fail("JWT profile: client setup", f"{type(e).__name__}: {e}")
    # The example's own key file (a seeded user) works the same way.
    try:
        zk = Zitadel.with_private_key(url, key_file, transport_options=opts)
        check("JWT profile: seeded key file, ListOrganizations",
              lambda: zk.organizations.list_organizations(M.OrganizationServiceListOrganizationsRequest()),
              lambda r: expect(len(r.result) == 2, f"{r}"))
    except Exception as e:
        fail("JWT profile: seeded key file", f"{type(e).__name__}: {e}")

    check("InternalPermissionService/UpdateAdministrator",
          lambda: P.update_administrator(M.InternalPermissionServiceUpdateAdministratorRequest.from_dict({
              "userId": mid, "resource": instance, "roles": ["IAM_OWNER_VIEWER"]})),
          lambda r: expect(r.change_date is not None, f"{r}"))
    check("InternalPermissionService/DeleteAdministrator",
          lambda: P.delete_administrator(M.InternalPermissionServiceDeleteAdministratorRequest.from_dict({
              "userId": mid, "resource": instance})),
          lambda r: expect(r.deletion_date is not None, f"{r}"))
    check("InternalPermissionService/DeleteAdministrator again (idempotent)",
          lambda: P.delete_administrator(M.InternalPermissionServiceDeleteAdministratorRequest.from_dict({
              "userId": mid, "resource": instance})))
    check("UserService/RemoveKey",
          lambda: U.remove_key(M.UserServiceRemoveKeyRequest(user_id=mid, key_id=key_id)),
          lambda r: expect(r.deletion_date is not None, f"{r}"))
    try:
        zr = Zitadel.with_private_key(url, machine_key, transport_options=opts)
        zr.organizations.list_organizations(M.OrganizationServiceListOrganizationsRequest())
        fail("JWT profile: removed key is rejected", "token issued for a removed key")
    except ZitadelError as e:
        if "invalid_grant" in str(e):
            ok("JWT profile: removed key is rejected")
        else:
            fail("JWT profile: removed key is rejected", str(e))
    except Exception as e:
        fail("JWT profile: removed key is rejected", f"{type(e).__name__}: {e}")
    finally:
        os.unlink(machine_key)

    # Error cases the projector branches on
    dup = dict(add_req, userId=str(uuid.uuid4()), username="ALICE@Contoso.com",
               idpLinks=[], metadata=[])
    check_error("UserService/AddHumanUser duplicate username (other case)",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(dup)),
                409, "already_exists", "Errors.User.AlreadyExists")
    check_error("UserService/AddHumanUser existing userId",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(dict(dup, userId=uid, username="other@contoso.com"))),
                400, "failed_precondition", "Errors.User.AlreadyExisting")
    other = dict(dup, organization={"orgId": project_org}, username="bob@contoso.com")
    check_error("UserService/AddHumanUser domain of another org",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(other)),
                400, "invalid_argument", "Errors.User.DomainNotAllowedAsUsername")
    check_error("UserService/AddHumanUser without givenName",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(
                    dict(dup, username="carol@contoso.com", profile={"familyName": "X"}))),
                400, "invalid_argument")
    check_error("UserService/AddHumanUser unknown org",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(
                    dict(dup, username="dave@contoso.com", organization={"orgId": "404"}))),
                403, "permission_denied")
    check_error("UserService/AddHumanUser IdP of another org",
                lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(dict(
                    dup, username="erin@fabrikam.example", organization={"orgId": project_org},
                    idpLinks=[{"idpId": idp, "userId": "x", "userName": "x"}]))),
                400, "failed_precondition", "Errors.IDPConfig.NotExisting")
    check_error("UserService/GetUserByID unknown",
                lambda: U.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id="does-not-exist")),
                404, "not_found", "Errors.User.NotFound")
    bad = Zitadel.with_access_token(url, "not-a-token", transport_options=opts)
    check_error("bad PAT", lambda: bad.users.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id=uid)),
                401, "unauthenticated")
    no_host = Zitadel.with_access_token(url, pat)
    check_error("no instance host", lambda: no_host.users.get_user_by_id(M.UserServiceGetUserByIDRequest(user_id=uid)),
                404, "not_found")

    # Delete: frees the username, cascades the authorizations
    check("AuthorizationService/CreateAuthorization (before delete)",
          lambda: A.create_authorization(M.AuthorizationServiceCreateAuthorizationRequest(
              user_id=uid, project_id=project, organization_id=project_org, role_keys=["Chat.User"])))
    check("UserService/DeleteUser", lambda: U.delete_user(M.UserServiceDeleteUserRequest(user_id=uid)),
          lambda r: expect(r.details is not None, f"{r}"))
    check_error("UserService/DeleteUser twice", lambda: U.delete_user(M.UserServiceDeleteUserRequest(user_id=uid)),
                404, "not_found", "Errors.User.NotFound")
    check("AuthorizationService/ListAuthorizations after delete",
          lambda: A.list_authorizations(M.AuthorizationServiceListAuthorizationsRequest.from_dict(
              {"filters": [{"inUserIds": {"ids": [uid]}}]})),
          lambda r: expect(not r.authorizations and r.pagination.applied_limit == "100", f"{r}"))
    check("UserService/AddHumanUser reuses a deleted username",
          lambda: U.add_human_user(M.UserServiceAddHumanUserRequest.from_dict(dict(add_req, userId=str(uuid.uuid4()), idpLinks=[]))))
    check("UserService/DeleteUser machine", lambda: U.delete_user(M.UserServiceDeleteUserRequest(user_id=mid)))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    key_dir = tempfile.mkdtemp()
    key_file = os.path.join(key_dir, "seed-key.json")
    proc, info = start_fake(sys.argv[1], key_file)
    try:
        run(info, key_file)
    except Exception as e:  # a bug in this script must not look like a pass
        fail("contract script", f"{type(e).__name__}: {e}")
    finally:
        proc.kill()
        proc.wait()
    print(f"contract: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
