//! The alert email itself, of a user's quota and of an organization's: templates (snapshots),
//! escaping and header safety, overrides, and the mail settings' validation.

use usage_worker::config::{ConfigError, Settings};
use usage_worker::mail::templates::{
    AlertContent, Rendered, Templates, sample_content, sample_org_content,
};
use usage_worker::mail::{self, ErrorClass, Mailer, MemoryMailer};

use crate::support::{self, at};

/// `content` in the built-in templates.
fn render(content: &AlertContent) -> Rendered {
    Templates::load(None).unwrap().render(content).unwrap()
}

#[test]
fn the_built_in_alert_email_reads_as_intended_for_a_user_and_for_an_organization() {
    // The snapshots of a user's email are `subject`, `text` and `html`; an organization's
    // are `org_subject`, `org_text` and `org_html`.
    for (prefix, content) in [("", sample_content()), ("org_", sample_org_content())] {
        let rendered = render(&content);
        insta::assert_snapshot!(format!("{prefix}subject"), rendered.subject);
        insta::assert_snapshot!(format!("{prefix}text"), rendered.text);
        insta::assert_snapshot!(format!("{prefix}html"), rendered.html);
    }
}

#[test]
fn without_links_or_a_name_the_email_still_reads_well() {
    let mut content = sample_content();
    content.name.clear();
    content.upgrade_url = None;
    content.preferences_url = None;
    content.metric = "requests".into();
    content.metric_noun = "request".into();
    content.period = "day".into();
    content.period_adjective = "daily".into();
    content.kind = "image_generation".into();
    content.kind_label = "image generation".into();
    content.threshold = 95;
    content.percent = 95;
    content.used = "19 requests".into();
    content.limit = "20 requests".into();
    content.remaining = "1 request".into();
    let rendered = render(&content);
    insta::assert_snapshot!("subject_kind_scoped", rendered.subject);
    insta::assert_snapshot!("text_without_links", rendered.text);
}

#[test]
fn names_with_crlf_and_a_script_tag_cannot_add_headers_or_markup() {
    // A user's name, in the email to that user.
    let mut content = sample_content();
    let hostile = "Eve\r\nBcc: victim@example.org\r\n<script>alert(1)</script>";
    content.name = hostile.into();
    let rendered = render(&content);
    assert!(
        rendered
            .html
            .contains("Hello Eve Bcc: victim@example.org &lt;script&gt;alert(1)&lt;"),
        "{}",
        rendered.html
    );
    assert!(!rendered.html.contains("<script>"));

    let settings = Settings::default().mail;
    let email = mail::compose(
        &settings,
        "eve@example.com",
        hostile,
        &rendered,
        "quota-alert.7.tokens.month.all.20261101T000000Z.80@localhost",
        at("2026-11-10T12:00:00Z"),
        None,
    )
    .unwrap();
    let memory = MemoryMailer::new();
    assert!(memory.send_all(&[email])[0].is_ok());
    let raw = &memory.sent()[0].raw;
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        !head
            .split("\r\n")
            .any(|line| line.to_ascii_lowercase().starts_with("bcc:")),
        "{head}"
    );
    assert!(
        head.contains("Message-ID: <quota-alert.7.tokens.month.all.20261101T000000Z.80@localhost>")
    );
    assert!(head.contains("Subject: You have used 80% of your monthly token quota"));

    // An organization's name and its members' names, in the email to its owners and admins.
    let mut content = sample_org_content();
    let org = content.organization.as_mut().unwrap();
    org.name = "Acme\r\nBcc: victim@example.org <script>x</script>".into();
    org.top_members[0].name = "<script>alert(1)</script>\r\nEve".into();
    let rendered = render(&content);

    assert_eq!(
        rendered.subject,
        "Acme Bcc: victim@example.org <script>x</script> has used 80% of its monthly token quota"
    );
    assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
    assert!(
        rendered
            .html
            .contains("<li>&lt;script&gt;alert(1)&lt;&#x2f;script&gt; Eve: 41,200 tokens</li>"),
        "{}",
        rendered.html
    );
    assert!(!rendered.text.contains('\r'));
}

