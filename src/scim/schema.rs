//! The attribute definitions we support (RFC 7643 §4, §8.7), and name resolution
//! that follows the RFC's rules: attribute names are case-insensitive, core
//! attributes may be URN-qualified, extension attributes may be written bare when
//! unambiguous.

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

#[derive(Debug)]
pub struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: &'static str,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub unique_server: bool,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [AttrDef],
}

impl AttrDef {
    pub(crate) fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
    pub(crate) fn is_complex(&self) -> bool {
        self.ty == AttrType::Complex
    }
}

const fn attr(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
    AttrDef {
        name,
        ty,
        multi_valued: false,
        description,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique_server: false,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
    }
}

const fn s(name: &'static str, description: &'static str) -> AttrDef {
    attr(name, AttrType::String, description)
}

const fn complex(
    name: &'static str,
    description: &'static str,
    multi_valued: bool,
    subs: &'static [AttrDef],
) -> AttrDef {
    let mut a = attr(name, AttrType::Complex, description);
    a.multi_valued = multi_valued;
    a.sub_attributes = subs;
    a
}

const fn with_canonical(mut a: AttrDef, values: &'static [&'static str]) -> AttrDef {
    a.canonical_values = values;
    a
}
const fn case_exact(mut a: AttrDef) -> AttrDef {
    a.case_exact = true;
    a
}
const fn required(mut a: AttrDef) -> AttrDef {
    a.required = true;
    a
}
const fn read_only(mut a: AttrDef) -> AttrDef {
    a.mutability = Mutability::ReadOnly;
    a
}
const fn immutable(mut a: AttrDef) -> AttrDef {
    a.mutability = Mutability::Immutable;
    a
}
const fn reference(name: &'static str, description: &'static str, types: &'static [&'static str]) -> AttrDef {
    let mut a = attr(name, AttrType::Reference, description);
    a.reference_types = types;
    a
}

const TYPE_DESC: &str = "A label indicating the attribute's function.";
const PRIMARY_DESC: &str = "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.";
const DISPLAY_DESC: &str = "A human-readable name, primarily used for display purposes.";

macro_rules! multi_subs {
    ($value:expr, $types:expr) => {
        &[
            $value,
            s("display", DISPLAY_DESC),
            with_canonical(s("type", TYPE_DESC), $types),
            attr("primary", AttrType::Boolean, PRIMARY_DESC),
        ]
    };
}

static NAME_SUBS: [AttrDef; 6] = [
    s(
        "formatted",
        "The full name, including all middle names, titles, and suffixes as appropriate, formatted for display.",
    ),
    s("familyName", "The family name of the User, or last name in most Western languages."),
    s("givenName", "The given name of the User, or first name in most Western languages."),
    s("middleName", "The middle name(s) of the User."),
    s("honorificPrefix", "The honorific prefix(es) of the User, or title in most Western languages."),
    s("honorificSuffix", "The honorific suffix(es) of the User, or suffix in most Western languages."),
];

static ADDRESS_SUBS: [AttrDef; 8] = [
    s("formatted", "The full mailing address, formatted for display or use with a mailing label."),
    s("streetAddress", "The full street address component."),
    s("locality", "The city or locality component."),
    s("region", "The state or region component."),
    s("postalCode", "The zip code or postal code component."),
    s("country", "The country name component."),
    with_canonical(s("type", TYPE_DESC), &["work", "home", "other"]),
    attr("primary", AttrType::Boolean, PRIMARY_DESC),
];

static GROUP_REF_SUBS: [AttrDef; 4] = [
    read_only(s("value", "The identifier of the User's group.")),
    read_only(reference("$ref", "The URI of the corresponding 'Group' resource.", &["User", "Group"])),
    read_only(s("display", DISPLAY_DESC)),
    read_only(with_canonical(s("type", TYPE_DESC), &["direct", "indirect"])),
];

