//! Organizations and their members, as applications create them.

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

    /// Makes user `user_id` a member of organization `org_id` with `role` (owner, admin or
    /// member).
    pub fn add_member(&self, org_id: i64, user_id: i64, role: &str) {
        self.execute(&format!(
            "INSERT INTO organization_members (org_id, user_id, role)
             VALUES ({org_id}, {user_id}, '{role}')"
        ));
    }
}
