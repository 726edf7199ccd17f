//! Pinned tool definitions in the embedded store (see `pins.rs`). Each change commits
//! together with the admin audit events that report it, so the admin stream holds exactly
//! the pins, changes and approvals that happened.

use super::audit::{write_entries, Queued};
use super::{begin, EmbeddedStore, Memory};
use crate::pins::{
    approved, observe_one, pin_from_columns, Observed, PinRefused, ServedTool, ToolPin, COLUMNS,
};
use crate::{AuditEntry, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Row};

fn pin_of(row: &Row<'_>) -> rusqlite::Result<ToolPin> {
    pin_from_columns(|i| row.get(i))
}

fn pin(conn: &Connection, server: &str, tool: &str) -> rusqlite::Result<Option<ToolPin>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tool_pins WHERE server = ?1 AND tool = ?2"
    ))?
    .query_row([server, tool], pin_of)
    .optional()
}

fn save(conn: &Connection, pin: &ToolPin) -> rusqlite::Result<()> {
    let served = pin.served.as_ref();
    conn.prepare_cached(&format!(
        "INSERT INTO tool_pins ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (server, tool) DO UPDATE SET sha256 = excluded.sha256,
           definition = excluded.definition, approved_at = excluded.approved_at,
           approved_by = excluded.approved_by, served_sha256 = excluded.served_sha256,
           served_definition = excluded.served_definition, served_at = excluded.served_at"
    ))?
    .execute(params![
        pin.server,
        pin.tool,
        pin.sha256,
        pin.definition,
        pin.approved_at,
        pin.approved_by,
        served.map(|s| &s.sha256),
        served.map(|s| &s.definition),
        served.map(|s| &s.seen_at),
    ])?;
    Ok(())
}

/// Writes `events` (admin entries) in transaction `tx`.
fn record(tx: &Connection, memory: &mut Memory, events: &[AuditEntry]) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let queued = Queued::of(events, true);
    write_entries(tx, memory, std::slice::from_ref(&queued))
}