/// The core User schema, RFC 7643 §4.1 (id, externalId and meta are common
/// attributes, handled by `COMMON_ATTRIBUTES`).
pub(crate) static USER_ATTRIBUTES: [AttrDef; 20] = [
    {
        let mut a = required(s(
            "userName",
            "Unique identifier for the User, typically used by the user to directly authenticate to the service provider.",
        ));
        a.unique_server = true;
        a
    },
    complex("name", "The components of the user's real name.", false, &NAME_SUBS),
    s("displayName", "The name of the User, suitable for display to end-users."),
    s("nickName", "The casual way to address the user in real life."),
    reference(
        "profileUrl",
        "A fully qualified URL pointing to a page representing the User's online profile.",
        &["external"],
    ),
    s("title", "The user's title, such as \"Vice President\"."),
    s("userType", "Used to identify the relationship between the organization and the user."),
    s("preferredLanguage", "Indicates the User's preferred written or spoken language."),
    s(
        "locale",
        "Used to indicate the User's default location for purposes of localizing items such as currency, date time format, or numerical representations.",
    ),
    s("timezone", "The User's time zone in the 'Olson' time zone database format, e.g., 'America/Los_Angeles'."),
    attr("active", AttrType::Boolean, "A Boolean value indicating the User's administrative status."),
    {
        let mut a = s("password", "The User's cleartext password.");
        a.mutability = Mutability::WriteOnly;
        a.returned = Returned::Never;
        a
    },
    complex(
        "emails",
        "Email addresses for the user.",
        true,
        multi_subs!(s("value", "Email addresses for the user."), &["work", "home", "other"]),
    ),
    complex(
        "phoneNumbers",
        "Phone numbers for the User.",
        true,
        multi_subs!(s("value", "Phone number of the User."), &["work", "home", "mobile", "fax", "pager", "other"]),
    ),
    complex(
        "ims",
        "Instant messaging addresses for the User.",
        true,
        multi_subs!(
            s("value", "Instant messaging address for the User."),
            &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]
        ),
    ),
    complex(
        "photos",
        "URLs of photos of the User.",
        true,
        multi_subs!(reference("value", "URL of a photo of the User.", &["external"]), &["photo", "thumbnail"]),
    ),
    complex("addresses", "A physical mailing address for this User.", true, &ADDRESS_SUBS),
    read_only(complex("groups", "A list of groups to which the user belongs.", true, &GROUP_REF_SUBS)),
    complex(
        "entitlements",
        "A list of entitlements for the User that represent a thing the User has.",
        true,
        multi_subs!(s("value", "The value of an entitlement."), &[]),
    ),
    complex(
        "roles",
        "A list of roles for the User that collectively represent who the User is.",
        true,
        multi_subs!(s("value", "The value of a role."), &[]),
    ),
];

pub(crate) static USER_X509: AttrDef = complex(
    "x509Certificates",
    "A list of certificates issued to the User.",
    true,
    multi_subs!(attr("value", AttrType::Binary, "The value of an X.509 certificate."), &[]),
);

static MANAGER_SUBS: [AttrDef; 3] = [
    s("value", "The id of the SCIM resource representing the User's manager."),
    reference("$ref", "The URI of the SCIM resource representing the User's manager.", &["User"]),
    read_only(s("displayName", "The displayName of the User's manager.")),
];

/// The enterprise User extension, RFC 7643 §4.3.
pub(crate) static ENTERPRISE_ATTRIBUTES: [AttrDef; 6] = [
    s(
        "employeeNumber",
        "Numeric or alphanumeric identifier assigned to a person, typically based on order of hire or association with an organization.",
    ),
    s("costCenter", "Identifies the name of a cost center."),
    s("organization", "Identifies the name of an organization."),
    s("division", "Identifies the name of a division."),
    s("department", "Identifies the name of a department."),
    complex("manager", "The User's manager.", false, &MANAGER_SUBS),
];

static MEMBER_SUBS: [AttrDef; 4] = [
    immutable(s("value", "Identifier of the member of this Group.")),
    immutable(reference(
        "$ref",
        "The URI corresponding to a SCIM resource that is a member of this Group.",
        &["User", "Group"],
    )),
    immutable(with_canonical(
        s("type", "A label indicating the type of resource, e.g., 'User' or 'Group'."),
        &["User", "Group"],
    )),
    s("display", DISPLAY_DESC),
];

/// The core Group schema, RFC 7643 §4.2.
pub(crate) static GROUP_ATTRIBUTES: [AttrDef; 2] = [
    {
        let mut a = required(s("displayName", "A human-readable name for the Group."));
        a.unique_server = true;
        a
    },
    complex("members", "A list of members of the Group.", true, &MEMBER_SUBS),
];

