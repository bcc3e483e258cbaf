//! Whose books: a subject is a user's personal usage (events without an organization) or an
//! organization's shared usage (events spent in it by any member). In the database a subject
//! is keyed (user_id, org_id): (user, 0) or (0, organization); see the `usage_subjects` view
//! and `usage_event_subject()`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A user's personal usage.
    User(i64),
    /// An organization's shared quota.
    Org(i64),
}

impl Subject {
    /// The subject of a row keyed (user_id, org_id): an organization's when org_id > 0.
    pub fn of_row(user_id: i64, org_id: i64) -> Subject {
        if org_id > 0 {
            Subject::Org(org_id)
        } else {
            Subject::User(user_id)
        }
    }

    /// The (user_id, org_id) key of the subject's rows.
    pub fn key(self) -> (i64, i64) {
        match self {
            Subject::User(id) => (id, 0),
            Subject::Org(id) => (0, id),
        }
    }

    /// The key and id that name the subject in a report or a payload: `user_id` or `org_id`.
    pub fn report_key(self) -> (&'static str, i64) {
        match self {
            Subject::User(id) => ("user_id", id),
            Subject::Org(id) => ("org_id", id),
        }
    }

    /// For log fields: the user id, absent for an organization.
    pub fn user_id(self) -> Option<i64> {
        match self {
            Subject::User(id) => Some(id),
            Subject::Org(_) => None,
        }
    }

    /// For log fields: the organization id, absent for a user.
    pub fn org_id(self) -> Option<i64> {
        match self {
            Subject::User(_) => None,
            Subject::Org(id) => Some(id),
        }
    }

    /// `user` or `organization`: the subject's type in webhook payloads and messages.
    pub fn kind_name(self) -> &'static str {
        match self {
            Subject::User(_) => "user",
            Subject::Org(_) => "organization",
        }
    }

    /// The table a subject of this kind is a row of.
    pub fn table(self) -> &'static str {
        match self {
            Subject::User(_) => "users",
            Subject::Org(_) => "organizations",
        }
    }

    /// The usage error for a subject that is not in its table; `flag` is the flag that gave a
    /// user's id (`--user`, `--usage`); an organization's is always `--org`.
    pub fn not_found(self, flag: &str) -> String {
        match self {
            Subject::User(id) => {
                format!("user {id} is not in the users table; check the id given to {flag}")
            }
            Subject::Org(id) => format!(
                "organization {id} is not in the organizations table; check the id given to --org"
            ),
        }
    }
}

/// `user 42` or `org 7`, as reports and errors name them.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(id) => write!(f, "user {id}"),
            Subject::Org(id) => write!(f, "org {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_and_its_row_key_are_one_mapping_both_ways() {
        for subject in [Subject::User(0), Subject::User(42), Subject::Org(7)] {
            let (user_id, org_id) = subject.key();
            assert_eq!(Subject::of_row(user_id, org_id), subject);
        }
        assert_eq!(Subject::User(0).key(), (0, 0));
        assert_eq!(Subject::Org(7).to_string(), "org 7");
        assert_eq!(Subject::Org(7).report_key(), ("org_id", 7));
        assert!(Subject::User(3).not_found("--user").contains("--user"));
    }
}