#[test]
fn an_unusable_address_is_an_invalid_address_error() {
    let rendered = render(&sample_content());
    let error = mail::compose(
        &Settings::default().mail,
        "no address here",
        "",
        &rendered,
        "x@localhost",
        at("2026-11-10T12:00:00Z"),
        None,
    )
    .unwrap_err();
    assert_eq!(error.class, ErrorClass::InvalidAddress);
    assert!(error.class.is_permanent());
}

/// A templates directory holding one template, `file`.
fn templates_dir(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

#[test]
fn a_template_in_mail_templates_dir_replaces_the_built_in_one() {
    let dir = templates_dir(
        "quota_alert.subject.txt",
        "Heads up: {{ threshold }}% of your {{ metric_noun }} quota",
    );
    let rendered = Templates::load(Some(dir.path()))
        .unwrap()
        .render_sample()
        .unwrap();
    assert_eq!(rendered.subject, "Heads up: 80% of your token quota");
    assert!(rendered.text.starts_with("Hello Ada Lovelace,"));
}

fn load(toml: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = support::config_file(dir.path(), toml);
    usage_worker::app::load_settings_with_env(Some(&path), Vec::new())
}

/// The key that refusing the configuration `toml` names; anything else fails, quoting it.
fn invalid_key(toml: &str) -> String {
    match load(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{toml:?}: expected an invalid key, got {other:?}"),
    }
}

#[test]
fn a_broken_template_override_is_refused_at_startup_naming_the_key() {
    let dir = templates_dir("quota_alert.txt", "Hello {{ nmae }}, {% if %}");
    let key = invalid_key(&format!(
        "[mail]\ntemplates_dir = \"{}\"\n",
        dir.path().display()
    ));
    assert_eq!(key, "mail.templates_dir");
}

#[test]
fn mail_and_alert_settings_are_validated_naming_the_key() {
    for (toml, key) in [
        (
            "[mail.smtp]\nhost = \"smtp.example.com\"\ntls = \"none\"\n",
            "mail.smtp.tls",
        ),
        ("[mail]\nfrom = \"not a mailbox\"\n", "mail.from"),
        ("[mail]\ntransport = \"file\"\n", "mail.file.dir"),
        ("[alerts]\nthresholds = [80, 120]\n", "alerts.thresholds"),
        ("[alerts]\nmax_attempts = 0\n", "alerts.max_attempts"),
        ("[mail.smtp]\npassword = \"secret\"\n", "mail.smtp.username"),
    ] {
        assert_eq!(invalid_key(toml), key, "{toml:?}");
    }
    assert!(load("[mail.smtp]\nhost = \"127.0.0.1\"\ntls = \"none\"\n").is_ok());
}

#[test]
fn the_smtp_password_never_appears_in_the_printed_configuration() {
    let settings =
        load("[mail.smtp]\nusername = \"worker\"\npassword = \"hunter2-secret\"\n").unwrap();
    assert!(!settings.to_redacted_toml().contains("hunter2-secret"));
    assert!(!format!("{settings:?}").contains("hunter2-secret"));
}

#[test]
fn past_the_limit_the_email_says_the_quota_is_used_up() {
    let mut content = sample_content();
    content.threshold = 95;
    content.percent = 112;
    content.used = "112,413 tokens".into();
    content.remaining = "0 tokens".into();
    let rendered = render(&content);
    insta::assert_snapshot!("subject_past_the_limit", rendered.subject);
    insta::assert_snapshot!("text_past_the_limit", rendered.text);
    insta::assert_snapshot!("html_past_the_limit", rendered.html);
}

#[test]
fn the_smtp_password_is_read_from_mail_smtp_password_file() {
    use secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smtp-password");
    std::fs::write(&path, "s3cret-from-file\n").unwrap();
    let settings = load(&format!(
        "[mail.smtp]\nusername = \"worker\"\npassword_file = \"{}\"\n",
        path.display()
    ))
    .unwrap();
    let password = settings.mail.smtp.password().unwrap().unwrap();
    assert_eq!(password.expose_secret(), "s3cret-from-file");
}
