//! `scim-operator preflight` against the ZITADEL fake: matches, creates and
//! each kind of conflict, from an Entra CSV export.

use scim_test_support::zitadel_fake::ZitadelFake;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_matches_creates_and_conflicts() {
    let fake = ZitadelFake::start().await;
    fake.add_org("410000000000000001", "Contoso", &["contoso.com"]);
    fake.add_org("410000000000000002", "Cluster IAM", &[]);
    fake.add_org("410000000000000003", "Fabrikam", &["fabrikam.com"]);
    fake.add_project("420000000000000001", "410000000000000002", &["Chat.User"]);
    fake.add_service_user_with_pat(
        "440000000000000001",
        "410000000000000002",
        "pf-pat",
        &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"],
    );
    // Existing users of the customer organisation and of another one.
    fake.add_human("410000000000000001", "450000000000000001", "alice@contoso.com", "alice@contoso.com");
    fake.add_human("410000000000000001", "450000000000000002", "carol.legacy", "carol@contoso.com");
    fake.add_human("410000000000000003", "450000000000000003", "dave@contoso.com", "dave@contoso.com");

    let dir = tempfile::tempdir().unwrap();
    let pat = dir.path().join("pat");
    std::fs::write(&pat, "pf-pat").unwrap();
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(
        &cfg,
        format!(
            "zitadel:\n  url: {}\n  credentials: {{patFile: {}}}\n  organizationId: \"410000000000000001\"\n  projectId: \"420000000000000001\"\n  projectOrganizationId: \"410000000000000002\"\n",
            fake.url,
            pat.display()
        ),
    )
    .unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        "userPrincipalName,displayName,mail,objectId\nALICE@contoso.com,Alice,alice@contoso.com,o-1\nbob@contoso.com,Bob,bob@contoso.com,o-2\ncarol@contoso.com,Carol,carol@contoso.com,o-3\ndave@contoso.com,Dave,dave@contoso.com,o-4\nerin@fabrikam.com,Erin,erin@fabrikam.com,o-5\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_scim-operator");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["preflight", "--config"])
            .arg(&cfg)
            .arg("--users")
            .arg(&csv)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "conflicts make it fail");
    assert!(err.contains("3 conflicts"), "{err}");
    assert!(text.contains("5 Entra users: 1 match existing ZITADEL users, 1 will be created, 3 conflict"), "{text}");
    assert!(text.contains("match     ALICE@contoso.com -> ZITADEL user 450000000000000001"), "{text}");
    assert!(text.contains("create    bob@contoso.com"), "{text}");
    assert!(
        text.contains("CONFLICT  carol@contoso.com: its email belongs to ZITADEL user 450000000000000002"),
        "{text}"
    );
    assert!(
        text.contains("CONFLICT  dave@contoso.com: the username exists in organisation 410000000000000003"),
        "{text}"
    );
    assert!(
        text.contains(
            "CONFLICT  erin@fabrikam.com: 'fabrikam.com' is a verified domain of organisation 410000000000000003"
        ),
        "{text}"
    );
}