static META_SUBS: [AttrDef; 5] = [
    read_only(case_exact(s("resourceType", "The name of the resource type of the resource."))),
    read_only(attr("created", AttrType::DateTime, "The DateTime that the resource was added to the service provider.")),
    read_only(attr(
        "lastModified",
        AttrType::DateTime,
        "The most recent DateTime that the details of this resource were updated at the service provider.",
    )),
    read_only(case_exact(reference("location", "The URI of the resource being returned.", &["uri"]))),
    read_only(case_exact(s("version", "The version of the resource being returned."))),
];

/// Attributes every resource has (RFC 7643 §3.1).
pub(crate) static COMMON_ATTRIBUTES: [AttrDef; 3] = [
    {
        let mut a = read_only(case_exact(s(
            "id",
            "A unique identifier for a SCIM resource as defined by the service provider.",
        )));
        a.returned = Returned::Always;
        a.unique_server = true;
        a
    },
    case_exact(s(
        "externalId",
        "A String that is an identifier for the resource as defined by the provisioning client.",
    )),
    read_only(complex("meta", "A complex attribute containing resource metadata.", false, &META_SUBS)),
];

static USER_EXTENSIONS: [(&str, &[AttrDef]); 1] = [(ENTERPRISE_USER_SCHEMA, &ENTERPRISE_ATTRIBUTES)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }
    pub(crate) fn core_schema(self) -> &'static str {
        match self {
            ResourceKind::User => USER_SCHEMA,
            ResourceKind::Group => GROUP_SCHEMA,
        }
    }
    pub(crate) fn core_attributes(self) -> &'static [AttrDef] {
        match self {
            ResourceKind::User => &USER_ATTRIBUTES,
            ResourceKind::Group => &GROUP_ATTRIBUTES,
        }
    }
    /// Schema extensions this kind supports: (URN, attributes).
    pub(crate) fn extensions(self) -> &'static [(&'static str, &'static [AttrDef])] {
        match self {
            ResourceKind::User => &USER_EXTENSIONS,
            ResourceKind::Group => &[],
        }
    }
    pub(crate) fn extension(self, urn: &str) -> Option<(&'static str, &'static [AttrDef])> {
        self.extensions().iter().copied().find(|(u, _)| u.eq_ignore_ascii_case(urn))
    }
    /// The attribute that must be unique across resources of this kind, compared
    /// case-insensitively.
    pub fn unique_name_attr(self) -> &'static str {
        match self {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        }
    }
}

/// Where a top-level attribute lives in a resource document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Directly in the resource object (core and common attributes).
    Core,
    /// Inside the object keyed by this extension URN.
    Extension(&'static str),
}

/// A resolved attribute reference: the top-level attribute and, optionally, one
/// of its sub-attributes.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedAttr {
    pub container: Container,
    pub attr: &'static AttrDef,
    pub sub: Option<&'static AttrDef>,
}

impl ResolvedAttr {
    /// The definition the final value is checked against.
    pub(crate) fn leaf(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }
    pub fn display(&self) -> String {
        let base = match self.container {
            Container::Core => self.attr.name.to_string(),
            Container::Extension(urn) => format!("{urn}:{}", self.attr.name),
        };
        match self.sub {
            Some(sub) => format!("{base}.{}", sub.name),
            None => base,
        }
    }
}

/// Splits `urn:...:Schema:attr.sub` into (Some(urn), "attr.sub"); a bare
/// `attr.sub` into (None, "attr.sub"). URNs contain dots ("2.0"), so the split
/// is at the last colon, which attribute names never contain.
pub(crate) fn split_urn(path: &str) -> (Option<&str>, &str) {
    // `get`, not `[..4]`: byte 4 may fall inside a multi-byte character.
    if path.len() > 4 && path.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
        match path.rfind(':') {
            Some(i) => (Some(&path[..i]), &path[i + 1..]),
            None => (None, path),
        }
    } else {
        (None, path)
    }
}

