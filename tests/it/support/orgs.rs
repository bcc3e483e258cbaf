//! Subjects as applications create them: users, organizations and their members.

use usage_worker::subject::Subject;

use super::TestDb;

impl TestDb {
    /// Inserts organization `id` named `name`, counting in `zone` with months from
    /// `anchor` (None: calendar months), on plan `plan_id` (or none).
    pub fn add_organization(
        &self,
        id: i64,
        name: &str,
        zone: &str,
        anchor: Option<i32>,
        plan_id: Option<i64>,
    ) {
        let anchor = anchor.map_or("NULL".to_string(), |a| a.to_string());
        let plan = plan_id.map_or("NULL".to_string(), |p| p.to_string());
        self.execute(&format!(
            "INSERT INTO organizations (id, name, timezone, billing_anchor_day, plan_id)
             VALUES ({id}, '{name}', '{zone}', {anchor}, {plan})"
        ));
    }

    /// Inserts organization `id` (named `org {id}`) in `zone` with billing anchor `anchor`
    /// (None = calendar months), no plan, and `members` (user ids that have a users row) as
    /// plain members.
    pub fn add_organization_with_members(
        &self,
        id: i64,
        zone: &str,
        anchor: Option<i32>,
        members: &[i64],
    ) {
        self.add_organization(id, &format!("org {id}"), zone, anchor, None);
        for &user_id in members {
            self.add_member(id, user_id, "member");
        }
    }

    /// Makes user `user_id` a member of organization `org_id` with `role` (owner, admin or
    /// member).
    pub fn add_member(&self, org_id: i64, user_id: i64, role: &str) {
        self.execute(&format!(
            "INSERT INTO organization_members (org_id, user_id, role)
             VALUES ({org_id}, {user_id}, '{role}')"
        ));
    }

    /// Inserts `subject` counting in `zone` with months from `anchor` (None: calendar months),
    /// on plan `plan_id` (or none): a user (address `user{id}@example.com`) or an organization
    /// named `org {id}`.
    pub fn add_subject(
        &self,
        subject: Subject,
        zone: &str,
        anchor: Option<i32>,
        plan_id: Option<i64>,
    ) {
        let Subject::User(id) = subject else {
            let (_, id) = subject.key();
            return self.add_organization(id, &format!("org {id}"), zone, anchor, plan_id);
        };
        self.add_user(id, zone);
        let anchor = anchor.map_or("NULL".to_string(), |a| a.to_string());
        let plan = plan_id.map_or("NULL".to_string(), |p| p.to_string());
        self.execute(&format!(
            "UPDATE users SET billing_anchor_day = {anchor}, plan_id = {plan} WHERE id = {id}"
        ));
    }
}