impl EmbeddedStore {
    /// Every pin, of one server or of all, ordered by server and tool.
    pub fn tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
        self.with("read the tool pins", |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM tool_pins WHERE ?1 IS NULL OR server = ?1 ORDER BY server, tool"
            );
            c.prepare_cached(&sql)?
                .query_map([server], pin_of)?
                .collect()
        })
    }

    /// Records that `server` now serves `served`: a tool without a pin is pinned (approved
    /// at first sight), a definition that differs from its pin is kept beside it, a tool back
    /// to its approved definition loses the recorded change. `event` makes the admin
    /// entries of what changed (it sees each tool's pin as it now is), committed with it.
    /// Returns each served tool's pin and what the observation did, in `served`'s order.
    pub fn observe_tools(
        &self,
        server: &str,
        served: &[ServedTool],
        ts: &str,
        event: &mut dyn FnMut(&ToolPin, Observed) -> Vec<AuditEntry>,
    ) -> Result<Vec<(ToolPin, Observed)>, StoreError> {
        self.write("record the served tool definitions", |conn, memory| {
            let tx = begin(conn, memory)?;
            let mut outcome = Vec::with_capacity(served.len());
            let mut events = Vec::new();
            for tool in served {
                let existing = pin(&tx, server, &tool.tool)?;
                let (pin, observed, write) = observe_one(server, existing, tool, ts);
                if write {
                    save(&tx, &pin)?;
                    events.extend(event(&pin, observed));
                }
                outcome.push((pin, observed));
            }
            record(&tx, memory, &events)?;
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Approves the definition `server` serves for `tool` in place of its pin (`expected`:
    /// a prefix of the hash the operator reviewed, refused if the one waiting is another),
    /// as `actor`. `event` makes the admin entry from the pin before and after. An operator
    /// may also approve a pinned tool whose definition did not change, to vouch for a
    /// definition that was only approved at first sight (e.g. a flagged one).
    pub fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        actor: &str,
        ts: &str,
        event: &dyn Fn(&ToolPin, &ToolPin) -> AuditEntry,
    ) -> Result<Result<ToolPin, PinRefused>, StoreError> {
        self.write("approve a tool definition", |conn, memory| {
            let tx = begin(conn, memory)?;
            let Some(before) = pin(&tx, server, tool)? else {
                return Ok(Err(PinRefused::Unknown {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                }));
            };
            let after = match approved(&before, expected, actor, ts) {
                Ok(after) => after,
                Err(refused) => return Ok(Err(refused)),
            };
            save(&tx, &after)?;
            record(&tx, memory, &[event(&before, &after)])?;
            tx.commit()?;
            Ok(Ok(after))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AdminEvent, AuditFilter};
    use crate::embedded::scratch;

    fn served(tool: &str, sha256: &str) -> ServedTool {
        ServedTool {
            tool: tool.into(),
            sha256: sha256.into(),
            definition: format!("{{\"name\":\"{tool}\",\"v\":\"{sha256}\"}}"),
            pin_if_new: true,
        }
    }

    fn event(action: &str, pin: &ToolPin) -> AuditEntry {
        AuditEntry::Admin(AdminEvent {
            ts: "2026-11-26T00:00:00.000Z".into(),
            action: action.into(),
            actor: "test".into(),
            subject: format!("{}/{}", pin.server, pin.tool),
            detail: serde_json::Value::Null,
        })
    }

    fn observe(store: &EmbeddedStore, tools: &[ServedTool]) -> Vec<Observed> {
        store
            .observe_tools(
                "s",
                tools,
                "2026-11-26T00:00:00.000Z",
                &mut |pin, observed| vec![event(&format!("{observed:?}"), pin)],
            )
            .expect("observe")
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    }

    fn admin_actions(store: &EmbeddedStore) -> Vec<String> {
        store
            .audit_admin(&AuditFilter::default())
            .expect("query")
            .into_iter()
            .map(|a| a.event.action)
            .collect()
    }

    #[test]
    fn a_changed_definition_waits_beside_its_pin_until_approved() {
        let store = EmbeddedStore::open(&scratch("pins")).expect("open");
        assert_eq!(
            observe(&store, &[served("a", "aa"), served("b", "bb")]),
            [Observed::FirstSight, Observed::FirstSight]
        );
        assert_eq!(
            observe(&store, &[served("a", "aa"), served("b", "b2")]),
            [Observed::Approved, Observed::Changed]
        );
        // Seen again: no second report.
        assert_eq!(
            observe(&store, &[served("b", "b2")]),
            [Observed::StillChanged]
        );
        let pins = store.tool_pins(Some("s")).expect("pins");
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[1].sha256, "bb");
        assert_eq!(
            pins[1].served.as_ref().map(|s| s.sha256.as_str()),
            Some("b2")
        );

        let refused = store
            .approve_tool("s", "b", Some("b3"), "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store");
        assert!(
            matches!(refused, Err(PinRefused::NotTheOneWaiting { .. })),
            "{refused:?}"
        );
        let approved = store
            .approve_tool("s", "b", Some("B2"), "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store")
            .expect("approved");
        assert_eq!(
            (approved.sha256.as_str(), approved.approved_by.as_str()),
            ("b2", "dana")
        );
        assert_eq!(approved.served, None);
        assert_eq!(observe(&store, &[served("b", "b2")]), [Observed::Approved]);
        let nothing = store
            .approve_tool("s", "b", None, "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store");
        assert!(
            matches!(nothing, Err(PinRefused::NothingChanged { .. })),
            "{nothing:?}"
        );
        let unknown = store
            .approve_tool("s", "zz", None, "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store");
        assert!(
            matches!(unknown, Err(PinRefused::Unknown { .. })),
            "{unknown:?}"
        );
        assert_eq!(
            admin_actions(&store),
            ["FirstSight", "FirstSight", "Changed", "approved"]
        );
    }

    #[test]
    fn a_server_back_to_its_approved_definition_drops_the_change() {
        let store = EmbeddedStore::open(&scratch("pins-revert")).expect("open");
        observe(&store, &[served("a", "aa")]);
        assert_eq!(observe(&store, &[served("a", "a2")]), [Observed::Changed]);
        assert_eq!(observe(&store, &[served("a", "aa")]), [Observed::Reverted]);
        assert_eq!(store.tool_pins(None).expect("pins")[0].served, None);
        // An operator may vouch for a first-sight pin (nothing changed, but first sight is
        // not an operator's approval).
        let vouched = store
            .approve_tool("s", "a", None, "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store")
            .expect("approved");
        assert!(vouched.approved_by_operator());
    }

    #[test]
    fn a_new_tool_can_wait_for_its_first_approval() {
        let store = EmbeddedStore::open(&scratch("pins-new")).expect("open");
        let untrusted = ServedTool {
            pin_if_new: false,
            ..served("n", "nn")
        };
        assert_eq!(
            observe(&store, std::slice::from_ref(&untrusted)),
            [Observed::Unapproved]
        );
        assert_eq!(
            observe(&store, std::slice::from_ref(&untrusted)),
            [Observed::StillChanged]
        );
        let waiting = &store.tool_pins(Some("s")).expect("pins")[0];
        assert!(
            !waiting.is_approved() && !waiting.approved_by_operator(),
            "{waiting:?}"
        );
        let approved = store
            .approve_tool("s", "n", Some("nn"), "dana", "t", &|_, after| {
                event("approved", after)
            })
            .expect("store")
            .expect("approved");
        assert_eq!(
            (approved.sha256.as_str(), approved.served.is_none()),
            ("nn", true)
        );
        assert_eq!(
            observe(&store, std::slice::from_ref(&untrusted)),
            [Observed::Approved]
        );
    }
}