fn find(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Finds a top-level attribute by its (possibly URN-qualified) name.
pub(crate) fn resolve_top(kind: ResourceKind, urn: Option<&str>, name: &str) -> Option<(Container, &'static AttrDef)> {
    match urn {
        Some(urn) if urn.eq_ignore_ascii_case(kind.core_schema()) => core_or_common(kind, name),
        Some(urn) => {
            let (ext, attrs) = kind.extension(urn)?;
            find(attrs, name).map(|a| (Container::Extension(ext), a))
        }
        None => core_or_common(kind, name).or_else(|| {
            kind.extensions().iter().find_map(|(ext, attrs)| find(attrs, name).map(|a| (Container::Extension(ext), a)))
        }),
    }
}

fn core_or_common(kind: ResourceKind, name: &str) -> Option<(Container, &'static AttrDef)> {
    let found = find(&COMMON_ATTRIBUTES, name).or_else(|| find(kind.core_attributes(), name));
    let found = found
        .or_else(|| (kind == ResourceKind::User && USER_X509.name.eq_ignore_ascii_case(name)).then_some(&USER_X509));
    found.map(|a| (Container::Core, a))
}

/// Resolves an attribute path such as `userName`, `name.givenName`,
/// `urn:ietf:params:scim:schemas:core:2.0:User:emails.value` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`.
pub fn resolve_path(kind: ResourceKind, path: &str) -> Option<ResolvedAttr> {
    let (urn, rest) = split_urn(path);
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let (container, attr) = resolve_top(kind, urn, name)?;
    let sub = match sub {
        Some(s) => Some(attr.sub(s)?),
        None => None,
    };
    Some(ResolvedAttr { container, attr, sub })
}

/// All top-level attributes of a kind with their container, for rendering and
/// discovery.
pub(crate) fn all_attributes(kind: ResourceKind) -> Vec<(Container, &'static AttrDef)> {
    let mut v: Vec<_> = COMMON_ATTRIBUTES.iter().map(|a| (Container::Core, a)).collect();
    v.extend(kind.core_attributes().iter().map(|a| (Container::Core, a)));
    if kind == ResourceKind::User {
        v.push((Container::Core, &USER_X509));
    }
    for (urn, attrs) in kind.extensions() {
        v.extend(attrs.iter().map(|a| (Container::Extension(urn), a)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively_and_with_urns() {
        let r = resolve_path(ResourceKind::User, "NAME.GIVENNAME").unwrap();
        assert_eq!(r.display(), "name.givenName");
        let r = resolve_path(ResourceKind::User, "urn:ietf:params:scim:schemas:core:2.0:User:userName").unwrap();
        assert_eq!(r.attr.name, "userName");
        let r = resolve_path(
            ResourceKind::User,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap();
        assert_eq!(r.container, Container::Extension(ENTERPRISE_USER_SCHEMA));
        assert_eq!(r.sub.unwrap().name, "value");
        // Bare extension attribute names resolve when unambiguous.
        let r = resolve_path(ResourceKind::User, "department").unwrap();
        assert_eq!(r.container, Container::Extension(ENTERPRISE_USER_SCHEMA));
        assert!(resolve_path(ResourceKind::User, "nonsense").is_none());
        assert!(resolve_path(ResourceKind::Group, "userName").is_none());
        assert!(resolve_path(ResourceKind::User, "name.nonsense").is_none());
    }

    #[test]
    fn non_ascii_names_do_not_panic() {
        // Found by fuzzing (fuzz/fuzz_targets/filter.rs): slicing at byte 4
        // inside a multi-byte character panicked.
        for path in ["urn\u{e9}:userName", "\u{fffd}\u{fffd}\u{fffd}ame", "ur\u{1f600}", "\u{e9}\u{e9}\u{e9}"] {
            assert_eq!(split_urn(path), (None, path));
            assert!(resolve_path(ResourceKind::User, path).is_none(), "{path}");
        }
        assert!(crate::scim::filter::Filter::parse(ResourceKind::User, "urn\u{e9}:x eq \"y\"").is_err());
    }

    #[test]
    fn case_exactness_follows_rfc() {
        assert!(!resolve_path(ResourceKind::User, "userName").unwrap().leaf().case_exact);
        assert!(resolve_path(ResourceKind::User, "externalId").unwrap().leaf().case_exact);
        assert!(resolve_path(ResourceKind::User, "id").unwrap().leaf().case_exact);
        assert!(!resolve_path(ResourceKind::Group, "displayName").unwrap().leaf().case_exact);
    }
}
